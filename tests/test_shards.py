"""Tests for pipeline.shards: packing loose stage outputs into HDF5 shards and reading them back."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from pipeline.shards.codec import LAYOUTS, SCHEMA_VERSION
from pipeline.shards.loose import VideoInput
from pipeline.shards.reader import ShardReader, read_index
from pipeline.shards.validate import main_validate, validate_shards
from pipeline.shards.writer import _ShardWriter, array_filter, split_videos, write_shards
from pipeline.video import file_sha256

HEIGHT, WIDTH = 48, 64


def encode_kitti(flow: np.ndarray) -> bytes:
    """KITTI 16-bit PNG written with cv2 directly (u, v, valid in RGB order -> reversed for cv2)."""
    kitti = np.empty(flow.shape[:2] + (3,), np.uint16)
    kitti[..., :2] = np.round(flow * 64.0 + 32768).clip(0, 65535)
    kitti[..., 2] = 1
    ok, buf = cv2.imencode(".png", kitti[..., ::-1])
    assert ok
    return buf.tobytes()


def make_video(
    root: Path,
    video_id: str,
    *,
    n_pairs: int = 3,
    height: int = HEIGHT,
    width: int = WIDTH,
    masks: bool = True,
    guidance: bool = True,
    seed: int = 0,
    flow_fn=None,
) -> VideoInput:
    """Loose flow / masks / guidance outputs of one video, as docs/CONTRACTS.md describes them."""
    rng = np.random.default_rng(seed)
    flow_dir = root / "flow" / video_id
    (flow_dir / "frames").mkdir(parents=True)
    (flow_dir / "flow").mkdir()
    rows, mask_rows, gd = [], [], {"ids": [], "points": [], "vectors": [], "counts": []}
    for k in range(n_pairs):
        key = f"s000_f{k:06d}"
        image = cv2.GaussianBlur(
            rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (5, 5), 0
        )
        cv2.imwrite(
            str(flow_dir / f"frames/{key}.jpg"), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95]
        )
        if flow_fn is None:
            flow = rng.uniform(-5, 5, (height, width, 2)).astype(np.float32)
        else:
            flow = flow_fn(height, width).astype(np.float32)
        (flow_dir / f"flow/{key}_g01.png").write_bytes(encode_kitti(flow))
        sample_id = f"set/{video_id}/0/{k}"
        rows.append(
            [
                sample_id,
                video_id,
                0,
                k,
                1,
                f"frames/{key}.jpg",
                f"flow/{key}_g01.png",
                height,
                width,
            ]
            + [1.0, 5.0, 0.0, 0]
        )
        if masks:
            mask_dir = root / "masks" / video_id
            (mask_dir / "soft").mkdir(parents=True, exist_ok=True)
            (mask_dir / "trimap").mkdir(exist_ok=True)
            soft = np.zeros((height, width), np.uint8)
            soft[10:30, 20:40] = 230
            trimap = np.where(soft > 178, 1, 0).astype(np.uint8)
            trimap[9:11, :] = 255
            cv2.imwrite(str(mask_dir / f"soft/{key}.png"), soft)
            cv2.imwrite(str(mask_dir / f"trimap/{key}.png"), trimap)
            # the last frame is dropped by the masks stage: its sample must carry no mask
            status = "dropped" if k == n_pairs - 1 else "kept"
            mask_rows.append([key, 0, k, status, "", 0.13, f"soft/{key}.png", f"trimap/{key}.png"])
        n_points = int(rng.integers(0, 5))
        points = np.stack([rng.integers(0, height, n_points), rng.integers(0, width, n_points)], 1)
        gd["ids"].append(sample_id)
        gd["points"].append(points.astype(np.int32).reshape(-1, 2))
        gd["vectors"].append(flow[points[:, 0], points[:, 1]].reshape(-1, 2))
        gd["counts"].append(n_points)
    header = "sample_id video_id shot t gap frame flow height width mean_mag max_mag frac_saturated static"
    write_tsv(flow_dir / "pairs.tsv", header.split(), rows)
    masks_dir = None
    if masks:
        masks_dir = root / "masks" / video_id
        header = "key shot frame status reason fg_fraction soft trimap"
        write_tsv(masks_dir / "frames.tsv", header.split(), mask_rows)
    npz = None
    if guidance:
        npz = root / "guidance" / f"{video_id}.npz"
        npz.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            npz,
            sample_ids=np.array(gd["ids"]),
            offsets=np.concatenate([[0], np.cumsum(gd["counts"])]).astype(np.int64),
            points=np.concatenate(gd["points"]).astype(np.int32),
            vectors=np.concatenate(gd["vectors"]).astype(np.float32),
            n_watershed=np.array(gd["counts"], np.int32),
            n_grid=np.zeros(n_pairs, np.int32),
        )
    return VideoInput(video_id, flow_dir, masks_dir, npz)


def write_tsv(path: Path, header: list[str], rows: list[list]) -> None:
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def make_set(root: Path, n_videos: int = 4, **kwargs) -> list[VideoInput]:
    return [make_video(root, f"vid{v}-abcdef{v:02d}", seed=v, **kwargs) for v in range(n_videos)]


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("loose")
    videos = make_set(root)
    out = root / "shards"
    index = write_shards(
        videos, out, target_mb=0.02, val_fraction=0.25, seed=3, config={"k": 1}, flow_method="dis"
    )
    return videos, out, index


def test_split_is_by_video_and_index_is_consistent(packed):
    videos, out, index = packed
    by_split = {"train": set(), "val": set()}
    for entry in index["shards"]:
        with h5py.File(out / entry["file"]) as f:
            by_split[entry["split"]] |= {v.decode() for v in f["video_id"][()]}
            assert f.attrs["split"] == entry["split"]
        assert entry["sha256"] == file_sha256(out / entry["file"])
        assert entry["n_samples"] == len(entry["sample_ids"])
    assert by_split["train"] and by_split["val"]
    assert not by_split["train"] & by_split["val"]
    assert set(index["splits"]["val"]["videos"]) == by_split["val"]
    assert index["totals"]["n_samples"] == 12 == sum(s["n_samples"] for s in index["shards"])
    assert index["totals"]["n_shards"] == len(index["shards"]) > 2  # small target -> several
    assert index["config"] == {"k": 1} and index["flow_method"] == "dis"
    assert index["schema_version"] == SCHEMA_VERSION
    assert json.loads((out / "index.json").read_text()) == index
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [s["file"] for s in index["shards"]] + ["index.json"]
    )


def test_split_rules():
    ids = [f"v{i}" for i in range(10)]
    a = split_videos(ids, val_fraction=0.2, seed=1)
    assert sorted(a.values()).count("val") == 2
    assert a == split_videos(ids[::-1], val_fraction=0.2, seed=1)  # order-independent
    assert list(split_videos(["only"], val_fraction=0.5, seed=0).values()) == ["train"]
    two = split_videos(["a", "b"], val_fraction=0.01, seed=0)
    assert sorted(two.values()) == ["train", "val"]  # at least one each
    assert "train" in split_videos(["a", "b"], val_fraction=0.99, seed=0).values()
    with pytest.raises(ValueError):
        split_videos(ids, val_fraction=1.0, seed=0)
    with pytest.raises(ValueError):
        split_videos(["a", "a"], val_fraction=0.1, seed=0)


def test_one_video_goes_to_train(tmp_path):
    index = write_shards(make_set(tmp_path, 1), tmp_path / "s", val_fraction=0.5)
    assert index["splits"]["val"]["n_samples"] == 0 and index["splits"]["train"]["n_samples"] == 3
    assert index["notes"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_round_trip(tmp_path, layout):
    videos = make_set(tmp_path, 2)
    index = write_shards(videos, tmp_path / "s", layout=layout, val_fraction=0.0)
    assert index["totals"]["n_samples"] == 6
    seen = 0
    for entry in index["shards"]:
        reader = ShardReader(tmp_path / "s" / entry["file"])
        for i in range(len(reader)):
            got = reader.read_sample(i)
            vid = next(v for v in videos if v.video_id == got["video_id"])
            key = f"s000_f{got['t']:06d}"
            image = cv2.imread(str(vid.flow_dir / f"frames/{key}.jpg"))[..., ::-1]
            png = cv2.imread(str(vid.flow_dir / f"flow/{key}_g01.png"), cv2.IMREAD_UNCHANGED)
            flow = (png[..., 2:0:-1].astype(np.float32) - 32768) / 64
            assert got["image"].dtype == np.uint8 and got["image"].shape == (HEIGHT, WIDTH, 3)
            assert np.abs(got["image"].astype(int) - image).max() <= 1  # same JPEG decode
            assert got["flow"].dtype == np.float32
            assert np.abs(got["flow"] - flow).max() <= 1 / 128
            assert got["valid"].all()
            if got["t"] == 2:  # dropped by the masks stage
                assert got["trimap"] is None and got["soft"] is None and not got["has_mask"]
            else:
                trimap = cv2.imread(str(vid.masks_dir / f"trimap/{key}.png"), cv2.IMREAD_UNCHANGED)
                np.testing.assert_array_equal(got["trimap"], trimap)
                assert set(np.unique(got["trimap"])) == {0, 1, 255}
                assert got["soft"].max() == pytest.approx(230 / 255)
            with np.load(vid.guidance) as npz:
                j = list(npz["sample_ids"]).index(got["sample_id"])
                lo, hi = npz["offsets"][j : j + 2]
                np.testing.assert_array_equal(got["points"], npz["points"][lo:hi])
                np.testing.assert_array_equal(got["vectors"], npz["vectors"][lo:hi])
            seen += 1
        reader.close()
    assert seen == 6


def test_reader_subset_and_bounds(packed):
    _, out, index = packed
    reader = ShardReader(out / index["shards"][0]["file"])
    sample = reader.read_sample(0, fields=("image",))
    assert "flow" not in sample and "points" not in sample and sample["image"].shape[2] == 3
    with pytest.raises(IndexError):
        reader.read_sample(len(reader))
    with pytest.raises(ValueError, match="unknown fields"):
        reader.read_sample(0, fields=("depth",))


def test_unknown_schema_version_refused(tmp_path):
    index = write_shards(make_set(tmp_path, 1, n_pairs=1), tmp_path / "s")
    path = tmp_path / "s" / index["shards"][0]["file"]
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(ValueError, match="schema version 99 is not supported"):
        ShardReader(path).read_sample(0)
    with pytest.raises(ValueError, match="schema version 99"):
        len(ShardReader(path))
    data = json.loads((tmp_path / "s/index.json").read_text())
    data["schema_version"] = 7
    (tmp_path / "s/index.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="schema version 7"):
        read_index(tmp_path / "s")


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([byte ^ 0xFF]))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_validate_catches_a_flipped_byte(tmp_path, layout, capsys):
    out = tmp_path / "s"
    index = write_shards(make_set(tmp_path, 2), out, layout=layout, val_fraction=0.0)
    assert validate_shards(out)["ok"] and main_validate([str(out)]) == 0
    entry = index["shards"][0]
    path = out / entry["file"]
    with h5py.File(path) as f:
        if layout != "encoded":
            dset = f["arrays/000001/flow"]
            offset = dset.id.get_offset()  # contiguous datasets only; chunked -> chunk info
            if offset is None:
                offset = dset.id.get_chunk_info(0).byte_offset
            offset += 10
        else:
            # variable-length bytes live in the global heap: locate the JPEG of sample 1 there
            blob = f["image"][1].tobytes()
            offset = path.read_bytes().find(blob) + len(blob) // 2
    flip_byte(path, offset)
    report = validate_shards(out)
    assert not report["ok"]
    assert [c["index"] for c in report["corrupt"]] == [1]
    assert report["corrupt"][0]["sample_id"] == entry["sample_ids"][1]
    assert report["sha256_mismatch"][0]["file"] == entry["file"]
    assert main_validate([str(out)]) == 1
    assert "problem" in capsys.readouterr().err


def test_validate_reports_missing_index_and_shape_mismatch(tmp_path):
    assert main_validate([str(tmp_path)]) == 1
    out = tmp_path / "s"
    index = write_shards(make_set(tmp_path, 1, n_pairs=2), out)
    path = out / index["shards"][0]["file"]
    with h5py.File(path, "a") as f:
        f["height"][0] = HEIGHT + 1  # metadata disagrees with the stored image
        f["width"][1] = WIDTH - 1  # ... a stored array larger than the metadata says
    report = validate_shards(out)
    assert [m["index"] for m in report["shape_mismatch"]] == [0, 1] and report["sha256_mismatch"]


def test_interrupted_write_leaves_nothing_complete(tmp_path, monkeypatch):
    videos = make_set(tmp_path, 2)
    out = tmp_path / "s"
    write_shards(videos, out, val_fraction=0.0)  # an earlier complete run
    calls = {"n": 0}
    original = _ShardWriter.add

    def dying_add(self, sample):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as if the job were killed mid-shard
        original(self, sample)

    monkeypatch.setattr(_ShardWriter, "add", dying_add)
    with pytest.raises(KeyboardInterrupt):
        write_shards(videos, out, val_fraction=0.0)
    assert not (out / "index.json").exists()
    assert not list(out.glob(".*tmp*"))  # the half-written shard was removed


def test_bad_inputs_are_rejected_with_reasons(tmp_path):
    videos = make_set(tmp_path, 1, n_pairs=3)
    (videos[0].flow_dir / "frames/s000_f000001.jpg").write_bytes(b"not a jpeg")
    (videos[0].flow_dir / "flow/s000_f000002_g01.png").unlink()
    index = write_shards(videos, tmp_path / "s")
    assert index["totals"]["n_samples"] == 1 and index["totals"]["n_rejected"] == 2
    reasons = [r["reason"] for r in index["rejected"]]
    assert "not a decodable image" in reasons[0] and "No such file" in reasons[1]
    with pytest.raises(ValueError):
        write_shards(videos, tmp_path / "t", target_mb=0)
    with pytest.raises(ValueError):
        write_shards(videos, tmp_path / "t", layout="zip")
    with pytest.raises(ValueError):
        write_shards([], tmp_path / "t")


def test_wrong_size_flow_is_rejected(tmp_path):
    video = make_video(tmp_path, "v", n_pairs=1)
    (video.flow_dir / "flow/s000_f000000_g01.png").write_bytes(encode_kitti(np.zeros((8, 8, 2))))
    index = write_shards([video], tmp_path / "s")
    assert "size mismatch" in index["rejected"][0]["reason"]


# --------------------------------------------------------------------------- crop windows, codecs


@pytest.mark.parametrize(
    ("layout", "compression"),
    [
        ("raw", "blosc-lz4"),
        ("raw", "lzf"),
        ("raw", "none"),
        ("mixed", "blosc-lz4"),
        ("encoded", "none"),
    ],
)
def test_window_read_is_the_whole_read_cut(tmp_path, layout, compression):
    videos = make_set(tmp_path, 1, height=150, width=170)
    out = tmp_path / "s"
    index = write_shards(
        videos, out, layout=layout, array_compression=compression, tile_size=32, val_fraction=0.0
    )
    reader = ShardReader(out / index["shards"][0]["file"])
    for i in range(len(reader)):
        whole = reader.read_sample(i)
        for top, bottom, left, right in [(0, 150, 0, 170), (7, 100, 33, 170), (31, 33, 64, 65)]:
            part = reader.read_sample(i, window=(top, bottom, left, right))
            assert part["origin"] == (top, left)
            for name in ("image", "flow", "valid", "trimap", "soft"):
                if whole[name] is None:
                    assert part[name] is None
                    continue
                np.testing.assert_array_equal(part[name], whole[name][top:bottom, left:right])
            np.testing.assert_array_equal(part["points"], whole["points"])  # full-frame coords
    with pytest.raises(ValueError, match="window"):
        reader.read_sample(0, window=(0, 151, 0, 10))
    with pytest.raises(ValueError, match="window"):
        reader.read_sample(0, window=(5, 5, 0, 10))


def test_arrays_are_stored_in_tiles_with_the_chosen_filter(tmp_path):
    out = tmp_path / "s"
    index = write_shards(
        make_set(tmp_path, 1, height=150, width=170), out, tile_size=64, val_fraction=0.0
    )
    with h5py.File(out / index["shards"][0]["file"]) as f:
        flow = f["arrays/000000/flow"]
        assert flow.chunks == (64, 64, 3) and flow.fletcher32
        assert str(array_filter("blosc-lz4", 2)["compression"]) in flow._filters
        assert f.attrs["array_compression"] == "blosc-lz4" and f.attrs["tile_size"] == 64
        assert f.attrs["flow_codec"] == "array-kitti-uint16-blosc-lz4"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"array_compression": "zip"}, "array_compression"),
        ({"tile_size": 4}, "tile_size"),
        ({"tile_size": 64.0}, "tile_size"),
    ],
)
def test_bad_storage_options_rejected(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_shards(make_set(tmp_path, 1, n_pairs=1), tmp_path / "s", **kwargs)
