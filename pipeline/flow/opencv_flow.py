"""Dense optical flow with OpenCV: DIS presets, Farneback, and the opencv-contrib `cv2.optflow` methods.

- DIS (Kroeger et al., ECCV 2016, "Fast Optical Flow using Dense Inverse Search"): patch-based
  inverse search plus variational refinement. OpenCV presets, patch size 8 (REFERENCE.md, "Flow
  formats and tools"): ultrafast (finest scale 2, stride 4, 12 GD iterations, no variational
  refinement), fast (2, 4, 16, 5), medium (1, 3, 25, 5).
- Farneback (Farneback, SCIA 2003): polynomial expansion, coarse-to-fine.
- DeepFlow (Weinzaepfel et al., ICCV 2013), TV-L1 (Zach et al. 2007; Wedel et al. 2009), PCAFlow
  (Wulff & Black, CVPR 2015): from opencv-contrib; no learned weights needed.

Every builder returns `compute_flow(img0, img1) -> float32 H x W x 2 (dx, dy)` on uint8 RGB frames:
the flow maps a pixel of img0 to its position in img1. A returned function keeps one OpenCV
algorithm object and is not safe to call from several threads at once.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def check_frame_pair(img0: np.ndarray, img1: np.ndarray) -> None:
    """Raise ValueError unless both frames are uint8 H x W x 3 arrays of the same shape."""
    for name, img in (("img0", img0), ("img1", img1)):
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
            raise ValueError(
                f"{name} must be a uint8 numpy array, got {getattr(img, 'dtype', img)}"
            )
        if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0:
            raise ValueError(f"{name} must be a non-empty H x W x 3 RGB frame, got {img.shape}")
    if img0.shape != img1.shape:
        raise ValueError(f"frames differ in shape: {img0.shape} vs {img1.shape}")


def _gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def _wrap_gray(calc: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> FlowFn:
    """Turn a grayscale OpenCV flow call into the RGB `compute_flow` signature."""

    def compute_flow(img0: np.ndarray, img1: np.ndarray) -> np.ndarray:
        check_frame_pair(img0, img1)
        flow = calc(_gray(img0), _gray(img1))
        return np.ascontiguousarray(flow, dtype=np.float32)

    return compute_flow


def make_dis(
    preset: str = "fast",
    *,
    finest_scale: int | None = None,
    patch_size: int | None = None,
    patch_stride: int | None = None,
    gradient_descent_iterations: int | None = None,
    variational_refinement_iterations: int | None = None,
    use_spatial_propagation: bool | None = None,
    min_finest_side: int | None = None,
) -> FlowFn:
    """DIS flow with an OpenCV preset ("ultrafast", "fast", "medium"); None keeps the preset value.

    ``min_finest_side`` fits the finest pyramid scale to the frame (issue 27): the finest scale is
    lowered, per call, until the short side at that scale is at least this many px (the fast
    preset's scale 2 sees a 144-px frame at 36 px and underestimates fast motion)."""
    if preset not in DIS_PRESETS:
        raise ValueError(f"unknown DIS preset {preset!r}; choose one of {sorted(DIS_PRESETS)}")
    dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
    overrides = {
        "FinestScale": finest_scale,
        "PatchSize": patch_size,
        "PatchStride": patch_stride,
        "GradientDescentIterations": gradient_descent_iterations,
        "VariationalRefinementIterations": variational_refinement_iterations,
        "UseSpatialPropagation": use_spatial_propagation,
    }
    for name, value in overrides.items():
        if value is None:
            continue
        if name != "UseSpatialPropagation" and int(value) < 0:
            raise ValueError(f"DIS {name} must be non-negative, got {value}")
        getattr(dis, f"set{name}")(value)
    if patch_stride is not None and not 0 < dis.getPatchStride() <= dis.getPatchSize():
        raise ValueError("DIS patch_stride must be in 1..patch_size")
    if min_finest_side is None:
        return _wrap_gray(lambda g0, g1: dis.calc(g0, g1, None))
    if int(min_finest_side) < 1:
        raise ValueError(f"DIS min_finest_side must be >= 1, got {min_finest_side}")
    ceiling = dis.getFinestScale()

    def calc(g0: np.ndarray, g1: np.ndarray) -> np.ndarray:
        dis.setFinestScale(fitted_finest_scale(min(g0.shape[:2]), ceiling, int(min_finest_side)))
        return dis.calc(g0, g1, None)

    return _wrap_gray(calc)


def fitted_finest_scale(short_side: int, ceiling: int, min_finest_side: int) -> int:
    """The largest scale <= ceiling at which ``short_side`` / 2**scale is >= min_finest_side."""
    scale = ceiling
    while scale > 0 and short_side / 2**scale < min_finest_side:
        scale -= 1
    return scale


def make_farneback(
    *,
    pyr_scale: float = 0.5,
    levels: int = 3,
    winsize: int = 15,
    iterations: int = 3,
    poly_n: int = 5,
    poly_sigma: float = 1.2,
    gaussian: bool = False,
) -> FlowFn:
    """Farneback flow; parameters as in `cv2.calcOpticalFlowFarneback` (gaussian: Gaussian window)."""
    if not 0 < pyr_scale < 1:
        raise ValueError(f"farneback pyr_scale must be in (0, 1), got {pyr_scale}")
    if levels < 1 or winsize < 1 or iterations < 1:
        raise ValueError("farneback levels, winsize and iterations must be >= 1")
    if poly_n not in (5, 7):
        raise ValueError(f"farneback poly_n must be 5 or 7, got {poly_n}")
    flags = cv2.OPTFLOW_FARNEBACK_GAUSSIAN if gaussian else 0

    def calc(g0: np.ndarray, g1: np.ndarray) -> np.ndarray:
        return cv2.calcOpticalFlowFarneback(
            g0, g1, None, pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags
        )

    return _wrap_gray(calc)


def make_deepflow() -> FlowFn:
    """DeepFlow's variational refinement (opencv-contrib; without DeepMatching)."""
    algorithm = cv2.optflow.createOptFlow_DeepFlow()
    return _wrap_gray(lambda g0, g1: algorithm.calc(g0, g1, None))


def make_dualtvl1(
    *,
    tau: float = 0.25,
    lambda_: float = 0.15,
    theta: float = 0.3,
    nscales: int = 5,
    warps: int = 5,
    epsilon: float = 0.01,
    median_filtering: int = 5,
) -> FlowFn:
    """TV-L1 flow (opencv-contrib DualTVL1); lambda_ weighs the data term against smoothness."""
    if nscales < 1 or warps < 1:
        raise ValueError("dualtvl1 nscales and warps must be >= 1")
    algorithm = cv2.optflow.DualTVL1OpticalFlow_create(
        tau=tau,
        lambda_=lambda_,
        theta=theta,
        nscales=nscales,
        warps=warps,
        epsilon=epsilon,
        medianFiltering=median_filtering,
    )
    return _wrap_gray(lambda g0, g1: algorithm.calc(g0, g1, None))


def make_pcaflow() -> FlowFn:
    """PCAFlow (opencv-contrib) with its default, prior-free configuration."""
    algorithm = cv2.optflow.createOptFlow_PCAFlow()
    return _wrap_gray(lambda g0, g1: algorithm.calc(g0, g1, None))
