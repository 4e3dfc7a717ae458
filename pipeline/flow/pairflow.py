"""The flow of one training pair t -> t+g with its validity: direct, or composed from gap-1 flows.

Issue 27 measured that every OpenCV backend gets a fast mover right between consecutive frames
but gives it the background's motion once the gap reaches 4 or more, while the validity checks
(pipeline.flow.validity) then mark the mover invalid: the pairs keep the background and lose what
moves. With ``chain`` on and a gap above 1 this module also computes the gap-1 flows along the
pair (each checked forward-backward), composes them with `chain_flows` (validity carried
through the chain; the composition is checked forward-backward against the composed backward
links and photometrically against frame t+g, and its failures grown at motion boundaries), and
chooses per pixel:

- the direct flow wherever it is valid (the background: one estimate, no accumulated error);
- the composed flow where the direct flow is invalid and the composed one valid, with its
  photometric test ``photo_factor`` times as strict (drift that the composition accumulates
  and that no single link shows; measured on the tuning split, docs/BENCHMARKS.md);
- the direct flow, marked invalid, elsewhere.

Only pairs with enough invalid pixels whose target lies inside frame t+g (``min_invalid``) are
composed: the others have nothing to recover, and the links cost ~2 gap flows more.

The flows a pair needs are listed by `flow_requests` so a caller can hand all pairs of a batch to
the backend at once (RAFT batches them); `combine` turns them into (flow, Validity).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.flow.validity import (
    Validity,
    chain_flows,
    flow_validity,
    forward_backward_consistent,
    grow_failures,
    lands_inside,
    photometric_error,
)

Frames = Sequence[np.ndarray]


def _chained(frames: Frames, chain: bool) -> bool:
    return chain and len(frames) > 2


def direct_requests(frames: Frames, checks: dict | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The flows of the pair itself: t -> t+g, and t+g -> t when the checks are on."""
    first, last = frames[0], frames[-1]
    return [(first, last)] + ([(last, first)] if checks is not None else [])


def link_requests(frames: Frames, checks: dict | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The gap-1 flows along the pair (each followed by its reverse when the checks are on)."""
    requests = []
    for a, b in zip(frames[:-1], frames[1:], strict=True):
        requests += [(a, b)] + ([(b, a)] if checks is not None else [])
    return requests


def flow_requests(
    frames: Frames, checks: dict | None, chain: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (from, to) frame pairs whose flow `combine` needs, in its order."""
    links = link_requests(frames, checks) if _chained(frames, chain) else []
    return direct_requests(frames, checks) + links


def needs_links(validity: Validity | None, flow: np.ndarray, min_invalid: float) -> bool:
    """Whether composing can help: at least ``min_invalid`` of the pixels are invalid although
    their target lies inside frame t+g (what leaves the frame no chain recovers)."""
    if validity is None:
        return True
    failed = ~validity.valid & lands_inside(flow)
    return bool(failed.mean() >= min_invalid) if min_invalid > 0 else True


def _composed(frames: Frames, links: list[np.ndarray], checks: dict, photo_factor: float):
    """Compose the checked gap-1 links both ways; return (flow, valid, photometric error).

    Valid: every link forward-backward consistent where the pixel lands (the links' photometric
    tests are left out: the composed flow's, against frame t+g, is stricter and costs one), the
    composed forward and backward flows consistent (Sundaram et al.'s test on the composition:
    drift that no single link shows), and the photometric test of the composed flow."""
    alpha, beta = float(checks.get("fb_alpha", 0.01)), float(checks.get("fb_beta", 0.5))
    flows, backs, valids = [], [], []
    for k in range(len(frames) - 1):
        forward, backward = links[2 * k], links[2 * k + 1]
        flows.append(forward)
        backs.append(backward)
        valids.append(forward_backward_consistent(forward, backward, alpha=alpha, beta=beta))
    flow, valid = chain_flows(flows, valids)
    back, _ = chain_flows(backs[::-1])
    valid &= forward_backward_consistent(
        flow,
        back,
        alpha=float(checks.get("fb_alpha", 0.01)),
        beta=float(checks.get("fb_beta", 0.5)),
    )
    photo = photometric_error(
        frames[0],
        frames[-1],
        flow,
        window=int(checks.get("photo_window", 3)),
        test=checks.get("photo_test", "absolute"),
        floor=float(checks.get("photo_floor", 4.0)),
        fit_on=valid,
    )
    valid &= photo < float(checks.get("photo_threshold", 8.0)) * photo_factor
    margin = int(checks.get("margin", 0))
    if margin:  # the composition blends links across motion boundaries: the same fringe rule
        step = float(checks.get("margin_flow_step", 0.0))
        valid = grow_failures(valid, margin, int(checks.get("margin_min_area", 1)), flow, step)
    return flow, valid, photo


def combine(
    frames: Frames,
    flows: Sequence[np.ndarray],
    checks: dict | None,
    chain: bool,
    photo_factor: float = 1.0,
    direct: Validity | None = None,
) -> tuple[np.ndarray, Validity | None]:
    """The pair's stored flow and validity from the flows `flow_requests` listed (``direct``:
    the direct flow's validity when already computed)."""
    if checks is None:  # nothing tells where the direct flow fails: keep it
        return flows[0], None
    if direct is None:
        direct = flow_validity(frames[0], frames[-1], flows[0], flows[1], **checks)
    if not _chained(frames, chain):
        return flows[0], direct
    flow_c, valid_c, photo_c = _composed(frames, list(flows[2:]), checks, photo_factor)
    use_chain = valid_c & ~direct.valid
    flow = np.where(use_chain[..., None], flow_c, flows[0])
    valid = direct.valid | use_chain
    consistent = np.where(use_chain, valid_c, direct.consistent)
    photometric = np.where(use_chain, photo_c, direct.photometric).astype(np.float32)
    return np.ascontiguousarray(flow, np.float32), Validity(valid, consistent, photometric)


def _finite(flows: Sequence[np.ndarray]) -> bool:
    return all(np.isfinite(f).all() for f in flows)


def pair_flows(
    compute,
    items: Sequence[Frames],
    checks: dict | None,
    chain: bool,
    photo_factor: float = 1.0,
    min_invalid: float = 0.0,
) -> list[tuple[np.ndarray, Validity | None]]:
    """(flow, validity) of each pair (its frames t..t+g, or just t and t+g): the direct flows of
    all pairs in one backend call, then the gap-1 links of the pairs that need them
    (`needs_links`) in a second. With the checks off (``checks`` None) nothing is composed."""
    direct_flows = _batched(compute, [direct_requests(f, checks) for f in items])
    directs: list[Validity | None] = []
    for frames, flows in zip(items, direct_flows, strict=True):
        ok = checks is not None and _finite(flows)
        directs.append(flow_validity(frames[0], frames[-1], *flows, **checks) if ok else None)
    linked = [
        checks is not None
        and _chained(frames, chain)
        and _finite(flows)
        and needs_links(validity, flows[0], min_invalid)
        for frames, flows, validity in zip(items, direct_flows, directs, strict=True)
    ]
    link_flows = iter(
        _batched(
            compute, [link_requests(f, checks) for f, go in zip(items, linked, strict=True) if go]
        )
    )
    out = []
    for frames, flows, validity, go in zip(items, direct_flows, directs, linked, strict=True):
        if checks is not None and validity is None:
            out.append((flows[0], None))  # the stage drops a non-finite forward flow; no check
            continue
        links = next(link_flows) if go else []
        use = go and _finite(links)
        out.append(combine(frames, flows + links, checks, use, photo_factor, validity))
    return out


def _batched(compute, groups: list[list]) -> list[list[np.ndarray]]:
    """One backend call for every group's requests; the flows regrouped."""
    flat = [r for group in groups for r in group]
    flows = compute(flat) if flat else []
    out, start = [], 0
    for group in groups:
        out.append(list(flows[start : start + len(group)]))
        start += len(group)
    return out


__all__ = ["combine", "flow_requests", "needs_links", "pair_flows"]
