"""Reference solutions of the detection exercises: box deltas, RPN anchors, anchor labelling and NMS.

Conventions (the notebook states them; lecturelib/checks/detection.py checks them):

* boxes are xyxy, width = x2 - x1 (no "+1" pixel convention);
* box deltas follow Faster R-CNN (torchvision's ``BoxCoder``): dx = wx (gx - ax) / aw,
  dy = wy (gy - ay) / ah, dw = ww log(gw / aw), dh = wh log(gh / ah) on centres and sizes; decoding
  divides by the weights and clamps dw, dh from above at log(1000 / 16) before the exponential;
* anchors follow torchvision's ``AnchorGenerator``: ratio = h / w, h = size sqrt(ratio),
  w = size / sqrt(ratio), cell anchors [-w, -h, w, h] / 2 rounded, ratio-major inside a location,
  shifted by (x stride, y stride) (no half-cell offset), index = (y W + x) A + a;
* anchor labelling follows torchvision's ``Matcher`` (IoU >= high positive, < low negative, ignored in
  between, low-quality matches for every anchor that ties for a ground truth's best IoU) except that a
  ground truth overlapping no anchor (best IoU 0) makes no anchor positive;
* NMS follows torchvision's CPU kernel: stable descending sort, suppress when IoU > threshold.
"""
from __future__ import annotations

import math

import torch

from .._validate import require_float, require_pair, require_tensor
from ..boxes import box_iou

__all__ = ["encode_boxes", "decode_boxes", "generate_anchors", "label_anchors", "nms"]

BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def _centres_sizes(boxes: torch.Tensor):
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h


def _weights(weights) -> tuple[float, float, float, float]:
    if not isinstance(weights, (tuple, list)) or len(weights) != 4:
        raise ValueError(f"weights must be four numbers (wx, wy, ww, wh), got {weights!r}")
    return tuple(require_float(f"weights[{i}]", w, minimum=0) for i, w in enumerate(weights))


def encode_boxes(anchors, gt_boxes, weights=(1.0, 1.0, 1.0, 1.0)) -> torch.Tensor:
    """Deltas that turn each anchor into its ground-truth box: (N, 4) xyxy, (N, 4) xyxy -> (N, 4)."""
    anchors = require_tensor("anchors", anchors, shape=(None, 4), floating=True)
    gt_boxes = require_tensor("gt_boxes", gt_boxes, shape=(len(anchors), 4), floating=True)
    wx, wy, ww, wh = _weights(weights)
    ax, ay, aw, ah = _centres_sizes(anchors)
    gx, gy, gw, gh = _centres_sizes(gt_boxes)
    return torch.stack([wx * (gx - ax) / aw, wy * (gy - ay) / ah,
                        ww * torch.log(gw / aw), wh * torch.log(gh / ah)], dim=1)


def decode_boxes(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0)) -> torch.Tensor:
    """Apply deltas to anchors: (N, 4) xyxy, (N, 4) deltas -> (N, 4) xyxy boxes."""
    anchors = require_tensor("anchors", anchors, shape=(None, 4), floating=True)
    deltas = require_tensor("deltas", deltas, shape=(len(anchors), 4), floating=True)
    wx, wy, ww, wh = _weights(weights)
    ax, ay, aw, ah = _centres_sizes(anchors.to(deltas.dtype))
    dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
    dw = (deltas[:, 2] / ww).clamp(max=BBOX_XFORM_CLIP)
    dh = (deltas[:, 3] / wh).clamp(max=BBOX_XFORM_CLIP)
    cx, cy = ax + dx * aw, ay + dy * ah
    w, h = aw * torch.exp(dw), ah * torch.exp(dh)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=1)


def generate_anchors(feature_size, stride, sizes, ratios) -> torch.Tensor:
    """All anchors of one feature map: (H W A, 4) float32 xyxy in image pixels, A = len(ratios) len(sizes)."""
    height, width = require_pair("feature_size", feature_size, minimum=1)
    stride_y, stride_x = require_pair("stride", stride, minimum=1)
    sizes = torch.as_tensor([require_float("size", s, minimum=0) for s in sizes], dtype=torch.float32)
    ratios = torch.as_tensor([require_float("ratio", r, minimum=0) for r in ratios], dtype=torch.float32)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * sizes[None, :]).reshape(-1)              # ratio-major
    hs = (h_ratios[:, None] * sizes[None, :]).reshape(-1)
    cell = (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()         # (A, 4)
    ys = torch.arange(height, dtype=torch.float32) * stride_y
    xs = torch.arange(width, dtype=torch.float32) * stride_x
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)   # (H W, 1, 4), row-major
    return (shifts + cell[None]).reshape(-1, 4)


def label_anchors(anchors, gt_boxes, high=0.7, low=0.3, allow_low_quality=True):
    """labels (N,) int64 (1 positive, 0 negative, -1 ignored) and matched (N,) int64 (best gt, -1 if none)."""
    anchors = require_tensor("anchors", anchors, shape=(None, 4), floating=True)
    gt_boxes = require_tensor("gt_boxes", gt_boxes, shape=(None, 4), floating=True)
    high, low = require_float("high", high), require_float("low", low)
    if low > high:
        raise ValueError(f"low must be <= high, got low={low} and high={high}")
    n = len(anchors)
    if len(gt_boxes) == 0:
        return torch.zeros(n, dtype=torch.int64), torch.full((n,), -1, dtype=torch.int64)
    iou = box_iou(gt_boxes, anchors)                                   # (G, N)
    best, matched = iou.max(dim=0)
    labels = torch.full((n,), -1, dtype=torch.int64)
    labels[best < low] = 0
    labels[best >= high] = 1
    if allow_low_quality:
        best_per_gt = iou.max(dim=1, keepdim=True).values              # (G, 1)
        ties = (iou == best_per_gt) & (best_per_gt > 0)
        labels[ties.any(dim=0)] = 1
    return labels, matched


def nms(boxes, scores, iou_threshold) -> torch.Tensor:
    """Greedy non-maximum suppression: indices (K,) int64 of the kept boxes, by decreasing score."""
    boxes = require_tensor("boxes", boxes, shape=(None, 4), floating=True)
    scores = require_tensor("scores", scores, shape=(len(boxes),), floating=True)
    iou_threshold = require_float("iou_threshold", iou_threshold)
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes[order], boxes[order])
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.as_tensor(keep, dtype=torch.int64)]
