"""Science checks of the grouping methods against ground-truth layers (synthetic set, exact flow).

* S3 (Mahendran et al., ECCV-W 2018, Fig. 2a: "the network learns to correctly group together
  the pixels in each cube face"): for each ground-truth layer of a frame, the IoU of the
  best-matching predicted (argmax) segment; averaged over layers and frames.
* CPFS (Mahendran et al. 2018, Sec. 4.4: "pixels on a salient foreground object tend to cluster
  together in the embedding"): a margin test; per frame, the mean cosine similarity of embedding
  pairs within a layer minus that of pairs across layers (pairs weighted so every layer counts
  once).
"""

from __future__ import annotations

import torch

__all__ = ["best_match_iou", "embedding_margin"]


def best_match_iou(labels: torch.Tensor, layers: torch.Tensor) -> torch.Tensor:
    """Mean over ground-truth layers of max over segments of IoU; labels, layers (H, W) int."""
    if labels.shape != layers.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and layers {tuple(layers.shape)} differ")
    scores = []
    for layer in layers.unique():
        truth = layers == layer
        best = 0.0
        for seg in labels[truth].unique():
            pred = labels == seg
            inter = (pred & truth).sum().item()
            union = (pred | truth).sum().item()
            best = max(best, inter / union)
        scores.append(best)
    return torch.tensor(scores).mean()


def embedding_margin(embeddings: torch.Tensor, layers: torch.Tensor) -> torch.Tensor:
    """Within-layer minus across-layer mean cosine similarity; embeddings (D, H, W), layers (H, W).

    Per layer k with mean unit embedding μ_k and n_k pixels, the within-layer mean cosine is
    (n_k² ||μ_k||² - n_k) / (n_k² - n_k) (self-pairs left out); across layers k ≠ l it is μ_k·μ_l.
    Both are averaged over layers (pairs of layers). NaN when the frame shows fewer than two
    layers.
    """
    unit = torch.nn.functional.normalize(embeddings.flatten(1).float(), dim=0)  # (D, N)
    flat = layers.flatten()
    ids = flat.unique()
    if len(ids) < 2:
        return torch.tensor(float("nan"))
    means, within = [], []
    for k in ids:
        members = unit[:, flat == k]
        n = members.shape[1]
        mu = members.mean(1)
        means.append(mu)
        if n > 1:
            within.append((n * n * mu.dot(mu) - n) / (n * n - n))
    mu = torch.stack(means)  # (K, D)
    cross = mu @ mu.T
    off = ~torch.eye(len(ids), dtype=torch.bool)
    return torch.stack(within).mean() - cross[off].mean()
