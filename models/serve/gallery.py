"""The gallery of a run: its validation frames, as PNG files inside the run folder.

The frames the page offers are the run's own validation split (the shard sets its
``config.yaml`` names under ``data.kwargs.index_paths``). :func:`export_gallery` copies a few of
them, once, into ``<run>/gallery/`` (atomically, one PNG each); from then on the server reads
gallery files only from there, by name: :func:`gallery_path` refuses a name with a path
separator, ``..``, an unexpected extension, or one that resolves (symlinks followed) outside the
run folder, so no request can read a file outside it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from models.serve.images import encode_png
from pipeline.atomic import write_bytes
from pipeline.shards.reader import ShardReader, read_index, split_samples

__all__ = ["GALLERY_DIR", "GalleryError", "export_gallery", "gallery_names", "gallery_path"]

log = logging.getLogger(__name__)

GALLERY_DIR = "gallery"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}\.(png|jpg|jpeg)$")


class GalleryError(ValueError):
    """A gallery name that is not one of the run's gallery files."""


def gallery_names(run_dir: Path) -> list[str]:
    """The gallery's file names, sorted (empty when there is no gallery)."""
    folder = run_dir / GALLERY_DIR
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if NAME.match(p.name) and p.is_file())


def gallery_path(run_dir: Path, name: str) -> Path:
    """The file of gallery entry ``name``, checked to lie inside ``run_dir``."""
    if not isinstance(name, str) or not NAME.match(name):
        raise GalleryError(f"{name!r} is not a gallery file name")
    root = run_dir.resolve()
    path = (run_dir / GALLERY_DIR / name).resolve()
    if not path.is_relative_to(root):
        raise GalleryError(f"{name!r} lies outside the run folder")
    if not path.is_file():
        raise GalleryError(f"{name!r} is not in the gallery of {run_dir.name}")
    return path


def _val_samples(index_path: Path) -> list[tuple[Path, int]]:
    root = index_path if index_path.is_dir() else index_path.parent
    index = read_index(index_path)
    return [
        (root / entry["file"], int(i))
        for entry in index["shards"]
        for i in split_samples(index, entry, "val")
    ]


def export_gallery(run_dir: Path, config: dict[str, Any], count: int = 12) -> list[str]:
    """Write up to ``count`` validation frames (spread evenly over the split) into
    ``<run>/gallery/`` unless it already holds some; returns the gallery's names.

    Shard sets that cannot be read are skipped with a logged reason: the page still takes
    uploads.
    """
    existing = gallery_names(run_dir)
    if existing:
        return existing
    data = (config.get("data") or {}).get("kwargs") or {}
    samples: list[tuple[Path, int]] = []
    for index_path in data.get("index_paths") or []:
        try:
            samples.extend(_val_samples(Path(index_path)))
        except (OSError, ValueError, KeyError) as error:
            log.warning("gallery: skipping %s: %s", index_path, error)
    if not samples:
        log.warning("gallery: the run's shard sets hold no validation frames; uploads only")
        return []
    picks = np.unique(np.linspace(0, len(samples) - 1, min(count, len(samples))).round())
    readers: dict[Path, ShardReader] = {}
    for k, pick in enumerate(picks.astype(int)):
        shard, i = samples[pick]
        reader = readers.setdefault(shard, ShardReader(shard))
        sample = reader.read_sample(i, fields=("image",))
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", str(sample["sample_id"]))[:80]
        write_bytes(run_dir / GALLERY_DIR / f"val{k:02d}_{stem}.png", encode_png(sample["image"]))
    for reader in readers.values():
        reader.close()
    return gallery_names(run_dir)
