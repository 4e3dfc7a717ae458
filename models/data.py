"""Training data: a torch ``Dataset`` over HDF5 shard sets, CMP-style augmentation, per-method views.

Reads the shards written by ``pipeline/shards/writer.py`` (one or more sets, each an ``index.json``),
augments each sample as the CMP authors' loader does (Zhan et al. 2019, Sec. 4 "Training
details": the stored frames are already resized so the shorter side is 416; a random crop of
``crop_size``, an optional random scale first, and a horizontal flip) and builds the tensors one
pre-training method consumes. The geometry is drawn from the sample's size before reading, and
only the window of the frame the crop samples is read (tiled arrays) and converted.

The loader ships each sample compactly (``make_view``): uint8 image, guidance as points; the
DataModule's ``on_after_batch_transfer`` expands a batch on the training device into the batch
contract of the method (``models/methods/<name>.py``; ``to_model_batch``):

* ``cmp``: ``image`` (3,H,W) ImageNet-normalised, ``flow`` (2,H,W) px, ``sparse`` (4,H,W) from
  guidance points sampled *online* on the augmented flow (CMP Sec. 3.2, ``pipeline.guidance``),
  ``valid`` (1,H,W) bool;
* ``cpfs``: ``image`` + ``flow`` log-normalised (Mahendran et al. 2018, eq. 6, M = 56) + ``valid``;
* ``s3``: ``image`` + ``flow`` (2,H,W) px, raw (S3's affine fits need an affine field to stay
  affine; Mahendran et al., ECCV-W 2018) + ``valid``;
* ``motion_masks``: ``image`` + ``trimap`` (H,W) long, 255 = ignore (Pathak et al. 2017); only
  frames that kept a mask are used.

Geometry is one affine warp per array (scale and crop together, so only the crop is resampled);
flow vectors are multiplied by the scale and u is negated on a horizontal flip. The HDF5 files
are opened lazily inside each worker (``ShardReader``), so the dataset pickles under fork and
spawn. With a seed, every draw's randomness comes from the sampler in the main process, so the
batches do not depend on the number of workers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from models.resumable import EpochSampler, start_at_batch, trained_batches
from models.workers import ThreadLimitedLoader
from pipeline.shards.reader import ShardReader, read_index, split_samples

VIEWS = ("cmp", "cpfs", "motion_masks", "s3")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255
# CMP paper setting (YFCC / YouTube9K): NMS kernel 81, grid stride 200, at most 150 points.
DEFAULT_GUIDANCE = {
    "kernel_size": 81,
    "grid_stride": 200,
    "edge_threshold": 0.1,
    "max_points": 150,
    "downsample": 2,
}
_VIEW_FIELDS = {
    "cmp": ("image", "flow"),
    "cpfs": ("image", "flow"),
    "motion_masks": ("image", "trimap"),
    "s3": ("image", "flow"),
}


class Geometry(NamedTuple):
    """One sample's spatial augmentation: scale, then crop at (y0, x0) in scaled pixels, then flip."""

    scale: float
    y0: int
    x0: int
    height: int
    width: int
    flip: bool


def _crop_hw(crop_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(crop_size, (int, np.integer)):
        crop = (int(crop_size), int(crop_size))
    else:
        crop = tuple(int(c) for c in crop_size)
    if len(crop) != 2 or min(crop) < 1:
        raise ValueError(f"crop_size must be a positive int or (height, width), got {crop_size!r}")
    return crop  # type: ignore[return-value]


def draw_geometry(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    crop_size: int | Sequence[int],
    scale_range: Sequence[float] = (1.0, 1.0),
    flip: bool = True,
    train: bool = True,
) -> Geometry:
    """Random scale in ``scale_range``, random crop, flip with p = 0.5 (train); else centre crop.

    The scale is raised when needed so the scaled frame covers the crop.
    """
    crop_h, crop_w = _crop_hw(crop_size)
    lo, hi = float(scale_range[0]), float(scale_range[1])
    if not 0 < lo <= hi:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range!r}")
    scale = float(rng.uniform(lo, hi)) if train and hi > lo else (lo if train else 1.0)
    scale = max(scale, crop_h / height, crop_w / width)
    free_y = max(int(np.floor(height * scale + 1e-6)) - crop_h, 0)
    free_x = max(int(np.floor(width * scale + 1e-6)) - crop_w, 0)
    if train:
        y0, x0 = int(rng.integers(0, free_y + 1)), int(rng.integers(0, free_x + 1))
        mirrored = bool(flip and rng.random() < 0.5)
    else:
        y0, x0, mirrored = free_y // 2, free_x // 2, False
    return Geometry(scale, y0, x0, crop_h, crop_w, mirrored)


def source_window(geom: Geometry, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the stored frame that ``geom``'s crop samples from.

    A pure crop needs exactly its pixels; a rescaled crop needs the source span of its pixel
    centres plus one pixel each side for bilinear interpolation. Reading only this window gives
    the same result as warping the whole frame (``apply_geometry(..., origin=...)``).
    """
    if geom.scale == 1.0:
        return geom.y0, geom.y0 + geom.height, geom.x0, geom.x0 + geom.width
    shift = 0.5 * (geom.scale - 1.0)
    spans = []
    for start, size, limit in ((geom.y0, geom.height, height), (geom.x0, geom.width, width)):
        low = (start - shift) / geom.scale
        high = (start + size - 1 - shift) / geom.scale
        spans.append((max(0, int(np.floor(low)) - 1), min(limit, int(np.ceil(high)) + 2)))
    (top, bottom), (left, right) = spans
    return top, bottom, left, right


def _warp(
    array: np.ndarray, geom: Geometry, interpolation: int, origin: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """Scale + crop + flip of ``array``, whose pixel (0, 0) is pixel ``origin`` of the frame."""
    if geom.scale == 1.0:  # pure crop: exact, no resampling
        top, left = geom.y0 - origin[0], geom.x0 - origin[1]
        out = array[top : top + geom.height, left : left + geom.width]
    else:
        # Pixel-centre convention of cv2.resize: x_dst = s * x_src + (s - 1) / 2, then the crop;
        # x_src counts from the frame's column 0, i.e. origin[1] + the column in ``array``.
        shift = 0.5 * (geom.scale - 1.0)
        tx = shift - geom.x0 + geom.scale * origin[1]
        ty = shift - geom.y0 + geom.scale * origin[0]
        matrix = np.array([[geom.scale, 0.0, tx], [0.0, geom.scale, ty]], np.float64)
        out = cv2.warpAffine(
            array,
            matrix,
            (geom.width, geom.height),
            flags=interpolation,
            borderMode=cv2.BORDER_REPLICATE,
        )
    if geom.flip:
        # cv2.flip writes a fresh contiguous array ~10x faster than copying out[:, ::-1].
        # OpenCV reads the row-strided crop view in place.
        flipped = cv2.flip(out, 1)
        # OpenCV drops a trailing channel axis of 1; put it back only then (a reshape is a view).
        return flipped if flipped.shape == out.shape else flipped.reshape(out.shape)
    return np.ascontiguousarray(out)


def apply_geometry(
    sample: dict[str, Any], geom: Geometry, origin: tuple[int, int] | None = None
) -> dict[str, Any]:
    """Apply ``geom`` to ``image`` / ``flow`` / ``valid`` / ``trimap`` / ``soft`` where present.

    Image and flow and soft mask are resampled bilinearly, ``valid`` and ``trimap`` by nearest
    neighbour (labels must not blend). Flow vectors are scaled with the image, and u changes
    sign on a horizontal flip. The arrays may be a window of the frame starting at ``origin``
    (default: ``sample["origin"]`` or (0, 0)), as read with :func:`source_window`.
    """
    if origin is None:
        origin = tuple(sample.get("origin", (0, 0)))  # type: ignore[assignment]
    out = dict(sample)
    out.pop("origin", None)
    if sample.get("image") is not None:
        out["image"] = _warp(sample["image"], geom, cv2.INTER_LINEAR, origin)
    if sample.get("flow") is not None:
        flow = _warp(sample["flow"], geom, cv2.INTER_LINEAR, origin)
        # Vectors are in pixels of the image they belong to: they grow with it.
        if geom.scale != 1.0:
            flow *= np.float32(geom.scale)
        if geom.flip:
            flow[..., 0] = -flow[..., 0]
        if np.may_share_memory(flow, sample["flow"]):  # a pure crop without flip is a view
            flow = flow.copy()  # never hand out (or later modify) the stored sample's memory
        out["flow"] = flow
    if sample.get("valid") is not None:
        valid = np.asarray(sample["valid"], bool).view(np.uint8)
        valid = _warp(valid, geom, cv2.INTER_NEAREST, origin)
        out["valid"] = valid.view(bool)
    if sample.get("trimap") is not None:
        out["trimap"] = _warp(sample["trimap"], geom, cv2.INTER_NEAREST, origin)
    if sample.get("soft") is not None:
        out["soft"] = _warp(sample["soft"], geom, cv2.INTER_LINEAR, origin)
    return out


def make_view(
    sample: dict[str, Any],
    view: str,
    *,
    rng: np.random.Generator,
    guidance: dict[str, Any] | None = None,
    flow_bound: float = 56.0,
) -> dict[str, torch.Tensor]:
    """One (augmented) sample as the loader ships it: the compact form of a method's tensors.

    ``image`` stays uint8 (H, W, 3), a trimap uint8, and CMP's sparse input travels as its
    guidance points (``points``: int32 (max_points, 2) of (y, x), padded with -1). The DataModule
    expands a batch of these on the training device after transfer (:func:`to_model_batch`):
    the float image and the (4, H, W) sparse map are ~4x the bytes of what they are made from,
    and copying them between processes cost the loader more than decoding the sample.
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    image = sample["image"]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 H×W×3, got {image.dtype} {image.shape}")
    out = {"image": torch.from_numpy(np.ascontiguousarray(image))}
    if view == "motion_masks":
        if sample.get("trimap") is None:
            raise ValueError(f"sample {sample.get('sample_id')} has no trimap")
        out["trimap"] = torch.from_numpy(np.ascontiguousarray(sample["trimap"], np.uint8))
        return out
    flow = sample["flow"]
    out["valid"] = torch.from_numpy(np.ascontiguousarray(sample["valid"][None]))
    if view == "cmp":
        from pipeline.guidance import sample_guidance

        params = {**DEFAULT_GUIDANCE, **(guidance or {})}
        found = sample_guidance(flow, rng=rng, valid=sample["valid"], **params).points
        cap = params["max_points"]
        if cap is None:  # no cap (the authors' max_num_guide -1): pad to what can occur
            from pipeline.guidance import max_guidance_points

            cap = max_guidance_points(
                flow.shape[:2], params["kernel_size"], params["grid_stride"], params["downsample"]
            )
        points = np.full((cap, 2), -1, np.int32)
        points[: len(found)] = found
        out["flow"] = torch.from_numpy(np.ascontiguousarray(flow.transpose(2, 0, 1)))
        out["points"] = torch.from_numpy(points)
        return {k: out[k] for k in ("image", "flow", "points", "valid")}
    if view == "s3":
        out["flow"] = torch.from_numpy(np.ascontiguousarray(flow.transpose(2, 0, 1)))
        return {k: out[k] for k in ("image", "flow", "valid")}
    from pipeline.flowio import log_normalise_flow

    normalised = log_normalise_flow(flow, M=flow_bound)
    out["flow"] = torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))
    return {k: out[k] for k in ("image", "flow", "valid")}


def normalise_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB -> float32 (N, 3, H, W) ImageNet-normalised, on their device."""
    x = images.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x.div_(255.0) - mean) / std


def sparse_from_points(flow: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """CMP's sparse input (B, 4, H, W) from flow (B, 2, H, W) and points (B, P, 2), -1 = none.

    Channels 0-1 hold the flow at the points and 0 elsewhere, channels 2-3 the point mask
    (``pipeline.guidance.sparse_flow_input``, batched, on the flow's device).
    """
    if flow.ndim != 4 or flow.shape[1] != 2 or points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"need flow (B,2,H,W) and points (B,P,2), got {flow.shape} {points.shape}")
    batch, _, height, width = flow.shape
    sparse = flow.new_zeros((batch, 4, height, width))
    keep = points[..., 0] >= 0
    rows = torch.arange(batch, device=flow.device)[:, None].expand_as(keep)[keep]
    ys, xs = points[..., 0][keep].long(), points[..., 1][keep].long()
    sparse[rows, 0:2, ys, xs] = flow[rows, :, ys, xs]
    sparse[rows, 2:4, ys, xs] = 1.0
    return sparse


def to_model_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A collated loader batch in the batch contract of ``models/methods``, on its device.

    uint8 (B, H, W, 3) images become ImageNet-normalised float32 (B, 3, H, W); ``points``
    become ``sparse`` (:func:`sparse_from_points`); uint8 trimaps become int64. A batch
    already in that form (e.g. from ``models.synthetic``) passes through unchanged.
    """
    out = dict(batch)
    if out["image"].dtype == torch.uint8:
        out["image"] = normalise_images(out["image"])
    points = out.pop("points", None)
    if points is not None and "sparse" not in out:
        out["sparse"] = sparse_from_points(out["flow"], points)
    if "trimap" in out and out["trimap"].dtype == torch.uint8:
        out["trimap"] = out["trimap"].long()
    return out


class ShardDataset(Dataset):
    """Samples of one split of one or more shard sets, augmented and shaped for ``view``.

    An item is addressed by an int, or by ``(index, draw_seed)`` as yielded by
    :class:`SeededWeightedSampler`; the draw seed fixes the augmentation and guidance of that draw.
    """

    def __init__(
        self,
        index_paths: Sequence[str | os.PathLike],
        *,
        split: str = "train",
        view: str = "cmp",
        crop_size: int | Sequence[int] = 384,
        scale_range: Sequence[float] = (1.0, 1.0),
        flip: bool = True,
        augment: bool | None = None,
        guidance: dict[str, Any] | None = None,
        flow_bound: float = 56.0,
        seed: int | None = None,
    ) -> None:
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if isinstance(index_paths, (str, os.PathLike)):
            index_paths = [index_paths]
        if not index_paths:
            raise ValueError("index_paths is empty")
        _crop_hw(crop_size)
        self.view, self.split, self.seed = view, split, seed
        self.crop_size, self.scale_range, self.flip = crop_size, tuple(scale_range), flip
        self.augment = split == "train" if augment is None else augment
        self.guidance = {**DEFAULT_GUIDANCE, **(guidance or {})}
        self.flow_bound = flow_bound
        self.readers: list[ShardReader] = []  # lazy: no HDF5 handle is opened here
        shard_ids, locals_, set_ids, self.set_sizes = [], [], [], []
        for set_id, index_path in enumerate(index_paths):
            path = Path(index_path)
            root = path if path.is_dir() else path.parent
            index = read_index(path)
            n_set = 0
            for entry in index["shards"]:
                keep = split_samples(index, entry, split)
                if not len(keep):
                    continue
                if view == "motion_masks":  # only frames that kept a mask have a trimap
                    keep = keep[np.asarray(entry["has_mask"], bool)[keep]]
                shard_ids.append(np.full(len(keep), len(self.readers), np.int32))
                locals_.append(keep.astype(np.int32))
                set_ids.append(np.full(len(keep), set_id, np.int32))
                self.readers.append(ShardReader(root / entry["file"]))
                n_set += len(keep)
            self.set_sizes.append(n_set)
        concat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int32)  # noqa: E731
        self.shard_of, self.local_of, self.set_of = map(concat, (shard_ids, locals_, set_ids))

    def __len__(self) -> int:
        return len(self.shard_of)

    def sample_weights(self, weights: Sequence[float] | None = None) -> np.ndarray:
        """Per-sample weights giving each set a share of draws proportional to its weight."""
        n_sets = len(self.set_sizes)
        weights = np.ones(n_sets) if weights is None else np.asarray(weights, np.float64)
        if weights.shape != (n_sets,) or (weights < 0).any() or not np.isfinite(weights).all():
            raise ValueError(f"weights must be {n_sets} finite non-negative numbers, got {weights}")
        sizes = np.maximum(np.asarray(self.set_sizes, np.float64), 1.0)
        per_sample = (weights / sizes)[self.set_of]
        if len(per_sample) and per_sample.sum() <= 0:
            raise ValueError("weights put zero probability on every sample")
        return per_sample

    def read_crop(self, i: int, rng: np.random.Generator) -> tuple[dict[str, Any], Geometry]:
        """Sample ``i``'s augmentation drawn from ``rng`` and the window of the frame it samples.

        The geometry comes from the sample's size in the metadata; only the window the crop
        samples is read (tiled arrays) and converted. Apply it with :func:`apply_geometry`.
        """
        reader, local = self.readers[self.shard_of[i]], int(self.local_of[i])
        height, width = reader.sample_shape(local)
        geom = draw_geometry(
            rng,
            height,
            width,
            crop_size=self.crop_size,
            scale_range=self.scale_range,
            flip=self.flip,
            train=self.augment,
        )
        window = source_window(geom, height, width)
        return reader.read_sample(local, fields=_VIEW_FIELDS[self.view], window=window), geom

    def _rng(self, i: int, draw_seed: int | None) -> np.random.Generator:
        if draw_seed is not None:
            return np.random.default_rng(draw_seed)
        if self.seed is not None or not self.augment:
            # Validation is deterministic even without a seed: the same crops every epoch.
            return np.random.default_rng([self.seed or 0, i])
        return np.random.default_rng()

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        i, draw_seed = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), None)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range ({len(self)} samples)")
        rng = self._rng(i, draw_seed)
        sample, geom = self.read_crop(i, rng)
        sample = apply_geometry(sample, geom)
        return make_view(
            sample, self.view, rng=rng, guidance=self.guidance, flow_bound=self.flow_bound
        )


class SeededWeightedSampler(EpochSampler):
    """Weighted sampling with replacement that also hands each draw its own augmentation seed.

    Equivalent to ``WeightedRandomSampler`` for the indices; the extra seed (drawn here, in the
    main process) makes the augmentation independent of which worker decodes the sample.
    Epoch ``e``'s indices and seeds are a function of (seed, e) (a new epoch each ``iter``), and
    the sampler resumes mid-epoch (``models.resumable.EpochSampler``).
    """

    def __init__(
        self, weights: np.ndarray, num_samples: int | None = None, seed: int | None = None
    ) -> None:
        self.weights = torch.as_tensor(np.asarray(weights, np.float64))
        num_samples = len(self.weights) if num_samples is None else int(num_samples)
        seed = int(np.random.SeedSequence().entropy % 2**62) if seed is None else int(seed)
        super().__init__(num_samples, seed)

    def draw(self, epoch: int) -> list[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        indices = torch.multinomial(self.weights, self.num_samples, True, generator=generator)
        seeds = torch.randint(0, 2**62, (self.num_samples,), generator=generator)
        return list(zip(indices.tolist(), seeds.tolist(), strict=True))


class ShardDataModule(pl.LightningDataModule):
    """Train / val loaders over weighted shard sets for one ``view`` (``cmp``, ``cpfs``, ...)."""

    def __init__(
        self,
        index_paths: Sequence[str | os.PathLike],
        weights: Sequence[float] | None = None,
        *,
        view: str = "cmp",
        crop_size: int | Sequence[int] = 384,
        scale_range: Sequence[float] = (1.0, 1.0),
        flip: bool = True,
        batch_size: int = 16,
        val_batch_size: int | None = None,
        num_workers: int = 4,
        guidance: dict[str, Any] | None = None,
        flow_bound: float = 56.0,
        seed: int | None = 0,
        samples_per_epoch: int | None = None,
        multiprocessing_context: str | None = None,
        pin_memory: bool | None = None,
        prefetch_factor: int = 2,
        reuse_worker_memory: bool = True,
    ) -> None:
        super().__init__()
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
        if batch_size < 1 or num_workers < 0:
            raise ValueError("batch_size must be >= 1 and num_workers >= 0")
        if multiprocessing_context not in (None, "fork", "spawn", "forkserver"):
            raise ValueError(f"unknown multiprocessing_context {multiprocessing_context!r}")
        if prefetch_factor < 1:
            raise ValueError(f"prefetch_factor must be >= 1, got {prefetch_factor}")
        self.index_paths = [index_paths] if isinstance(index_paths, str) else list(index_paths)
        self.weights = None if weights is None else list(weights)
        if self.weights is not None and len(self.weights) != len(self.index_paths):
            raise ValueError("weights must have one entry per index path")
        self.view, self.batch_size, self.num_workers = view, batch_size, num_workers
        self.val_batch_size = val_batch_size or batch_size
        self.seed, self.samples_per_epoch = seed, samples_per_epoch
        self.multiprocessing_context = multiprocessing_context
        # Pinned host memory makes the copy to a CUDA device asynchronous; useless without one.
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.prefetch_factor = prefetch_factor
        # Workers reuse memory (shared-memory batch buffers, their freed heap) instead of fresh
        # pages per batch and sample: that was most of their system time (models/workers.py).
        self.reuse_worker_memory = bool(reuse_worker_memory)
        self.dataset_kwargs = {
            "view": view,
            "crop_size": crop_size,
            "scale_range": tuple(scale_range),
            "flip": flip,
            "guidance": guidance,
            "flow_bound": flow_bound,
            "seed": seed,
        }
        self.train_set: ShardDataset | None = None
        self.val_set: ShardDataset | None = None

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # The compact loader batch is expanded where it is cheap: on the training device.
        return to_model_batch(batch)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = ShardDataset(self.index_paths, split="train", **self.dataset_kwargs)
            self.val_set = ShardDataset(self.index_paths, split="val", **self.dataset_kwargs)
            if len(self.train_set) == 0:
                raise ValueError(f"no training samples in {self.index_paths} for view {self.view}")

    def _loader(self, dataset: Dataset, batch_size: int, **kwargs: Any) -> DataLoader:
        workers = self.num_workers
        # Single-threaded workers (torch, OpenCV, BLAS), set without the OpenCV fork deadlock:
        # models/workers.py.
        return ThreadLimitedLoader(
            dataset,
            batch_size=batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            multiprocessing_context=self.multiprocessing_context if workers > 0 else None,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            pin_memory=self.pin_memory,
            reuse_worker_memory=self.reuse_worker_memory,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        assert self.train_set is not None
        sampler = SeededWeightedSampler(
            self.train_set.sample_weights(self.weights),
            num_samples=self.samples_per_epoch or len(self.train_set),
            seed=self.seed,
        )
        # drop_last: a trailing batch of one breaks BatchNorm statistics.
        drop_last = len(sampler) >= self.batch_size
        # a resumed run continues the order where its checkpoint's step left it
        start_at_batch(sampler, trained_batches(self), self.batch_size, drop_last)
        return self._loader(self.train_set, self.batch_size, sampler=sampler, drop_last=drop_last)

    def val_dataloader(self) -> DataLoader | list:
        self.setup()
        if self.val_set is None or len(self.val_set) == 0:
            return []  # a single-video set has no validation split; Lightning skips validation
        return self._loader(self.val_set, self.val_batch_size, shuffle=False)


class CMPDataModule(ShardDataModule):
    """:class:`ShardDataModule` with the ``cmp`` view (batch contract: ``models/methods/cmp.py``)."""

    def __init__(
        self,
        index_paths: Sequence[str | os.PathLike],
        weights: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.pop("view", "cmp") != "cmp":
            raise ValueError("CMPDataModule serves the 'cmp' view only; use ShardDataModule")
        super().__init__(index_paths, weights, view="cmp", **kwargs)
