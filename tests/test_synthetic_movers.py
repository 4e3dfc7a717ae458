"""Mover clips (issue 12): exact ground truth of the pair 0 -> gap, sizes and displacements in range."""

import cv2
import numpy as np
import pytest

from pipeline.synthetic_movers import render_mover_clip


def _warp_back(frame: np.ndarray, flow: np.ndarray) -> np.ndarray:
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(
        frame.astype(np.float32), xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR
    )


@pytest.mark.parametrize("gap", [1, 5])
def test_ground_truth_maps_frame_0_onto_frame_gap(gap):
    clip = render_mover_clip(seed=3, gap=gap, short_side=144)
    assert clip.frames.shape == (gap + 1, 144, 192, 3)
    warped = _warp_back(clip.frames[-1], clip.flow)
    error = np.abs(warped - clip.frames[0]).mean(axis=-1)
    seen = ~clip.occluded
    # bilinear resampling of a blurred texture: ~1 grey level (the object's soft edge mixes layers)
    assert error[seen & ~clip.mover].mean() < 2.0
    interior = seen & (cv2.erode(clip.mover.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0)
    # the object's fine texture resamples worse, but the true flow beats the background's by far
    background_only = clip.flow.copy()
    background_only[clip.mover] = np.median(clip.flow[~clip.mover], axis=0)
    wrong = np.abs(_warp_back(clip.frames[-1], background_only) - clip.frames[0]).mean(axis=-1)
    assert error[interior].mean() < 4.0
    assert error[interior].mean() < 0.3 * wrong[interior].mean()
    assert error[clip.occluded].mean() > 10.0


def test_mover_moves_relative_to_background_within_range():
    for seed in range(4):
        clip = render_mover_clip(seed=seed, gap=4, short_side=416)
        assert 32 <= clip.object_size <= 128
        background = np.median(clip.flow[~clip.mover], axis=0)
        mover = np.median(clip.flow[clip.mover], axis=0)
        assert 10.0 <= np.hypot(*(mover - background)) <= 60.0 + 1e-4
        assert clip.mover.sum() > 0.3 * 32 * 32


def test_bad_gap_is_rejected():
    with pytest.raises(ValueError, match="gap"):
        render_mover_clip(seed=0, gap=0)
