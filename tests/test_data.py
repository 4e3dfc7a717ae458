"""Tests for models/data.py: augmentation geometry, per-method views, weighting, worker loading."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from test_shards import make_set

from models import data as md
from pipeline import shards as sh

GUIDANCE = {"kernel_size": 9, "grid_stride": 16, "max_points": 20}
CROP = 32


@pytest.fixture(scope="module")
def shard_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    paths = []
    for name, n_videos in (("a", 3), ("b", 2)):
        videos = make_set(root / name, n_videos, n_pairs=4)
        sh.write_shards(videos, root / name / "shards", target_mb=0.05, val_fraction=0.34, seed=1)
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
    item = ds[0]
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
        assert mask.any() and torch.equal(item["sparse"][2], item["sparse"][3])
        torch.testing.assert_close(item["sparse"][:2][:, mask], item["flow"][:, mask])
    if view == "cpfs":
        assert item["flow"].abs().max() <= 1.0
        assert item["flow"].abs().max() > 0.3  # |flow| up to 5 px -> log(6)/log(57) = 0.44
    if view == "motion_masks":
        assert set(item["trimap"].unique().tolist()) <= {0, 1, 255}
        n_masked = sum(
            sum(e["has_mask"])
            for p in shard_sets
            for e in sh.read_index(p)["shards"]
            if e["split"] == "train"
        )
        assert len(ds) == n_masked


def test_split_and_weights(shard_sets):
    train = md.ShardDataset(shard_sets, split="train", crop_size=CROP)
    val = md.ShardDataset(shard_sets, split="val", crop_size=CROP)
    total = sum(sh.read_index(p)["totals"]["n_samples"] for p in shard_sets)
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
        assert set(a) == {"image", "flow", "sparse", "valid"}
        for key in a:
            torch.testing.assert_close(a[key], b[key])


def test_datamodule_val_and_errors(shard_sets, tmp_path):
    module = md.ShardDataModule(
        shard_sets, view="cpfs", crop_size=CROP, batch_size=2, num_workers=0
    )
    val = next(iter(module.val_dataloader()))
    assert val["image"].shape == (2, 3, CROP, CROP)
    again = next(iter(module.val_dataloader()))
    torch.testing.assert_close(val, again)  # validation crops are deterministic
    single = make_set(tmp_path, 1, n_pairs=2)
    sh.write_shards(single, tmp_path / "one", val_fraction=0.5)
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
