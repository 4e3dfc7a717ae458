"""Masks stage: uNLC soft motion masks, trimaps and the paper's pruning for one video.

Follows Pathak et al. 2017, section 5 (pipeline.unlc holds the algorithm). For every shot that has
sampled training frames (the flow stage's pairs.tsv), the shot's frames — strided to at most
``max_shot_frames`` as in the authors' pipeline, plus every sampled frame — are decoded at the
stored resolution and segmented by uNLC; the flow uNLC needs is computed with the configured flow
backend at its own low resolution, so masks do not depend on which pairs the sampler chose.
For each sampled frame the stage writes the soft mask (8-bit PNG, mask·255), the trimap
(0 background, 1 foreground, 255 ignore), and a row in ``frames.tsv`` saying whether the frame is
kept or dropped by section 5.1's rules, with the reason. ``run_evaluate`` scores masks against
ground truth (the synthetic set, or a DAVIS-layout folder) in the form of Pathak et al.'s table.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pipeline import atomic
from pipeline.flow import make_flow_fn
from pipeline.flow.validity import check_params
from pipeline.ids import frame_key
from pipeline.resizing import resize_frame
from pipeline.unlc import prune_reason, trimap, unlc_shot
from pipeline.video import VideoError, iter_frames
from pipeline.viz import mask_overlay, save_png, text_card

log = logging.getLogger(__name__)

FRAME_COLUMNS = ["key", "shot", "frame", "status", "reason", "fg_fraction", "soft", "trimap"]


def shot_frame_indices(start: int, end: int, sampled: list[int], max_frames: int) -> list[int]:
    """Frames uNLC segments for a shot: a stride of at most ``max_frames``, plus the sampled ones."""
    stride = max(1, -(-(end - start) // max_frames))
    return sorted(set(range(start, end, stride)) | {t for t in sampled if start <= t < end})


def masks_flow_fn(cfg: dict, flow_cfg: dict):
    """The configured flow backend, as uNLC uses it on its low-resolution frames."""
    method = flow_cfg["method"]
    params = dict(flow_cfg.get("backends", {}).get(method, {}))
    if method.startswith("dis_") and cfg.get("dis_finest_scale") is not None:
        params["finest_scale"] = cfg["dis_finest_scale"]
    return make_flow_fn(method, **params)


def masks_flow_checks(flow_cfg: dict) -> dict | None:
    """The flow stage's validity thresholds, which uNLC's saliency applies to its own flow."""
    return check_params(flow_cfg.get("validity", {}))


def _decode_shots(video_path: str, wanted: set[int], resize: dict) -> dict[int, np.ndarray]:
    frames = {}
    for index, frame in iter_frames(video_path, start=min(wanted), stop=max(wanted) + 1):
        if index in wanted:
            frames[index] = resize_frame(frame, **resize)
    return frames


def video_masks(
    record: dict, shots_result: dict, pairs_tsv: Path, cfg: dict, flow_cfg: dict, out_dir: Path
) -> tuple[list[list], list[np.ndarray]]:
    """Write soft masks and trimaps of every sampled frame; return frames.tsv rows and overlays."""
    pairs = atomic.read_tsv(pairs_tsv)
    sampled_by_shot: dict[int, list[int]] = {}
    for row in pairs:
        sampled_by_shot.setdefault(int(row["shot"]), []).append(int(row["t"]))
    if not pairs:
        reason = "no sampled frames (video rejected or nothing sampled upstream)"
        return [["", "", "", "dropped", reason, "", "", ""]], []
    shots = {s["index"]: s for s in shots_result["shots"]}
    plan = {
        shot: shot_frame_indices(
            shots[shot]["start"], shots[shot]["end"], ts, cfg["max_shot_frames"]
        )
        for shot, ts in sampled_by_shot.items()
    }
    resize = {k: flow_cfg.get(k) for k in ("short_side", "long_side")}
    resize["upscale"] = flow_cfg.get("upscale", False)
    flow_fn = masks_flow_fn(cfg, flow_cfg)
    rows: list[list] = []
    overlays: list[np.ndarray] = []
    (out_dir / "soft").mkdir(parents=True, exist_ok=True)
    (out_dir / "trimap").mkdir(parents=True, exist_ok=True)
    for shot, indices in tqdm(
        sorted(plan.items()), desc=f"masks {record['video_id']}", unit="shot"
    ):
        sampled = sorted(set(sampled_by_shot[shot]))
        try:
            frames = _decode_shots(record["path"], set(indices), resize)
            stack = np.stack([frames[i] for i in indices])
            result = unlc_shot(
                stack, flow_fn, flow_checks=masks_flow_checks(flow_cfg), **cfg["unlc"]
            )
        except (ValueError, VideoError) as err:
            for t in sampled:
                rows.append([frame_key(shot, t), shot, t, "dropped", f"uNLC: {err}", "", "", ""])
            continue
        position = {f: i for i, f in enumerate(indices)}
        for t in sampled:
            soft = result.soft[position[t]]
            key = frame_key(shot, t)
            tri = trimap(
                soft, negative_below=cfg["negative_below"], positive_above=cfg["positive_above"]
            )
            soft_rel, tri_rel = f"soft/{key}.png", f"trimap/{key}.png"
            atomic.write_bytes(out_dir / soft_rel, _png(np.round(soft * 255).astype(np.uint8)))
            atomic.write_bytes(out_dir / tri_rel, _png(tri))
            reason = prune_reason(soft, threshold=cfg["positive_above"], **cfg["prune"])
            if result.saliency_source == "none" and reason is None:
                reason = "nothing moves in this shot"
            fg = float((soft > cfg["positive_above"]).mean())
            status = "kept" if reason is None else "dropped"
            rows.append([key, shot, t, status, reason or "", fg, soft_rel, tri_rel])
            if len(overlays) < cfg["figure_frames"] and t == sampled[len(sampled) // 2]:
                overlays.append(mask_overlay(frames[t], soft > cfg["positive_above"]))
    return rows, overlays


def _png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("OpenCV failed to encode a PNG")
    return data.tobytes()


def overlay_sheet(overlays: list[np.ndarray], note: str) -> np.ndarray:
    if not overlays:
        return text_card(note, width=480)
    h = min(o.shape[0] for o in overlays)
    resized = [cv2.resize(o, (round(o.shape[1] * h / o.shape[0]), h)) for o in overlays]
    gap = np.full((h, 4, 3), 255, np.uint8)
    return np.concatenate([x for o in resized for x in (o, gap)][:-1], axis=1)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--record", required=True)
    p.add_argument("--shots", required=True)
    p.add_argument("--pairs", required=True, help="the flow stage's pairs.tsv")
    p.add_argument("--params", required=True, help="the config's masks section as JSON")
    p.add_argument("--flow-params", required=True, help="the config's flow section as JSON")
    p.add_argument("--out", required=True, help="frames.tsv to write (its folder holds the PNGs)")
    p.add_argument("--figure", required=True, help="mask overlay PNG")


def run(args: argparse.Namespace) -> int:
    record = json.loads(Path(args.record).read_text(encoding="utf-8"))
    shots_result = json.loads(Path(args.shots).read_text(encoding="utf-8"))
    out_dir = Path(args.out).parent
    rows, overlays = video_masks(
        record,
        shots_result,
        Path(args.pairs),
        json.loads(args.params),
        json.loads(args.flow_params),
        out_dir,
    )
    kept = sum(1 for r in rows if r[3] == "kept")
    log.info("%s: %d frames kept of %d", record["video_id"], kept, len(rows))
    note = rows[0][4] if rows and not kept else "no frame kept"
    save_png(args.figure, overlay_sheet(overlays, f"{record['video_id']}: {note}"))
    atomic.write_tsv(args.out, FRAME_COLUMNS, rows)
    return 0


EVAL_COLUMNS = [
    "source",
    "frames_scored",
    "frames",
    "mean_iou",
    "mean_precision",
    "mean_recall",
    "pooled_iou",
    "pooled_precision",
    "pooled_recall",
]


def _ground_truth_mask(gt: np.lib.npyio.NpzFile, t: int, shape: tuple[int, int]) -> np.ndarray:
    """Foreground of frame t at the stored resolution (nearest, so labels stay labels)."""
    fg = (gt["instances"][t] > 0).astype(np.uint8)
    return cv2.resize(fg, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST).astype(bool)


def score_set_masks(frames_tsvs: list[Path], records_dir: Path, threshold: float) -> dict:
    """Per-frame scores of a set's masks against ground truth, split into kept and all frames."""
    from pipeline.evaluate import mask_scores
    from pipeline.stages.shots import ground_truth_path

    kept, every = [], []
    for tsv in frames_tsvs:
        vid = tsv.parent.name
        record = json.loads((records_dir / f"{vid}.json").read_text(encoding="utf-8"))
        gt_path = ground_truth_path(record["path"])
        rows = [r for r in atomic.read_tsv(tsv) if r["soft"]]
        if not gt_path.exists() or not rows:
            continue
        with np.load(gt_path) as gt:
            for row in rows:
                soft = cv2.imread(str(tsv.parent / row["soft"]), cv2.IMREAD_GRAYSCALE)
                pred = soft > round(threshold * 255)
                score = mask_scores(pred, _ground_truth_mask(gt, int(row["frame"]), pred.shape))
                every.append(score)
                if row["status"] == "kept":
                    kept.append(score)
    return {"kept": kept, "all": every}


def davis_scores(root: str, cfg: dict, flow_cfg: dict) -> list[dict]:
    """uNLC on every sequence of a DAVIS-layout folder, scored per frame."""
    from pipeline.evaluate import list_davis_sequences, mask_scores, read_davis_sequence

    flow_fn = masks_flow_fn(cfg, flow_cfg)
    scores = []
    for seq in tqdm(list_davis_sequences(root), desc="DAVIS", unit="sequence"):
        frames, truth, _ = read_davis_sequence(root, seq)
        picks = shot_frame_indices(0, len(frames), [], cfg["max_shot_frames"])
        result = unlc_shot(
            frames[picks], flow_fn, flow_checks=masks_flow_checks(flow_cfg), **cfg["unlc"]
        )
        for soft, gt in zip(result.soft, truth[picks], strict=True):
            scores.append(mask_scores(soft > cfg["positive_above"], gt))
    return scores


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("frames", nargs="+", help="per-video frames.tsv of the masks stage")
    p.add_argument("--records-dir", required=True, help="folder of the set's ingest JSONs")
    p.add_argument("--params", required=True, help="the config's masks section as JSON")
    p.add_argument("--flow-params", default=None, help="the flow section (needed with davis)")
    p.add_argument("--out", required=True, help="evaluation TSV")


def run_evaluate(args: argparse.Namespace) -> int:
    from pipeline.evaluate import aggregate_scores

    cfg = json.loads(args.params)
    scored = score_set_masks(
        [Path(p) for p in args.frames], Path(args.records_dir), cfg["positive_above"]
    )
    if cfg.get("davis") and args.flow_params:
        scored["davis"] = davis_scores(cfg["davis"], cfg, json.loads(args.flow_params))
    n_frames = len(scored["all"])
    rows = []
    for source, scores in scored.items():
        if not scores:
            rows.append([source, 0, n_frames, "", "", "", "", "", ""])
            continue
        agg = aggregate_scores(scores)
        rows.append([source, agg["frames"], n_frames if source != "davis" else agg["frames"]]
                    + [agg[c] for c in EVAL_COLUMNS[3:]])  # fmt: skip
        log.info("%s: IoU %.1f P %.1f R %.1f over %d frames", source, agg["mean_iou"],
                 agg["mean_precision"], agg["mean_recall"], agg["frames"])  # fmt: skip
    atomic.write_tsv(args.out, EVAL_COLUMNS, rows)
    return 0


def add_collect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("evaluations", nargs="+", help="per-set evaluation.tsv of the masks stage")
    p.add_argument("--sets", nargs="+", required=True, help="set name of each evaluation, in order")
    p.add_argument("--out", required=True, help="mask-quality table for the benchmark")


def run_collect(args: argparse.Namespace) -> int:
    """One table of uNLC mask quality over every set (Pathak et al.'s table, in percent)."""
    if len(args.sets) != len(args.evaluations):
        raise SystemExit("--sets must name one set per evaluation file")
    columns = ["set", *EVAL_COLUMNS]
    rows = [
        [name, *(row[c] for c in EVAL_COLUMNS)]
        for name, path in zip(args.sets, args.evaluations, strict=True)
        for row in atomic.read_tsv(path)
        if row["frames_scored"] not in ("", "0")
    ]
    atomic.write_tsv(args.out, columns, rows)
    return 0
