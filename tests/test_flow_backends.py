"""Flow backends recover known translations of a real texture; RAFT shapes, batching, weights."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
from skimage import data

from pipeline.flow import (
    FLOW_METHODS,
    flow_statistics,
    make_batch_flow_fn,
    make_flow_fn,
)
from pipeline.flow.raft import config_error, padded_size

OPENCV_METHODS = [m for m in FLOW_METHODS if not m.startswith("raft")]
# Mean end-point error allowed in the interior, px. Measured on these pairs: DIS <= 0.17,
# PCAFlow ~0.07, the variational methods <= 0.05.
MAX_EPE = {"dis_ultrafast": 0.3, "dis_fast": 0.3, "pcaflow": 0.2}
FAST_PARAMS = {"dualtvl1": {"nscales": 3, "warps": 3}}


def translated_pair(dx: float, dy: float, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A crop of skimage's astronaut and the same crop with its content moved by (dx, dy)."""
    source = np.ascontiguousarray(data.astronaut()[30 : 30 + size + 32, 180 : 180 + size + 32])
    shift = np.float32([[1, 0, dx], [0, 1, dy]])
    moved = cv2.warpAffine(
        source, shift, source.shape[1::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
    )
    return source[16:-16, 16:-16].copy(), moved[16:-16, 16:-16].copy()


def interior_epe(flow: np.ndarray, dx: float, dy: float, border: int = 16) -> float:
    inner = flow[border:-border, border:-border]
    return float(np.hypot(inner[..., 0] - dx, inner[..., 1] - dy).mean())


@pytest.mark.parametrize("method", OPENCV_METHODS)
@pytest.mark.parametrize("shift", [(2.0, -1.0), (1.5, 0.75)])
def test_opencv_backend_recovers_translation(method, shift):
    img0, img1 = translated_pair(*shift)
    flow = make_flow_fn(method, **FAST_PARAMS.get(method, {}))(img0, img1)
    assert flow.shape == (96, 96, 2) and flow.dtype == np.float32
    assert interior_epe(flow, *shift) < MAX_EPE.get(method, 0.1)


def test_batch_form_loops_for_opencv():
    pairs = [translated_pair(1.0, 0.0), translated_pair(0.0, 2.0)]
    flows = make_batch_flow_fn("dis_fast")(pairs)
    assert len(flows) == 2
    assert interior_epe(flows[0], 1.0, 0.0) < 0.3 and interior_epe(flows[1], 0.0, 2.0) < 0.3


def test_farneback_parameters_are_used():
    img0, img1 = translated_pair(2.0, -1.0)
    default = make_flow_fn("farneback")(img0, img1)
    tuned = make_flow_fn("farneback", winsize=7, levels=1, iterations=1)(img0, img1)
    assert not np.allclose(default, tuned)


@pytest.mark.parametrize(
    "method, params, message",
    [
        ("nope", {}, "unknown flow method"),
        ("dis_fast", {"winsize": 5}, "does not accept"),
        ("farneback", {"poly_n": 6}, "poly_n"),
        ("farneback", {"pyr_scale": 1.5}, "pyr_scale"),
    ],
)
def test_bad_method_or_params(method, params, message):
    with pytest.raises(ValueError, match=message):
        make_flow_fn(method, **params)


@pytest.mark.parametrize(
    "img0, img1",
    [
        (np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 3), np.float32)),
        (np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8)),
    ],
)
def test_bad_frames_rejected(img0, img1):
    with pytest.raises(ValueError):
        make_flow_fn("dis_fast")(img0, img1)


# ----------------------------------------------------------------------------------------- RAFT


@pytest.fixture(scope="module")
def raft_batch():
    torch = pytest.importorskip("torch")
    # One thread: on a shared 2-core machine, oversubscribed torch threads run ~10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield make_batch_flow_fn(
        "raft_small", weights="random", num_flow_updates=2, batch_size=2, device="cpu"
    )
    torch.set_num_threads(threads)


def test_raft_shape_for_sizes_not_divisible_by_8(raft_batch):
    rng = np.random.default_rng(0)
    pairs = [
        tuple(rng.integers(0, 256, (61, 77, 3), dtype=np.uint8) for _ in range(2)),
        tuple(rng.integers(0, 256, (130, 139, 3), dtype=np.uint8) for _ in range(2)),
    ]
    flows = raft_batch(pairs)
    assert [f.shape for f in flows] == [(61, 77, 2), (130, 139, 2)]
    assert all(f.dtype == np.float32 and np.isfinite(f).all() for f in flows)
    assert padded_size(61, 77) == (128, 128) and padded_size(130, 139) == (136, 144)


def test_raft_batch_matches_single_pairs(raft_batch):
    rng = np.random.default_rng(1)
    pairs = [
        tuple(rng.integers(0, 256, (64, 72, 3), dtype=np.uint8) for _ in range(2)) for _ in range(3)
    ]
    batched = raft_batch(pairs)  # batch_size 2: a batch of two, then one
    assert len(batched) == 3
    for i in (1, 2):  # second of a full batch, and the lone last one
        np.testing.assert_allclose(batched[i], raft_batch([pairs[i]])[0], atol=1e-3)


def test_raft_missing_weights_error_names_path(tmp_path):
    missing = tmp_path / "nowhere" / "raft_small.pth"
    with pytest.raises(ValueError, match="nowhere/raft_small.pth") as err:
        make_flow_fn("raft_small", weights=str(missing))
    assert "Raft_Small_Weights" in str(err.value)
    with pytest.raises(ValueError, match=r"weights/raft_large\.pth"):
        make_flow_fn("raft_large")
    with pytest.raises(ValueError, match="num_flow_updates"):
        make_flow_fn("raft_small", weights="random", num_flow_updates=0)


def test_raft_config_error_is_one_line_naming_the_key(tmp_path):
    assert config_error({"method": "dis_fast"}) is None
    assert (
        config_error({"method": "raft_small", "backends": {"raft_small": {"weights": "random"}}})
        is None
    )
    message = config_error({"method": "raft_large", "backends": {"raft_large": {"weights": None}}})
    assert "flow.backends.raft_large.weights is not set" in message and "\n" not in message
    missing = str(tmp_path / "none.pth")
    message = config_error(
        {"method": "raft_small", "backends": {"raft_small": {"weights": missing}}}
    )
    assert "file not found" in message and missing in message
    present = tmp_path / "raft_small.pth"
    present.write_bytes(b"x")  # existence is what validation checks; loading checks the content
    assert (
        config_error(
            {"method": "raft_small", "backends": {"raft_small": {"weights": str(present)}}}
        )
        is None
    )


def test_raft_without_weights_stops_the_workflow_at_validation(tmp_path):
    from tests.conftest import run_snakemake

    config = {"video_sets": {"x": {"source": "samples"}}, "only_sets": ["x"]}
    proc = run_snakemake(tmp_path, {**config, "flow": {"method": "raft_small"}}, "-n")
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert output.count("flow.backends.raft_small.weights is not set") == 1
    assert not (tmp_path / "results").exists()  # stopped before any job


def test_raft_loads_a_saved_state_dict_and_rejects_a_wrong_one(tmp_path):
    torch = pytest.importorskip("torch")
    from torchvision.models.optical_flow import raft_small

    model = raft_small(weights=None)
    good = tmp_path / "raft_small.pth"
    torch.save(model.state_dict(), good)
    fn = make_flow_fn("raft_small", weights=str(good), num_flow_updates=1, device="cpu")
    img = np.zeros((16, 16, 3), np.uint8)
    assert fn(img, img).shape == (16, 16, 2)
    wrong = tmp_path / "wrong.pth"
    torch.save({"foo": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="does not hold raft_small weights"):
        make_flow_fn("raft_small", weights=str(wrong))


def test_pipeline_flow_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, pipeline.flow, pipeline.flowio, pipeline.viz; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------ statistics


def test_flow_statistics_static_flag():
    flow = np.zeros((100, 100, 2), np.float32)
    assert flow_statistics(flow)["static"]
    flow[:5, :, 0] = 3.0  # a small moving object on a still background: 5% of pixels
    stats = flow_statistics(flow, static_threshold=0.5, static_quantile=0.99)
    assert not stats["static"] and stats["max_mag"] == 3.0
    assert stats["mean_mag"] == pytest.approx(0.15)
    valid = np.ones((100, 100), bool)
    valid[:5] = False
    assert flow_statistics(flow, valid)["static"]
    with pytest.raises(ValueError):
        flow_statistics(flow, np.ones((3, 3), bool))


@pytest.mark.skipif(
    not (importlib.util.find_spec("torch") and __import__("torch").cuda.is_available()),
    reason="no CUDA device: RAFT's GPU route is checked where one is present",
)
def test_raft_batched_path_runs_on_cuda_and_matches_cpu(tmp_path):
    """The GPU route (issue 12): the flow stage's batch of forward and backward pairs runs
    through RAFT on CUDA, in batches, and agrees with the same weights on the CPU."""
    import torch
    from torchvision.models.optical_flow import raft_small

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    weights = tmp_path / "raft_small.pth"
    torch.save(raft_small(weights=None).state_dict(), weights)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (60, 90, 3), dtype=np.uint8) for _ in range(3)]
    pairs = [(frames[0], frames[1]), (frames[1], frames[2])]
    pairs += [(b, a) for a, b in pairs]  # the stage's forward + backward batch
    params = {"weights": str(weights), "num_flow_updates": 3, "batch_size": 3}
    gpu = make_batch_flow_fn("raft_small", device="cuda", **params)
    flows = gpu(pairs)
    assert torch.cuda.max_memory_allocated() > 0  # the model really ran on the GPU
    cpu = make_batch_flow_fn("raft_small", device="cpu", **params)(pairs)
    assert len(flows) == 4
    for got, want in zip(flows, cpu, strict=True):
        assert got.shape == (60, 90, 2) and got.dtype == np.float32 and np.isfinite(got).all()
        np.testing.assert_allclose(got, want, atol=1e-3 * max(1.0, float(np.abs(want).max())))
