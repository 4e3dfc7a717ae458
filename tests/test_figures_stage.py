"""pipeline.stages.figures: per-set folders of hard links to per-video figures, for the report."""

import os

import pytest

from pipeline import atomic
from pipeline.__main__ import main
from pipeline.stages.figures import collect_figures, figure_paths


def _stage(tmp_path, ids, missing=()):
    """Two chunk manifests over ``ids`` (unsorted across chunks), each video's figure on disk
    unless it is in ``missing``."""
    rows = []
    for vid in ids:
        fig = tmp_path / "stage" / vid / "overlay.png"
        if vid not in missing:
            fig.parent.mkdir(parents=True)
            fig.write_bytes(f"png of {vid}".encode())
        rows.append([vid, str(tmp_path / "stage" / vid / "frames.tsv"), str(fig), 10, 0.1])
    header = ["video_id", "out", "figure", "bytes", "seconds"]
    manifests = [tmp_path / "a.chunk.tsv", tmp_path / "b.chunk.tsv"]
    atomic.write_tsv(manifests[0], header, rows[::2])
    atomic.write_tsv(manifests[1], header, rows[1::2])
    return manifests


def test_first_videos_by_id_are_hard_linked(tmp_path):
    manifests = _stage(tmp_path, ["v3", "v1", "v4", "v2"])
    out = tmp_path / "report_figures"
    assert collect_figures(manifests, "figure", out, limit=3) == (3, 0)
    assert sorted(p.name for p in out.iterdir()) == ["v1.png", "v2.png", "v3.png"]
    for vid in ("v1", "v2", "v3"):
        linked, source = out / f"{vid}.png", tmp_path / "stage" / vid / "overlay.png"
        assert linked.read_bytes() == f"png of {vid}".encode()
        assert os.stat(linked).st_ino == os.stat(source).st_ino  # no copy: no disk


def test_videos_without_a_figure_are_skipped_and_counted(tmp_path):
    manifests = _stage(tmp_path, ["v1", "v2", "v3"], missing={"v1"})
    out = tmp_path / "figs"
    assert collect_figures(manifests, "figure", out, limit=2) == (2, 1)
    assert sorted(p.name for p in out.iterdir()) == ["v2.png", "v3.png"]


def test_a_rerun_replaces_the_folder_and_leaves_no_temporary(tmp_path):
    manifests = _stage(tmp_path, ["v1", "v2"])
    out = tmp_path / "figs"
    out.mkdir()
    (out / "stale.png").write_bytes(b"old")
    assert collect_figures(manifests, "figure", out, limit=0) == (0, 0)
    assert list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_failure_keeps_the_old_folder(tmp_path):
    manifests = _stage(tmp_path, ["v1"])
    out = tmp_path / "figs"
    out.mkdir()
    (out / "kept.png").write_bytes(b"old")
    with pytest.raises(ValueError, match="no column 'sheet'"):
        collect_figures(manifests, "sheet", out, limit=5)
    assert [p.name for p in out.iterdir()] == ["kept.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".figs.")]


def test_bad_limit_and_the_command_line(tmp_path):
    manifests = _stage(tmp_path, ["b", "a"])
    with pytest.raises(ValueError, match="limit must be >= 0"):
        collect_figures(manifests, "figure", tmp_path / "x", limit=-1)
    assert [v for v, _ in figure_paths(manifests, "figure")] == ["a", "b"]
    out = tmp_path / "cli"
    argv = ["figures", "--column=figure", "--limit=1", f"--out={out}", *map(str, manifests)]
    assert main(argv) == 0
    assert [p.name for p in out.iterdir()] == ["a.png"]
