"""The flow stage driver on a real (tiny) video file."""

import numpy as np
import pytest

from pipeline.stages.flow import compute_video_flow
from pipeline.stages.ingest import ingest_video
from tests.conftest import write_avi

FLOW_CFG = {
    "method": "dis_fast",
    "short_side": None,
    "jpeg_quality": 90,
    "png_compression": 1,
    "batch_size": 4,
    "static_threshold": 0.5,
    "static_quantile": 0.99,
    "contact_sheet_pairs": 4,
}
SAMPLING = {"policy": "cpfs", "seed": 0, "cpfs": {"frames_per_video": 6, "gap": 2}}


def _clip(tmp_path, n):
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
    frames = [np.roll(base, 2 * i, axis=1) for i in range(n)]
    path = write_avi(tmp_path / "clip.avi", frames)
    return ingest_video(str(path), video_id="clip", video_set="s", relpath="clip.avi")


def test_pairs_are_stored_and_listed(tmp_path):
    record = _clip(tmp_path, 20)
    shots = {"video_id": "clip", "status": "ok", "shots": [{"index": 0, "start": 0, "end": 20}]}
    rows, dropped, _ = compute_video_flow(
        record, shots, FLOW_CFG, SAMPLING, tmp_path / "out", progress=False
    )
    assert len(rows) == 6 and not dropped
    for row in rows:
        assert (tmp_path / "out" / row[5]).is_file() and (tmp_path / "out" / row[6]).is_file()


def test_a_video_shorter_than_its_shots_claim_says_which_pairs_were_lost(tmp_path):
    record = _clip(tmp_path, 12)
    # shots claiming frames the file does not hold (a container that lied after ingest)
    shots = {"video_id": "clip", "status": "ok", "shots": [{"index": 0, "start": 0, "end": 40}]}
    rows, dropped, _ = compute_video_flow(
        record, shots, FLOW_CFG, SAMPLING, tmp_path / "out", progress=False
    )
    reasons = [d[-1] for d in dropped]
    assert any("video ended at frame 11" in r and "lost" in r for r in reasons), reasons
    assert all(int(r[3]) + int(r[4]) <= 11 for r in rows)


def test_the_png_valid_bit_and_pairs_tsv_carry_the_checks(tmp_path):
    import cv2

    from pipeline.flowio import read_flow_png
    from pipeline.stages.flow import PAIR_COLUMNS

    # smooth texture: the AVI codec's error on per-pixel noise alone would exceed the threshold
    base = cv2.GaussianBlur(
        np.random.default_rng(1).integers(0, 255, (64, 96, 3), np.uint8), (0, 0), 2
    )
    frames = [np.roll(base, 2 * i, axis=1) for i in range(20)]
    path = write_avi(tmp_path / "smooth.avi", frames)
    record = ingest_video(str(path), video_id="clip", video_set="s", relpath="smooth.avi")
    shots = {"video_id": "clip", "status": "ok", "shots": [{"index": 0, "start": 0, "end": 20}]}
    cfg = {**FLOW_CFG, "validity": {"enabled": True, "min_valid_fraction": 0.5}}
    rows, dropped, _ = compute_video_flow(
        record, shots, cfg, SAMPLING, tmp_path / "out", progress=False
    )
    assert len(rows) == 6 and not dropped
    invalid_col, photo_col = PAIR_COLUMNS.index("invalid_frac"), PAIR_COLUMNS.index("photo_error")
    for row in rows:
        _, valid = read_flow_png(tmp_path / "out" / row[6])
        # the content shifts 4 px right per pair: the last 4 columns land off the frame
        assert not valid[:, -4:].any() and valid[8:-8, 8:-8].mean() > 0.95
        assert row[invalid_col] == pytest.approx(1.0 - valid.mean(), abs=1e-4)
        assert 0.0 <= row[photo_col] < 8.0

    strict = {**FLOW_CFG, "validity": {"enabled": True, "min_valid_fraction": 0.99}}
    rows, dropped, _ = compute_video_flow(
        record, shots, strict, SAMPLING, tmp_path / "strict", progress=False
    )
    assert not rows and len(dropped) == 6
    assert all("valid fraction" in d[-1] and "below the floor 0.99" in d[-1] for d in dropped)
    off = {**FLOW_CFG, "validity": {"enabled": False}}
    rows, _, _ = compute_video_flow(record, shots, off, SAMPLING, tmp_path / "off", progress=False)
    assert all(read_flow_png(tmp_path / "off" / r[6])[1].all() for r in rows)


def test_the_set_summary_counts_dropped_pairs_by_cause(tmp_path):
    from pipeline import atomic
    from pipeline.stages.flow import (
        DROPPED_COLUMNS,
        PAIR_COLUMNS,
        SUMMARY_COLUMNS,
        summarise_set,
    )

    def video(name, kept, dropped):
        folder = tmp_path / name
        folder.mkdir()
        rows = [[f"s/{name}/0/{t}", name, 0, t, 2, "f", "g", 8, 8, 1, 2, 0, 0, inv, 3.0]
                for t, inv in kept]  # fmt: skip
        atomic.write_tsv(folder / "pairs.tsv", PAIR_COLUMNS, rows)
        atomic.write_tsv(folder / "dropped.tsv", DROPPED_COLUMNS, dropped)
        return folder / "pairs.tsv"

    low = "valid fraction 0.310 below the floor 0.5 (forward-backward consistent 0.4, ...)"
    paths = [
        video("a", [(0, 0.1), (2, 0.3)], [["s/a/0/4", 0, 4, 2, low]]),
        video("b", [], [["s/b", "", "", "", "video skipped: unreadable"]]),
        video(
            "c", [(0, 0.2)], [["s/c/0/2", 0, 2, 2, low], ["s/c/0/4", 0, 4, 2, "non-finite flow"]]
        ),
    ]
    summary = dict(zip(SUMMARY_COLUMNS, summarise_set(paths), strict=True))
    assert summary["videos"] == 3 and summary["pairs_kept"] == 3
    assert summary["pairs_dropped"] == 3 and summary["dropped_low_valid"] == 2
    assert summary["dropped_other"] == 1 and summary["videos_skipped"] == 1
    assert summary["mean_invalid_frac"] == pytest.approx(0.2)
    assert summary["median_photo_error"] == 3.0
