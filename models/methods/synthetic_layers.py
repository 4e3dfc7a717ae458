"""In-memory DataModule over the layered synthetic clips (``pipeline.synthetic.render_clip``) with
exact flow and ground-truth layers, for the CPFS / S3 tests, smoke runs and their science checks.

Each sample is one frame pair of a single-shot clip: ``image`` ImageNet-normalised, ``flow`` in
the view's units (``s3``: px; ``cpfs``: log-normalised with eq. (6) of Mahendran et al. 2018),
``valid`` (all True: the flow is exact) and ``layers`` (H, W) int64, the instance id of the layer
visible at each pixel (0 = background). Train and validation frames come from different clips
(different seeds), so the validation frames are held out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from models.data import IMAGENET_MEAN, IMAGENET_STD
from models.synthetic import InMemoryDataset
from pipeline.flowio import log_normalise_flow
from pipeline.synthetic import render_clip

__all__ = ["SyntheticLayersDataModule", "layer_samples"]

LAYER_VIEWS = ("cpfs", "s3")


def layer_samples(
    seed: int,
    view: str,
    *,
    frames: int,
    size: Sequence[int],
    objects: int,
    flow_bound: float = 56.0,
) -> list[dict[str, torch.Tensor]]:
    """``frames`` consecutive samples of one single-shot clip with ``objects`` moving objects."""
    if view not in LAYER_VIEWS:
        raise ValueError(f"view must be one of {LAYER_VIEWS}, got {view!r}")
    height, width = int(size[0]), int(size[1])
    video, gt = render_clip(
        seed=seed,
        height=height,
        width=width,
        shots_per_video=(1, 1),
        frames_per_shot=(frames + 1, frames + 1),
        objects_per_shot=(objects, objects),
    )
    mean = np.asarray(IMAGENET_MEAN, np.float32)
    std = np.asarray(IMAGENET_STD, np.float32)
    out = []
    for t in range(frames):
        image = (video[t].astype(np.float32) / 255.0 - mean) / std
        flow = gt["flow"][t]
        if view == "cpfs":
            flow = log_normalise_flow(flow, M=flow_bound)
        out.append(
            {
                "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                "flow": torch.from_numpy(np.ascontiguousarray(flow.transpose(2, 0, 1))),
                "valid": torch.ones(1, height, width, dtype=torch.bool),
                "layers": torch.from_numpy(gt["instances"][t].astype(np.int64)),
            }
        )
    return out


class SyntheticLayersDataModule(pl.LightningDataModule):
    """Train clips seeds ``seed .. seed+train_clips-1``, validation clips the next ``val_clips``."""

    def __init__(
        self,
        view: str = "s3",
        train_clips: int = 4,
        val_clips: int = 1,
        frames_per_clip: int = 8,
        size: Sequence[int] = (64, 64),
        objects: int = 2,
        batch_size: int = 4,
        seed: int = 0,
        flow_bound: float = 56.0,
    ) -> None:
        super().__init__()
        if view not in LAYER_VIEWS:
            raise ValueError(f"view must be one of {LAYER_VIEWS}, got {view!r}")
        if train_clips < 1 or val_clips < 0 or frames_per_clip < 1 or batch_size < 1:
            raise ValueError("train_clips, frames_per_clip, batch_size >= 1 and val_clips >= 0")
        if any(int(s) % 8 for s in size):
            raise ValueError(f"size must be multiples of 8 (the trunks' stride), got {size}")
        self.view, self.size, self.objects = view, tuple(int(s) for s in size), objects
        self.train_clips, self.val_clips, self.frames = train_clips, val_clips, frames_per_clip
        self.batch_size, self.seed, self.flow_bound = batch_size, seed, flow_bound
        self.train_set: InMemoryDataset | None = None
        self.val_set: InMemoryDataset | None = None

    def _clips(self, seeds: range) -> InMemoryDataset:
        samples: list[dict[str, torch.Tensor]] = []
        for s in seeds:
            samples += layer_samples(
                s,
                self.view,
                frames=self.frames,
                size=self.size,
                objects=self.objects,
                flow_bound=self.flow_bound,
            )
        return InMemoryDataset(samples)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            first_val = self.seed + self.train_clips
            self.train_set = self._clips(range(self.seed, first_val))
            self.val_set = self._clips(range(first_val, first_val + self.val_clips))

    def train_dataloader(self) -> DataLoader:
        self.setup()
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.train_set, self.batch_size, shuffle=True, drop_last=True, generator=generator
        )

    def val_dataloader(self) -> DataLoader | list:
        self.setup()
        if not self.val_set:
            return []
        return DataLoader(self.val_set, self.batch_size, shuffle=False)
