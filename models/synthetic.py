"""A tiny in-memory scene for tests, benchmarks and smoke runs of every pretraining method.

One sample is a textured square translated by an integer (dx, dy) over a static textured
background. From that one scene each data view gets what ``models.data`` would give it from the
shards (the batch contract of ``models/methods/<name>.py``):

* ``cmp``: ``image``, ``flow`` (px) and ``sparse`` guidance at the square's centre plus a
  zero-motion grid;
* ``motion_masks``: ``image`` and ``trimap`` (1 = the square, 0 = background, 255 = an ignore
  band of ``band`` px around the square's border, as uNLC's trimaps leave undecided pixels);
* ``cpfs``: ``image``, ``flow`` log-normalised (Mahendran et al. 2018, eq. 6, M = ``flow_bound``)
  and ``valid``;
* ``s3``: ``image``, ``flow`` (px, raw) and ``valid``.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from models.data import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, VIEWS
from models.resumable import PermutationSampler, start_at_batch, trained_batches
from pipeline.flowio import log_normalise_flow

__all__ = ["SyntheticDataModule", "synthetic_sample"]


def _texture(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A random RGB texture in [0, 1]: coarse colour blobs plus fine noise, (3, size, size)."""
    coarse = torch.from_numpy(rng.random((1, 3, cells, cells), dtype=np.float32))
    smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0]
    fine = rng.random((3, size, size), dtype=np.float32)
    return np.clip(0.7 * smooth.numpy() + 0.3 * fine, 0.0, 1.0)


def _guidance(flow: np.ndarray, centre: tuple[int, int], grid_stride: int) -> np.ndarray:
    size = flow.shape[-1]
    sparse = np.zeros((4, size, size), np.float32)
    offset = grid_stride // 2
    points = [
        (y, x) for y in range(offset, size, grid_stride) for x in range(offset, size, grid_stride)
    ]
    points.append(centre)
    for y, x in points:
        sparse[0:2, y, x] = flow[:, y, x]
        sparse[2:4, y, x] = 1.0
    return sparse


def _trimap(size: int, top: int, left: int, side: int, band: int) -> np.ndarray:
    trimap = np.zeros((size, size), np.int64)
    y0, x0 = max(top - band, 0), max(left - band, 0)
    trimap[y0 : top + side + band, x0 : left + side + band] = IGNORE_INDEX
    inner = slice(top + band, top + side - band), slice(left + band, left + side - band)
    trimap[inner] = 1
    return trimap


def synthetic_sample(
    index: int,
    size: int = 64,
    max_shift: int = 6,
    grid_stride: int = 32,
    seed: int = 0,
    view: str = "cmp",
    band: int = 2,
    flow_bound: float = 56.0,
) -> dict[str, torch.Tensor]:
    """Sample ``index`` of the scene as ``view`` shapes it (module docstring)."""
    if size % 8 or size < 16:
        raise ValueError(f"size must be a multiple of 8 and >= 16, got {size}")
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    rng = np.random.default_rng([seed, index])
    image = _texture(rng, size, cells=6)
    side = int(rng.integers(size // 4, size // 2 + 1))
    top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    image[:, top : top + side, left : left + side] = _texture(rng, side, cells=3)
    dx, dy = (float(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
    flow = np.zeros((2, size, size), np.float32)
    flow[0, top : top + side, left : left + side] = dx
    flow[1, top : top + side, left : left + side] = dy
    mean = np.asarray(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.asarray(IMAGENET_STD, np.float32)[:, None, None]
    out = {"image": torch.from_numpy((image - mean) / std)}
    if view == "cmp":
        centre = (top + side // 2, left + side // 2)
        out["flow"] = torch.from_numpy(flow)
        out["sparse"] = torch.from_numpy(_guidance(flow, centre, grid_stride))
    elif view == "motion_masks":
        out["trimap"] = torch.from_numpy(_trimap(size, top, left, side, band))
    elif view == "s3":
        out["flow"] = torch.from_numpy(flow)
        out["valid"] = torch.ones((1, size, size), dtype=torch.bool)
    else:
        normalised = log_normalise_flow(flow.transpose(1, 2, 0), M=flow_bound)
        out["flow"] = torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))
        out["valid"] = torch.ones((1, size, size), dtype=torch.bool)
    return out


class InMemoryDataset(Dataset):
    """A list of ready samples (tensor dicts) as a map-style Dataset."""

    def __init__(self, samples: list[dict[str, torch.Tensor]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.samples[index]


class SyntheticDataModule(pl.LightningDataModule):
    """In-memory DataModule of ``synthetic_sample``s (train and val disjoint by index)."""

    def __init__(
        self,
        num_train: int = 64,
        num_val: int = 8,
        size: int = 64,
        batch_size: int = 4,
        max_shift: int = 6,
        seed: int = 0,
        view: str = "cmp",
    ) -> None:
        super().__init__()
        if num_train < 1 or num_val < 0 or batch_size < 1:
            raise ValueError("num_train and batch_size must be >= 1, num_val >= 0")
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
        self.num_train, self.num_val, self.size = num_train, num_val, size
        self.batch_size, self.max_shift, self.seed, self.view = batch_size, max_shift, seed, view
        self.train_set: InMemoryDataset | None = None
        self.val_set: InMemoryDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return

        def make(i: int) -> dict[str, torch.Tensor]:
            return synthetic_sample(i, self.size, self.max_shift, seed=self.seed, view=self.view)

        self.train_set = InMemoryDataset([make(i) for i in range(self.num_train)])
        self.val_set = InMemoryDataset([make(self.num_train + i) for i in range(self.num_val)])

    def train_dataloader(self) -> DataLoader:
        # epoch e's order is a function of (seed, e); a resumed run continues it mid-epoch
        sampler = PermutationSampler(len(self.train_set), self.seed)
        start_at_batch(sampler, trained_batches(self), self.batch_size, drop_last=True)
        return DataLoader(self.train_set, self.batch_size, sampler=sampler, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, self.batch_size, shuffle=False)
