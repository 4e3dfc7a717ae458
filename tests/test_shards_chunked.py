"""Packing per chunk (issue 28): one job per chunk, a per-set index; an added video repacks only
its chunk, every other shard file stays byte for byte; the loader reads the chunked layout."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from models.data import ShardDataset
from pipeline.shards.chunked import (
    CHUNK_INDEX,
    split_videos_stable,
    write_chunk_shards,
    write_set_index,
)
from pipeline.shards.reader import ShardReader, read_index, split_samples
from pipeline.stages.chunk import assign_chunks
from pipeline.video import file_sha256
from tests.conftest import run_snakemake, write_avi
from tests.test_shards import make_video

FIELDS = ["image", "flow", "trimap", "soft", "guidance"]


def pack(videos, root, chunk_size=1, only=None):
    """Pack ``videos`` per chunk (pipeline.stages.chunk.assign_chunks) under ``root``; pack only
    the chunks named in ``only`` when given (what Snakemake reruns); index the set."""
    by_id = {v.video_id: v for v in videos}
    chunks = assign_chunks(sorted(by_id), chunk_size)
    for name, ids in chunks.items():
        if only is None or name in only:
            write_chunk_shards([by_id[i] for i in ids], root / name, fields=FIELDS, target_mb=0.02)
    index = write_set_index([root / c for c in chunks], root, val_fraction=0.25, seed=3)
    return chunks, index


def digests(root):
    return {
        str(p.relative_to(root)): file_sha256(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "index.json"
    }


def test_an_added_video_repacks_its_chunk_only(tmp_path):
    videos = [make_video(tmp_path, f"vid{v}-abcdef{v:02d}", seed=v) for v in range(6)]
    root = tmp_path / "shards"
    chunks, _ = pack(videos[:5], root, chunk_size=2)
    before = digests(root)
    assert any(k.endswith(".h5") for k in before)
    grown = assign_chunks(sorted(v.video_id for v in videos), 2)
    assert set(grown) >= set(chunks) and len(grown) == len(chunks)  # same chunk count (4)
    changed = [c for c in grown if grown[c] != chunks.get(c)]
    assert len(changed) == 1 and videos[5].video_id in grown[changed[0]]
    _, index = pack(videos, root, chunk_size=2, only=changed)
    after = digests(root)
    untouched = {k: v for k, v in before.items() if not k.startswith(changed[0])}
    assert untouched and {k: after[k] for k in untouched} == untouched
    assert {k for k in after if k.startswith(changed[0])} != set()
    assert videos[5].video_id in index["videos"] and index["totals"]["n_videos"] == 6
    # every shard the index names exists with the recorded digest; validate-shards agrees
    for entry in index["shards"]:
        assert file_sha256(root / entry["file"]) == entry["sha256"]
    check = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate-shards", str(root)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]


def test_the_index_splits_by_video_and_the_loader_reads_the_chunked_layout(tmp_path):
    videos = [make_video(tmp_path, f"vid{v}-abcdef{v:02d}", seed=v) for v in range(4)]
    root = tmp_path / "shards"
    chunks, index = pack(videos, root, chunk_size=2)
    assert index["packing"] == "chunked" and index["fields"] == FIELDS
    assert index["splits"]["val"]["videos"] and index["splits"]["train"]["videos"]
    assert index["totals"]["n_samples"] == 12 == sum(s["n_samples"] for s in index["shards"])
    assert index == read_index(root)
    # the split: each sample sits in the split of its video, both splits cover every sample
    seen = {"train": [], "val": []}
    for entry in index["shards"]:
        reader = ShardReader(root / entry["file"])
        for split in seen:
            for i in split_samples(index, entry, split):
                vid = reader.read_sample(int(i), fields=())["video_id"]
                assert index["videos"][vid]["split"] == split
                seen[split].append(vid)
    assert len(seen["train"]) + len(seen["val"]) == 12
    for split, n_mask_frames in (("train", 2), ("val", 2)):  # 2 of 3 frames keep a mask
        data = ShardDataset(root / "index.json", split=split, view="cmp", crop_size=32)
        assert len(data) == index["splits"][split]["n_samples"] == len(seen[split])
        item = data[0]
        assert item["image"].shape == (32, 32, 3) and item["flow"].shape[-2:] == (32, 32)
        masks = ShardDataset(root / "index.json", split=split, view="motion_masks", crop_size=32)
        n_videos = len(index["splits"][split]["videos"])
        assert len(masks) == n_mask_frames * n_videos
        assert (masks[0]["trimap"] != 255).any()


def test_an_empty_chunk_packs_nothing_and_the_index_refuses_an_empty_set(tmp_path):
    chunk = write_chunk_shards([], tmp_path / "0000of0001", fields=FIELDS)
    assert chunk["shards"] == [] and (tmp_path / "0000of0001" / CHUNK_INDEX).exists()
    with pytest.raises(ValueError, match="no video has an accepted sample"):
        write_set_index([tmp_path / "0000of0001"], tmp_path)


def test_chunks_with_different_fields_are_refused(tmp_path):
    video = make_video(tmp_path, "vid0-abcdef00")
    write_chunk_shards([video], tmp_path / "s/0000of0002", fields=["image", "flow"])
    write_chunk_shards([], tmp_path / "s/0001of0002", fields=FIELDS)
    with pytest.raises(ValueError, match="fields"):
        write_set_index([tmp_path / "s/0000of0002", tmp_path / "s/0001of0002"], tmp_path / "s")


def test_the_stable_split_moves_at_most_one_video_when_one_is_added():
    ids = [f"video{i:03d}" for i in range(40)]
    a = split_videos_stable(ids, val_fraction=0.2, seed=1)
    assert sorted(a.values()).count("val") == 8
    assert a == split_videos_stable(ids[::-1], val_fraction=0.2, seed=1)  # order-independent
    assert a != split_videos_stable(ids, val_fraction=0.2, seed=2)
    b = split_videos_stable([*ids, "video999"], val_fraction=0.2, seed=1)
    moved = [v for v in ids if a[v] != b[v]]
    assert len(moved) <= 1
    assert list(split_videos_stable(["only"], val_fraction=0.5, seed=0).values()) == ["train"]
    two = split_videos_stable(["a", "b"], val_fraction=0.01, seed=0)
    assert sorted(two.values()) == ["train", "val"]
    with pytest.raises(ValueError):
        split_videos_stable(ids, val_fraction=1.0, seed=0)


def test_stale_shards_of_one_job_packing_and_old_chunks_are_removed(tmp_path):
    videos = [make_video(tmp_path, f"vid{v}-abcdef{v:02d}", seed=v) for v in range(2)]
    root = tmp_path / "shards"
    root.mkdir()
    (root / "shard-00000.h5").write_bytes(b"old layout")
    pack(videos, root, chunk_size=1)  # two chunks of one video at most: 0000of0002, 0001of0002
    write_chunk_shards(videos, root / "0000of0001", fields=FIELDS)
    index = write_set_index([root / "0000of0001"], root)
    assert not (root / "shard-00000.h5").exists()
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["0000of0001"]
    assert {e["file"].split("/")[0] for e in index["shards"]} == {"0000of0001"}
    assert json.loads((root / "index.json").read_text())["totals"]["n_videos"] == 2
    assert np.all([e["n_samples"] > 0 for e in index["shards"]])


def _clip(path, seed):
    """A 20-frame clip of a blurred texture moving 1 px per frame (one shot, real flow)."""
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (64, 112, 3), dtype=np.uint8), (7, 7), 0)
    return write_avi(path, [texture[8:56, k : k + 64] for k in range(20)])


@pytest.mark.slow
def test_snakemake_repacks_only_the_chunk_of_an_added_video(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(3):
        _clip(clips / f"clip{i}.avi", i)
    config = {
        "video_sets": {"dir": {"path": str(clips), "glob": ["*.avi"], "chunk_size": 1}},
        "only_sets": ["dir"],
        "shards": {"val_fraction": 0.3},
    }
    work = tmp_path / "work"
    proc = run_snakemake(work, config, "shards")
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = work / "results/dir/shards-dis_fast"
    before = {p: (file_sha256(p), p.stat().st_mtime_ns) for p in root.glob("*of*/*")}
    assert any(p.suffix == ".h5" for p in before)
    assert not (work / "results/dir/masks-dis_fast").exists()  # CMP reads no mask
    _clip(clips / "clip3.avi", 3)  # 4 videos still make 4 chunks of one
    plan = run_snakemake(work, config, "shards", "-n")
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs = [line.split()[1] for line in plan.stdout.splitlines() if line.startswith("rule ")]
    assert jobs.count("shards_chunk:") == 1 and jobs.count("shards_index:") == 1
    proc = run_snakemake(work, config, "shards")
    assert proc.returncode == 0, proc.stderr[-3000:]
    index = json.loads((root / "index.json").read_text())
    assert index["totals"]["n_videos"] == 4
    changed = [
        p for p in before if not p.exists() or (file_sha256(p), p.stat().st_mtime_ns) != before[p]
    ]
    untouched = [p for p in before if p not in changed]
    assert untouched and len({p.parent for p in changed}) <= 1
    assert {p.parent.name for p in untouched}.isdisjoint({p.parent.name for p in changed})
    # the split is the index's: a new val_fraction rewrites the index and repacks no chunk
    resplit = {**config, "shards": {"val_fraction": 0.5}}
    plan = run_snakemake(work, resplit, "shards", "-n")
    jobs = [line.split()[1] for line in plan.stdout.splitlines() if line.startswith("rule ")]
    assert sorted(jobs) == ["shards:", "shards_index:"], plan.stdout[-2000:]


def test_serve_gallery_takes_the_validation_videos_of_a_chunked_set(tmp_path):
    from models.serve.gallery import export_gallery

    videos = [make_video(tmp_path, f"vid{v}-abcdef{v:02d}", seed=v) for v in range(4)]
    root = tmp_path / "shards"
    _, index = pack(videos, root, chunk_size=2)
    val = {v for v, row in index["videos"].items() if row["split"] == "val"}
    assert val and len(val) < len(index["videos"])
    run = tmp_path / "run"
    names = export_gallery(run, {"data": {"kwargs": {"index_paths": [str(root / "index.json")]}}})
    assert names and all(any(v in n for v in val) for n in names), (names, val)
