"""Detection as many crops: how many sliding windows an image has, and region proposals by selective search.

Selective search (Uijlings et al., IJCV 2013) starts from an over-segmentation (Felzenszwalb and
Huttenlocher's graph-based segmentation, ``skimage.segmentation.felzenszwalb``) and greedily merges the two
most similar neighbouring regions until one region is left; the bounding box of every region that ever
existed is a proposal. The similarity of regions ``a`` and ``b`` is the sum of four terms, each in [0, 1]::

    s_colour  = sum_k min(c_a[k], c_b[k])              colour histograms (25 bins per channel, L1-normalised)
    s_texture = sum_k min(t_a[k], t_b[k])              histograms of Gaussian derivatives in 8 directions
    s_size    = 1 - (size_a + size_b) / size_image     merge small regions first
    s_fill    = 1 - (size_box(a u b) - size_a - size_b) / size_image    merge regions that fill a box together

After a merge, the new region's histograms are the size-weighted mean of the two (no pixels revisited).

    from lecturelib import proposals
    boxes = proposals.selective_search(image)                  # (K, 4) xyxy float32, hierarchy order
    proposals.recall(boxes, gt_boxes, iou_threshold=0.5)       # share of objects some proposal finds
"""
from __future__ import annotations

import numpy as np
import torch

from ._validate import require_array, require_float, require_int
from .boxes import box_iou

__all__ = ["window_count", "selective_search", "recall"]

COLOUR_BINS = 25      # per channel, as in the paper
TEXTURE_BINS = 10     # per direction and channel
DIRECTIONS = 8


def window_count(image_size: int, window_sizes, aspect_ratios=(1.0,), stride: int = 1) -> int:
    """How many windows a sliding-window detector classifies on one square image.

    Every window size (its area's square root, pixels) at every aspect ratio (width / height) is placed at
    every ``stride``-th position where it fits inside the image."""
    image_size = require_int("image_size", image_size, minimum=1)
    stride = require_int("stride", stride, minimum=1)
    if not isinstance(window_sizes, (list, tuple)) or not window_sizes:
        raise TypeError(f"window_sizes must be a non-empty list of sizes, got {window_sizes!r}")
    total = 0
    for size in window_sizes:
        size = require_float("window_sizes", size, minimum=1.0)
        for ratio in aspect_ratios:
            ratio = require_float("aspect_ratios", ratio, minimum=1e-3)
            w, h = round(size * ratio ** 0.5), round(size / ratio ** 0.5)
            if w <= image_size and h <= image_size:
                total += ((image_size - w) // stride + 1) * ((image_size - h) // stride + 1)
    return total


def _histograms(values: np.ndarray, labels: np.ndarray, n: int, bins: int, lo: float, hi: float) -> np.ndarray:
    """Per-region histograms of ``values`` (H, W, F) with ``bins`` bins per feature: (n, F * bins), L1-normed."""
    features = values.shape[-1]
    index = np.clip(((values - lo) / (hi - lo) * bins).astype(np.int64), 0, bins - 1)   # (H, W, F)
    flat = (labels[..., None] * features + np.arange(features)) * bins + index          # region, feature, bin
    hist = np.bincount(flat.ravel(), minlength=n * features * bins).reshape(n, features * bins).astype(np.float64)
    return hist / np.maximum(hist.sum(1, keepdims=True), 1e-12)


def _texture(image: np.ndarray) -> np.ndarray:
    """|Gaussian derivative| (sigma 1) in 8 directions per channel, scaled to [0, 1]: (H, W, 3 * 8)."""
    from scipy.ndimage import gaussian_filter
    out = []
    for c in range(image.shape[-1]):
        gy = gaussian_filter(image[..., c], 1.0, order=(1, 0))
        gx = gaussian_filter(image[..., c], 1.0, order=(0, 1))
        for k in range(DIRECTIONS):
            angle = np.pi * k / DIRECTIONS * 2
            out.append(np.maximum(np.cos(angle) * gx + np.sin(angle) * gy, 0.0))
    texture = np.stack(out, -1)
    return texture / max(float(texture.max()), 1e-12)


def _neighbours(labels: np.ndarray) -> set[tuple[int, int]]:
    pairs = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
        differ = a != b
        lo, hi = np.minimum(a[differ], b[differ]), np.maximum(a[differ], b[differ])
        pairs.update(zip(lo.tolist(), hi.tolist()))
    return pairs


def selective_search(image, *, scale: float = 100.0, sigma: float = 0.8, min_size: int = 20) -> torch.Tensor:
    """Region proposals of one image by selective search (colour + texture + size + fill similarity).

    image: (H, W, 3) uint8 or float array in [0, 1] (a tensor (3, H, W) is accepted too).
    scale, sigma, min_size: the Felzenszwalb over-segmentation's parameters (larger scale: fewer, larger
    initial regions). Returns (K, 4) float32 xyxy boxes (pixel edges: a one-pixel region at (x, y) is
    (x, y, x + 1, y + 1)), in the order the regions appeared (initial regions first, then each merge),
    duplicates removed.
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] == 3:
            image = image.transpose(1, 2, 0)
    image = require_array("image", image, ndim=3)
    if image.shape[-1] != 3:
        raise ValueError(f"image must have shape (H, W, 3), got {image.shape}")
    require_float("scale", scale, minimum=1e-6)
    require_int("min_size", min_size, minimum=1)
    image = image.astype(np.float64) / (255.0 if image.dtype == np.uint8 else 1.0)
    from skimage.segmentation import felzenszwalb
    labels = felzenszwalb(image, scale=scale, sigma=sigma, min_size=min_size)
    n = int(labels.max()) + 1
    height, width = labels.shape
    image_size = float(height * width)

    size = np.bincount(labels.ravel(), minlength=n).astype(np.float64)
    ys, xs = np.mgrid[:height, :width]
    boxes = np.stack([np.full(n, np.inf), np.full(n, np.inf), np.zeros(n), np.zeros(n)], 1)
    np.minimum.at(boxes[:, 0], labels.ravel(), xs.ravel())
    np.minimum.at(boxes[:, 1], labels.ravel(), ys.ravel())
    np.maximum.at(boxes[:, 2], labels.ravel(), xs.ravel() + 1)
    np.maximum.at(boxes[:, 3], labels.ravel(), ys.ravel() + 1)
    regions = {
        i: {"size": size[i], "box": boxes[i],
            "colour": c, "texture": t}
        for i, (c, t) in enumerate(zip(_histograms(image, labels, n, COLOUR_BINS, 0.0, 1.0),
                                       _histograms(_texture(image), labels, n, TEXTURE_BINS, 0.0, 1.0)))
    }

    def box_size(a, b):
        lo, hi = np.minimum(a["box"][:2], b["box"][:2]), np.maximum(a["box"][2:], b["box"][2:])
        return float(np.prod(hi - lo))

    def similarity(a, b):
        colour = np.minimum(a["colour"], b["colour"]).sum()
        texture = np.minimum(a["texture"], b["texture"]).sum()
        small = 1.0 - (a["size"] + b["size"]) / image_size
        fill = 1.0 - (box_size(a, b) - a["size"] - b["size"]) / image_size
        return colour + texture + small + fill

    pairs = {pair: similarity(regions[pair[0]], regions[pair[1]]) for pair in _neighbours(labels)}
    order = list(regions)
    while pairs:
        i, j = max(pairs, key=pairs.get)
        a, b = regions[i], regions[j]
        total = a["size"] + b["size"]
        new = len(regions)                   # keys are 0 .. len - 1: every region ever made is kept
        regions[new] = {"size": total,
                        "box": np.concatenate([np.minimum(a["box"][:2], b["box"][:2]),
                                               np.maximum(a["box"][2:], b["box"][2:])]),
                        "colour": (a["colour"] * a["size"] + b["colour"] * b["size"]) / total,
                        "texture": (a["texture"] * a["size"] + b["texture"] * b["size"]) / total}
        order.append(new)
        touching = {k for pair in pairs if i in pair or j in pair for k in pair} - {i, j}
        pairs = {pair: s for pair, s in pairs.items() if i not in pair and j not in pair}
        for k in touching:
            pairs[(k, new)] = similarity(regions[k], regions[new])
    out = np.array([regions[k]["box"] for k in order], dtype=np.float32).reshape(-1, 4)
    _, first = np.unique(out, axis=0, return_index=True)
    return torch.from_numpy(out[np.sort(first)])


def recall(proposals, gt_boxes, iou_threshold: float = 0.5) -> float:
    """The share of ground-truth boxes that some proposal overlaps with IoU >= ``iou_threshold``.

    proposals: (K, 4) xyxy; gt_boxes: (G, 4) xyxy (pixel edges). 1.0 when there is no ground truth."""
    iou_threshold = require_float("iou_threshold", iou_threshold, minimum=0.0, maximum=1.0)
    proposals = torch.as_tensor(proposals, dtype=torch.float32).reshape(-1, 4)
    gt_boxes = torch.as_tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4)
    if len(gt_boxes) == 0:
        return 1.0
    if len(proposals) == 0:
        return 0.0
    best = box_iou(gt_boxes, proposals).max(dim=1).values
    return float((best >= iou_threshold).float().mean())
