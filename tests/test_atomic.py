"""pipeline.atomic: complete-or-absent outputs with the permissions of an ordinary new file."""

from __future__ import annotations

import os
import stat

import pytest

from pipeline import atomic


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_written_file_gets_the_umask_mode_not_mkstemp_0600(tmp_path, mask):
    old = os.umask(mask)
    try:
        out = tmp_path / "a" / "b.bin"
        atomic.write_bytes(out, b"xyz")
    finally:
        os.umask(old)
    assert out.read_bytes() == b"xyz"
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~mask


def test_failed_block_leaves_neither_target_nor_temporary(tmp_path):
    out = tmp_path / "c.txt"
    with pytest.raises(RuntimeError), atomic.atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_the_complete_old_file(tmp_path):
    out = tmp_path / "d.txt"
    atomic.write_text(out, "old")
    with pytest.raises(RuntimeError), atomic.atomic_path(out) as tmp:
        tmp.write_text("new but unfinished")
        raise RuntimeError("killed")
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["d.txt"]
