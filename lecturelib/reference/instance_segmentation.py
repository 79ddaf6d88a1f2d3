"""Reference solutions of the instance-segmentation (Mask R-CNN) exercises: mask targets, the mask loss,
pasting RoI masks back into the image, and the keypoint head's targets and decoding.

Coordinates follow the half-pixel model of ``lecturelib.data`` and RoIAlign(aligned=True): pixel (i, j)
covers [j, j + 1) x [i, i + 1) and its centre is (j + 0.5, i + 0.5); a box (x1, y1, x2, y2) is a
real-valued rectangle in those coordinates (x2, y2 exclusive), and an M x M mask cell (a, b) of a box
has its centre at x1 + (b + 0.5) * (x2 - x1) / M, y1 + (a + 0.5) * (y2 - y1) / M.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._validate import require_float, require_int, require_pair, require_tensor
from ..rois import roi_align

__all__ = ["mask_targets", "mask_loss", "paste_masks", "keypoint_targets", "decode_keypoints"]


def mask_targets(gt_masks: torch.Tensor, boxes: torch.Tensor, matched_idx: torch.Tensor, M: int) -> torch.Tensor:
    """Each RoI's matched ground-truth mask, cropped to the RoI and resampled to M x M, thresholded.

    gt_masks: (G, H, W) bool or float; boxes: (R, 4) float xyxy RoIs in pixels; matched_idx: (R,) int64
    index of each RoI's ground-truth object. Returns (R, M, M) float32 in {0, 1}: RoIAlign (aligned=True,
    2 x 2 samples per bin) of the matched mask over the box, then >= 0.5 (as detectron2's
    ``BitMasks.crop_and_resize``).
    """
    gt_masks = require_tensor("gt_masks", gt_masks, ndim=3)
    boxes = require_tensor("boxes", boxes, shape=(None, 4), floating=True)
    matched_idx = require_tensor("matched_idx", matched_idx, ndim=1, integer=True)
    M = require_int("M", M, minimum=1)
    if len(matched_idx) != len(boxes):
        raise ValueError(f"matched_idx must have one entry per box ({len(boxes)}), got {len(matched_idx)}")
    if len(matched_idx) and (int(matched_idx.min()) < 0 or int(matched_idx.max()) >= len(gt_masks)):
        raise ValueError(f"matched_idx must index gt_masks (0..{len(gt_masks) - 1}), got {matched_idx.tolist()[:8]}")
    if len(boxes) == 0:
        return torch.zeros(0, M, M)
    masks = gt_masks[matched_idx].to(torch.float32)[:, None]                  # (R, 1, H, W)
    rois = torch.cat([torch.arange(len(boxes), dtype=torch.float32)[:, None], boxes.to(torch.float32)], dim=1)
    soft = roi_align(masks, rois, (M, M), spatial_scale=1.0, sampling_ratio=2)[:, 0]
    return (soft >= 0.5).to(torch.float32)


def mask_loss(mask_logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of each RoI's ground-truth-class mask logits against its target.

    mask_logits: (R, K, M, M); labels: (R,) int64 class of each RoI (indexes the K channels); targets:
    (R, M, M) in [0, 1]. Only channel labels[r] of RoI r contributes (one sigmoid per class, no competition
    between classes). Computed stably from logits: max(x, 0) - x * t + log(1 + exp(-|x|)).
    Returns a 0-d tensor (0 when R = 0, still connected to mask_logits).
    """
    mask_logits = require_tensor("mask_logits", mask_logits, ndim=4, floating=True)
    labels = require_tensor("labels", labels, ndim=1, integer=True)
    targets = require_tensor("targets", targets, ndim=3)
    r, k, m_h, m_w = mask_logits.shape
    if len(labels) != r or tuple(targets.shape) != (r, m_h, m_w):
        raise ValueError(f"labels must have shape ({r},) and targets ({r}, {m_h}, {m_w}) for mask_logits of shape "
                         f"{tuple(mask_logits.shape)}, got {tuple(labels.shape)} and {tuple(targets.shape)}")
    if r and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(f"labels must index the {k} mask channels, got {labels.tolist()[:8]}")
    if r == 0:
        return mask_logits.sum() * 0.0
    x = mask_logits[torch.arange(r), labels]                                   # (R, M, M)
    t = targets.to(x.dtype)
    return (x.clamp(min=0) - x * t + torch.log1p(torch.exp(-x.abs()))).mean()


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, image_size, threshold: float = 0.5) -> torch.Tensor:
    """Resample each M x M probability mask into its box of an H x W image, then threshold.

    masks: (R, M, M) probabilities; boxes: (R, 4) float xyxy; image_size: (H, W). Pixel (i, j) takes the
    bilinear value of its box's mask at the pixel centre (j + 0.5, i + 0.5), zero outside the mask
    (``F.grid_sample`` with align_corners=False and zero padding, as detectron2's ``paste_masks_in_image``);
    returns (R, H, W) bool, value >= threshold. On images larger than 128 x 128 each mask is resampled only
    over the pixels it can reach (its box plus one mask cell), which is what makes it fast there.
    """
    masks = require_tensor("masks", masks, ndim=3, floating=True)
    boxes = require_tensor("boxes", boxes, shape=(None, 4), floating=True)
    height, width = require_pair("image_size", image_size, minimum=1)
    threshold = require_float("threshold", threshold)
    if len(masks) != len(boxes):
        raise ValueError(f"masks and boxes must have one entry per RoI, got {len(masks)} and {len(boxes)}")
    if bool(((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any()):
        raise ValueError("boxes must be xyxy with x2 > x1 and y2 > y1 (a mask needs a box of positive size)")
    if len(masks) == 0:
        return torch.zeros(0, height, width, dtype=torch.bool)
    dtype = torch.promote_types(masks.dtype, boxes.dtype)
    masks, boxes = masks.to(dtype), boxes.to(dtype)
    if height * width <= _WHOLE_IMAGE_PIXELS:                                 # small images: all masks at once
        return _resample(masks, boxes, 0, height, 0, width) >= threshold
    m_h, m_w = masks.shape[1:]
    out = torch.zeros(len(masks), height, width, dtype=torch.bool)
    for r, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        # Only pixels within one mask cell of the box can be non-zero: resample just that window.
        cell_w, cell_h = (x2 - x1) / m_w, (y2 - y1) / m_h
        c0, c1 = max(math.floor(x1 - cell_w - 1), 0), min(math.ceil(x2 + cell_w + 1), width)
        r0, r1 = max(math.floor(y1 - cell_h - 1), 0), min(math.ceil(y2 + cell_h + 1), height)
        if c1 <= c0 or r1 <= r0:
            continue
        out[r, r0:r1, c0:c1] = _resample(masks[r:r + 1], boxes[r:r + 1], r0, r1, c0, c1)[0] >= threshold
    return out


_WHOLE_IMAGE_PIXELS = 128 * 128  # above this, resampling each mask only near its box is faster


def _resample(masks: torch.Tensor, boxes: torch.Tensor, r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
    """Bilinear values (R, r1 - r0, c1 - c0) of each mask at the pixel centres of rows r0..r1, columns c0..c1."""
    x1, y1, x2, y2 = (c[:, None] for c in boxes.unbind(1))                     # (R, 1) each
    gx = (torch.arange(c0, c1, dtype=masks.dtype) + 0.5 - x1) / (x2 - x1) * 2 - 1     # (R, w) grid_sample units
    gy = (torch.arange(r0, r1, dtype=masks.dtype) + 0.5 - y1) / (y2 - y1) * 2 - 1     # (R, h)
    grid = torch.stack([gx[:, None, :].expand(-1, r1 - r0, -1), gy[:, :, None].expand(-1, -1, c1 - c0)], dim=-1)
    return F.grid_sample(masks[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]


def keypoint_targets(keypoints: torch.Tensor, rois: torch.Tensor, heatmap_size: int):
    """Each keypoint as a one-hot target in its RoI's heatmap_size x heatmap_size heatmap (Mask R-CNN's rule, as
    detectron2's ``keypoints_to_heatmap``).

    keypoints: (R, P, 3) float (x, y, v) of the object matched to each RoI, v as COCO (0 = not labelled);
    rois: (R, 4) float xyxy; heatmap_size: S. The keypoint's cell is
    column = floor((x - x1) * S / (x2 - x1)), row = floor((y - y1) * S / (y2 - y1)), except that a keypoint exactly
    on the right (bottom) edge, x == x2 (y == y2), belongs to the last column (row) S - 1. It is *valid* if it is
    labelled (v > 0, occluded ones too) and its cell lies in the heatmap (0 <= column, row < S).
    Returns (targets (R, P) int64: the flat index row * S + column, 0 where not valid; valid (R, P) bool).
    """
    keypoints = require_tensor("keypoints", keypoints, ndim=3, floating=True)
    rois = require_tensor("rois", rois, shape=(None, 4), floating=True)
    size = require_int("heatmap_size", heatmap_size, minimum=1)
    if keypoints.shape[0] != rois.shape[0] or keypoints.shape[2] != 3:
        raise ValueError(f"keypoints must be (R, P, 3) with R = {len(rois)} (one row per RoI), "
                         f"got {tuple(keypoints.shape)}")
    x, y, v = keypoints.unbind(-1)
    x1, y1, x2, y2 = (c[:, None] for c in rois.to(keypoints.dtype).unbind(1))
    col = ((x - x1) * (size / (x2 - x1))).floor().long()
    row = ((y - y1) * (size / (y2 - y1))).floor().long()
    col = torch.where(x == x2, size - 1, col)
    row = torch.where(y == y2, size - 1, row)
    valid = (v > 0) & (col >= 0) & (row >= 0) & (col < size) & (row < size)
    return torch.where(valid, row * size + col, 0), valid


def decode_keypoints(heatmaps: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
    """The argmax of each keypoint heatmap, back in image coordinates.

    heatmaps: (R, P, S, S) float logits; rois: (R, 4) float xyxy. The maximum of each S x S heatmap (the first
    one in row-major order on ties, as ``torch.argmax`` of the flattened heatmap) at (row, column) decodes to
    the centre of that cell: x = x1 + (column + 0.5) * (x2 - x1) / S, y = y1 + (row + 0.5) * (y2 - y1) / S.
    Returns (R, P, 3) in the dtype of heatmaps: (x, y, score), the score being the maximum value itself.
    """
    heatmaps = require_tensor("heatmaps", heatmaps, ndim=4, floating=True)
    rois = require_tensor("rois", rois, shape=(None, 4), floating=True)
    r, p, height, width = heatmaps.shape
    if height != width or len(rois) != r:
        raise ValueError(f"heatmaps must be (R, P, S, S) with R = {len(rois)}, got {tuple(heatmaps.shape)}")
    flat = heatmaps.flatten(2)                                               # (R, P, S * S)
    score, index = flat.amax(-1), flat.argmax(-1)                            # argmax: the first maximum on ties
    row, col = index // width, index % width
    x1, y1, x2, y2 = (c[:, None] for c in rois.to(heatmaps.dtype).unbind(1))
    x = x1 + (col.to(heatmaps.dtype) + 0.5) * (x2 - x1) / width
    y = y1 + (row.to(heatmaps.dtype) + 0.5) * (y2 - y1) / height
    return torch.stack([x, y, score], dim=-1)
