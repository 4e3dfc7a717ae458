"""Flow stage: sample training pairs of one video and store their optical flow.

For every pair (frame t → t+gap) chosen by the sampling policy (pipeline.sampling) the frames are
resized by the resolution policy, flow is computed with the configured backend (pipeline.flow),
and the stage writes, under ``results/{set}/flow-{method}/{video_id}/``: the JPEG of frame t, the
flow as a KITTI 16-bit PNG (pipeline.flowio; pixels of the stored image), ``pairs.tsv``,
``dropped.tsv`` (pairs dropped with a one-line reason: non-finite flow, mismatched frame sizes,
a valid fraction below ``validity.min_valid_fraction``) and a contact sheet (frames above their flow colour wheel) for the report. Near-static pairs are
kept and flagged. The video is decoded once: frames are held only until the last pair that needs
them has been computed, so memory is bounded by the largest gap, not the video length.

Validity (issue 12; pipeline.flow.validity): with ``validity.enabled`` the backend also computes
the backward flow t+gap → t of every pair (in the same batch), and a pixel is valid only when it
passes the forward-backward consistency test of Sundaram et al. (ECCV 2010) and its photometric
error (frame t+gap warped back by the flow) is below ``validity.photo_threshold``. The valid map is
the PNG's third channel; pairs.tsv records each pair's ``invalid_frac`` and mean ``photo_error``;
the magnitude statistics are taken over valid pixels.

Issue 27: the photometric test is relative to the image gradient (``validity.photo_test``), the
margin grows failures only at motion boundaries, DIS's finest scale follows the frame size, and
with ``chain.enabled`` a pair of gap > 1 whose direct flow leaves enough pixels invalid also gets
its gap-1 flows (every frame between t and t+gap is decoded and resized), composed and checked
(pipeline.flow.pairflow): fast movers get the flow the direct pair loses.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pipeline import atomic
from pipeline.flow import flow_statistics, make_batch_flow_fn
from pipeline.flow.pairflow import pair_flows
from pipeline.flow.validity import Validity, check_params
from pipeline.flowio import encode_flow_png
from pipeline.ids import frame_key, sample_id
from pipeline.resizing import resize_frame
from pipeline.sampling import Pair, sample_pairs
from pipeline.video import VideoError, iter_frames
from pipeline.viz import contact_sheet, text_card

log = logging.getLogger(__name__)

PAIR_COLUMNS = [
    "sample_id",
    "video_id",
    "shot",
    "t",
    "gap",
    "frame",
    "flow",
    "height",
    "width",
    "mean_mag",
    "max_mag",
    "frac_saturated",
    "static",
    "invalid_frac",
    "photo_error",
]
DROPPED_COLUMNS = ["sample_id", "shot", "t", "gap", "reason"]
SUMMARY_COLUMNS = [
    "videos",
    "pairs_kept",
    "pairs_dropped",
    "dropped_low_valid",
    "dropped_other",
    "videos_skipped",
    "mean_invalid_frac",
    "median_photo_error",
]
LOW_VALID = "valid fraction"  # how a pair dropped for its validity floor is recognised


def pairs_for_video(shots_result: dict, sampling_cfg: dict) -> list[Pair]:
    policy = sampling_cfg["policy"]
    return sample_pairs(
        shots_result["shots"],
        policy=policy,
        seed=sampling_cfg["seed"],
        video_key=shots_result["video_id"],
        **sampling_cfg.get(policy, {}),
    )


def _pairs_with_frames(
    video_path: str, pairs: list[Pair], resize: dict, progress: tqdm, between: bool = False
) -> Iterator[tuple[Pair, list[np.ndarray]]]:
    """Yield each pair with its resized frames (t and t+gap; with ``between`` every frame from t
    to t+gap, for composed flow), decoding the video once in order."""
    by_end: dict[int, list[Pair]] = {}
    for pair in pairs:
        by_end.setdefault(pair.t + pair.gap, []).append(pair)

    def needs(pair: Pair) -> list[int]:
        return (
            list(range(pair.t, pair.t + pair.gap + 1)) if between else [pair.t, pair.t + pair.gap]
        )

    wanted = {f for p in pairs for f in needs(p)}
    last_use: dict[int, int] = {}
    for pair in pairs:
        for f in needs(pair):
            last_use[f] = max(last_use.get(f, -1), pair.t + pair.gap)
    held: dict[int, np.ndarray] = {}
    last_decoded = -1
    for index, frame in iter_frames(video_path, start=min(wanted), stop=max(wanted) + 1):
        last_decoded = index
        progress.update(1)
        if index in wanted:
            held[index] = resize_frame(frame, **resize)
        for pair in by_end.get(index, []):
            yield pair, [held[f] for f in needs(pair)]
        for f in [f for f in held if last_use[f] <= index]:
            del held[f]
    if last_decoded < max(by_end):  # the container held fewer frames than the shots claim
        lost = sum(len(ps) for end, ps in by_end.items() if end > last_decoded)
        raise VideoError(
            f"video ended at frame {last_decoded}: {lost} pair(s) up to frame {max(by_end)} lost"
        )


def _drop_reason(flow: np.ndarray, validity: Validity | None, checks: dict) -> str:
    """Why a computed pair cannot be kept ('' to keep it)."""
    if not np.isfinite(flow).all():  # the per-pixel mask only when needed: it is 20x dearer
        bad = 1.0 - float(np.isfinite(flow).all(axis=-1).mean())
        return f"non-finite flow in {bad:.1%} of pixels"
    if validity is None:
        return ""
    floor = float(checks.get("min_valid_fraction", 0.0))
    valid = 1.0 - validity.invalid_fraction
    if valid < floor:
        return (
            f"{LOW_VALID} {valid:.3f} below the floor {floor:g} (forward-backward "
            f"consistent {validity.consistent.mean():.3f}, photometric error "
            f"{validity.photometric_mean:.1f})"
        )
    return ""


def _store_pair(
    out_dir: Path,
    pair: Pair,
    img0: np.ndarray,
    flow: np.ndarray,
    validity: Validity | None,
    flow_cfg: dict,
    quality: list[int],
) -> list:
    """Write frame t's JPEG and the flow PNG (valid bit from the checks); return the row's tail."""
    key = frame_key(pair.shot, pair.t)
    frame_rel = f"frames/{key}.jpg"
    flow_rel = f"flow/{key}_g{pair.gap:02d}.png"
    valid = None if validity is None else validity.valid
    png, n_saturated = encode_flow_png(flow, valid, compression=int(flow_cfg["png_compression"]))
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(img0, cv2.COLOR_RGB2BGR), quality)
    if not ok:
        raise RuntimeError("OpenCV failed to encode a JPEG")
    atomic.write_bytes(out_dir / frame_rel, jpg.tobytes())
    atomic.write_bytes(out_dir / flow_rel, png)
    stats = flow_statistics(
        flow,
        valid,
        static_threshold=flow_cfg["static_threshold"],
        static_quantile=flow_cfg["static_quantile"],
    )
    h, w = flow.shape[:2]
    invalid = 0.0 if validity is None else validity.invalid_fraction
    photo = "" if validity is None else round(validity.photometric_mean, 3)
    return [frame_rel, flow_rel, h, w, stats["mean_mag"], stats["max_mag"],
            n_saturated / (h * w), int(stats["static"]), round(invalid, 5), photo]  # fmt: skip


def compute_video_flow(
    record: dict,
    shots_result: dict,
    flow_cfg: dict,
    sampling_cfg: dict,
    out_dir: Path,
    *,
    progress: bool = True,
) -> tuple[list[list], list[list], list[tuple[np.ndarray, np.ndarray]]]:
    """Compute and store the flow of every sampled pair; return (pair rows, dropped rows, sheet)."""
    vid, video_set = record["video_id"], record.get("set", "")
    if shots_result.get("status") != "ok":
        reason = shots_result.get("reason") or record.get("reason") or "rejected upstream"
        return [], [[f"{video_set}/{vid}", "", "", "", f"video skipped: {reason}"]], []
    pairs = pairs_for_video(shots_result, sampling_cfg)
    if not pairs:
        return [], [[f"{video_set}/{vid}", "", "", "", "sampling policy chose no pair"]], []
    method = flow_cfg["method"]
    compute = make_batch_flow_fn(method, **flow_cfg.get("backends", {}).get(method, {}))
    resize = {
        "short_side": flow_cfg.get("short_side"),
        "long_side": flow_cfg.get("long_side"),
        "upscale": flow_cfg.get("upscale", False),
    }
    batch_size = max(1, int(flow_cfg.get("batch_size", 1)))
    quality = [cv2.IMWRITE_JPEG_QUALITY, int(flow_cfg["jpeg_quality"])]
    (out_dir / "frames").mkdir(parents=True, exist_ok=True)
    (out_dir / "flow").mkdir(parents=True, exist_ok=True)
    rows: list[list] = []
    dropped: list[list] = []
    sheet: list[tuple[np.ndarray, np.ndarray]] = []
    sheet_every = max(1, len(pairs) // max(1, int(flow_cfg["contact_sheet_pairs"])))

    checks = flow_cfg.get("validity", {})
    chain = flow_cfg.get("chain", {})
    between = bool(chain.get("enabled", False)) and check_params(checks) is not None

    def flush(batch: list[tuple[Pair, list[np.ndarray]]]) -> None:
        good = []
        for pair, frames in batch:
            sid = sample_id(video_set, vid, pair.shot, pair.t)
            sizes = {f.shape for f in frames}
            if len(sizes) > 1:
                reason = f"frame sizes differ: {' vs '.join(str(s[:2]) for s in sorted(sizes))}"
                dropped.append([sid, pair.shot, pair.t, pair.gap, reason])
            else:
                good.append((pair, frames))
        results = pair_flows(
            compute, [f for _, f in good], check_params(checks), between,
            float(chain.get("photo_factor", 1.0)), float(chain.get("min_invalid", 0.0)),
        )  # fmt: skip
        for (pair, frames), (flow, validity) in zip(good, results, strict=True):
            img0 = frames[0]
            sid = sample_id(video_set, vid, pair.shot, pair.t)
            reason = _drop_reason(flow, validity, checks)
            if reason:
                dropped.append([sid, pair.shot, pair.t, pair.gap, reason])
                continue
            row = _store_pair(out_dir, pair, img0, flow, validity, flow_cfg, quality)
            rows.append([sid, vid, pair.shot, pair.t, pair.gap, *row])
            if len(rows) % sheet_every == 0 and len(sheet) < flow_cfg["contact_sheet_pairs"]:
                sheet.append((img0, flow))

    span = max(p.t + p.gap for p in pairs) + 1 - min(p.t for p in pairs)
    with tqdm(
        total=span, desc=f"flow {vid}", unit="frame", mininterval=2.0, disable=not progress
    ) as bar:
        batch: list[tuple[Pair, list[np.ndarray]]] = []
        try:
            for item in _pairs_with_frames(record["path"], pairs, resize, bar, between):
                batch.append(item)
                if len(batch) >= batch_size:
                    flush(batch)
                    batch = []
        except VideoError as err:
            dropped.append([f"{video_set}/{vid}", "", "", "", f"decoding stopped: {err}"])
        flush(batch)
    return rows, dropped, sheet


def render_sheet(
    sheet: list[tuple[np.ndarray, np.ndarray]], flow_cfg: dict, note: str
) -> np.ndarray:
    if sheet:
        return contact_sheet(
            [f for f, _ in sheet], [fl for _, fl in sheet], flow_cfg["viz_max_magnitude"]
        )
    return text_card(note)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--record", required=True, help="the video's ingest JSON")
    p.add_argument("--shots", required=True, help="the video's shots JSON")
    p.add_argument("--flow-params", required=True, help="the config's flow section as JSON")
    p.add_argument("--sampling-params", required=True, help="the config's sampling section as JSON")
    p.add_argument("--pairs", required=True, help="pairs.tsv to write (its folder holds the files)")
    p.add_argument("--dropped", required=True)
    p.add_argument("--sheet", required=True, help="contact sheet PNG")


def run(args: argparse.Namespace) -> int:
    from pipeline.viz import save_png

    record = json.loads(Path(args.record).read_text(encoding="utf-8"))
    shots_result = json.loads(Path(args.shots).read_text(encoding="utf-8"))
    flow_cfg = json.loads(args.flow_params)
    out_dir = Path(args.pairs).parent
    rows, dropped, sheet = compute_video_flow(
        record, shots_result, flow_cfg, json.loads(args.sampling_params), out_dir
    )
    log.info("%s: %d pairs kept, %d dropped", record["video_id"], len(rows), len(dropped))
    note = dropped[0][-1] if dropped else "no pairs"
    save_png(args.sheet, render_sheet(sheet, flow_cfg, f"{record['video_id']}: {note}"))
    atomic.write_tsv(args.dropped, DROPPED_COLUMNS, dropped)
    atomic.write_tsv(
        args.pairs, PAIR_COLUMNS, rows
    )  # last: its presence means the folder is complete
    return 0


# --------------------------------------------------------------------------- per-set summary


def summarise_set(pairs_tsvs: list[Path]) -> list:
    """One summary row over a set's videos (SUMMARY_COLUMNS): kept pairs, dropped pairs by cause
    (below the validity floor / any other reason), videos skipped whole, and the validity of the
    kept pairs. Each ``pairs.tsv``'s ``dropped.tsv`` sits beside it."""
    kept, low_valid, other, skipped = 0, 0, 0, 0
    invalid, photo = [], []
    for pairs_tsv in pairs_tsvs:
        rows = atomic.read_tsv(pairs_tsv)
        kept += len(rows)
        invalid += [float(r["invalid_frac"]) for r in rows if r.get("invalid_frac")]
        photo += [float(r["photo_error"]) for r in rows if r.get("photo_error")]
        for row in atomic.read_tsv(Path(pairs_tsv).with_name("dropped.tsv")):
            if row["t"] == "":
                skipped += 1  # a whole-video line (skipped upstream, no pair, decoding stopped)
            elif row["reason"].startswith(LOW_VALID):
                low_valid += 1
            else:
                other += 1
    return [
        len(pairs_tsvs),
        kept,
        low_valid + other,
        low_valid,
        other,
        skipped,
        round(float(np.mean(invalid)), 5) if invalid else "",
        round(float(np.median(photo)), 3) if photo else "",
    ]


def add_summary_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pairs", nargs="*", help="every pairs.tsv of the set")
    p.add_argument("--out", required=True, help="summary.tsv to write")


def run_summary(args: argparse.Namespace) -> int:
    row = summarise_set([Path(p) for p in args.pairs])
    atomic.write_tsv(args.out, SUMMARY_COLUMNS, [row])
    log.info("flow summary: %s", dict(zip(SUMMARY_COLUMNS, row, strict=True)))
    return 0
