"""RAFT optical flow (Teed & Deng, ECCV 2020) through torchvision, with offline weights only.

torchvision's `raft_small` (1.0 M parameters) and `raft_large` (5.3 M) expect RGB in [-1, 1] and H, W
divisible by 8; their own size check has a precedence bug, so we pad ourselves (REFERENCE.md, "Flow
formats and tools"). The correlation pyramid pools the 1/8-resolution features three more times
and torchvision requires those features to be at least 16 px, so inputs are padded (replicating
the border) to at least 128 px per side, then the flow is cropped back. The model returns one flow
per recurrent update (sec. 3.3 of the paper); the last is the estimate.

Weights are never downloaded: pass the path of a state_dict saved offline, e.g. on a machine with
internet access:
    torch.save(torchvision.models.optical_flow.Raft_Small_Weights.DEFAULT.get_state_dict(),
               "weights/raft_small.pth")
`weights="random"` builds a randomly initialised model — for tests of shapes and padding only.

torch and torchvision are imported inside functions: `pipeline/` must import without torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from pipeline.flow.opencv_flow import check_frame_pair

RAFT_VARIANTS = ("raft_small", "raft_large")
RANDOM_WEIGHTS = "random"  # testing only: untrained network
SIZE_MULTIPLE = 8  # the encoders downsample by 8
MIN_PADDED_SIDE = 128  # 1/8-resolution features must be >= 16 px for the correlation pyramid

BatchFlowFn = Callable[[Sequence[tuple[np.ndarray, np.ndarray]]], list[np.ndarray]]


def suggested_weights_path(variant: str) -> str:
    """The conventional location of a variant's weights file, used in error messages."""
    return f"weights/{variant}.pth"


def _weights_help(variant: str) -> str:
    enum = "Raft_Small_Weights" if variant == "raft_small" else "Raft_Large_Weights"
    return (
        f"save it offline with torch.save(torchvision.models.optical_flow.{enum}.DEFAULT"
        f".get_state_dict(), '{suggested_weights_path(variant)}') on a machine with internet "
        "access, then pass its path as weights"
    )


def config_error(flow_cfg: dict) -> str | None:
    """One line saying why the config's flow section cannot run RAFT (None: it can, or no RAFT).

    Checked when the workflow starts, so a missing weights file stops the run once, before any
    video is read, instead of failing every flow job. A relative path is taken from the working
    directory (Snakemake's ``-d``); "random" (untrained, tests only) passes.
    """
    method = flow_cfg.get("method", "")
    if method not in RAFT_VARIANTS:
        return None
    weights = flow_cfg.get("backends", {}).get(method, {}).get("weights")
    if weights is None:
        return (
            f"flow.method is {method} but flow.backends.{method}.weights is not set: "
            f"{_weights_help(method)}"
        )
    if str(weights) != RANDOM_WEIGHTS and not Path(weights).is_file():
        return f"flow.backends.{method}.weights: file not found: {weights}; {_weights_help(method)}"
    return None


def load_raft(variant: str, weights: str | os.PathLike | None, device: str | None = None):
    """Build torchvision RAFT `variant` on `device`, load weights from a local .pth, eval mode.

    weights: path of a state_dict file, or "random" (testing only). device: None picks CUDA when
    available, else CPU.
    """
    import torch
    from torchvision.models import optical_flow

    if variant not in RAFT_VARIANTS:
        raise ValueError(f"unknown RAFT variant {variant!r}; choose one of {RAFT_VARIANTS}")
    if weights is None:
        raise ValueError(
            f"{variant} needs a local weights file (expected e.g. "
            f"{suggested_weights_path(variant)}): {_weights_help(variant)}"
        )
    model = getattr(optical_flow, variant)(weights=None, progress=False)
    if str(weights) != RANDOM_WEIGHTS:
        path = Path(weights)
        if not path.is_file():
            raise ValueError(f"{variant} weights file not found: {path}; {_weights_help(variant)}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as err:
            first_line = str(err).strip().splitlines()[0]
            raise ValueError(f"{path} does not hold {variant} weights: {first_line}") from None
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval()


def padded_size(h: int, w: int) -> tuple[int, int]:
    """The size RAFT runs at: each side rounded up to a multiple of 8 and at least 128."""

    def side(n: int) -> int:
        return max(MIN_PADDED_SIDE, math.ceil(n / SIZE_MULTIPLE) * SIZE_MULTIPLE)

    return side(h), side(w)


def _to_tensor(frames: list[np.ndarray], device):
    """Stack uint8 RGB frames into N x 3 x H x W float in [-1, 1], padded by replication."""
    import torch
    import torch.nn.functional as F

    batch = torch.from_numpy(np.stack(frames)).to(device)
    batch = batch.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    h, w = batch.shape[-2:]
    ph, pw = padded_size(h, w)
    if (ph, pw) != (h, w):
        # Pad right and bottom only, so cropping back is a plain slice.
        batch = F.pad(batch, (0, pw - w, 0, ph - h), mode="replicate")
    return batch


def make_raft(
    variant: str = "raft_small",
    *,
    weights: str | os.PathLike | None = None,
    num_flow_updates: int = 12,
    batch_size: int = 4,
    device: str | None = None,
) -> BatchFlowFn:
    """RAFT as a batched flow function: list of (img0, img1) uint8 RGB pairs -> list of flows.

    Consecutive pairs of equal shape run together, at most batch_size at a time. Output flows are
    float32 H x W x 2 (dx, dy), cropped to the input size.
    """
    if num_flow_updates < 1:
        raise ValueError(f"num_flow_updates must be >= 1, got {num_flow_updates}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    import torch

    model = load_raft(variant, weights, device)
    model_device = next(model.parameters()).device

    def run(chunk: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        h, w = chunk[0][0].shape[:2]
        first = _to_tensor([p[0] for p in chunk], model_device)
        second = _to_tensor([p[1] for p in chunk], model_device)
        with torch.inference_mode():
            flows = model(first, second, num_flow_updates=num_flow_updates)[-1]
        flows = flows[:, :, :h, :w].permute(0, 2, 3, 1).float().cpu().numpy()
        return [np.ascontiguousarray(f, dtype=np.float32) for f in flows]

    def compute_flows(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        results: list[np.ndarray] = []
        chunk: list[tuple[np.ndarray, np.ndarray]] = []
        for img0, img1 in pairs:
            check_frame_pair(img0, img1)
            if chunk and (len(chunk) == batch_size or img0.shape != chunk[0][0].shape):
                results.extend(run(chunk))
                chunk = []
            chunk.append((img0, img1))
        if chunk:
            results.extend(run(chunk))
        return results

    return compute_flows
