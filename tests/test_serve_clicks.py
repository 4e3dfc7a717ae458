"""The simulated annotator and the geodesic reference (models.serve.clicks)."""

from __future__ import annotations

import numpy as np

from models.serve.clicks import geodesic_mask, iou, next_click, simulate_clicks


def square(size: int = 40, top: int = 10, left: int = 8, side: int = 15) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_iou_by_hand():
    a, b = np.zeros((2, 4), bool), np.zeros((2, 4), bool)
    a[:, :2], b[:, 1:3] = True, True
    assert iou(a, b) == 2 / 6 and iou(a, a) == 1.0 and iou(a & False, b & False) == 1.0


def test_first_click_is_the_objects_centre():
    assert next_click(np.zeros((40, 40), bool), square()) == (15, 17, True)


def test_a_false_positive_region_gets_a_negative_click():
    gt = square()
    pred = gt.copy()
    pred[30:38, 25:39] = True  # a larger error than anything missed
    x, y, positive = next_click(pred, gt)
    assert not positive and 30 <= y < 38 and 25 <= x < 39
    assert next_click(gt, gt) is None


def test_simulation_with_a_perfect_segmenter_reaches_one():
    gt = square()
    assert simulate_clicks(lambda p, n: gt, gt, 3) == [1.0, 1.0, 1.0]


def test_simulation_feeds_negative_clicks_back():
    gt = square()
    seen = []

    def segment(positive, negative):
        seen.append((list(positive), list(negative)))
        mask = np.ones_like(gt)  # everything: the next error is the false positive frame
        if negative:
            mask = gt.copy()
        return mask

    scores = simulate_clicks(segment, gt, 3)
    assert len(seen[1][1]) == 1 and scores[0] < scores[1] == 1.0


def test_geodesic_flood_stops_at_a_colour_edge():
    image = np.full((40, 40, 3), 200, np.uint8)
    gt = square()
    image[gt] = (20, 40, 160)
    mask = geodesic_mask(image, [(15, 17)])
    assert iou(mask, gt) > 0.9
    assert not geodesic_mask(image, []).any()
    cut = geodesic_mask(image, [(15, 17)], [(20, 12)])  # a negative click inside the square
    assert cut.sum() < mask.sum()
