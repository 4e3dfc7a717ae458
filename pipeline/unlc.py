"""uNLC motion masks: unsupervised non-local consensus voting over a shot.

Pathak et al. 2017, section 5.1 (a modification of Faktor & Irani's NLC that drops every
supervised part), with the parameters of the authors' code (REFERENCE.md, "uNLC"):

1. motion saliency per frame (``pipeline.saliency``), mean per superpixel = initial votes;
2. a sparse kNN graph over superpixel descriptors of nearby frames (``pipeline.region_graph``);
3. votes <- W·votes, each frame divided by its maximum, 50 iterations in 5 batches; after each
   batch, connected blobs scoring > 0.7 whose mean score is < 0.6 are damped to 0.175;
4. at the end, blobs smaller than 0.6x the frame's largest are pushed just below the threshold
   (into the trimap's "ignore" band), and the votes are painted back as a soft mask.

Section 5.1's pruning (``prune_reason``) and section 5.2's trimap (``trimap``) live here too.

Note on step 3: a blob is made of scores > 0.7, so its mean is always > 0.7 and, with the
reference's 0.6, the damping never fires (as in the authors' code). It is kept, with its numbers as
parameters, so that ``blob_min_mean`` > ``blob_threshold`` turns it into a real filter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from pipeline.region_graph import (
    knn_affinity_graph,
    region_adjacency,
    region_descriptors,
    superpixels,
    working_shape,
)
from pipeline.saliency import FlowFn, shot_saliency, upsample_saliency


@dataclass(frozen=True)
class UnlcResult:
    """Soft masks of a shot plus what the stage records about how they were made."""

    soft: np.ndarray  # (T, H, W) float32 in [0, 1] at the input resolution
    saliency_source: str  # "motion", "appearance" (fallback) or "none" (nothing moves)
    frame_paths: tuple[str, ...]  # per frame: static / translation / mixed / skipped / appearance
    usable_pairs: np.ndarray  # (T,) int: flow pairs that contributed motion saliency
    motion_peak: float  # strongest raw motion deviation in the shot (px² or rad²)
    n_regions: int
    graph_nnz: int
    graph_bytes: int
    working_shape: tuple[int, int]
    timings: dict[str, float] = field(default_factory=dict)


def _frame_starts(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def normalise_per_frame(votes: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Divide each frame's votes by that frame's maximum (frames with no positive vote unchanged)."""
    peaks = np.maximum.reduceat(votes, starts[:-1])
    peaks = np.where(peaks > 0, peaks, 1.0)
    return votes / np.repeat(peaks, np.diff(starts))


def blobs(selected: np.ndarray, adjacency: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Connected components among the ``selected`` regions: (their indices, component ids)."""
    members = np.flatnonzero(selected)
    if members.size == 0:
        return members, members
    sub = adjacency[members][:, members]
    _, component = connected_components(sub, directed=False)
    return members, component


def damp_low_energy_blobs(
    votes: np.ndarray,
    area: np.ndarray,
    adjacency: sp.csr_matrix,
    *,
    threshold: float = 0.7,
    min_mean: float = 0.6,
    damp_to: float = 0.175,
) -> np.ndarray:
    """Set blobs of votes > threshold whose pixel-weighted mean is < ``min_mean`` to ``damp_to``."""
    members, component = blobs(votes > threshold, adjacency)
    if members.size == 0:
        return votes
    weight = area[members]
    blob_area = np.bincount(component, weights=weight)
    blob_mean = np.bincount(component, weights=weight * votes[members]) / blob_area
    out = votes.copy()
    out[members[blob_mean[component] < min_mean]] = damp_to
    return out


def drop_small_blobs(
    votes: np.ndarray,
    area: np.ndarray,
    adjacency: sp.csr_matrix,
    frame_of_region: np.ndarray,
    *,
    threshold: float = 0.7,
    min_relative_size: float = 0.6,
) -> np.ndarray:
    """Push blobs (votes > threshold) smaller than ``min_relative_size`` x the frame's largest
    just below ``threshold``: off the binary mask, into the trimap's ignore band (as the reference).
    """
    members, component = blobs(votes > threshold, adjacency)
    if members.size == 0:
        return votes
    blob_area = np.bincount(component, weights=area[members])
    blob_frame = np.zeros(blob_area.size, dtype=np.int64)
    blob_frame[component] = frame_of_region[members]  # blobs never span frames
    largest = np.zeros(int(frame_of_region.max()) + 1)
    np.maximum.at(largest, blob_frame, blob_area)
    small = blob_area < min_relative_size * largest[blob_frame]
    out = votes.copy()
    out[members[small[component]]] = threshold - 1e-5
    return out


def consensus_vote(
    votes: np.ndarray,
    graph: sp.csr_matrix,
    starts: np.ndarray,
    area: np.ndarray,
    adjacency: sp.csr_matrix,
    *,
    iterations: int = 50,
    batches: int = 5,
    blob_threshold: float = 0.7,
    blob_min_mean: float = 0.6,
    blob_damp_to: float = 0.175,
) -> np.ndarray:
    """Iterate votes <- normalise_per_frame(W·votes), damping low-energy blobs after each batch."""
    per_batch = max(1, iterations // max(1, batches))
    done = 0
    while done < iterations:
        for _ in range(min(per_batch, iterations - done)):
            votes = normalise_per_frame(graph @ votes, starts)
            done += 1
        votes = damp_low_energy_blobs(
            votes,
            area,
            adjacency,
            threshold=blob_threshold,
            min_mean=blob_min_mean,
            damp_to=blob_damp_to,
        )
    return votes


def _check_frames(frames: np.ndarray, black_level: int) -> None:
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = getattr(frames, "shape", None)
        raise ValueError(f"frames must be a (T, H, W, 3) array, got shape {shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB, got {frames.dtype}")
    if frames.shape[0] < 2:
        raise ValueError(f"a shot needs at least 2 frames for motion, got {frames.shape[0]}")
    if int(frames.max()) <= black_level:
        raise ValueError(f"all frames are black (max value {int(frames.max())} <= {black_level})")


class _ShotRegions(NamedTuple):
    """The superpixels of a shot (regions numbered across the shot) and their initial votes."""

    labels: np.ndarray  # (T, h, w) int32: frame-local region id of each working-size pixel
    starts: np.ndarray  # (T + 1,) int64: frame t owns regions starts[t]:starts[t + 1]
    frame_of_region: np.ndarray  # (R,) frame index of each region
    area: np.ndarray  # (R,) pixels per region
    votes: np.ndarray  # (R,) mean motion saliency per region over the shot's maximum
    adjacency: sp.csr_matrix  # (R, R) spatial neighbours within a frame


def _shot_regions(
    frames: np.ndarray,
    saliency_maps: np.ndarray,
    shape: tuple[int, int],
    *,
    border_fraction: float,
    region_max_side: int | None,
    superpixel: dict,
    descriptor: dict,
    timings: dict[str, float],
) -> tuple[_ShotRegions, np.ndarray]:
    """Steps 1-2's per-frame part: superpixels of every frame, their descriptors (returned apart,
    (R, D), so the caller can drop them once the graph is built), areas, spatial adjacency and
    initial votes. Frames are resized to the working ``shape``, where HOG patches are taken;
    everything else works on frames shrunk further to ``region_max_side`` (None: no further).
    Records ``timings["regions_s"]``."""
    n_frames, (h, w) = len(frames), shape
    rh, rw = working_shape(h, w, max_side=region_max_side or max(h, w))
    resize = frames.shape[1:3] != (h, w)
    superpixel = {**superpixel, "sigma": superpixel["sigma"] * rw / w}  # sigma in working pixels
    # Per frame: superpixels, descriptors, initial votes (mean saliency per superpixel).
    clock = time.perf_counter()
    labels = np.empty((n_frames, rh, rw), dtype=np.int32)
    descriptors, areas, sums, counts, adjacency_pairs = [], [], [], [], []
    offset = 0
    peak = 0.0
    for t in range(n_frames):
        rgb = cv2.resize(frames[t], (w, h), interpolation=cv2.INTER_AREA) if resize else frames[t]
        small = (
            rgb if (rh, rw) == (h, w) else cv2.resize(rgb, (rw, rh), interpolation=cv2.INTER_AREA)
        )
        labels[t] = superpixels(small, **superpixel)
        desc, area = region_descriptors(small, labels[t], hog_rgb=rgb, **descriptor)
        big = upsample_saliency(saliency_maps[t], (rh, rw), border_fraction=border_fraction)
        peak = max(peak, float(big.max()))
        sums.append(np.bincount(labels[t].ravel(), weights=big.ravel(), minlength=area.size))
        descriptors.append(desc)
        areas.append(area)
        counts.append(area.size)
        adjacency_pairs.append(region_adjacency(labels[t], offset))
        offset += area.size
    timings["regions_s"] = time.perf_counter() - clock

    area = np.concatenate(areas)
    # Divide by the shot's maximum, not per frame: frames with little motion keep low votes.
    votes = np.concatenate(sums) / np.maximum(area, 1.0) / (peak if peak > 0 else 1.0)
    pairs = np.concatenate(adjacency_pairs)
    adjacency = sp.csr_matrix(
        (
            np.ones(2 * len(pairs)),
            (np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]]),
        ),
        shape=(offset, offset),
    )
    regions = _ShotRegions(
        labels=labels,
        starts=_frame_starts(np.array(counts)),
        frame_of_region=np.repeat(np.arange(n_frames), counts),
        area=area,
        votes=votes,
        adjacency=adjacency,
    )
    return regions, np.concatenate(descriptors)


def _paint_votes(
    votes: np.ndarray, labels: np.ndarray, starts: np.ndarray, size: tuple[int, int]
) -> np.ndarray:
    """Step 4's painting: each region's vote on its pixels, resized to ``size`` (height, width)
    when the working size differs; (T, H, W) float32 clipped to [0, 1]."""
    height, width = size
    resize = labels.shape[1:] != (height, width)
    soft = np.empty((len(labels), height, width), dtype=np.float32)
    for t in range(len(labels)):
        painted = votes[starts[t] : starts[t + 1]].astype(np.float32)[labels[t]]
        if resize:
            painted = cv2.resize(painted, (width, height), interpolation=cv2.INTER_LINEAR)
        soft[t] = np.clip(painted, 0.0, 1.0)
    return soft


def unlc_shot(
    frames: np.ndarray,
    flow_fn: FlowFn,
    *,
    max_side: int = 650,
    flow_size: int = 100,
    flow_radius: int = 3,
    static_median_px: float = 1.0,
    orientation_bins: int = 20,
    dominant_fraction: float = 0.75,
    bin_offset: float = 0.5,
    box_size: int = 5,
    border_fraction: float = 0.125,
    min_usable_fraction: float = 0.5,
    min_motion_peak: float = 0.25,
    appearance_sigma: float = 3.0,
    n_segments: int = 400,
    slic_sigma: float = 5.0,
    slic_compactness: float = 10.0,
    superpixel_method: str = "opencv",
    region_max_side: int | None = 325,
    slic_iterations: int = 5,
    patch_size: int = 15,
    hog_cell: int = 5,
    hog_orientations: int = 6,
    hog_block_norm: str = "l1",
    colour_bins: int = 20,
    temporal_radius: int = 15,
    temporal_stride: int = 1,
    neighbours: int = 62,
    affinity_sigma: float = 0.1,
    knn_method: str = "brute",
    iterations: int = 50,
    batches: int = 5,
    blob_threshold: float = 0.7,
    blob_min_mean: float = 0.6,
    blob_damp_to: float = 0.175,
    final_min_relative_size: float = 0.6,
    black_level: int = 10,
    flow_checks: dict | None = None,
) -> UnlcResult:
    """uNLC soft foreground masks for one shot of RGB uint8 frames (T, H, W, 3).

    ``flow_fn(img0, img1)`` takes two RGB uint8 ``flow_size`` x ``flow_size`` images and returns
    float32 (flow_size, flow_size, 2) forward flow (dx, dy). Raises ValueError on a one-frame shot,
    all-black frames, wrong shapes or non-finite flow. ``flow_checks`` (the flow stage's validity
    thresholds) makes the motion saliency skip pixels that fail them (pipeline.saliency).
    """
    _check_frames(frames, black_level)
    timings: dict[str, float] = {}
    height, width = frames.shape[1:3]
    h, w = working_shape(height, width, max_side=max_side)
    if min(h, w) < patch_size:
        raise ValueError(f"frames {height}x{width} are smaller than the {patch_size}-pixel patch")

    clock = time.perf_counter()
    small = np.stack(
        [cv2.resize(f, (flow_size, flow_size), interpolation=cv2.INTER_AREA) for f in frames]
    )
    saliency = shot_saliency(
        small,
        flow_fn,
        radius=flow_radius,
        static_median_px=static_median_px,
        orientation_bins=orientation_bins,
        dominant_fraction=dominant_fraction,
        bin_offset=bin_offset,
        box_size=box_size,
        min_usable_fraction=min_usable_fraction,
        min_motion_peak=min_motion_peak,
        appearance_sigma=appearance_sigma,
        flow_checks=flow_checks,
    )
    timings["saliency_s"] = time.perf_counter() - clock

    regions, descriptors = _shot_regions(
        frames,
        saliency.maps,
        (h, w),
        border_fraction=border_fraction,
        superpixel={
            "n_segments": n_segments,
            "sigma": slic_sigma,
            "compactness": slic_compactness,
            "method": superpixel_method,
            "iterations": slic_iterations,
        },
        region_max_side=region_max_side,
        descriptor={
            "patch": patch_size,
            "hog_cell": hog_cell,
            "hog_orientations": hog_orientations,
            "hog_block_norm": hog_block_norm,
            "colour_bins": colour_bins,
        },
        timings=timings,
    )
    clock = time.perf_counter()
    graph = knn_affinity_graph(
        descriptors,
        regions.frame_of_region,
        temporal_radius=temporal_radius,
        temporal_stride=temporal_stride,
        neighbours=neighbours,
        sigma=affinity_sigma,
        method=knn_method,
    )
    del descriptors
    timings["graph_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    votes = consensus_vote(
        regions.votes,
        graph,
        regions.starts,
        regions.area,
        regions.adjacency,
        iterations=iterations,
        batches=batches,
        blob_threshold=blob_threshold,
        blob_min_mean=blob_min_mean,
        blob_damp_to=blob_damp_to,
    )
    votes = drop_small_blobs(
        votes,
        regions.area,
        regions.adjacency,
        regions.frame_of_region,
        threshold=blob_threshold,
        min_relative_size=final_min_relative_size,
    )
    timings["voting_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    soft = _paint_votes(votes, regions.labels, regions.starts, (height, width))
    timings["paint_s"] = time.perf_counter() - clock

    return UnlcResult(
        soft=soft,
        saliency_source=saliency.source,
        frame_paths=saliency.frame_paths,
        usable_pairs=saliency.static_pairs + saliency.translation_pairs,
        motion_peak=saliency.peak,
        n_regions=len(regions.area),
        graph_nnz=int(graph.nnz),
        graph_bytes=int(graph.data.nbytes + graph.indices.nbytes + graph.indptr.nbytes),
        working_shape=(h, w),
        timings=timings,
    )


def trimap(
    soft: np.ndarray, *, negative_below: float = 0.4, positive_above: float = 0.7
) -> np.ndarray:
    """Section 5.2's trimap of a soft mask: 0 background, 1 foreground, 255 ignore (uint8)."""
    if not negative_below <= positive_above:
        raise ValueError(f"negative_below {negative_below} > positive_above {positive_above}")
    soft = np.asarray(soft)
    if not np.isfinite(soft).all():
        raise ValueError("soft mask has non-finite values")
    out = np.full(soft.shape, 255, dtype=np.uint8)
    out[soft < negative_below] = 0
    out[soft > positive_above] = 1
    return out


def prune_reason(
    mask: np.ndarray,
    *,
    min_fg: float = 0.10,
    max_fg: float = 0.80,
    max_border_fg: float = 0.10,
    border_band: float = 0.05,
    threshold: float = 0.7,
) -> str | None:
    """Section 5.1's frame pruning. None keeps the frame; otherwise a one-line reason.

    ``mask`` is a binary (bool / 0-1 integer) mask, or a soft float mask thresholded at
    ``threshold``. Drops frames with foreground < ``min_fg`` or > ``max_fg`` of the pixels, or with
    more than ``max_border_fg`` of the pixels within ``border_band`` of the border (fractions of
    the height and width) marked foreground.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"mask must be a non-empty 2-D array, got shape {mask.shape}")
    fg = mask > threshold if np.issubdtype(mask.dtype, np.floating) else mask.astype(bool)
    fraction = float(fg.mean())
    if fraction < min_fg:
        return f"foreground {100 * fraction:.1f}% < {100 * min_fg:g}%"
    if fraction > max_fg:
        return f"foreground {100 * fraction:.1f}% > {100 * max_fg:g}%"
    h, w = fg.shape
    bh = max(1, int(round(border_band * h)))
    bw = max(1, int(round(border_band * w)))
    band = np.zeros_like(fg)
    band[:bh] = band[-bh:] = True
    band[:, :bw] = band[:, -bw:] = True
    border = float(fg[band].mean())
    if border > max_border_fg:
        return (
            f"border foreground {100 * border:.1f}% > {100 * max_border_fg:g}% "
            f"within {100 * border_band:g}% of the edge"
        )
    return None
