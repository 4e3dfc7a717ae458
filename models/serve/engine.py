"""The Python API of a trained CMP model: guided propagation and click-to-mask (Sec. 4.3).

Coordinates are image pixels, x to the right and y down; guidance is a list of arrows
``(x, y, dx, dy)``: the point and the motion the user asks of it, in px. Images are uint8
(H, W, 3) RGB of any size; they are padded (edge pixels repeated) to a multiple of the model's
stride, and the flow is cut back to (H, W).

* :meth:`CMPEngine.propagate`: the sparse input of Sec. 3.1 (dx, dy at the points, the point
  mask twice) → the softmax-expectation flow (``models.cmp.predict_flow``) and the next frame,
  the image warped by that flow ("guided video generation": "predict the optical flow and then
  warp the original image to produce the future frame").
* :meth:`CMPEngine.generate`: repeated guidance, each step on the last generated frame with the
  arrows moved along their own motion (marionette control).
* :meth:`CMPEngine.annotate`: the authors' semi-automatic annotation demo (REFERENCE.md): every
  positive click becomes four copies of the guidance with (+v, 0), (−v, 0), (0, +v), (0, −v);
  negative clicks are zero-motion guidance in every copy; the mask is the mean predicted |flow|
  over the copies, divided by its maximum, thresholded at 0.5.

The image encoder runs once per image (its features are cached for the last few images), so an
update after a new arrow or click costs the sparse encoder and decoder only.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from models.cmp import CMP, predict_flow
from models.data import normalise_images
from models.serve.run import CMPRun, load_cmp_run

__all__ = [
    "ANNOTATION_THRESHOLD",
    "DEFAULT_MAGNITUDE",
    "Annotation",
    "CMPEngine",
    "Prediction",
    "annotation_guidance",
    "guidance_array",
    "mask_from_flows",
    "sparse_input",
    "warp_image",
]

# The authors' demo: v of 10-30 px for the dummy vectors; the middle of that range.
DEFAULT_MAGNITUDE = 20.0
ANNOTATION_THRESHOLD = 0.5
FEATURE_CACHE = 4


@dataclass
class Prediction:
    """``flow`` (H, W, 2) float32 px, ``next_frame`` (H, W, 3) uint8, model time in s."""

    flow: np.ndarray
    next_frame: np.ndarray
    latency_s: float


@dataclass
class Annotation:
    """``mask`` (H, W) bool, ``score`` (H, W) float32 in [0, 1] (normalised mean |flow|)."""

    mask: np.ndarray
    score: np.ndarray
    latency_s: float


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"image is empty: {image.shape}")
    return image


def guidance_array(guidance: Sequence[Sequence[float]] | np.ndarray, shape: tuple[int, int]):
    """Arrows as a float32 (P, 4) array of (x, y, dx, dy); points rounded into the image.

    Raises ValueError for a wrong shape, a non-finite value or a point outside the image.
    """
    arrows = np.asarray(guidance, dtype=np.float64).reshape(-1, 4) if len(guidance) else None
    if arrows is None:
        return np.zeros((0, 4), np.float32)
    if not np.isfinite(arrows).all():
        raise ValueError("guidance holds a non-finite value")
    height, width = shape
    x, y = np.rint(arrows[:, 0]), np.rint(arrows[:, 1])
    outside = (x < 0) | (x >= width) | (y < 0) | (y >= height)
    if outside.any():
        i = int(np.argmax(outside))
        raise ValueError(f"point ({arrows[i, 0]:g}, {arrows[i, 1]:g}) is outside {width}x{height}")
    return np.stack([x, y, arrows[:, 2], arrows[:, 3]], axis=1).astype(np.float32)


def sparse_input(arrows_batch: Sequence[np.ndarray], shape: tuple[int, int]) -> torch.Tensor:
    """CMP's sparse input (B, 4, H, W): dx, dy at each arrow's point, then its mask twice.

    A zero-motion arrow still sets the mask: "the negative points serve as the static guidance
    points with zero motion" (Sec. 4.3). A later arrow on the same pixel replaces an earlier one.
    """
    sparse = torch.zeros((len(arrows_batch), 4, *shape), dtype=torch.float32)
    for b, arrows in enumerate(arrows_batch):
        for x, y, dx, dy in np.asarray(arrows, np.float32).reshape(-1, 4):
            sparse[b, :, int(y), int(x)] = torch.tensor([dx, dy, 1.0, 1.0])
    return sparse


def annotation_guidance(
    positive: np.ndarray, negative: np.ndarray, magnitude: float = DEFAULT_MAGNITUDE
) -> list[np.ndarray]:
    """The four guidance copies of the annotation demo, each (P+N, 4): positive clicks move by
    (+v, 0), (−v, 0), (0, +v), (0, −v); negative clicks stay still in every copy."""
    if not magnitude > 0:
        raise ValueError(f"magnitude must be > 0, got {magnitude}")
    copies = []
    for dx, dy in ((magnitude, 0.0), (-magnitude, 0.0), (0.0, magnitude), (0.0, -magnitude)):
        moving = np.array([[p[0], p[1], dx, dy] for p in positive], np.float32).reshape(-1, 4)
        still = np.array([[n[0], n[1], 0.0, 0.0] for n in negative], np.float32).reshape(-1, 4)
        copies.append(np.concatenate([moving, still]))
    return copies


def mask_from_flows(
    flows: np.ndarray, threshold: float = ANNOTATION_THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """(mask, score) from the copies' flows (K, H, W, 2): score = mean |flow| over the copies
    divided by its maximum (all zero when nothing moves), mask = score > threshold."""
    magnitude = np.linalg.norm(np.asarray(flows, np.float64), axis=-1).mean(axis=0)
    peak = float(magnitude.max()) if magnitude.size else 0.0
    score = magnitude / peak if peak > 0 else np.zeros_like(magnitude)
    return score > threshold, score.astype(np.float32)


def warp_image(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """The next frame from frame t and its forward flow: I_{t+1}(p) ≈ I_t(p − flow(p))
    (backward sampling with the forward flow, bilinear, borders repeated)."""
    image = _check_image(image)
    height, width = image.shape[:2]
    if flow.shape != (height, width, 2):
        raise ValueError(f"flow {flow.shape} does not match image {image.shape[:2]}")
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    map_x = xs - flow[..., 0].astype(np.float32)
    map_y = ys - flow[..., 1].astype(np.float32)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


class CMPEngine:
    """A CMP network (or any module with its ``forward(image, sparse) -> logits``) made
    answerable: ``propagate``, ``generate``, ``annotate``. Not thread-safe: one call at a time."""

    def __init__(
        self,
        model: nn.Module,
        num_bins: int,
        max_flow: float,
        stride: int,
        device: torch.device | str = "cpu",
    ) -> None:
        self.model = model.eval()
        self.num_bins, self.max_flow, self.stride = int(num_bins), float(max_flow), int(stride)
        self.device = torch.device(device)
        self._features: OrderedDict[str, torch.Tensor] = OrderedDict()

    @classmethod
    def from_model(cls, model: CMP, device: torch.device | str | None = None) -> CMPEngine:
        device = torch.device(device) if device is not None else next(model.parameters()).device
        return cls(model.to(device), model.num_bins, model.max_flow, model.stride, device)

    @classmethod
    def from_run(cls, run: str | Path | CMPRun, device: str | None = None) -> CMPEngine:
        """The engine of a run folder (``models.serve.run.load_cmp_run``)."""
        loaded = run if isinstance(run, CMPRun) else load_cmp_run(run, device)
        return cls.from_model(loaded.model, loaded.device)

    # ------------------------------------------------------------------ model calls

    def _padded(self, image: np.ndarray) -> torch.Tensor:
        height, width = image.shape[:2]
        pad_y, pad_x = -height % self.stride, -width % self.stride
        padded = np.pad(image, ((0, pad_y), (0, pad_x), (0, 0)), mode="edge")
        return normalise_images(torch.from_numpy(padded)[None].to(self.device))

    def _image_features(self, image: np.ndarray) -> torch.Tensor:
        """The image encoder's output (cached per image content) for a CMP; else the input."""
        key = hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest() + str(image.shape)
        if key in self._features:
            self._features.move_to_end(key)
            return self._features[key]
        tensor = self._padded(image)
        value = self.model.image_encoder(tensor) if isinstance(self.model, CMP) else tensor
        self._features[key] = value
        while len(self._features) > FEATURE_CACHE:
            self._features.popitem(last=False)
        return value

    @torch.inference_mode()
    def flows(self, image: np.ndarray, arrows_batch: Sequence[np.ndarray]) -> np.ndarray:
        """Predicted flow (B, H, W, 2) px for each guidance in ``arrows_batch`` on one image."""
        image = _check_image(image)
        height, width = image.shape[:2]
        features = self._image_features(image)
        padded = (height + (-height % self.stride), width + (-width % self.stride))
        sparse = sparse_input(arrows_batch, padded).to(self.device)
        batch = features.expand(len(arrows_batch), *features.shape[1:])
        if isinstance(self.model, CMP):
            joined = torch.cat([batch, self.model.sparse_encoder(sparse)], dim=1)
            logits = self.model.decoder(joined)
        else:
            logits = self.model(batch, sparse)
        flow = predict_flow(logits.float(), padded, self.num_bins, self.max_flow)
        return flow[:, :, :height, :width].permute(0, 2, 3, 1).cpu().numpy()

    # ------------------------------------------------------------------ operations

    def propagate(self, image: np.ndarray, guidance: Sequence[Sequence[float]]) -> Prediction:
        """Arrows ``(x, y, dx, dy)`` → dense flow and the image warped by it (Sec. 4.3)."""
        image = _check_image(image)
        start = time.perf_counter()
        arrows = guidance_array(guidance, image.shape[:2])
        flow = self.flows(image, [arrows])[0]
        latency = time.perf_counter() - start
        return Prediction(flow, warp_image(image, flow), latency)

    def generate(
        self, image: np.ndarray, guidance: Sequence[Sequence[float]], steps: int
    ) -> list[np.ndarray]:
        """``steps`` frames after ``image``: each the last one warped by the flow the same
        arrows give on it, the arrows' points moved along their motion (kept in the image)."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        frame = _check_image(image)
        arrows = guidance_array(guidance, frame.shape[:2]).astype(np.float64)
        frames = []
        for _ in range(steps):
            frame = self.propagate(frame, arrows).next_frame
            frames.append(frame)
            arrows[:, 0] = np.clip(arrows[:, 0] + arrows[:, 2], 0, frame.shape[1] - 1)
            arrows[:, 1] = np.clip(arrows[:, 1] + arrows[:, 3], 0, frame.shape[0] - 1)
        return frames

    def annotate(
        self,
        image: np.ndarray,
        positive: Sequence[Sequence[float]],
        negative: Sequence[Sequence[float]] = (),
        magnitude: float = DEFAULT_MAGNITUDE,
        threshold: float = ANNOTATION_THRESHOLD,
    ) -> Annotation:
        """Positive / negative clicks ``(x, y)`` → the object's mask (the authors' demo).

        No positive click gives an empty mask (nothing is asked to move).
        """
        image = _check_image(image)
        shape = image.shape[:2]
        pos = guidance_array([(x, y, 0, 0) for x, y in positive], shape)[:, :2]
        neg = guidance_array([(x, y, 0, 0) for x, y in negative], shape)[:, :2]
        start = time.perf_counter()
        if len(pos) == 0:
            empty = np.zeros(shape, np.float32)
            return Annotation(empty > 0, empty, time.perf_counter() - start)
        flows = self.flows(image, annotation_guidance(pos, neg, magnitude))
        mask, score = mask_from_flows(flows, threshold)
        return Annotation(mask, score, time.perf_counter() - start)
