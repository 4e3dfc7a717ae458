"""The per-video inputs of the shards stage: read one video's loose stage outputs into samples.

A :class:`VideoInput` says where the flow stage's folder (frames, KITTI flow PNGs, ``pairs.tsv``),
the masks stage's folder (``frames.tsv``, soft masks, trimaps) and the guidance stage's ``.npz``
(CMP, Zhan et al. 2019, Sec. 3.2) of one video are; :func:`iter_loose_samples` yields one sample
per stored pair, decoded once so a truncated or mis-sized file is rejected here, with a reason,
instead of failing a training job days later.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pipeline.atomic import read_tsv
from pipeline.shards.codec import decode_flow_png, decode_jpeg_rgb, decode_mask_png


class VideoInput(NamedTuple):
    """Where one video's loose stage outputs live (any of the optional parts may be ``None``)."""

    video_id: str
    flow_dir: Path
    masks_dir: Path | None = None
    guidance: Path | None = None


def _read_guidance(path: Path | None) -> dict[str, tuple[np.ndarray, np.ndarray, int, int]]:
    if path is None:
        return {}
    with np.load(path, allow_pickle=False) as npz:
        ids, offsets = npz["sample_ids"], npz["offsets"]
        points, vectors = npz["points"], npz["vectors"]
        n_ws, n_grid = npz["n_watershed"], npz["n_grid"]
    if len(offsets) != len(ids) + 1 or offsets[-1] != len(points) or len(vectors) != len(points):
        raise ValueError(f"{path}: offsets / points / vectors lengths disagree")
    return {
        str(sid): (
            points[offsets[i] : offsets[i + 1]].astype(np.int32),
            vectors[offsets[i] : offsets[i + 1]].astype(np.float32),
            int(n_ws[i]),
            int(n_grid[i]),
        )
        for i, sid in enumerate(ids)
    }


def _read_masks(masks_dir: Path | None) -> dict[str, dict[str, str]]:
    if masks_dir is None:
        return {}
    rows = read_tsv(Path(masks_dir) / "frames.tsv")
    return {row["key"]: row for row in rows if row["status"] == "kept"}


def iter_loose_samples(video: VideoInput) -> Iterator[dict[str, Any]]:
    """Yield one dict per pair listed in the video's ``pairs.tsv``.

    A pair whose files are missing, undecodable or of the wrong shape comes back as
    ``{"sample_id", "video_id", "rejected": reason}`` so the caller can record it.
    """
    flow_dir = Path(video.flow_dir)
    masks = _read_masks(video.masks_dir)
    guidance = _read_guidance(Path(video.guidance) if video.guidance else None)
    for row in read_tsv(flow_dir / "pairs.tsv"):
        sample_id = row["sample_id"]
        try:
            yield _load_pair(video, flow_dir, row, masks, guidance)
        except (ValueError, OSError, KeyError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            yield {"sample_id": sample_id, "video_id": video.video_id, "rejected": reason}


def _load_pair(
    video: VideoInput,
    flow_dir: Path,
    row: dict[str, str],
    masks: dict[str, dict[str, str]],
    guidance: dict[str, tuple[np.ndarray, np.ndarray, int, int]],
) -> dict[str, Any]:
    height, width = int(row["height"]), int(row["width"])
    image_blob = (flow_dir / row["frame"]).read_bytes()
    flow_blob = (flow_dir / row["flow"]).read_bytes()
    # Decode once while packing so a truncated or mis-sized file is rejected here, with a reason,
    # instead of failing a training job days later.
    image = decode_jpeg_rgb(image_blob)
    flow, valid = decode_flow_png(flow_blob)
    if image.shape[:2] != (height, width) or flow.shape[:2] != (height, width):
        raise ValueError(
            f"size mismatch: pairs.tsv {height}x{width}, image {image.shape[:2]}, flow {flow.shape[:2]}"
        )
    sample: dict[str, Any] = {
        "sample_id": row["sample_id"],
        "video_id": video.video_id,
        "shot": int(row["shot"]),
        "t": int(row["t"]),
        "gap": int(row["gap"]),
        "height": height,
        "width": width,
        "static": int(row.get("static") or 0),
        "mean_mag": float(row.get("mean_mag") or "nan"),
        "max_mag": float(row.get("max_mag") or "nan"),
        "frac_saturated": float(row.get("frac_saturated") or "nan"),
        "fg_fraction": float("nan"),
        "image_blob": image_blob,
        "flow_blob": flow_blob,
        "trimap_blob": b"",
        "soft_blob": b"",
        "image": image,
        "flow": flow,
        "valid": valid,
        "trimap": None,
        "soft": None,
    }
    mask_row = masks.get(Path(row["frame"]).stem)
    if mask_row is not None:
        masks_dir = Path(video.masks_dir)  # type: ignore[arg-type]
        for name in ("trimap", "soft"):
            blob = (masks_dir / mask_row[name]).read_bytes()
            mask = decode_mask_png(blob, name)
            if mask.shape != (height, width):
                raise ValueError(f"{name} is {mask.shape}, frame is {(height, width)}")
            sample[f"{name}_blob"], sample[name] = blob, mask
        sample["fg_fraction"] = float(mask_row.get("fg_fraction") or "nan")
    sample["has_mask"] = int(mask_row is not None)
    points, vectors, n_ws, n_grid = guidance.get(
        row["sample_id"], (np.zeros((0, 2), np.int32), np.zeros((0, 2), np.float32), 0, 0)
    )
    if len(points) and (
        points.min() < 0 or points[:, 0].max() >= height or points[:, 1].max() >= width
    ):
        raise ValueError("guidance point outside the frame")
    sample.update(points=points, vectors=vectors, n_watershed=n_ws, n_grid=n_grid)
    return sample
