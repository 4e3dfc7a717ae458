"""Tests for models/data.py: augmentation geometry, per-method views, weighting, worker loading."""

from __future__ import annotations

import os
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_shards import make_set

from models import data as md
from pipeline import guidance as g
from pipeline.shards.reader import read_index
from pipeline.shards.writer import write_shards

GUIDANCE = {"kernel_size": 9, "grid_stride": 16, "max_points": 20}
CROP = 32


@pytest.fixture(scope="module")
def shard_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    paths = []
    for name, n_videos in (("a", 3), ("b", 2)):
        videos = make_set(root / name, n_videos, n_pairs=4)
        write_shards(videos, root / name / "shards", target_mb=0.05, val_fraction=0.34, seed=1)
        paths.append(str(root / name / "shards" / "index.json"))
    return paths


def ramp_sample(height=40, width=60, u=3.0, v=-1.0):
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None]
    flow = np.zeros((height, width, 2), np.float32)
    flow[..., 0], flow[..., 1] = u, v
    trimap = np.zeros((height, width), np.uint8)
    trimap[:, : width // 4] = 1
    trimap[0] = 255
    return {"image": image, "flow": flow, "valid": np.ones((height, width), bool), "trimap": trimap}


def test_flip_mirrors_image_and_negates_u():
    sample = ramp_sample()
    out = md.apply_geometry(sample, md.Geometry(1.0, 0, 0, 40, 60, True))
    np.testing.assert_array_equal(out["image"], sample["image"][:, ::-1])
    np.testing.assert_array_equal(out["trimap"], sample["trimap"][:, ::-1])
    assert np.all(out["flow"][..., 0] == -3.0) and np.all(out["flow"][..., 1] == -1.0)
    assert np.all(sample["flow"][..., 0] == 3.0)  # the stored sample is untouched
    # a rightward-moving object: after the flip it sits mirrored and moves left
    assert out["image"][0, 0, 0] > out["image"][0, -1, 0]


def test_flip_of_a_non_constant_flow_mirrors_the_field_and_negates_u():
    """Both halves of a flip matter: the field is mirrored (pixel x takes the vector of
    W-1-x) and u changes sign; v keeps its sign. A constant field cannot tell them apart."""
    sample = ramp_sample()
    ys, xs = np.mgrid[0:40, 0:60].astype(np.float32)
    u, v = 0.1 * xs + 0.01 * ys - 2.0, 0.2 * ys - 0.03 * xs + 0.5
    sample["flow"] = np.stack([u, v], axis=-1)
    out = md.apply_geometry(sample, md.Geometry(1.0, 0, 0, 40, 60, True))
    np.testing.assert_allclose(out["flow"][..., 0], -u[:, ::-1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(out["flow"][..., 1], v[:, ::-1], rtol=0, atol=1e-6)
    # hand-picked pixel: (y=5, x=0) holds the vector of (5, 59) with u negated
    assert out["flow"][5, 0, 0] == pytest.approx(-(0.1 * 59 + 0.05 - 2.0), abs=1e-6)
    assert out["flow"][5, 0, 1] == pytest.approx(1.0 - 0.03 * 59 + 0.5, abs=1e-6)


def test_flow_scales_with_the_image():
    height, width, a, b = 40, 60, 0.05, -0.02
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    sample = ramp_sample(height, width)
    sample["flow"] = np.stack([a * xs, b * ys], -1)  # linear field: interpolation is exact
    scale, y0, x0 = 1.7, 5, 9
    out = md.apply_geometry(sample, md.Geometry(scale, y0, x0, 30, 40, False))
    assert out["image"].shape == (30, 40, 3) and out["flow"].shape == (30, 40, 2)
    yd, xd = np.mgrid[0:30, 0:40].astype(np.float32)
    xs_src = (xd + x0 + 0.5) / scale - 0.5
    ys_src = (yd + y0 + 0.5) / scale - 0.5
    # OpenCV warps at 1/32-pixel coordinate precision; a half-pixel slip would be ~20x larger.
    np.testing.assert_allclose(out["flow"][..., 0], scale * a * xs_src, atol=4e-3)
    np.testing.assert_allclose(out["flow"][..., 1], scale * b * ys_src, atol=2e-3)
    assert set(np.unique(out["trimap"])) <= {0, 1, 255}  # nearest: labels never blend


def test_draw_geometry_rules():
    rng = np.random.default_rng(0)
    draws = [
        md.draw_geometry(rng, 48, 64, crop_size=32, scale_range=(0.8, 1.5)) for _ in range(200)
    ]
    assert (
        all(0.8 <= g.scale <= 1.5 for g in draws) and 0.2 < np.mean([g.flip for g in draws]) < 0.8
    )
    assert all(g.y0 + 32 <= int(48 * g.scale) and g.x0 + 32 <= int(64 * g.scale) for g in draws)
    small = md.draw_geometry(rng, 20, 64, crop_size=32, scale_range=(0.5, 0.5))
    assert small.scale == pytest.approx(1.6)  # raised so the frame covers the crop
    val = md.draw_geometry(rng, 48, 64, crop_size=(32, 40), train=False)
    assert val == md.Geometry(1.0, 8, 12, 32, 40, False)
    with pytest.raises(ValueError):
        md.draw_geometry(rng, 48, 64, crop_size=0)
    with pytest.raises(ValueError):
        md.draw_geometry(rng, 48, 64, crop_size=32, scale_range=(1.2, 1.0))


@pytest.mark.parametrize(
    ("view", "keys"),
    [
        ("cmp", {"image": (3, torch.float32), "flow": (2, torch.float32)}),
        ("cpfs", {"image": (3, torch.float32), "flow": (2, torch.float32)}),
        ("motion_masks", {"image": (3, torch.float32), "trimap": (None, torch.int64)}),
    ],
)
def test_views(shard_sets, view, keys):
    ds = md.ShardDataset(shard_sets, view=view, crop_size=CROP, guidance=GUIDANCE, seed=0)
    wire = ds[0]
    # The loader ships the image as uint8 and CMP's guidance as padded points ...
    assert wire["image"].dtype == torch.uint8 and wire["image"].shape == (CROP, CROP, 3)
    if view == "cmp":
        assert wire["points"].shape == (GUIDANCE.get("max_points", 150), 2)
    # ... and the batch contract appears after transfer.
    item = {k: v[0] for k, v in md.to_model_batch({k: v[None] for k, v in wire.items()}).items()}
    expected = set(keys) | ({"sparse", "valid"} if view == "cmp" else set())
    expected |= {"valid"} if view == "cpfs" else set()
    assert set(item) == expected
    for key, (channels, dtype) in keys.items():
        shape = (CROP, CROP) if channels is None else (channels, CROP, CROP)
        assert item[key].shape == shape and item[key].dtype == dtype
    assert abs(float(item["image"].mean())) < 3  # ImageNet-normalised, not 0..255
    if view == "cmp":
        assert item["sparse"].shape == (4, CROP, CROP) and item["valid"].dtype == torch.bool
        mask = item["sparse"][2] > 0
        n_points = int((wire["points"][:, 0] >= 0).sum())
        assert mask.sum() == n_points > 0 and torch.equal(item["sparse"][2], item["sparse"][3])
        torch.testing.assert_close(item["sparse"][:2][:, mask], item["flow"][:, mask])
        assert torch.count_nonzero(item["sparse"][:2][:, ~mask]) == 0
    if view == "cpfs":
        assert item["flow"].abs().max() <= 1.0
        assert item["flow"].abs().max() > 0.3  # |flow| up to 5 px -> log(6)/log(57) = 0.44
    if view == "motion_masks":
        assert set(item["trimap"].unique().tolist()) <= {0, 1, 255}
        n_masked = sum(
            sum(e["has_mask"])
            for p in shard_sets
            for e in read_index(p)["shards"]
            if e["split"] == "train"
        )
        assert len(ds) == n_masked


def test_split_and_weights(shard_sets):
    train = md.ShardDataset(shard_sets, split="train", crop_size=CROP)
    val = md.ShardDataset(shard_sets, split="val", crop_size=CROP)
    total = sum(read_index(p)["totals"]["n_samples"] for p in shard_sets)
    assert len(train) + len(val) == total and len(val) > 0
    sampler = md.SeededWeightedSampler(train.sample_weights([1.0, 3.0]), 4000, seed=0)
    sets = train.set_of[[i for i, _ in sampler]]
    assert 0.7 < np.mean(sets == 1) < 0.8  # set b gets 3/4 of the draws despite its size
    only_a = md.SeededWeightedSampler(train.sample_weights([1.0, 0.0]), 200, seed=0)
    assert np.all(train.set_of[[i for i, _ in only_a]] == 0)
    assert list(sampler) != list(sampler)  # a new epoch draws anew
    with pytest.raises(ValueError):
        train.sample_weights([1.0])
    with pytest.raises(ValueError):
        train.sample_weights([1.0, -1.0])


def test_dataset_pickles_after_reading(shard_sets):
    ds = md.ShardDataset(shard_sets, view="cpfs", crop_size=CROP, seed=0)
    first = ds[(0, 123)]
    clone = pickle.loads(pickle.dumps(ds))
    assert all(r._file is None for r in clone.readers)
    torch.testing.assert_close(clone[(0, 123)], first)


def batches(module: md.ShardDataModule, n: int) -> list[dict[str, torch.Tensor]]:
    loader = module.train_dataloader()
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


# A spawned worker imports torch and Lightning afresh (~6 s of CPU each on this machine).
@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_workers_match_single_process(shard_sets, context):
    common = dict(crop_size=CROP, batch_size=3, guidance=GUIDANCE, seed=5, scale_range=(0.9, 1.3))
    single = batches(md.CMPDataModule(shard_sets, [1.0, 1.0], num_workers=0, **common), 3)
    module = md.CMPDataModule(
        shard_sets, [1.0, 1.0], num_workers=2, multiprocessing_context=context, **common
    )
    multi = batches(module, 3)
    assert len(multi) == 3
    for a, b in zip(single, multi, strict=True):
        assert set(a) == {"image", "flow", "points", "valid"}
        for key in a:
            torch.testing.assert_close(a[key], b[key])


def test_datamodule_val_and_errors(shard_sets, tmp_path):
    module = md.ShardDataModule(
        shard_sets, view="cpfs", crop_size=CROP, batch_size=2, num_workers=0
    )
    val = next(iter(module.val_dataloader()))
    assert val["image"].shape == (2, CROP, CROP, 3)
    assert module.on_after_batch_transfer(val, 0)["image"].shape == (2, 3, CROP, CROP)
    again = next(iter(module.val_dataloader()))
    torch.testing.assert_close(val, again)  # validation crops are deterministic
    single = make_set(tmp_path, 1, n_pairs=2)
    write_shards(single, tmp_path / "one", val_fraction=0.5)
    one = md.CMPDataModule([str(tmp_path / "one")], crop_size=CROP, num_workers=0)
    assert one.val_dataloader() == []
    with pytest.raises(ValueError):
        md.ShardDataModule(shard_sets, view="depth")
    with pytest.raises(ValueError):
        md.ShardDataModule(shard_sets, [1.0])
    with pytest.raises(ValueError):
        md.CMPDataModule(shard_sets, view="cpfs")
    with pytest.raises(ValueError):
        md.ShardDataModule(shard_sets, multiprocessing_context="threads")
    with pytest.raises(ValueError):
        md.ShardDataset(shard_sets, split="test")


# --------------------------------------------------------------------------- crop windows


@pytest.mark.parametrize(
    "geom",
    [
        md.Geometry(1.0, 5, 9, 40, 48, False),
        md.Geometry(1.0, 0, 0, 64, 96, True),
        md.Geometry(1.37, 11, 30, 40, 48, True),
        md.Geometry(0.8, 3, 7, 40, 48, False),
        md.Geometry(2.0, 0, 150, 40, 42, False),  # touches the bottom-right corner
    ],
)
def test_warping_the_source_window_equals_warping_the_frame(geom):
    rng = np.random.default_rng(0)
    height, width = 64, 96
    sample = {
        "image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "flow": rng.normal(0, 3, (height, width, 2)).astype(np.float32),
        "valid": rng.random((height, width)) > 0.2,
        "trimap": rng.integers(0, 2, (height, width), dtype=np.uint8),
        "soft": rng.random((height, width)).astype(np.float32),
    }
    whole = md.apply_geometry(sample, geom)
    top, bottom, left, right = md.source_window(geom, height, width)
    assert 0 <= top < bottom <= height and 0 <= left < right <= width
    if geom.scale == 1.0:
        assert (bottom - top, right - left) == (geom.height, geom.width)
    cut = {k: v[top:bottom, left:right] for k, v in sample.items()}
    part = md.apply_geometry(cut, geom, origin=(top, left))
    for name in ("image", "valid", "trimap"):
        np.testing.assert_array_equal(part[name], whole[name])
    for name in ("flow", "soft"):
        np.testing.assert_allclose(part[name], whole[name], atol=1e-4)


def test_apply_geometry_leaves_the_input_untouched():
    flow = np.ones((20, 30, 2), np.float32)
    sample = {"flow": flow, "valid": np.ones((20, 30), bool)}
    for flip in (False, True):
        out = md.apply_geometry(sample, md.Geometry(1.0, 0, 0, 20, 30, flip))
        out["flow"][...] = 7.0
        assert (flow == 1.0).all()


def test_model_batch_normalises_the_image_and_scatters_the_points():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (2, 17, 23, 3), dtype=np.uint8)
    flow = torch.from_numpy(rng.normal(0, 2, (2, 2, 17, 23)).astype(np.float32))
    points = torch.tensor([[[0, 0], [16, 22], [-1, -1]], [[5, 7], [-1, -1], [-1, -1]]])
    batch = md.to_model_batch({"image": torch.from_numpy(image), "flow": flow, "points": points})
    mean, std = np.float32(md.IMAGENET_MEAN), np.float32(md.IMAGENET_STD)
    expected = (image.astype(np.float32) / 255.0 - mean) / std
    np.testing.assert_allclose(batch["image"].numpy(), expected.transpose(0, 3, 1, 2), atol=1e-5)
    assert batch["image"].is_contiguous() and "points" not in batch
    sparse = batch["sparse"]
    for b, yx in enumerate(([(0, 0), (16, 22)], [(5, 7)])):
        ys, xs = zip(*yx, strict=True)
        assert int((sparse[b, 2] > 0).sum()) == len(yx)
        for y, x in yx:
            torch.testing.assert_close(sparse[b, :2, y, x], flow[b, :, y, x])
            assert sparse[b, 2, y, x] == 1 and sparse[b, 3, y, x] == 1
        assert torch.count_nonzero(sparse[b, :2]) == 2 * len(set(zip(ys, xs, strict=True)))
    # One point per sample in the HWC numpy builder agrees with the batched one.
    single = g.sparse_flow_input(flow[1].numpy().transpose(1, 2, 0), np.array([[5, 7]]))
    np.testing.assert_array_equal(sparse[1].numpy(), single.transpose(2, 0, 1))
    # An already expanded batch passes through unchanged.
    again = md.to_model_batch(batch)
    assert all(again[k] is batch[k] for k in batch)


def test_bad_image_for_a_view_is_rejected():
    sample = ramp_sample()
    sample["image"] = sample["image"].astype(np.float32)
    with pytest.raises(ValueError, match="uint8"):
        md.make_view(sample, "cpfs", rng=np.random.default_rng(0))


def test_reused_batch_memory_gives_the_batches_of_fresh_shared_memory(shard_sets):
    """models/shm_batches.py (on by default) against default_collate (the loader before it)."""
    common = dict(crop_size=CROP, batch_size=3, guidance=GUIDANCE, seed=5, scale_range=(0.9, 1.3))
    common.update(num_workers=2, multiprocessing_context="fork", samples_per_epoch=60)

    def run(reuse: bool) -> tuple[list[dict[str, torch.Tensor]], set[int]]:
        module = md.CMPDataModule(shard_sets, [1.0, 1.0], reuse_worker_memory=reuse, **common)
        out, buffers = [], set()
        for batch in module.train_dataloader():
            fd, _ = batch["image"].untyped_storage()._share_fd_cpu_()  # its own, no copy
            buffers.add(os.fstat(fd).st_ino)
            out.append({k: v.clone() for k, v in batch.items()})
        return out, buffers

    before, _ = run(False)
    after, buffers = run(True)
    assert len(before) == len(after) == 20
    for a, b in zip(before, after, strict=True):
        assert list(a) == list(b) == ["image", "flow", "points", "valid"]
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    assert len(buffers) <= 10  # 20 batches through 2 workers x 5 buffers


def test_a_resumed_loader_gives_the_batches_an_uninterrupted_one_gives_next(shard_sets):
    """The train loader of a run restored at global step 5 (12 draws in batches of 3: 4 an
    epoch, so mid-epoch 1) yields the uninterrupted loader's batches 5.. across the next epoch
    boundary: the same samples, crops and guidance points, with workers or without."""
    common = dict(crop_size=CROP, batch_size=3, guidance=GUIDANCE, seed=5, samples_per_epoch=12)
    whole = md.CMPDataModule(shard_sets, [1.0, 1.0], num_workers=0, **common).train_dataloader()
    expected = [batch for _ in range(3) for batch in whole]
    module = md.CMPDataModule(
        shard_sets, [1.0, 1.0], num_workers=2, multiprocessing_context="fork", **common
    )
    module.trainer = SimpleNamespace(global_step=5)  # what Lightning restored from last.ckpt
    loader = module.train_dataloader()
    got = [batch for _ in range(2) for batch in loader]
    assert len(got) == 7 and len(expected) == 12
    for a, b in zip(expected[5:], got, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key
