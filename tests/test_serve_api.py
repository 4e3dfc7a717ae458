"""The serve API (models.serve): hand-made propagation cases, the tiny CMP plumbing, run loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.methods.cpfs import CPFSModule
from models.serve import CMPEngine, RunError, load_cmp_run, warp_image
from models.serve.engine import annotation_guidance, mask_from_flows, sparse_input
from tests.serve_helpers import RegionPropagator, tiny_module, two_region_image, write_run


def region_engine() -> CMPEngine:
    return CMPEngine(RegionPropagator(), num_bins=99, max_flow=50.0, stride=8)


def test_zero_guidance_click_gives_no_motion():
    engine, image = region_engine(), two_region_image()
    moved = engine.propagate(image, [(10, 20, 6.0, -3.0)])
    assert np.allclose(moved.flow[20, 10], (6.0, -3.0), atol=0.05)  # the arrow is followed
    still = engine.propagate(image, [(10, 20, 0.0, 0.0)])
    assert np.abs(still.flow).max() < 1e-3
    assert np.array_equal(still.next_frame, image)


def test_negative_click_removes_its_region_from_the_mask():
    engine, image = region_engine(), two_region_image()
    only_positive = engine.annotate(image, positive=[(10, 20)])
    assert only_positive.mask.all()  # one moving point: the leak carries it everywhere
    refined = engine.annotate(image, positive=[(10, 20)], negative=[(50, 20)])
    assert refined.mask[:, :32].all() and not refined.mask[:, 32:].any()


def test_negative_clicks_alone_give_an_empty_mask():
    engine, image = region_engine(), two_region_image()
    assert not engine.annotate(image, positive=[], negative=[(50, 20)]).mask.any()


def test_annotation_copies_follow_the_authors_demo():
    copies = annotation_guidance(np.array([[3.0, 4.0]]), np.array([[7.0, 8.0]]), magnitude=12)
    motions = [tuple(c[0, 2:]) for c in copies]
    assert motions == [(12, 0), (-12, 0), (0, 12), (0, -12)]
    assert all(tuple(c[1]) == (7, 8, 0, 0) for c in copies)
    sparse = sparse_input(copies, (10, 10))
    assert sparse[1, :, 4, 3].tolist() == [-12, 0, 1, 1]
    assert sparse[:, :, 8, 7].tolist() == [[0, 0, 1, 1]] * 4  # still, but marked as guidance
    assert sparse[:, 2].sum().item() == 8


def test_mask_from_flows_normalises_by_the_maximum():
    flows = np.zeros((2, 1, 3, 2))
    flows[0, 0] = [(4, 0), (2, 0), (0, 0)]
    flows[1, 0] = [(0, 4), (0, 1), (0, 0)]
    mask, score = mask_from_flows(flows)
    assert np.allclose(score[0], [1.0, 0.375, 0.0]) and mask[0].tolist() == [True, False, False]
    assert not mask_from_flows(np.zeros((4, 2, 2, 2)))[0].any()


def test_warp_moves_content_along_the_flow():
    image = np.zeros((8, 8, 3), np.uint8)
    image[2, 2] = 255
    flow = np.zeros((8, 8, 2), np.float32)
    flow[..., 0] = 3.0  # everything moves 3 px right
    warped = warp_image(image, flow)
    assert warped[2, 5].tolist() == [255, 255, 255] and warped[2, 2].sum() == 0


def test_tiny_cmp_engine_equals_the_full_forward_on_an_odd_size():
    module = tiny_module()
    engine = CMPEngine.from_model(module.model, "cpu")
    image = np.random.default_rng(0).integers(0, 256, (37, 51, 3), dtype=np.uint8)
    arrows = [(5, 7, 4.0, -2.0), (40, 30, 0.0, 0.0)]
    first = engine.propagate(image, arrows)
    again = engine.propagate(image, arrows)  # from the cached image features
    assert first.flow.shape == (37, 51, 2) and first.next_frame.shape == image.shape
    assert np.array_equal(first.flow, again.flow)
    padded = np.pad(image, ((0, 3), (0, 5), (0, 0)), mode="edge")
    from models.cmp import predict_flow
    from models.data import normalise_images

    with torch.no_grad():
        x = normalise_images(torch.from_numpy(padded)[None])
        logits = module.model(x, sparse_input([np.array(arrows, np.float32)], (40, 56)))
        expected = predict_flow(logits, (40, 56), 9, 10.0)[0, :, :37, :51].permute(1, 2, 0)
    assert np.allclose(first.flow, expected.numpy(), atol=1e-5)


def test_generate_returns_one_frame_per_step():
    frames = region_engine().generate(two_region_image(), [(10, 20, 2.0, 0.0)], steps=3)
    assert len(frames) == 3 and all(f.shape == (40, 64, 3) for f in frames)
    assert not np.array_equal(frames[0], two_region_image())


@pytest.mark.parametrize(
    "guidance", [[(64, 5, 1, 1)], [(-1, 5, 1, 1)], [(3, 3, float("nan"), 0)], [(1, 2, 3)]]
)
def test_bad_guidance_is_refused(guidance):
    with pytest.raises(ValueError):
        region_engine().propagate(two_region_image(), guidance)


def test_load_run_round_trips_the_weights(tmp_path):
    module = tiny_module(seed=3)
    run = load_cmp_run(write_run(tmp_path / "run", module), device="cpu")
    assert run.global_step == 7 and run.checkpoint.name == "last.ckpt"
    for key, value in module.model.state_dict().items():
        assert torch.equal(run.model.state_dict()[key], value)


def test_load_run_refuses_another_method(tmp_path):
    torch.manual_seed(0)
    cpfs = CPFSModule(backbone="resnet18")
    with pytest.raises(RunError, match="'cpfs' run; serve needs a CMP run"):
        load_cmp_run(write_run(tmp_path / "cpfs", cpfs, method="cpfs"))


def test_load_run_refuses_missing_and_damaged_checkpoints(tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        load_cmp_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="no checkpoints/last.ckpt"):
        load_cmp_run(tmp_path / "empty")
    run = write_run(tmp_path / "bad")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="does not load"):
        load_cmp_run(run)
