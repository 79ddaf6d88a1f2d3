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
* NMS follows torchvision's CPU kernel (``nms_kernel.cpp``): stable descending sort, suppress when
  IoU > threshold, the IoU computed in the boxes' dtype and compared with the threshold as a float64 number
  (tests/test_torchvision_parity.py checks this against a scalar port of the kernel);
* RPN proposals follow torchvision's ``RegionProposalNetwork.filter_proposals`` for one image: per level the
  top ``pre_nms_top_n`` anchors by objectness (stable: equal logits keep their anchor order), decoded with weights
  (1, 1, 1, 1), clipped to the image (x to [0, W], y to [0, H]), NMS within each level (as ``batched_nms`` with
  the level as the class), then all levels merged by decreasing objectness (stable: lower level first, then
  the level's own order) and the first ``post_nms_top_n`` kept; no small-box or score filter; the scores
  returned are the objectness logits;
* YOLO v1 targets: the cell (row i, column j) that owns an object holds its centre, i = floor(cy / (H / S)),
  j = floor(cx / (W / S)) clamped to S - 1 (a centre on a border belongs to the cell below / to the right);
  per slot (x, y, w, h, confidence) with (x, y) the centre's offset in the cell in cell units and (w, h) the
  size divided by the image's (W, H), confidence 1; the same box in all B slots; then the C-class one-hot;
  the first object (lowest index) of a cell keeps it;
* the focal loss follows torchvision's ``sigmoid_focal_loss`` with ``reduction="none"``: per element
  -alpha_t (1 - p_t)^gamma log p_t with p = sigmoid(logit), p_t = p for targets 1 and 1 - p for targets 0,
  alpha_t = alpha for targets 1 and 1 - alpha for targets 0, no alpha_t at all when alpha < 0; -log p_t is the
  binary cross-entropy computed from the logits (stable for any logit); the result has the logits' shape and dtype.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._validate import require_float, require_pair, require_tensor
from ..boxes import box_iou

__all__ = ["encode_boxes", "decode_boxes", "generate_anchors", "label_anchors", "nms", "rpn_proposals", "yolo_target",
           "focal_loss"]

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
    """Greedy non-maximum suppression: indices (K,) int64 of the kept boxes, by decreasing score.

    As torchvision's kernel: the IoU is computed in the dtype of the boxes (float32 boxes: a float32 IoU) and
    compared with ``iou_threshold`` as a float64 number. At an IoU exactly equal to the threshold this decides:
    boxes [0, 0, 10, 10] and [0, 0, 3, 10] have the float32 IoU 0.3f = 0.30000001 > 0.3, so at threshold 0.3 the
    second is suppressed (``iou > 0.3`` on the float32 tensor would round the threshold to 0.3f and keep it; in
    float64 the IoU is 0.3 and it is kept). Where torchvision differs: a pair of zero-area boxes has IoU NaN there
    and 0 here (``box_iou``), which decides the same for every threshold >= 0; boxes with x2 < x1 or y2 < y1 are
    refused here (``box_iou`` raises ValueError).
    """
    boxes = require_tensor("boxes", boxes, shape=(None, 4), floating=True)
    scores = require_tensor("scores", scores, shape=(len(boxes),), floating=True)
    iou_threshold = require_float("iou_threshold", iou_threshold)
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes[order], boxes[order]).double()      # float32 IoU, compared in float64 (torchvision)
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.as_tensor(keep, dtype=torch.int64)]


def rpn_proposals(objectness, deltas, anchors, image_size, pre_nms_top_n=1000, post_nms_top_n=300,
                  iou_threshold=0.7):
    """The RPN's proposals of one image: (boxes (K, 4) in the dtype of the deltas, scores (K,) objectness logits).

    objectness, deltas, anchors: lists with one entry per level, (A_l,), (A_l, 4), (A_l, 4).
    image_size: (H, W). Per level: top min(pre_nms_top_n, A_l) by objectness (stable), decode, clip, NMS (IoU >
    iou_threshold, compared in float64); then all levels by decreasing objectness (stable), the first
    post_nms_top_n.
    """
    height, width = require_pair("image_size", image_size, minimum=1)
    if not isinstance(objectness, (list, tuple)) or not len(objectness) == len(deltas) == len(anchors) or \
            not objectness:
        raise ValueError("objectness, deltas and anchors must be lists with one entry per level (at least one)")
    boxes_out, scores_out = [], []
    for obj, dlt, anc in zip(objectness, deltas, anchors):
        top = torch.sort(obj, descending=True, stable=True).indices[:min(int(pre_nms_top_n), len(obj))]
        boxes = decode_boxes(anc[top], dlt[top])
        boxes = torch.stack([boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height),
                             boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)], dim=1)
        keep = nms(boxes, obj[top], iou_threshold)
        boxes_out.append(boxes[keep])
        scores_out.append(obj[top][keep])
    boxes, scores = torch.cat(boxes_out), torch.cat(scores_out)
    order = torch.sort(scores, descending=True, stable=True).indices[:int(post_nms_top_n)]
    return boxes[order], scores[order]


def yolo_target(boxes, labels, S, B, C, image_size) -> torch.Tensor:
    """YOLO v1's (S, S, 5 B + C) float32 target for one image's (N, 4) xyxy boxes and (N,) int64 labels.

    image_size: (H, W). Slot b of cell (i, j) is [5 b: 5 b + 5] = (x, y, w, h, 1); the class one-hot is [5 B:]."""
    boxes = require_tensor("boxes", boxes, shape=(None, 4), floating=True)
    labels = require_tensor("labels", labels, shape=(len(boxes),))
    height, width = require_pair("image_size", image_size, minimum=1)
    target = torch.zeros(S, S, 5 * B + C, dtype=torch.float32)
    b = boxes.double()
    cx, cy = (b[:, 0] + b[:, 2]) / 2 / (width / S), (b[:, 1] + b[:, 3]) / 2 / (height / S)   # in cells
    w, h = (b[:, 2] - b[:, 0]) / width, (b[:, 3] - b[:, 1]) / height
    for k in range(len(boxes)):
        i, j = min(int(math.floor(cy[k])), S - 1), min(int(math.floor(cx[k])), S - 1)
        if target[i, j, 4] == 1:          # the cell already has an object: the first one keeps it
            continue
        slot = torch.tensor([cx[k] - j, cy[k] - i, w[k], h[k], 1.0], dtype=torch.float32)
        target[i, j, :5 * B] = slot.repeat(B)
        target[i, j, 5 * B + int(labels[k])] = 1.0
    return target


def focal_loss(logits, targets, alpha=0.25, gamma=2.0) -> torch.Tensor:
    """RetinaNet's sigmoid focal loss per element (no reduction): -alpha_t (1 - p_t)^gamma log p_t.

    logits: any shape, floating; targets: the same shape and dtype, 0.0 (background) or 1.0 (foreground).
    alpha in [0, 1] weights the foreground (alpha) against the background (1 - alpha); alpha < 0: no weighting.
    gamma >= 0; gamma = 0 and alpha < 0 give the plain binary cross-entropy."""
    logits = require_tensor("logits", logits, floating=True)
    targets = require_tensor("targets", targets, shape=tuple(logits.shape), floating=True)
    alpha = require_float("alpha", alpha, maximum=1.0)
    gamma = require_float("gamma", gamma, minimum=0.0)
    targets = targets.to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")      # -log p_t, stable
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss
