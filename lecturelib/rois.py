"""Regions of interest: RoIPool and RoIAlign, as Fast R-CNN and Mask R-CNN crop features for a box.

``roi_pool`` and ``roi_align`` crop a fixed-size (C, ph, pw) feature for each region of interest with
torchvision's conventions (``torchvision.ops.roi_pool`` / ``roi_align``, which cannot be installed beside
the pinned torch here):

* ``rois``: (K, 5) rows ``(batch_index, x1, y1, x2, y2)`` in image coordinates, or a list of (K_i, 4)
  boxes per image; ``spatial_scale`` maps them onto the feature map (1 / stride).
* RoIPool rounds the box to whole feature cells (half away from zero, :func:`roi_pool_cells`) and takes
  the max of each floor/ceil bin (an empty bin gives 0): the quantisation that misaligns masks.
* RoIAlign keeps real-valued coordinates and averages bilinear samples on a regular grid inside each
  bin (``sampling_ratio`` samples per bin side; ``<= 0`` means ceil(bin size)). ``aligned=True``
  shifts by half a pixel so that a feature cell's centre sits at (j + 0.5, i + 0.5); samples farther
  than one cell outside the map contribute 0 but still count in the average.

As in torchvision's kernels, the arithmetic that decides something discrete (the scaled box, RoIPool's rounding
and bin edges, RoIAlign's sample count and sample positions, hence which samples lie outside) is done in the
features' dtype: with float32 features ``x * spatial_scale`` is a float32 product, and float64 arithmetic would
round some boxes differently (for example a bin edge 3 * (7 / 3) = 7.000000000000001 in float64, 7 in float32).
``tests/test_torchvision_parity.py`` compares both functions with scalar ports of torchvision's CPU kernels.

Used by the detection notebook (RoI Pool vs RoI Align, the R-CNN family's costs), the instance
segmentation notebook and its mask head, and the reference ``mask_targets``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ._validate import describe, require_float, require_int, require_pair, require_tensor

__all__ = ["rois_from_boxes", "roi_pool_cells", "roi_pool", "roi_align"]


def rois_from_boxes(boxes) -> torch.Tensor:
    """Per-image box lists -> one (K, 5) RoI tensor with the image index in column 0.

    boxes: list of (K_i, 4) float tensors in xyxy, one entry per image.
    """
    if not isinstance(boxes, (list, tuple)):
        raise TypeError(f"boxes must be a list of (K_i, 4) tensors, one per image, got {describe(boxes)}")
    rows = []
    for i, b in enumerate(boxes):
        b = require_tensor(f"boxes[{i}]", b, shape=(None, 4), floating=True)
        rows.append(torch.cat([torch.full((len(b), 1), float(i), dtype=b.dtype), b], dim=1))
    return torch.cat(rows) if rows else torch.zeros(0, 5)


def _check_rois(features, rois, output_size, spatial_scale):
    features = require_tensor("features", features, ndim=4, floating=True)
    if isinstance(rois, (list, tuple)):
        rois = rois_from_boxes(rois)
    rois = require_tensor("rois", rois, shape=(None, 5), floating=True)
    index = rois[:, 0]
    if ((index != index.round()) | (index < 0) | (index >= len(features))).any():
        raise ValueError(f"rois[:, 0] must be image indices in [0, {len(features)}), got {index.tolist()[:8]}")
    ph, pw = require_pair("output_size", output_size, minimum=1)
    spatial_scale = require_float("spatial_scale", spatial_scale)
    if not spatial_scale > 0:
        raise ValueError(f"spatial_scale must be > 0 (1 / feature stride), got {spatial_scale}")
    return features, rois.to(features.dtype), ph, pw, spatial_scale


def _round_half_away(v: float) -> int:
    """C's ``round``: halves away from zero, exactly (``floor(|v| + 0.5)`` rounds 0.49999999999999994 up)."""
    magnitude = abs(v)
    whole = math.floor(magnitude)
    return int(math.copysign(whole + (1 if magnitude - whole >= 0.5 else 0), v))


def _kernel_scalar(dtype: torch.dtype):
    """The scalar type torchvision's CPU kernel computes in for features of ``dtype`` (float or double)."""
    return np.float32 if dtype == torch.float32 else np.float64


def roi_pool_cells(box, spatial_scale: float = 1.0, dtype: torch.dtype = torch.float64) -> tuple[int, int, int, int]:
    """The feature cells (x1, y1, x2, y2), inclusive, that RoIPool covers for an image box (x1, y1, x2, y2).

    Each coordinate times ``spatial_scale`` (a product in ``dtype``, the features' dtype: float32 features give a
    float32 product, as in the kernel) is rounded half away from zero (C's ``round``, as in torchvision's kernel),
    not to even as Python's ``round`` does: 2.5 -> 3, -0.5 -> -1.
    """
    scalar = _kernel_scalar(dtype)
    return tuple(_round_half_away(float(scalar(v) * scalar(spatial_scale))) for v in box)


def roi_pool(features, rois, output_size, spatial_scale: float = 1.0) -> torch.Tensor:
    """Max-pool each RoI into an output_size grid after rounding it to whole feature cells.

    features: (N, C, H, W); rois: (K, 5) ``(batch_index, x1, y1, x2, y2)`` or a list of (K_i, 4);
    returns (K, C, ph, pw). Matches ``torchvision.ops.roi_pool`` (its CPU kernel, float32 and float64), except
    that a bin holding NaN gives NaN here (torchvision's ``>`` skips NaN) and a bin of -inf gives -inf here
    (-FLT_MAX there).
    """
    features, rois, ph, pw, scale = _check_rois(features, rois, output_size, spatial_scale)
    n, c, h, w = features.shape
    scalar = _kernel_scalar(features.dtype)     # bin sizes and edges in the kernel's precision
    out = features.new_zeros(len(rois), c, ph, pw)
    for k, (b, *box) in enumerate(rois.tolist()):
        x1, y1, x2, y2 = roi_pool_cells(box, scale, features.dtype)
        bin_h, bin_w = scalar(max(y2 - y1 + 1, 1)) / scalar(ph), scalar(max(x2 - x1 + 1, 1)) / scalar(pw)
        for i in range(ph):
            top = min(max(math.floor(scalar(i) * bin_h) + y1, 0), h)
            bottom = min(max(math.ceil(scalar(i + 1) * bin_h) + y1, 0), h)
            for j in range(pw):
                left = min(max(math.floor(scalar(j) * bin_w) + x1, 0), w)
                right = min(max(math.ceil(scalar(j + 1) * bin_w) + x1, 0), w)
                if bottom > top and right > left:
                    out[k, :, i, j] = features[int(b), :, top:bottom, left:right].amax(dim=(1, 2))
    return out


def _roi_align_grid(features: torch.Tensor, rois: torch.Tensor, ph: int, pw: int, scale: float, sy: int, sx: int,
                    aligned: bool) -> torch.Tensor:
    """RoIAlign of all ``rois`` (K, 5) with sy x sx samples per bin, in one ``F.grid_sample`` -> (K, C, ph, pw).

    Border padding reproduces torchvision's clamping of samples in [-1, 0) and (H - 1, H]; a validity mask its
    zeros beyond; samples are averaged per bin.
    """
    n, c, h, w = features.shape
    k = len(rois)
    x1, y1, roi_w, roi_h = _roi_frame(rois, scale, aligned)                           # (K, 1) each
    ys = _sample_positions(y1, roi_h, ph, sy)                                          # (K, ph*sy) pixel rows
    xs = _sample_positions(x1, roi_w, pw, sx)                                          # (K, pw*sx)
    valid = (((ys >= -1) & (ys <= h))[:, :, None] & ((xs >= -1) & (xs <= w))[:, None, :]).to(features.dtype)
    gy, gx = (ys + 0.5) / h * 2 - 1, (xs + 0.5) / w * 2 - 1                       # align_corners=False units
    grid = torch.stack([gx[:, None, :].expand(-1, ph * sy, -1), gy[:, :, None].expand(-1, -1, pw * sx)], dim=-1)
    # One grid_sample over the batch: image b gets the grids of its RoIs stacked (padded to the most RoIs any
    # image has), so no feature map is copied and the backward pass accumulates in place.
    index = rois[:, 0].long()
    counts = torch.bincount(index, minlength=n)
    order = torch.argsort(index, stable=True)
    slot = torch.empty(k, dtype=torch.long)
    slot[order] = torch.arange(k) - (torch.cumsum(counts, 0) - counts)[index[order]]
    stacked = grid.new_zeros(n, int(counts.max()), ph * sy, pw * sx, 2)
    stacked[index, slot] = grid
    out = F.grid_sample(features, stacked.flatten(1, 2), mode="bilinear", padding_mode="border", align_corners=False)
    samples = out.unflatten(2, (-1, ph * sy)).permute(0, 2, 1, 3, 4)[index, slot] * valid[:, None]
    return samples.reshape(k, c, ph, sy, pw, sx).mean(dim=(3, 5))


def _roi_frame(rois: torch.Tensor, scale: float, aligned: bool):
    """(x1, y1, roi_w, roi_h), each (K, 1) in the features' dtype, computed as the kernel does."""
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, i:i + 1] * scale - offset for i in range(1, 5))
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    return x1, y1, roi_w, roi_h


def _sample_positions(start: torch.Tensor, size: torch.Tensor, bins: int, per_bin: int) -> torch.Tensor:
    """(K, bins * per_bin) sample coordinates: start + b * bin + (s + 0.5) * bin / per_bin, with bin = size / bins,
    in this order of operations (the kernel's), so a sample exactly on -1 or H stays exactly there."""
    dtype = start.dtype
    bin_size = (size / bins)[:, :, None]                                                # (K, 1, 1)
    within = (torch.arange(per_bin, dtype=dtype) + 0.5)[None, None, :] * bin_size / per_bin   # (K, 1, per_bin)
    return (start[:, :, None] + torch.arange(bins, dtype=dtype)[None, :, None] * bin_size + within).flatten(1)


def roi_align(features, rois, output_size, spatial_scale: float = 1.0, sampling_ratio: int = 2,
              aligned: bool = True) -> torch.Tensor:
    """Average bilinear samples inside each bin of each RoI: no rounding anywhere.

    features: (N, C, H, W); rois: (K, 5) ``(batch_index, x1, y1, x2, y2)`` or a list of (K_i, 4);
    returns (K, C, ph, pw). Matches ``torchvision.ops.roi_align`` (differentiable in ``features``);
    vectorised over RoIs unless ``sampling_ratio <= 0`` (then each RoI gets ceil(bin size) samples).
    """
    features, rois, ph, pw, scale = _check_rois(features, rois, output_size, spatial_scale)
    sampling_ratio = require_int("sampling_ratio", sampling_ratio)
    if not isinstance(aligned, bool):
        raise TypeError(f"aligned must be True or False, got {describe(aligned)}")
    if len(rois) == 0:
        return features.new_zeros(0, features.shape[1], ph, pw)
    if sampling_ratio > 0:
        return _roi_align_grid(features, rois, ph, pw, scale, sampling_ratio, sampling_ratio, aligned)
    outputs = []
    _, _, roi_w, roi_h = _roi_frame(rois, scale, aligned)
    for roi, height, width in zip(rois, (roi_h[:, 0] / ph).tolist(), (roi_w[:, 0] / pw).tolist()):
        sy, sx = math.ceil(height), math.ceil(width)      # ceil(roi_h / ph) of the features' dtype, as the kernel
        if sy <= 0 or sx <= 0:          # an empty RoI: no samples, 0 (as torchvision)
            outputs.append(features.new_zeros(features.shape[1], ph, pw))
            continue
        outputs.append(_roi_align_grid(features, roi[None], ph, pw, scale, sy, sx, aligned)[0])
    return torch.stack(outputs)
