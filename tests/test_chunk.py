"""Chunked jobs (pipeline/stages/chunk.py): stable membership, manifests, the in-process loop."""

import json

import numpy as np
import pytest

from pipeline import atomic
from pipeline.__main__ import main
from pipeline.ids import video_id
from pipeline.stages.chunk import (
    assign_chunks,
    chunk_count,
    expand_manifests,
    fill_template,
    split_by_size,
)
from tests.conftest import run_snakemake, write_avi


def _ids(n, start=0):
    return [video_id(f"clips/clip_{i:05d}.mp4") for i in range(start, start + n)]


@pytest.mark.parametrize(
    "n, size, expected", [(0, 10, 1), (1, 10, 1), (10, 10, 1), (11, 10, 2), (100, 10, 16)]
)
def test_chunk_count_is_the_smallest_power_of_two_that_fits(n, size, expected):
    assert chunk_count(n, size) == expected


def test_every_video_in_exactly_one_chunk_and_chunks_near_the_size():
    ids = _ids(5000)
    chunks = assign_chunks(ids, 100)
    assert len(chunks) == 64  # 5000 / 100 = 50 -> 64 chunks, mean 78 videos
    members = [v for vs in chunks.values() for v in vs]
    assert sorted(members) == sorted(ids)
    assert max(len(v) for v in chunks.values()) < 2 * 100


def test_an_added_video_changes_only_its_own_chunk():
    ids = _ids(1000)
    before = assign_chunks(ids, 100)
    added = _ids(1, start=1000)[0]
    after = assign_chunks(ids + [added], 100)
    changed = [c for c in after if after[c] != before.get(c)]
    assert len(changed) == 1 and added in after[changed[0]]
    # and the order videos are listed in does not matter
    assert {c: sorted(v) for c, v in assign_chunks(ids[::-1], 100).items()} == {
        c: sorted(v) for c, v in before.items()
    }


def test_split_by_size_keeps_every_row_under_the_limit():
    rows = [[f"v{i}", "/x" * 20, "y"] for i in range(300)]
    parts = split_by_size(rows, limit=1000)
    assert [r for p in parts for r in p] == rows
    assert all(len(json.dumps(p, separators=(",", ":"))) <= 1000 for p in parts)


def test_template_fills_placeholders_and_leaves_json_braces():
    args = fill_template(
        ['--params={"a": {"b": 1}}', "--out=r/{vid}.json", "--relpath={relpath}"],
        {"vid": "x-1", "path": "/p", "relpath": "-a {vid}.avi"},
    )
    assert args == ['--params={"a": {"b": 1}}', "--out=r/x-1.json", "--relpath=-a {vid}.avi"]


def test_expand_manifests_sorts_rows_by_video_and_keeps_other_arguments(tmp_path):
    a, b = tmp_path / "0000of0002.chunk.tsv", tmp_path / "0001of0002.chunk.tsv"
    atomic.write_tsv(a, ["video_id", "out", "bytes"], [["c", "c.json", 1], ["a", "a.json", 2]])
    atomic.write_tsv(b, ["video_id", "out", "bytes"], [["b", "b.json", 3]])
    argv = ["--x=1", str(a), str(b), "--out=o"]
    assert expand_manifests(argv, "out") == ["--x=1", "a.json", "b.json", "c.json", "--out=o"]
    with pytest.raises(ValueError, match="nope"):
        expand_manifests([str(a)], "nope")


def test_chunk_runs_the_per_video_driver_and_records_bytes(tmp_path, sample_clips):
    clips = sorted(sample_clips.values())[:2]
    rows = [[video_id(p.name), str(p), p.name] for p in clips]
    manifest = tmp_path / "c.chunk.tsv"
    code = main(
        [
            "chunk", "--stage=ingest", "--videos=" + json.dumps(rows), "--outputs", "out",
            f"--manifest={manifest}", "--",
            "--video={path}", "--video-id={vid}", "--set=s", "--relpath={relpath}",
            '--params={"min_frames": 2}', f"--out={tmp_path}/videos/{{vid}}.json",
        ]
    )  # fmt: skip
    assert code == 0
    table = atomic.read_tsv(manifest)
    assert [r["video_id"] for r in table] == [r[0] for r in rows]
    for r in table:
        record = json.loads(open(r["out"]).read())
        assert record["video_id"] == r["video_id"] and record["status"] == "ok"
        assert int(r["bytes"]) == (tmp_path / "videos" / f"{r['video_id']}.json").stat().st_size


def test_disk_usage_sums_bytes_and_seconds_per_stage(tmp_path):
    a, b = tmp_path / "a.chunk.tsv", tmp_path / "b.chunk.tsv"
    cols = ["video_id", "out", "bytes", "seconds"]
    atomic.write_tsv(a, cols, [["v1", "x", 100, 1.5], ["v2", "y", 300, 0.5]])
    atomic.write_tsv(b, cols, [["v3", "z", 50, 2.0]])
    out = tmp_path / "usage.tsv"
    assert (
        main(["disk-usage", "--stage", "flow", str(a), str(b), "--stage", "masks", f"--out={out}"])
        == 0
    )
    rows = {r["stage"]: r for r in atomic.read_tsv(out)}
    assert rows["flow"] == {
        "stage": "flow",
        "videos": "3",
        "bytes": "450",
        "bytes_per_video": "150",
        "seconds": "4",
    }
    assert rows["masks"]["videos"] == "0" and rows["masks"]["bytes"] == "0"


def _jobs(proc) -> dict[str, int]:
    rows = [line.split() for line in (proc.stdout + proc.stderr).splitlines()]
    return {r[0]: int(r[1]) for r in rows if len(r) == 2 and r[1].isdigit()}


@pytest.mark.slow
def test_an_added_or_edited_video_reruns_only_its_chunk(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(4)]
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(5):
        write_avi(videos / f"clip_{i}.avi", frames)
    config = {
        "video_sets": {"mine": {"path": str(videos), "glob": ["*.avi"], "chunk_size": 2}},
        "only_sets": ["mine"],
    }
    work = tmp_path / "work"
    assert run_snakemake(work, config, "ingest").returncode == 0
    assert len(list((work / "results/mine/chunks/ingest").glob("*of0004.chunk.tsv"))) >= 2

    write_avi(videos / "clip_5.avi", frames)  # 6 videos: still 4 chunks of <= 2 expected
    assert _jobs(run_snakemake(work, config, "ingest", "-n")).get("ingest_chunk") == 1
    assert run_snakemake(work, config, "ingest").returncode == 0
    write_avi(videos / "clip_2.avi", frames[:3])  # an edited video: new size and mtime
    assert _jobs(run_snakemake(work, config, "ingest", "-n")).get("ingest_chunk") == 1
