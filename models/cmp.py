"""Conditional Motion Propagation (Zhan et al., CVPR 2019): model parts and the quantised-flow loss.

One small module per part of the paper's Fig. 2 / Sec. 3.1:

* ``ImageEncoder`` — a stride-8 (AlexNet: or 32) backbone (``models.backbones``) plus one 1x1 conv
  to 256 channels.
* ``SparseMotionEncoder`` — two Conv-BN-ReLU-Pool blocks on the 4-channel guidance (sparse dx, dy
  and the point mask twice, as in the authors' code), 16 channels; as in their ``shallownet8x`` /
  ``32x`` the 5x5 conv has stride 2, then max-pool 2, then avg-pool 2 (8x) or 8 (32x).
* ``DenseMotionDecoder`` — propagation nets at strides {1, 2, 4} (max-pool, two Conv3x3-BN-ReLU of
  128 channels), upsampled to the encoder resolution, concatenated, fused by a 1x1 conv into 2·C
  logits (C bins for dx, then C bins for dy).

Loss (Sec. 3.1, Eq. 1): the target flow is clipped to ±``max_flow`` and cut into ``num_bins`` equal
bins per axis; cross-entropy on x plus cross-entropy on y, with the stride-8 logits upsampled
bilinearly to the target resolution, averaged over all (valid) pixels. The prediction shown to
people is the softmax expectation over bin centres. Defaults C = 99, max_flow = 50 px follow the
authors' configs (REFERENCE.md, "CMP"). The paper says "Xavier"; the authors' code applies
Xavier-normal with gain 0.02 to every conv, trunk included, and N(1, 0.02) to BatchNorm weights
(``authors_init_``, the default; ``init="xavier"`` keeps torchvision's trunk init instead).

Shapes: image ``(B, 3, H, W)``, sparse ``(B, 4, H, W)`` with H, W multiples of the stride s (8 or
32) → logits ``(B, 2·C, H/s, W/s)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.backbones import OUTPUT_STRIDE, build_backbone, xavier_init_

__all__ = [
    "CMP",
    "DenseMotionDecoder",
    "ImageEncoder",
    "SparseMotionEncoder",
    "bin_centres",
    "bins_to_flow_expectation",
    "cmp_loss",
    "authors_init_",
    "cmp_model",
    "sparse_encoder_strides",
    "flow_to_bins",
    "predict_flow",
    "quantised_flow",
]

SPARSE_CHANNELS = 4  # dx, dy, mask, mask


# --------------------------------------------------------------------------- quantisation


def _check_bins(num_bins: int, max_flow: float) -> None:
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2, got {num_bins}")
    if not max_flow > 0:
        raise ValueError(f"max_flow must be > 0, got {max_flow}")


def bin_centres(
    num_bins: int = 99,
    max_flow: float = 50.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Centres of the ``num_bins`` equal bins covering [-max_flow, max_flow], shape (C,).

    With an odd ``num_bins`` the middle bin is centred on zero motion exactly.
    """
    _check_bins(num_bins, max_flow)
    step = 2.0 * max_flow / num_bins
    # float64 arithmetic so the middle centre is 0 to float32 precision.
    centres = -max_flow + (torch.arange(num_bins, dtype=torch.float64) + 0.5) * step
    return centres.to(device=device, dtype=dtype)


def flow_to_bins(flow: torch.Tensor, num_bins: int = 99, max_flow: float = 50.0) -> torch.Tensor:
    """Quantise flow (any shape, px) to bin indices in [0, num_bins) after clipping to ±max_flow.

    Values beyond the range land in the edge bins (the paper's "loose boundary").
    """
    _check_bins(num_bins, max_flow)
    if not torch.is_floating_point(flow):
        raise ValueError(f"flow must be a floating tensor, got {flow.dtype}")
    step = 2.0 * max_flow / num_bins
    index = torch.floor((flow.float().clamp(-max_flow, max_flow) + max_flow) / step)
    # +max_flow maps to index num_bins; it belongs to the last bin.
    return index.clamp_(0, num_bins - 1).long()


def quantised_flow(flow: torch.Tensor, num_bins: int = 99, max_flow: float = 50.0) -> torch.Tensor:
    """Flow decoded from its own one-hot bins: each value replaced by its bin's centre.

    What a perfect classifier trained with cross-entropy on the hard bins of Eq. 1 converges to
    (one-hot on the true bin, decoded by expectation): its end-point error against ``flow`` is the
    floor of CMP's validation EPE at these bins (up to half a bin per axis, more beyond ±max_flow).
    """
    centres = bin_centres(num_bins, max_flow, flow.device, torch.float32)
    return centres[flow_to_bins(flow, num_bins, max_flow)]


def _full_precision(x: torch.Tensor) -> torch.Tensor:
    """float32 for half / bfloat16 (softmax over 99 bins under autocast); float64 stays."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _split_logits(logits: torch.Tensor, num_bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.ndim != 4 or logits.shape[1] != 2 * num_bins:
        raise ValueError(
            f"logits must be (B, 2*num_bins={2 * num_bins}, h, w), got {tuple(logits.shape)}"
        )
    return logits[:, :num_bins], logits[:, num_bins:]


def bins_to_flow_expectation(
    logits: torch.Tensor, num_bins: int = 99, max_flow: float = 50.0
) -> torch.Tensor:
    """Flow (B, 2, h, w) in px as the softmax expectation over bin centres, per axis."""
    logits_x, logits_y = _split_logits(logits, num_bins)
    logits_x, logits_y = _full_precision(logits_x), _full_precision(logits_y)
    centres = bin_centres(num_bins, max_flow, logits.device, logits_x.dtype)
    centres = centres.view(1, num_bins, 1, 1)
    # Softmax in float32 at least: bf16 probabilities would quantise the expectation visibly.
    flow_x = (logits_x.softmax(dim=1) * centres).sum(dim=1)
    flow_y = (logits_y.softmax(dim=1) * centres).sum(dim=1)
    return torch.stack([flow_x, flow_y], dim=1)


def _upsample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    # align_corners=False: the stride-8 cells are centred on 8x8 pixel blocks.
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _interp_matrix(n_out: int, n_in: int, like: torch.Tensor) -> torch.Tensor:
    """(n_out, n_in) weights of 1-D bilinear resampling as ``F.interpolate`` does it.

    align_corners=False and a size (not a scale factor) given: source = (i + 0.5)·n_in/n_out − 0.5,
    clamped at 0; two taps per output, the upper one clamped at the border.
    """
    scale = n_in / n_out
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).clamp_(min=0.0)
    low = src.floor().long().clamp_(max=n_in - 1)
    high = (low + 1).clamp_(max=n_in - 1)
    frac = src - low
    rows = torch.arange(n_out)
    matrix = torch.zeros(n_out, n_in, dtype=torch.float64)
    matrix.index_put_((rows, low), 1.0 - frac, accumulate=True)
    matrix.index_put_((rows, high), frac, accumulate=True)
    return matrix.to(device=like.device, dtype=like.dtype)


# Elements of one chunk of upsampled logits. CPU: 2 MiB of float32, a core's L2 here, and far
# below glibc's mmap threshold, so chunks reuse memory instead of page-faulting fresh buffers
# (2^19 was the fastest of 2^17..2^21 in benchmarks/bench_train.py's loss timing). CUDA: larger,
# as each chunk is a few kernel launches.
CHUNK_ELEMENTS = {"cpu": 2**19, "cuda": 2**26}


def _chunks(n: int, height: int, row_elements: int, device: torch.device) -> list[tuple]:
    """(slice of maps, slice of output rows) pairs, each at most CHUNK_ELEMENTS large."""
    budget = CHUNK_ELEMENTS.get(device.type, CHUNK_ELEMENTS["cuda"])
    rows = max(1, min(height, budget // row_elements))
    maps = max(1, budget // (rows * row_elements)) if rows == height else 1
    return [
        (slice(i, i + maps), slice(y, y + rows))
        for i in range(0, n, maps)
        for y in range(0, height, rows)
    ]


def _upsampled_rows(
    along_x: torch.Tensor, rows: torch.Tensor, maps: slice, out_rows: slice, c: int
) -> torch.Tensor:
    """One chunk of the upsampled logits, (maps, out_rows, W, C): the GEMM along y."""
    u = torch.matmul(rows[out_rows], along_x[maps])
    return u.view(u.shape[0], u.shape[1], -1, c)


class _UpsampledCrossEntropy(torch.autograd.Function):
    """sum(weight · CE(upsample(z), bins)) for z (N, C, h, w), bins (N, H, W), weight (N, H, W).

    The same maths as ``F.cross_entropy(F.interpolate(z, (H, W), bilinear), bins)``: the bilinear
    upsampling is separable and linear, u = R · z · Cᵀ per bin with (H, h) and (W, w) matrices of
    two taps per row (``_interp_matrix``), so it and its transpose (the backward) are small GEMMs.
    Bins are kept last (contiguous softmax), the logits are max-shifted per stride-8 cell (the
    weights of a pixel sum to 1, so CE is unchanged and exp cannot overflow), and the full-size
    logits are made chunk by chunk (cache-sized, so CPU memory is reused, not page-faulted), and
    only their exp is kept for backward: one full-size float32 tensor, where the old path kept
    the upsampled logits and their log-softmax per axis.
    """

    @staticmethod
    def forward(ctx, z, bins, weight):  # type: ignore[override]
        n, c, h, w = z.shape
        height, width = bins.shape[-2:]
        rows, cols = _interp_matrix(height, h, z), _interp_matrix(width, w, z)
        shifted = z - z.amax(dim=1, keepdim=True)
        # Along x once, on the small maps: (N, h, W·C), bins last.
        along_x = torch.matmul(cols, shifted.permute(0, 2, 3, 1).reshape(n * h, w, c))
        along_x = along_x.view(n, h, width * c)
        # Per pixel: log Σ_c exp(u_c) and u[bin], chunk by chunk; exp(u) is kept for backward.
        total = torch.empty(n, height, width, dtype=z.dtype, device=z.device)
        picked = torch.empty_like(total)
        chunks = _chunks(n, height, width * c, z.device)
        exps = []
        for maps, out_rows in chunks:
            u = _upsampled_rows(along_x, rows, maps, out_rows, c)
            picked[maps, out_rows] = u.gather(3, bins[maps, out_rows].unsqueeze(3)).squeeze(3)
            exps.append(u.exp_())
            total[maps, out_rows] = exps[-1].sum(dim=3)
        # The per-cell shift leaves every bin far below 0 only where neighbouring cells peak on
        # different bins by more than exp's range; there, shift per pixel (one check, one sync).
        shift = torch.zeros_like(total)
        underflow = total <= torch.finfo(z.dtype).tiny ** 0.5
        if bool(underflow.any()):
            for i, (maps, out_rows) in enumerate(chunks):
                if bool(underflow[maps, out_rows].any()):
                    u = _upsampled_rows(along_x, rows, maps, out_rows, c)
                    shift[maps, out_rows] = u.amax(dim=3)
                    exps[i] = u.sub_(shift[maps, out_rows].unsqueeze(3)).exp_()
                    total[maps, out_rows] = exps[i].sum(dim=3)
        loss = ((total.log() + shift - picked) * weight).sum()
        ctx.save_for_backward(total, bins, weight, rows, cols)
        # Chunks of exp(u), not inputs or outputs: kept on ctx (freed with the graph).
        ctx.exps, ctx.chunks, ctx.shape = exps, chunks, (n, c, h, w)
        return loss

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        with torch.autocast(grad.device.type, enabled=False):
            total, bins, weight, rows, cols = ctx.saved_tensors
            n, c, h, w = ctx.shape
            width = cols.shape[0]
            scale = weight * grad  # (N, H, W)
            grad_x = torch.empty(n, h, width * c, dtype=total.dtype, device=total.device)
            for exp_u, (maps, out_rows) in zip(ctx.exps, ctx.chunks, strict=True):
                # d CE / d u = softmax − one-hot, times the pixel's weight (exp_u left intact:
                # a retained graph can be differentiated again).
                part = scale[maps, out_rows]
                g = exp_u * (part / total[maps, out_rows]).unsqueeze(3)
                g.scatter_add_(3, bins[maps, out_rows].unsqueeze(3), -part.unsqueeze(3))
                # grad_x[maps] (+)= rowsᵀ · g, accumulated in place (the first row chunk of a map
                # overwrites: beta = 0 ignores the uninitialised memory).
                grad_x[maps].baddbmm_(
                    rows[out_rows].T.expand(g.shape[0], -1, -1),
                    g.view(g.shape[0], -1, width * c),
                    beta=0.0 if out_rows.start == 0 else 1.0,
                )
            grad_z = torch.matmul(cols.T, grad_x.view(n * h, width, c))  # transpose of along x
            return grad_z.view(n, h, w, c).permute(0, 3, 1, 2), None, None


def _pixel_weights(
    valid: torch.Tensor | None, shape: Sequence[int], like: torch.Tensor
) -> torch.Tensor:
    """(B, H, W) weights that turn a sum over pixels into the loss's mean over (valid) pixels."""
    if valid is None:
        count = shape[0] * shape[1] * shape[2]
        return torch.full(tuple(shape), 1.0 / count, dtype=like.dtype, device=like.device)
    if valid.ndim == 4:
        if valid.shape[1] != 1:
            raise ValueError(f"valid must be (B, 1, H, W) or (B, H, W), got {tuple(valid.shape)}")
        valid = valid[:, 0]
    if tuple(valid.shape) != tuple(shape):
        raise ValueError(f"valid shape {tuple(valid.shape)} does not match target {tuple(shape)}")
    weight = valid.to(device=like.device, dtype=like.dtype)
    return weight / weight.sum().clamp(min=1.0)


def cmp_loss(
    logits: torch.Tensor,
    target_flow: torch.Tensor,
    valid: torch.Tensor | None = None,
    num_bins: int = 99,
    max_flow: float = 50.0,
) -> torch.Tensor:
    """CMP's quantised-flow loss: CE(x) + CE(y), averaged over pixels (Eq. 1, equal weights).

    logits: (B, 2·C, h, w), upsampled bilinearly (align_corners=False) to the target size.
    target_flow: (B, 2, H, W) in px. valid: optional (B, 1, H, W) or (B, H, W) bool; pixels where
    it is False are left out (a batch with no valid pixel gives a zero loss that still has a graph).

    The value and gradient are those of ``F.cross_entropy(F.interpolate(logits), bins)``, but the
    upsampling is two small GEMMs with the bins last (its backward is two GEMMs too, not the
    scatter of the interpolation kernel), the softmax runs over contiguous bins, the max-shift is
    taken on the stride-8 logits, and the full-size logits are made in cache-sized chunks whose
    exp is kept for backward (docs/BENCHMARKS.md, "Training step and loader speed"). Computed in
    float32 even under bf16 autocast.
    """
    if target_flow.ndim != 4 or target_flow.shape[1] != 2:
        raise ValueError(f"target_flow must be (B, 2, H, W), got {tuple(target_flow.shape)}")
    if logits.shape[0] != target_flow.shape[0]:
        raise ValueError(
            f"batch sizes differ: logits {logits.shape[0]}, target {target_flow.shape[0]}"
        )
    _split_logits(logits, num_bins)
    batch, _, height, width = target_flow.shape
    bins = flow_to_bins(target_flow, num_bins, max_flow).flatten(0, 1)  # (B·2, H, W): x, y
    z = _full_precision(logits).reshape(batch * 2, num_bins, *logits.shape[-2:])
    weight = _pixel_weights(valid, (batch, height, width), z)
    weight = weight.unsqueeze(1).expand(batch, 2, height, width).reshape(batch * 2, height, width)
    with torch.autocast(z.device.type, enabled=False):
        return _UpsampledCrossEntropy.apply(z, bins, weight)


def predict_flow(
    logits: torch.Tensor,
    output_size: Sequence[int] | None = None,
    num_bins: int = 99,
    max_flow: float = 50.0,
) -> torch.Tensor:
    """Dense flow (B, 2, H, W) in px of the input image: expectation flow, upsampled bilinearly.

    The bins are defined in input-image pixels, so upsampling needs no rescaling of the values.
    """
    flow = bins_to_flow_expectation(logits, num_bins, max_flow)
    return flow if output_size is None else _upsample(flow, output_size)


# --------------------------------------------------------------------------- model parts


class ImageEncoder(nn.Module):
    """Backbone trunk + 1x1 conv to ``out_channels`` (256 in the paper, Sec. 3.1 / Fig. 9)."""

    def __init__(self, trunk: nn.Module, trunk_channels: int, out_channels: int = 256) -> None:
        super().__init__()
        if trunk_channels < 1 or out_channels < 1:
            raise ValueError("trunk_channels and out_channels must be >= 1")
        self.trunk = trunk
        self.project = nn.Conv2d(trunk_channels, out_channels, kernel_size=1)
        self.out_channels = out_channels
        xavier_init_(self.project)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.project(self.trunk(image))


SPARSE_LAYOUTS = {"authors": {8: (2, 2, 2), 32: (2, 2, 8)}, "pooled": {8: (1, 4, 2), 32: (1, 4, 8)}}


def sparse_encoder_strides(stride: int, layout: str = "authors") -> tuple[int, int, int]:
    """(conv5x5 stride, max-pool, avg-pool) of the sparse encoder for an encoder ``stride``.

    ``authors``: their ``shallownet8x`` / ``shallownet32x`` (the 5x5 conv at stride 2);
    ``pooled``: the conv at full resolution and a 4x max-pool (this project's earlier layout).
    """
    if layout not in SPARSE_LAYOUTS:
        raise ValueError(f"sparse layout must be one of {sorted(SPARSE_LAYOUTS)}, got {layout!r}")
    if stride not in SPARSE_LAYOUTS[layout]:
        raise ValueError(f"no sparse encoder for stride {stride}; choose 8 or 32")
    return SPARSE_LAYOUTS[layout][stride]


class SparseMotionEncoder(nn.Module):
    """Two Conv-BN-ReLU-Pool blocks on the guidance (Sec. 3.1): conv5x5 (stride ``strides[0]``) →
    max-pool ``strides[1]``, conv3x3 → avg-pool ``strides[2]``. The three multiply to the image
    encoder's stride: (2, 2, 2) = 8 and (2, 2, 8) = 32 are the authors' ``shallownet8x`` /
    ``shallownet32x`` (``sparse_encoder_strides``)."""

    def __init__(
        self,
        in_channels: int = SPARSE_CHANNELS,
        out_channels: int = 16,
        strides: Sequence[int] = (2, 2, 2),
    ) -> None:
        super().__init__()
        strides = tuple(int(v) for v in strides)
        if len(strides) != 3 or min(strides) < 1:
            raise ValueError(f"strides must be three ints >= 1, got {strides}")
        conv_stride, max_pool, avg_pool = strides
        self.block1 = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=5, stride=conv_stride, padding=2),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=max_pool, stride=max_pool),
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(kernel_size=avg_pool, stride=avg_pool),
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.strides = strides
        self.stride = conv_stride * max_pool * avg_pool
        xavier_init_(self)

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(sparse))


class PropagationNet(nn.Module):
    """Max-pool by ``stride``, then two Conv3x3-BN-ReLU; output upsampled back (Sec. 3.1)."""

    def __init__(self, in_channels: int, stride: int, channels: int = 128) -> None:
        super().__init__()
        if stride < 1:
            raise ValueError(f"propagation stride must be >= 1, got {stride}")
        self.stride = stride
        # ceil_mode keeps the border cells when the map is not a multiple of the stride.
        self.pool = (
            nn.MaxPool2d(stride, stride=stride, ceil_mode=True) if stride > 1 else nn.Identity()
        )
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return _upsample(self.convs(self.pool(features)), features.shape[-2:])


class DenseMotionDecoder(nn.Module):
    """Propagation nets at several strides + a 1x1 fusion conv to 2·C logits (Sec. 3.1, Fig. 5:
    strides {1, 2, 4} transferred best)."""

    def __init__(
        self,
        in_channels: int,
        num_bins: int = 99,
        strides: Sequence[int] = (1, 2, 4),
        channels: int = 128,
    ) -> None:
        super().__init__()
        strides = tuple(int(s) for s in strides)
        if not strides or len(set(strides)) != len(strides):
            raise ValueError(f"strides must be a non-empty list of distinct ints, got {strides}")
        self.branches = nn.ModuleList(PropagationNet(in_channels, s, channels) for s in strides)
        self.fusion = nn.Conv2d(channels * len(strides), 2 * num_bins, kernel_size=1)
        self.strides = strides
        self.num_bins = num_bins
        xavier_init_(self)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fusion(torch.cat([branch(features) for branch in self.branches], dim=1))


class CMP(nn.Module):
    """Image encoder + sparse motion encoder → concatenation → dense motion decoder → logits."""

    def __init__(
        self,
        image_encoder: ImageEncoder,
        sparse_encoder: SparseMotionEncoder,
        decoder: DenseMotionDecoder,
        max_flow: float = 50.0,
        stride: int = OUTPUT_STRIDE,
    ) -> None:
        super().__init__()
        expected = image_encoder.out_channels + sparse_encoder.out_channels
        first_conv = decoder.branches[0].convs[0]
        if first_conv.in_channels != expected:
            raise ValueError(
                f"decoder takes {first_conv.in_channels} channels, encoders give {expected}"
            )
        if sparse_encoder.stride != stride:
            raise ValueError(f"sparse encoder stride {sparse_encoder.stride} != model {stride}")
        _check_bins(decoder.num_bins, max_flow)
        self.image_encoder = image_encoder
        self.sparse_encoder = sparse_encoder
        self.decoder = decoder
        self.num_bins = decoder.num_bins
        self.max_flow = float(max_flow)
        self.stride = stride

    @property
    def backbone(self) -> nn.Module:
        """The trunk that is exported after pretraining."""
        return self.image_encoder.trunk

    def forward(self, image: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
        expected_sparse = (image.shape[0], self.sparse_encoder.in_channels, *image.shape[-2:])
        if tuple(sparse.shape) != expected_sparse:
            raise ValueError(f"sparse must be {expected_sparse}, got {tuple(sparse.shape)}")
        height, width = image.shape[-2:]
        if height % self.stride or width % self.stride:
            raise ValueError(f"image size {height}x{width} is not a multiple of {self.stride}")
        features = torch.cat([self.image_encoder(image), self.sparse_encoder(sparse)], dim=1)
        return self.decoder(features)


INITS = ("authors", "xavier")


def authors_init_(module: nn.Module, gain: float = 0.02) -> None:
    """The CMP authors' whole-model init, trunk included: conv / linear weights Xavier-normal with
    ``gain`` 0.02 and zero biases; BatchNorm weights N(1, ``gain``), biases 0 (their
    ``init_weights(model, 'xavier')``, applied after building)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.xavier_normal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)


def cmp_model(
    backbone: str = "resnet50",
    num_bins: int = 99,
    max_flow: float = 50.0,
    image_channels: int = 256,
    sparse_channels: int = 16,
    sparse_strides: Sequence[int] | None = None,
    decoder_strides: Sequence[int] = (1, 2, 4),
    decoder_channels: int = 128,
    backbone_kwargs: dict | None = None,
    init: str = "authors",
    dilation_layout: str = "authors",
    output_stride: int = OUTPUT_STRIDE,
) -> CMP:
    """CMP as in the paper and the authors' code (defaults: ResNet-50 OS8 with their dilation
    layout, 256 + 16 channels, strides {1,2,4}, C=99, ±50 px, their init).

    ``backbone_kwargs`` go to ``build_backbone`` (ResNet ``dilation_layout``; alexnet
    ``fc_channels``, ``output_stride``). ``sparse_strides`` (conv, max-pool, avg-pool) defaults to
    the authors' encoder for the trunk's stride (``sparse_encoder_strides``). ``init``:
    ``"authors"`` (``authors_init_`` on the whole model) or ``"xavier"`` (torchvision's init on a
    ResNet trunk, Xavier-uniform gain 1 on every new layer). ``dilation_layout`` (ResNets) and
    ``output_stride`` (8, or 32 for alexnet) go to the trunk unless ``backbone_kwargs`` sets them.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    kwargs = dict(backbone_kwargs or {})
    if backbone.startswith("resnet"):
        if output_stride != OUTPUT_STRIDE:
            raise ValueError(f"ResNet trunks run at output stride 8, got {output_stride}")
        kwargs.setdefault("dilation_layout", dilation_layout)
    elif backbone == "alexnet":
        kwargs.setdefault("output_stride", output_stride)
    trunk, trunk_channels = build_backbone(backbone, **kwargs)
    stride = int(getattr(trunk, "output_stride", OUTPUT_STRIDE))
    if sparse_strides is None:
        sparse_strides = sparse_encoder_strides(stride)
    image_encoder = ImageEncoder(trunk, trunk_channels, image_channels)
    sparse_encoder = SparseMotionEncoder(SPARSE_CHANNELS, sparse_channels, sparse_strides)
    decoder = DenseMotionDecoder(
        image_channels + sparse_channels, num_bins, decoder_strides, decoder_channels
    )
    model = CMP(image_encoder, sparse_encoder, decoder, max_flow=max_flow, stride=stride)
    if init == "authors":
        authors_init_(model)
    return model
