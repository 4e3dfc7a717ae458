"""S3-CNN: Mahendran, Thewlis & Vedaldi, "Self-supervised Segmentation by Grouping Optical-Flow",
ECCV 2018 workshops, Sec. 3-4.

The maths (pure tensor functions) first, then the method (:class:`S3Module`). A network predicts L soft segments ``m`` (B, L, H, W), softmax
over L; the flow ``f`` (B, 2, H, W) is only seen by the loss. Eq. (2) replaces each segment's
marginal likelihood by its maximum over a simple parametric model θ_l; the paper makes it concrete
in two ways, both here:

* **Affine motion loss** (Fig. 1b): per segment, the weighted least-squares affine fit of the flow,
  ``A_l = argmin_A Σ_u m_ul ||X_u A - f_u||²`` with ``X_u = (x, y, 1)`` (solved in closed form,
  ``(Xᵀ W_l X + λI) A_l = Xᵀ W_l f``, differentiable through ``torch.linalg.solve``); the fits are
  recombined, ``f̂_u = Σ_l m_ul X_u A_l``, and the loss is a robust (Charbonnier) residual
  ``mean_u sqrt(||f̂_u - f_u||² + ε²)``.
* **Low-entropy motion loss**: per segment a soft histogram of the flow magnitude (each pixel's
  magnitude split linearly between its two nearest bin centres, weighted by ``m_ul``), and its
  entropy. The per-segment entropies are weighted by the segment's share of the pixels,
  ``Σ_l π_l H(h_l)``: with θ_l the histogram, ``-log p(f|m)`` of eq. (2) is exactly
  ``N Σ_l π_l H(h_l)`` (the paper says "the entropy of this histogram is used as a loss" without
  the weighting; unweighted, emptying segments would be free).

Pixel coordinates are normalised to [-1, 1] so the normal equations are well conditioned; λ (a
ridge of 1e-6 relative to the segment's weight) keeps the solve defined for an empty segment.

The network (:class:`SegmentNet`): a trunk (``models.backbones``, stride 8), a 1×1 convolution to
L scores, bilinear upsampling to the image and a softmax over L. The paper uses an FCN-8s on
VGG-16; the trunk + 1×1 head is this project's stand-in, on the trunks the other methods share so
that their backbones compare. The paper gives no optimiser settings; CPFS's Adam ones are used.
Batch contract: the ``s3`` view of ``models.data`` (``image`` ImageNet-normalised, ``flow`` in px,
raw, so an affine field stays affine; ``valid``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from models.backbones import build_backbone
from models.methods.base import masked_mean
from models.methods.cpfs import ADAM_DEFAULTS, AdamMethod

__all__ = [
    "S3Module",
    "S3_LOSSES",
    "SegmentNet",
    "affine_fit",
    "affine_motion_loss",
    "coordinate_design",
    "histogram_entropy",
    "low_entropy_loss",
    "recombined_affine_flow",
    "s3_loss",
    "soft_magnitude_histogram",
]

S3_LOSSES = ("affine", "entropy")


def coordinate_design(height: int, width: int, dtype: torch.dtype, device=None) -> torch.Tensor:
    """X (H·W, 3): rows (x, y, 1) with x, y the pixel centres mapped to [-1, 1]."""
    ys = (torch.arange(height, dtype=dtype, device=device) + 0.5) / height * 2.0 - 1.0
    xs = (torch.arange(width, dtype=dtype, device=device) + 0.5) / width * 2.0 - 1.0
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack(
        [grid_x.reshape(-1), grid_y.reshape(-1), torch.ones_like(grid_x).reshape(-1)], 1
    )


def _check(segments: torch.Tensor, flow: torch.Tensor) -> None:
    if segments.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(
            f"need segments (B, L, H, W) and flow (B, 2, H, W), got "
            f"{tuple(segments.shape)} {tuple(flow.shape)}"
        )
    if segments.shape[0] != flow.shape[0] or segments.shape[-2:] != flow.shape[-2:]:
        raise ValueError(f"segments {tuple(segments.shape)} and flow {tuple(flow.shape)} differ")


def affine_fit(
    weights: torch.Tensor, design: torch.Tensor, flow: torch.Tensor, ridge: float = 1e-6
) -> torch.Tensor:
    """Weighted least-squares affine fits: weights (B, L, N), design X (N, 3), flow (B, N, 2) ->
    A (B, L, 3, 2) minimising Σ_u w_lu ||X_u A_l - f_u||² (+ ridge · mean weight · ||A||²)."""
    xw = weights[..., :, None] * design  # (B, L, N, 3)
    normal = xw.transpose(-1, -2) @ design  # (B, L, 3, 3)
    rhs = xw.transpose(-1, -2) @ flow[:, None]  # (B, L, 3, 2)
    scale = weights.mean(-1).clamp(min=1e-12)[..., None, None]
    eye = torch.eye(3, dtype=normal.dtype, device=normal.device)
    return torch.linalg.solve(normal + ridge * scale * eye, rhs)


def recombined_affine_flow(
    segments: torch.Tensor, flow: torch.Tensor, ridge: float = 1e-6
) -> torch.Tensor:
    """f̂ = Σ_l m_l X A_l, (B, 2, H, W): each segment's affine fit, blended by the soft segments."""
    _check(segments, flow)
    batch, num, height, width = segments.shape
    design = coordinate_design(height, width, flow.dtype, flow.device)
    weights = segments.reshape(batch, num, -1)
    target = flow.reshape(batch, 2, -1).transpose(1, 2)
    fits = affine_fit(weights, design, target, ridge)  # (B, L, 3, 2)
    per_segment = design @ fits  # (B, L, N, 2)
    blended = (weights[..., None] * per_segment).sum(1)  # (B, N, 2)
    return blended.transpose(1, 2).reshape(batch, 2, height, width)


def affine_motion_loss(
    segments: torch.Tensor,
    flow: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    epsilon: float = 0.01,
    ridge: float = 1e-6,
) -> torch.Tensor:
    """Charbonnier residual between the recombined affine flow and the flow, mean over pixels.

    Invalid pixels (``valid`` False) get zero weight in the fits and in the mean.
    """
    if valid is not None:
        segments = segments * valid.to(segments.dtype)
    fitted = recombined_affine_flow(segments, flow, ridge)
    residual = ((fitted - flow).square().sum(1) + epsilon**2).sqrt() - epsilon
    return masked_mean(residual, valid)


def soft_magnitude_histogram(
    segments: torch.Tensor, magnitude: torch.Tensor, num_bins: int, max_magnitude: float
) -> torch.Tensor:
    """Per-segment soft histograms (B, L, num_bins) of ``magnitude`` (B, H, W), unnormalised.

    Bin centres are ``linspace(0, max_magnitude, num_bins)``; a magnitude between two centres is
    split linearly between them (beyond the last it goes to the last bin), weighted by ``m_ul``.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    if not max_magnitude > 0:
        raise ValueError(f"max_magnitude must be > 0, got {max_magnitude}")
    batch, num = segments.shape[:2]
    if num_bins == 1:
        assign = torch.ones_like(magnitude.reshape(batch, -1, 1))
    else:
        position = magnitude.reshape(batch, -1).clamp(0.0, max_magnitude)
        position = position / max_magnitude * (num_bins - 1)
        centres = torch.arange(num_bins, dtype=position.dtype, device=position.device)
        assign = (1.0 - (position[..., None] - centres).abs()).clamp(min=0.0)  # (B, N, K)
    return segments.reshape(batch, num, -1) @ assign.to(segments.dtype)


def histogram_entropy(histogram: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each histogram over the last axis, after normalising it; 0·log 0
    = 0, and an empty histogram has entropy 0."""
    total = histogram.sum(-1, keepdim=True)
    prob = histogram / total.clamp(min=1e-12)
    # clamp inside the log, not xlogy: xlogy's gradient at an empty bin is log 0 = -inf
    return -(prob * prob.clamp(min=1e-30).log()).sum(-1)


def low_entropy_loss(
    segments: torch.Tensor,
    flow: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    num_bins: int = 16,
    max_magnitude: float = 20.0,
) -> torch.Tensor:
    """Σ_l π_l H(h_l): the entropy of each segment's flow-magnitude histogram, weighted by the
    segment's share π_l of the (valid) pixels; averaged over the batch."""
    _check(segments, flow)
    if valid is not None:
        segments = segments * valid.to(segments.dtype)
    magnitude = torch.linalg.vector_norm(flow.detach(), dim=1)  # the flow is a target only
    hist = soft_magnitude_histogram(segments, magnitude, num_bins, max_magnitude)
    mass = hist.sum(-1)  # (B, L)
    share = mass / mass.sum(-1, keepdim=True).clamp(min=1e-12)
    return (share * histogram_entropy(hist)).sum(-1).mean()


def s3_loss(
    segments: torch.Tensor,
    flow: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    losses: tuple[str, ...] | list[str] = ("affine",),
    weights: dict[str, float] | None = None,
    epsilon: float = 0.01,
    num_bins: int = 16,
    max_magnitude: float = 20.0,
) -> dict[str, torch.Tensor]:
    """The configured S3 losses and their weighted sum (``total``); ``losses`` ⊆ S3_LOSSES."""
    chosen = tuple(losses)
    if not chosen or any(name not in S3_LOSSES for name in chosen):
        raise ValueError(f"losses must be a non-empty subset of {S3_LOSSES}, got {chosen}")
    weights = {name: 1.0 for name in chosen} | dict(weights or {})
    out: dict[str, torch.Tensor] = {}
    if "affine" in chosen:
        out["affine"] = affine_motion_loss(segments, flow, valid, epsilon=epsilon)
    if "entropy" in chosen:
        out["entropy"] = low_entropy_loss(
            segments, flow, valid, num_bins=num_bins, max_magnitude=max_magnitude
        )
    out["total"] = sum(weights[name] * out[name] for name in chosen)
    return out


class SegmentNet(nn.Module):
    """trunk + 1×1 conv: image (B, 3, H, W) -> soft segments (B, L, H, W), softmax over L."""

    def __init__(self, backbone: str, num_segments: int, backbone_kwargs: dict | None = None):
        super().__init__()
        if num_segments < 2:
            raise ValueError(f"num_segments must be >= 2, got {num_segments}")
        self.backbone, channels = build_backbone(backbone, **dict(backbone_kwargs or {}))
        self.head = nn.Conv2d(channels, num_segments, 1)
        self.num_segments = num_segments

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        scores = self.head(self.backbone(image))
        return F.interpolate(scores, size=image.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.logits(image).softmax(dim=1)


class S3Module(AdamMethod):
    """Self-supervised segmentation by grouping flow: batches of the ``s3`` view -> loss."""

    BATCH_KEYS: ClassVar[tuple[str, ...]] = ("image", "flow")
    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "model": {
            "backbone": "alexnet",
            "backbone_kwargs": {},
            "num_segments": 5,
            "losses": ["affine"],
            "loss_weights": {},
            "charbonnier_eps": 0.01,
            "num_bins": 16,
            "max_magnitude": 20.0,
        },
        "optim": dict(ADAM_DEFAULTS),
        "figures": {"max_magnitude": 10.0},
    }
    CURVE: ClassVar[dict[str, str]] = {
        "metric": "val/one_segment",
        "metric_label": "loss of one segment (baseline)",
        "loss_label": "S3 loss",
        "title": "S3 pretraining",
    }

    def __init__(
        self,
        backbone: str = "alexnet",
        backbone_kwargs: dict | None = None,
        num_segments: int = 5,
        losses: Sequence[str] = ("affine",),
        loss_weights: dict | None = None,
        charbonnier_eps: float = 0.01,
        num_bins: int = 16,
        max_magnitude: float = 20.0,
        lr: float = 1.0e-4,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1.0e-8,
        weight_decay: float = 0.0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if not losses or any(name not in S3_LOSSES for name in losses):
            raise ValueError(f"losses must be a non-empty subset of {S3_LOSSES}, got {losses}")
        self.save_hyperparameters()
        self.model = SegmentNet(backbone, num_segments, backbone_kwargs)
        self.use_channels_last(channels_last)

    @property
    def backbone(self) -> nn.Module:
        return self.model.backbone

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(self.to_memory_format(image))

    def _s3_losses(
        self, segments: torch.Tensor, batch: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        hp = self.hparams
        return s3_loss(
            segments,
            batch["flow"].float(),
            batch.get("valid"),
            losses=tuple(hp.losses),
            weights=hp.loss_weights,
            epsilon=hp.charbonnier_eps,
            num_bins=hp.num_bins,
            max_magnitude=hp.max_magnitude,
        )

    def compute_loss(
        self, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        segments = self(batch["image"]).float()
        losses = self._s3_losses(segments, batch)
        return losses["total"], {"segments": segments, **losses}

    def validation_metrics(
        self, batch: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Each loss term, and the loss of one segment covering the frame (the baseline)."""
        metrics = {name: outputs[name] for name in self.hparams.losses}
        one = torch.zeros_like(outputs["segments"])
        one[:, 0] = 1.0
        metrics["one_segment"] = self._s3_losses(one, batch)["total"]
        return metrics
