"""Tests for pipeline.synthetic (+ _params, _scene, _io): determinism, exact ground truth, writers, bad parameters."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline import synthetic_io, synthetic_scene
from pipeline.synthetic import render_clip, render_labelled_frames
from pipeline.synthetic_io import write_synthetic_video, write_video
from pipeline.synthetic_scene import CLASS_NAMES
from pipeline.video import iter_frames

H, W = 48, 64
SMALL = dict(height=H, width=W, shots_per_video=(2, 3), frames_per_shot=(4, 6))


@pytest.fixture(scope="module")
def clip():
    return render_clip(seed=7, **SMALL)


def _read_video(path):
    frames = [frame for _, frame in iter_frames(path)]
    return np.stack(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8)


def _edges(labels: np.ndarray, width: int = 2) -> np.ndarray:
    """Pixels within ``width`` of a boundary between two labels."""
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    edge = np.zeros(labels.shape, bool)
    for value in np.unique(labels):
        region = (labels == value).astype(np.uint8)
        edge |= cv2.dilate(region, kernel) != cv2.erode(region, kernel)
    return edge


def test_shapes_and_dtypes(clip):
    frames, gt = clip
    t = frames.shape[0]
    assert frames.shape == (t, H, W, 3) and frames.dtype == np.uint8
    assert gt["flow"].shape == (t - 1, H, W, 2) and gt["flow"].dtype == np.float32
    assert gt["instances"].shape == (t, H, W) and gt["instances"].dtype == np.uint8
    assert gt["classes"].shape == (t, H, W) and gt["classes"].dtype == np.uint8
    assert gt["cuts"].dtype == np.int64 and gt["shots"].dtype == np.int64
    assert gt["shots"].shape == (len(gt["cuts"]) + 1, 2)
    assert list(gt["class_names"]) == list(CLASS_NAMES)
    assert gt["class_names"].dtype.kind == "U"  # loads from .npz without pickle
    assert np.isfinite(gt["flow"]).all()


def test_same_seed_same_clip_different_seed_different(clip):
    frames, gt = clip
    again_frames, again_gt = render_clip(seed=7, **SMALL)
    np.testing.assert_array_equal(frames, again_frames)
    for key in gt:
        np.testing.assert_array_equal(gt[key], again_gt[key])
    other, _ = render_clip(seed=8, **SMALL)
    assert other.shape != frames.shape or not np.array_equal(other, frames)


def test_shots_tile_the_clip_and_cuts_start_shots(clip):
    frames, gt = clip
    shots, cuts = gt["shots"], gt["cuts"]
    assert shots[0, 0] == 0 and shots[-1, 1] == len(frames)
    np.testing.assert_array_equal(shots[1:, 0], shots[:-1, 1])
    np.testing.assert_array_equal(cuts, shots[1:, 0])
    lengths = shots[:, 1] - shots[:, 0]
    assert (lengths >= 4).all() and (lengths <= 6).all()
    assert 2 <= len(shots) <= 3


def test_flow_is_zero_across_cuts_and_nonzero_within_shots(clip):
    _, gt = clip
    flow, cuts = gt["flow"], gt["cuts"]
    for cut in cuts:
        assert not flow[cut - 1].any()
    within = [t for t in range(len(flow)) if t + 1 not in set(cuts.tolist())]
    assert all(np.abs(flow[t]).max() > 0.1 for t in within)


def test_cut_is_visible(clip):
    frames, gt = clip
    f = frames.astype(np.float32)
    step = np.abs(np.diff(f, axis=0)).mean(axis=(1, 2, 3))
    cut_steps = step[gt["cuts"] - 1]
    other = np.delete(step, gt["cuts"] - 1)
    assert cut_steps.min() > 2.0 * np.median(other)


@pytest.mark.parametrize(("blur", "max_error"), [(0.6, 3.5), (2.0, 1.0)])
def test_warping_next_frame_with_gt_flow_reproduces_frame(blur, max_error):
    # Only double bilinear resampling of the texture remains, which a smoother texture shrinks.
    frames, gt = render_clip(seed=7, **SMALL, texture_blur=blur)
    flow, inst = gt["flow"], gt["instances"]
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    cuts = set(gt["cuts"].tolist())
    checked = 0
    for t in range(len(flow)):
        if t + 1 in cuts:
            continue
        map_x, map_y = xs + flow[t, ..., 0], ys + flow[t, ..., 1]
        warped = cv2.remap(
            frames[t + 1].astype(np.float32), map_x, map_y, cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )  # fmt: skip
        tx = np.clip(np.rint(map_x).astype(int), 0, W - 1)
        ty = np.clip(np.rint(map_y).astype(int), 0, H - 1)
        # away from occlusion edges: same layer at both ends, not near a boundary, inside the frame
        valid = (inst[t + 1][ty, tx] == inst[t]) & ~_edges(inst[t])
        valid &= (map_x >= 1) & (map_x <= W - 2) & (map_y >= 1) & (map_y <= H - 2)
        assert valid.mean() > 0.4
        err = np.abs(warped - frames[t]).mean(axis=2)[valid]
        still = np.abs(frames[t + 1].astype(np.float32) - frames[t]).mean(axis=2)[valid]
        assert err.mean() < max_error
        if blur > 1.0 and still.mean() > 3.0:  # and beats assuming no motion by far
            assert err.mean() < 0.4 * still.mean()
        checked += 1
    assert checked >= 3


def test_wrong_flow_does_not_reproduce_frame(clip):
    # the warping test above could fail to fail; a flow off by one pixel must do worse
    frames, gt = clip
    t = 0
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    errors = []
    for shift in (0.0, 1.0):
        warped = cv2.remap(
            frames[t + 1].astype(np.float32), xs + gt["flow"][t, ..., 0] + shift,
            ys + gt["flow"][t, ..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE,
        )  # fmt: skip
        core = ~_edges(gt["instances"][t], 3)
        core[:, :3] = core[:, -3:] = core[:3] = core[-3:] = False
        errors.append(np.abs(warped - frames[t]).mean(axis=2)[core].mean())
    assert errors[1] > 1.5 * errors[0]


def test_masks_agree_with_classes(clip):
    _, gt = clip
    inst, cls = gt["instances"], gt["classes"]
    np.testing.assert_array_equal(inst == 0, cls == 0)
    assert cls.max() <= len(CLASS_NAMES) - 1
    for start, end in gt["shots"]:
        for instance in np.unique(inst[start:end]):
            if instance == 0:
                continue
            # an instance keeps one class for its whole shot
            assert len(np.unique(cls[start:end][inst[start:end] == instance])) == 1


def test_objects_move_faster_than_background():
    frames, gt = render_clip(
        seed=3, height=72, width=96, shots_per_video=(1, 1), frames_per_shot=(6, 6),
        objects_per_shot=(2, 2),
    )  # fmt: skip
    speed = np.linalg.norm(gt["flow"], axis=3)
    moving = gt["instances"][:-1] > 0
    assert 0.05 < moving.mean() < 0.8
    assert np.median(speed[moving]) > np.median(speed[~moving])
    assert np.median(speed[moving]) > 1.0


def test_object_area_matches_request():
    _, gt = render_clip(
        seed=11, height=96, width=128, shots_per_video=(1, 1), frames_per_shot=(2, 2),
        objects_per_shot=(1, 1), object_area=(0.15, 0.15), object_margin=1.0,
        object_scale_rate=(1.0, 1.0),
    )  # fmt: skip
    fraction = (gt["instances"][0] > 0).mean()
    assert 0.13 < fraction < 0.17


def test_zero_objects_gives_background_only():
    _, gt = render_clip(seed=1, **{**SMALL, "objects_per_shot": (0, 0)})
    assert not gt["instances"].any() and not gt["classes"].any()


def test_written_video_reads_back(tmp_path, clip):
    frames, gt = clip
    path = tmp_path / "video_000.avi"
    write_video(path, frames, fps=25.0, codec="FFV1")
    back = _read_video(path)
    assert back.shape == frames.shape
    assert np.abs(back.astype(np.int16) - frames).mean() < 0.5  # FFV1 is lossless
    assert [p.name for p in tmp_path.iterdir()] == ["video_000.avi"]  # no temporary left over


def test_mjpg_with_quality_reads_back(tmp_path, clip):
    frames, _ = clip
    path = tmp_path / "video_001.avi"
    write_video(path, frames, fps=10.0, codec="MJPG", quality=95)
    back = _read_video(path)
    assert back.shape == frames.shape
    assert np.abs(back.astype(np.int16) - frames).mean() < 6.0


def test_write_synthetic_video(tmp_path):
    video, gt_path = tmp_path / "video_002.avi", tmp_path / "video_002.gt.npz"
    summary = write_synthetic_video(video, gt_path, seed=4, fps=12.0, **SMALL)
    frames, gt = render_clip(seed=4, **SMALL)
    with np.load(gt_path) as stored:
        assert set(stored.files) == set(gt)
        for key in gt:
            np.testing.assert_array_equal(stored[key], gt[key])
    assert _read_video(video).shape == frames.shape
    assert summary["frames"] == len(frames) and summary["cuts"] == gt["cuts"].tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["video_002.avi", "video_002.gt.npz"]


@pytest.mark.parametrize("level", [0, 1, 9])
def test_ground_truth_round_trips_at_every_compression(tmp_path, clip, level):
    _, gt = clip
    path = tmp_path / "g.gt.npz"
    synthetic_io.write_ground_truth(path, gt, compress_level=level)
    with np.load(path) as stored:  # no pickle needed, class names included
        for key in gt:
            np.testing.assert_array_equal(stored[key], gt[key])


def test_bad_compress_level_rejected(tmp_path, clip):
    with pytest.raises(ValueError):
        synthetic_io.write_ground_truth(tmp_path / "g.npz", clip[1], compress_level=10)
    assert not list(tmp_path.iterdir())


def test_labelled_frames_consistent():
    images, classes, labels = render_labelled_frames(seed=2, n=6, height=H, width=W)
    assert images.shape == (6, H, W, 3) and images.dtype == np.uint8
    assert classes.shape == (6, H, W) and classes.dtype == np.uint8
    assert labels.shape == (6,) and labels.dtype == np.int64
    for image_classes, label in zip(classes, labels, strict=True):
        assert 1 <= label < len(CLASS_NAMES)
        assert (image_classes == label).any()
    again = render_labelled_frames(seed=2, n=6, height=H, width=W)
    np.testing.assert_array_equal(again[0], images)
    np.testing.assert_array_equal(again[2], labels)
    other = render_labelled_frames(seed=3, n=6, height=H, width=W)
    assert not np.array_equal(other[0], images)


def test_label_is_class_of_largest_object():
    # one object per image: the label is the only non-background class present
    _, classes, labels = render_labelled_frames(
        seed=5, n=8, height=H, width=W, objects_per_image=(1, 1)
    )
    for image_classes, label in zip(classes, labels, strict=True):
        present = set(np.unique(image_classes).tolist()) - {0}
        assert present == {int(label)}


def test_labelled_frames_cover_several_classes():
    _, _, labels = render_labelled_frames(seed=0, n=24, height=32, width=32)
    assert len(np.unique(labels)) >= 3


@pytest.mark.parametrize(
    "overrides",
    [
        {"height": 16},
        {"width": 8.5},
        {"seed": -1},
        {"shots_per_video": (3, 2)},
        {"shots_per_video": (0, 1)},
        {"frames_per_shot": (1, 3)},
        {"frames_per_shot": (5,)},
        {"objects_per_shot": (2, 1)},
        {"objects_per_shot": (0, 99)},
        {"object_area": (0.3, 0.1)},
        {"object_area": (0.0, 0.1)},
        {"object_speed": (float("nan"), 1.0)},
        {"object_scale_rate": (0.0, 1.0)},
        {"background_zoom": (1.1, 1.0)},
        {"texture_blur": -1.0},
        {"noise_std": "lots"},
    ],
)
def test_bad_clip_parameters_rejected(overrides):
    params = {"seed": 0, **SMALL, **overrides}
    with pytest.raises(ValueError) as info:
        render_clip(**params)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "overrides",
    [{"n": 0}, {"objects_per_image": (0, 1)}, {"height": 10}, {"object_area": (0.2, 0.9)}],
)
def test_bad_labelled_parameters_rejected(overrides):
    with pytest.raises(ValueError):
        render_labelled_frames(**{"seed": 0, "n": 2, "height": H, "width": W, **overrides})


def test_bad_video_parameters_rejected(tmp_path, clip):
    frames, _ = clip
    with pytest.raises(ValueError):
        write_video(tmp_path / "a.avi", frames.astype(np.float32))
    with pytest.raises(ValueError):
        write_video(tmp_path / "a.avi", frames, codec="FF")
    with pytest.raises(ValueError):
        write_video(tmp_path / "a.avi", frames, codec="FFV1", quality=90)
    with pytest.raises(ValueError):
        write_video(tmp_path / "a.avi", frames, fps=0)
    assert not list(tmp_path.iterdir())


def test_textures_are_bundled_photos():
    photos = synthetic_scene._photos()
    assert len(photos) == len(synthetic_scene.TEXTURE_PHOTOS) >= 8
    for image, _ in photos:
        assert image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 150
