"""Cross Pixel Optical-Flow Similarity (CPFS): Mahendran, Thewlis & Vedaldi, ACCV 2018, Sec. 3-4.

The maths (pure tensor functions): the two kernels of eq. (2), the column-softmax with the
diagonal handling of eqs. (4)-(5), the cross-entropy loss of eq. (3), its reverse ("CPFS-CE-rev",
Table 1) and kernel target alignment (KTA, Cristianini & Shawe-Taylor, Sec. 3 "Cross Pixel
Optical-Flow Similarity Loss function"), plus uniform pixel sampling (Sec. 4.3: P = 512 pixels
per image, "sampled uniformly at random").

Shapes: embeddings ``(B, P, D)``, flow vectors ``(B, P, 2)`` (log-normalised with eq. (6),
``pipeline.flowio.log_normalise_flow``), kernels ``(B, P, P)``.

Reading of eqs. (4)-(5). The paper writes the normaliser as a sum over ``q' != p`` while the text
normalises *columns* ``K(., q)`` into distributions over ``p``; both kernels are symmetric, so
``S(., q)`` here is the softmax over ``p`` of column ``q`` with the diagonal logit replaced:
by 0 for the flow kernel (``exp(0) = 1`` in eq. (4); the true diagonal ``K_f(q, q) = 1``) and by
``-3/4`` for the embedding kernel (``e^{-3/4}`` in eq. (5); the true diagonal ``K_phi = 1/4``).
In both cases the diagonal logit is the kernel's maximum minus one. Eq. (3) sums over columns
``q``; ``cpfs_loss`` averages over columns and images instead (a constant factor P·B, so the
optimum and Adam's steps are unchanged, and the value does not grow with P).

The method (:class:`CPFSModule`): a hypercolumn embedder (``models.hypercolumn``) over a trunk
maps P uniformly sampled valid pixels per image to unit D-dimensional embeddings; σ is learned
(as log σ²). Adam, lr 1e-4, β = (0.9, 0.999), ε = 1e-8, no weight decay (Sec. 4.3). The paper
stops early on the validation loss because AlexNet overfits (``trainer.early_stopping_patience``
of the run config). Validation draws the same pixels every time (seeded), so ``val/loss`` moves
with the model, not with the sampling. Batch contract: the ``cpfs`` view of ``models.data``
(``image`` ImageNet-normalised, ``flow`` log-normalised with eq. (6), M = 56, ``valid``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from models.backbones import build_backbone
from models.hypercolumn import DEFAULT_TAPS, HypercolumnEmbedder
from models.methods.base import PretrainMethod

__all__ = [
    "ADAM_DEFAULTS",
    "AdamMethod",
    "CPFSModule",
    "CPFS_LOSSES",
    "EMBEDDING_DIAGONAL",
    "FLOW_DIAGONAL",
    "column_softmax",
    "cpfs_loss",
    "cross_entropy_columns",
    "embedding_kernel",
    "flow_kernel",
    "gather_pixels",
    "kernel_target_alignment",
    "sample_pixels",
]

FLOW_DIAGONAL = 0.0  # eq. (4): the p = q term contributes exp(0) = 1
EMBEDDING_DIAGONAL = -0.75  # eq. (5): the p = q term contributes e^{-3/4}
CPFS_LOSSES = ("ce", "ce_rev", "kta")


def embedding_kernel(embeddings: torch.Tensor) -> torch.Tensor:
    """K_phi of eq. (2): cosine similarity / 4, (B, P, D) -> (B, P, P)."""
    if embeddings.ndim != 3:
        raise ValueError(f"embeddings must be (B, P, D), got {tuple(embeddings.shape)}")
    unit = torch.nn.functional.normalize(embeddings, dim=-1, eps=1e-12)
    return unit @ unit.transpose(1, 2) / 4.0


def flow_kernel(flow: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """K_f of eq. (2): exp(-||f_p - f_q||² / (2σ²)), (B, P, 2) -> (B, P, P); σ may be learned."""
    if flow.ndim != 3 or flow.shape[-1] != 2:
        raise ValueError(f"flow must be (B, P, 2), got {tuple(flow.shape)}")
    sigma = torch.as_tensor(sigma, dtype=flow.dtype, device=flow.device)
    sq = flow.square().sum(-1)
    dist2 = (sq[:, :, None] + sq[:, None, :] - 2.0 * flow @ flow.transpose(1, 2)).clamp(min=0.0)
    return torch.exp(-dist2 / (2.0 * sigma.square()))


def _with_diagonal(kernel: torch.Tensor, diagonal: float) -> torch.Tensor:
    size = kernel.shape[-1]
    eye = torch.eye(size, dtype=torch.bool, device=kernel.device)
    return kernel.masked_fill(eye, diagonal)


def column_softmax(kernel: torch.Tensor, diagonal: float, *, log: bool = False) -> torch.Tensor:
    """S(p, q) of eqs. (4)-(5): softmax over p of column q, the diagonal logit set to ``diagonal``.

    ``diagonal`` is ``FLOW_DIAGONAL`` (0) for K_f and ``EMBEDDING_DIAGONAL`` (-3/4) for K_phi.
    With ``log`` the log-probabilities come back (stable: ``log_softmax``).
    """
    if kernel.ndim != 3 or kernel.shape[-1] != kernel.shape[-2]:
        raise ValueError(f"kernel must be (B, P, P), got {tuple(kernel.shape)}")
    logits = _with_diagonal(kernel, diagonal)
    return torch.log_softmax(logits, dim=-2) if log else torch.softmax(logits, dim=-2)


def cross_entropy_columns(target: torch.Tensor, log_source: torch.Tensor) -> torch.Tensor:
    """-Σ_p target(p, q) log source(p, q), averaged over columns q and the batch (eq. (3))."""
    return -(target * log_source).sum(dim=-2).mean()


def kernel_target_alignment(kernel: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KTA per image: Σ K K' / sqrt(Σ K² Σ K'²), (B, P, P) x2 -> (B,); 1 for identical kernels."""
    if kernel.shape != target.shape:
        raise ValueError(f"kernel shapes differ: {tuple(kernel.shape)} vs {tuple(target.shape)}")
    inner = (kernel * target).sum(dim=(-2, -1))
    norms = kernel.square().sum(dim=(-2, -1)) * target.square().sum(dim=(-2, -1))
    return inner / norms.clamp(min=1e-30).sqrt()


def cpfs_loss(
    embeddings: torch.Tensor,
    flow: torch.Tensor,
    sigma: torch.Tensor | float,
    loss: str = "ce",
) -> torch.Tensor:
    """The CPFS loss for sampled pixels: embeddings (B, P, D), log-normalised flow (B, P, 2).

    * ``ce``: eq. (3), flow distribution as target, H(S_f, S_phi) (the paper's CPFS-CE);
    * ``ce_rev``: the reverse, H(S_phi, S_f) (CPFS-CE-rev);
    * ``kta``: 1 - KTA(K_phi, K_f) on the raw kernels (CPFS-KTA; 0 at a perfect alignment).
    """
    if loss not in CPFS_LOSSES:
        raise ValueError(f"loss must be one of {CPFS_LOSSES}, got {loss!r}")
    if embeddings.shape[:2] != flow.shape[:2]:
        raise ValueError(
            f"embeddings {tuple(embeddings.shape)} and flow {tuple(flow.shape)} differ in (B, P)"
        )
    k_phi = embedding_kernel(embeddings)
    k_f = flow_kernel(flow.to(k_phi.dtype), sigma)
    if loss == "kta":
        return (1.0 - kernel_target_alignment(k_phi, k_f)).mean()
    if loss == "ce":
        target = column_softmax(k_f, FLOW_DIAGONAL)
        return cross_entropy_columns(target, column_softmax(k_phi, EMBEDDING_DIAGONAL, log=True))
    target = column_softmax(k_phi, EMBEDDING_DIAGONAL)
    return cross_entropy_columns(target, column_softmax(k_f, FLOW_DIAGONAL, log=True))


def sample_pixels(
    valid: torch.Tensor, num_pixels: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """P pixel indices per image, uniform without replacement over valid pixels: (B, H·W) bool ->
    (B, P) long (flat y·W + x). An image with fewer than P valid pixels draws from all of them
    with replacement; one with none draws from every pixel."""
    if valid.ndim != 2:
        raise ValueError(f"valid must be (B, H*W), got {tuple(valid.shape)}")
    if num_pixels < 2:
        raise ValueError(f"num_pixels must be >= 2, got {num_pixels}")
    weights = valid.to(torch.float32)
    empty = weights.sum(-1) == 0
    weights[empty] = 1.0
    counts = weights.sum(-1)
    if bool((counts >= num_pixels).all()):
        return torch.multinomial(weights, num_pixels, replacement=False, generator=generator)
    rows = [
        torch.multinomial(w, num_pixels, replacement=bool(c < num_pixels), generator=generator)
        for w, c in zip(weights, counts, strict=True)
    ]
    return torch.stack(rows)


def gather_pixels(field: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Values of ``field`` (B, C, H, W) at flat pixel indices (B, P) -> (B, P, C)."""
    flat = field.flatten(2)
    return flat.gather(2, index[:, None, :].expand(-1, flat.shape[1], -1)).transpose(1, 2)


ADAM_DEFAULTS: dict[str, Any] = {
    "lr": 1.0e-4,
    "betas": [0.9, 0.999],
    "eps": 1.0e-8,
    "weight_decay": 0.0,
}
"""Adam as CPFS trains (Sec. 4.3: lr 1e-4, β = (0.9, 0.999), ε = 1e-8, no weight decay)."""


class AdamMethod(PretrainMethod):
    """A :class:`PretrainMethod` trained with Adam (``lr``, ``betas``, ``eps``, ``weight_decay``
    from the hparams) at a constant learning rate, instead of the base's SGD + steps."""

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        # float(): YAML 1.1 config files (PyYAML, Snakemake) read 1e-08 (no dot) as a string
        return torch.optim.Adam(
            self.parameters(),
            lr=float(hp.lr),
            betas=(float(hp.betas[0]), float(hp.betas[1])),
            eps=float(hp.eps),
            weight_decay=float(hp.weight_decay),
        )


class CPFSModule(AdamMethod):
    """Cross pixel flow similarity: batches of the ``cpfs`` view -> loss; σ learned."""

    BATCH_KEYS: ClassVar[tuple[str, ...]] = ("image", "flow")
    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "model": {
            "backbone": "alexnet",
            "backbone_kwargs": {},
            "taps": None,
            "embed_dim": 16,
            "hidden": 512,
            "num_pixels": 512,
            "loss": "ce",
            "init_sigma2": 0.01,
        },
        "optim": dict(ADAM_DEFAULTS),
        "figures": {},
    }
    CURVE: ClassVar[dict[str, str]] = {
        "metric": "val/sigma2",
        "metric_label": "learned σ² of K_f",
        "loss_label": "CPFS loss",
        "title": "CPFS pretraining",
    }

    def __init__(
        self,
        backbone: str = "alexnet",
        backbone_kwargs: dict | None = None,
        taps: Sequence[str] | None = None,
        embed_dim: int = 16,
        hidden: int = 512,
        num_pixels: int = 512,
        loss: str = "ce",
        init_sigma2: float = 0.01,
        lr: float = 1.0e-4,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1.0e-8,
        weight_decay: float = 0.0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if loss not in CPFS_LOSSES:
            raise ValueError(f"loss must be one of {CPFS_LOSSES}, got {loss!r}")
        if num_pixels < 2:
            raise ValueError(f"num_pixels must be >= 2, got {num_pixels}")
        if not init_sigma2 > 0:
            raise ValueError(f"init_sigma2 must be > 0, got {init_sigma2}")
        if not taps and backbone not in DEFAULT_TAPS:
            raise ValueError(f"no default taps for backbone {backbone!r}; set model.taps")
        self.save_hyperparameters()
        trunk, _ = build_backbone(backbone, **dict(backbone_kwargs or {}))
        self.model = HypercolumnEmbedder(
            trunk, list(taps or DEFAULT_TAPS[backbone]), embed_dim=embed_dim, hidden=hidden
        )
        self.log_sigma2 = nn.Parameter(torch.tensor(math.log(init_sigma2)))
        self.use_channels_last(channels_last)

    @property
    def backbone(self) -> nn.Module:
        return self.model.backbone

    @property
    def sigma(self) -> torch.Tensor:
        return (0.5 * self.log_sigma2).exp()

    def forward(self, image: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self.model(self.to_memory_format(image), index)

    def compute_loss(
        self, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, flow = batch["image"], batch["flow"]
        valid = batch.get("valid")
        if valid is None:
            valid = torch.ones_like(flow[:, :1], dtype=torch.bool)
        # Validation draws the same pixels every time; training draws fresh ones.
        generator = None if self.training else torch.Generator().manual_seed(0)
        index = sample_pixels(valid.flatten(1).cpu(), self.hparams.num_pixels, generator)
        index = index.to(image.device)
        embeddings = self(image, index).float()
        targets = gather_pixels(flow.float(), index)
        loss = cpfs_loss(embeddings, targets, self.sigma.float(), loss=self.hparams.loss)
        return loss, {"targets": targets}

    def validation_metrics(
        self, batch: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """σ², and the loss of a constant embedding (all pixels alike) as the trivial baseline."""
        targets = outputs["targets"]
        constant = torch.ones(*targets.shape[:2], self.hparams.embed_dim, device=targets.device)
        baseline = cpfs_loss(constant, targets, self.sigma.float(), loss=self.hparams.loss)
        return {"sigma2": self.log_sigma2.exp().detach(), "constant_embedding": baseline}
