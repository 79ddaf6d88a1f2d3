"""Mutant library of the detection exercises (format: ``mutants/__init__``).

Each mutant is a whole function the way a student would write it, with one realistic bug; its ``cause`` is
the text the hidden suite's report must contain. The alternatives are correct implementations written
differently from the reference (``lecturelib.reference.detection``).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ...boxes import box_iou, box_xyxy_to_cxcywh
from . import Alternative, Mutant

CLIP = math.log(1000.0 / 16)


def _sizes(boxes, plus_one=0.0):
    """Centres and sizes (cx, cy, w, h) of (N, 4) xyxy boxes, each (N,)."""
    w = boxes[:, 2] - boxes[:, 0] + plus_one
    h = boxes[:, 3] - boxes[:, 1] + plus_one
    return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h


# ------------------------------------------------------------------------------------------------
# encode_boxes(anchors (N, 4), gt_boxes (N, 4), weights) -> deltas (N, 4), dtype of the boxes
# ------------------------------------------------------------------------------------------------
def encode_corners(anchors, gt_boxes, weights=(1.0, 1.0, 1.0, 1.0)):
    """Takes the deltas between corners, divided by the anchor's size."""
    w = anchors[:, 2] - anchors[:, 0]
    h = anchors[:, 3] - anchors[:, 1]
    return (gt_boxes - anchors) / torch.stack([w, h, w, h], 1) * torch.tensor(weights, dtype=anchors.dtype)


def encode_no_log(anchors, gt_boxes, weights=(1.0, 1.0, 1.0, 1.0)):
    """dw = gw / aw, without the log."""
    wx, wy, ww, wh = weights
    ax, ay, aw, ah = _sizes(anchors)
    gx, gy, gw, gh = _sizes(gt_boxes)
    return torch.stack([wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * gw / aw, wh * gh / ah], 1)


def encode_relative_difference(anchors, gt_boxes, weights=(1.0, 1.0, 1.0, 1.0)):
    """dw = (gw - aw) / aw, like the centre shifts."""
    wx, wy, ww, wh = weights
    ax, ay, aw, ah = _sizes(anchors)
    gx, gy, gw, gh = _sizes(gt_boxes)
    return torch.stack([wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * (gw - aw) / aw, wh * (gh - ah) / ah], 1)


def encode_weights_ignored(anchors, gt_boxes, weights=(1.0, 1.0, 1.0, 1.0)):
    """Takes `weights` but never uses it."""
    ax, ay, aw, ah = _sizes(anchors)
    gx, gy, gw, gh = _sizes(gt_boxes)
    return torch.stack([(gx - ax) / aw, (gy - ay) / ah, torch.log(gw / aw), torch.log(gh / ah)], 1)


def encode_weights_divided(anchors, gt_boxes, weights=(1.0, 1.0, 1.0, 1.0)):
    """Divides by the weights (that is what decoding does)."""
    wx, wy, ww, wh = weights
    ax, ay, aw, ah = _sizes(anchors)
    gx, gy, gw, gh = _sizes(gt_boxes)
    return torch.stack([(gx - ax) / aw / wx, (gy - ay) / ah / wy, torch.log(gw / aw) / ww,
                        torch.log(gh / ah) / wh], 1)


def encode_swapped_roles(anchors, gt_boxes, weights=(1.0, 1.0, 1.0, 1.0)):
    """Measures the anchor relative to the ground truth (roles swapped)."""
    wx, wy, ww, wh = weights
    gx, gy, gw, gh = _sizes(anchors)
    ax, ay, aw, ah = _sizes(gt_boxes)
    return torch.stack([wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * torch.log(gw / aw), wh * torch.log(gh / ah)], 1)


def encode_plus_one(anchors, gt_boxes, weights=(1.0, 1.0, 1.0, 1.0)):
    """Widths x2 - x1 + 1 (py-faster-rcnn's pixel convention)."""
    wx, wy, ww, wh = weights
    ax, ay, aw, ah = _sizes(anchors, 1.0)
    gx, gy, gw, gh = _sizes(gt_boxes, 1.0)
    return torch.stack([wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * torch.log(gw / aw), wh * torch.log(gh / ah)], 1)


def encode_dy_over_width(anchors, gt_boxes, weights=(1.0, 1.0, 1.0, 1.0)):
    """Divides the vertical shift by the anchor's width (copy-paste of the dx line)."""
    wx, wy, ww, wh = weights
    ax, ay, aw, ah = _sizes(anchors)
    gx, gy, gw, gh = _sizes(gt_boxes)
    return torch.stack([wx * (gx - ax) / aw, wy * (gy - ay) / aw, ww * torch.log(gw / aw), wh * torch.log(gh / ah)], 1)


def encode_float32_output(anchors, gt_boxes, weights=(1.0, 1.0, 1.0, 1.0)):
    """Fills a torch.zeros(N, 4) (float32, whatever the dtype of the boxes)."""
    wx, wy, ww, wh = weights
    ax, ay, aw, ah = _sizes(anchors)
    gx, gy, gw, gh = _sizes(gt_boxes)
    out = torch.zeros(len(anchors), 4)
    out[:, 0], out[:, 1] = wx * (gx - ax) / aw, wy * (gy - ay) / ah
    out[:, 2], out[:, 3] = ww * torch.log(gw / aw), wh * torch.log(gh / ah)
    return out


def encode_sizes_in_place(anchors, gt_boxes, weights=(1.0, 1.0, 1.0, 1.0)):
    """Turns both box tensors into (x1, y1, w, h) in place to get the sizes."""
    wx, wy, ww, wh = weights
    anchors[:, 2:] -= anchors[:, :2]
    gt_boxes[:, 2:] -= gt_boxes[:, :2]
    aw, ah, gw, gh = anchors[:, 2], anchors[:, 3], gt_boxes[:, 2], gt_boxes[:, 3]
    ax, ay = anchors[:, 0] + aw / 2, anchors[:, 1] + ah / 2
    gx, gy = gt_boxes[:, 0] + gw / 2, gt_boxes[:, 1] + gh / 2
    return torch.stack([wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * torch.log(gw / aw), wh * torch.log(gh / ah)], 1)


def encode_rows_stacked(anchors, gt_boxes, weights=(1.0, 1.0, 1.0, 1.0)):
    """One row per pair, torch.stack of the rows: fails without boxes (an empty list)."""
    wx, wy, ww, wh = weights
    rows = []
    for a, g in zip(anchors, gt_boxes):
        aw, ah, gw, gh = a[2] - a[0], a[3] - a[1], g[2] - g[0], g[3] - g[1]
        dx = (g[0] + gw / 2 - a[0] - aw / 2) / aw
        dy = (g[1] + gh / 2 - a[1] - ah / 2) / ah
        rows.append(torch.stack([wx * dx, wy * dy, ww * torch.log(gw / aw), wh * torch.log(gh / ah)]))
    return torch.stack(rows)


def encode_rcnn_default(anchors, gt_boxes, weights=(10.0, 10.0, 5.0, 5.0)):
    """Defaults the weights to the RoI heads' (10, 10, 5, 5)."""
    wx, wy, ww, wh = weights
    ax, ay, aw, ah = _sizes(anchors)
    gx, gy, gw, gh = _sizes(gt_boxes)
    return torch.stack([wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * torch.log(gw / aw), wh * torch.log(gh / ah)], 1)


def encode_loop(anchors, gt_boxes, weights=(1.0, 1.0, 1.0, 1.0)):
    """Correct: one pair at a time with math.log, rows gathered in a list."""
    rows = []
    for a, g in zip(anchors.tolist(), gt_boxes.tolist()):
        aw, ah, gw, gh = a[2] - a[0], a[3] - a[1], g[2] - g[0], g[3] - g[1]
        ax, ay, gx, gy = a[0] + aw / 2, a[1] + ah / 2, g[0] + gw / 2, g[1] + gh / 2
        rows.append([weights[0] * (gx - ax) / aw, weights[1] * (gy - ay) / ah,
                     weights[2] * math.log(gw / aw), weights[3] * math.log(gh / ah)])
    return torch.tensor(rows, dtype=anchors.dtype).reshape(-1, 4)


def encode_via_cxcywh(anchors, gt_boxes, weights=(1.0, 1.0, 1.0, 1.0)):
    """Correct: convert both to (cx, cy, w, h), then two vector operations."""
    a, g = box_xyxy_to_cxcywh(anchors), box_xyxy_to_cxcywh(gt_boxes)
    w = torch.tensor(weights, dtype=anchors.dtype)
    return torch.cat([(g[:, :2] - a[:, :2]) / a[:, 2:], torch.log(g[:, 2:] / a[:, 2:])], 1) * w


# ------------------------------------------------------------------------------------------------
# decode_boxes(anchors (N, 4), deltas (N, 4), weights) -> boxes (N, 4), dtype of the deltas
# ------------------------------------------------------------------------------------------------
def _corners(cx, cy, w, h):
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


def _divided(deltas, weights):
    return deltas / torch.tensor(weights, dtype=deltas.dtype)


def decode_no_clamp(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0)):
    """Applies exp to dw, dh without clamping them."""
    ax, ay, aw, ah = _sizes(anchors.to(deltas.dtype))
    d = _divided(deltas, weights)
    return _corners(ax + d[:, 0] * aw, ay + d[:, 1] * ah, aw * d[:, 2].exp(), ah * d[:, 3].exp())


def decode_clamp_both(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0)):
    """Clamps dw, dh to [-CLIP, CLIP]."""
    ax, ay, aw, ah = _sizes(anchors.to(deltas.dtype))
    d = _divided(deltas, weights)
    dw, dh = d[:, 2].clamp(-CLIP, CLIP), d[:, 3].clamp(-CLIP, CLIP)
    return _corners(ax + d[:, 0] * aw, ay + d[:, 1] * ah, aw * dw.exp(), ah * dh.exp())


def decode_no_exp(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0)):
    """w = aw * dw: the size deltas used as plain factors."""
    ax, ay, aw, ah = _sizes(anchors.to(deltas.dtype))
    d = _divided(deltas, weights)
    dw, dh = d[:, 2].clamp(max=CLIP), d[:, 3].clamp(max=CLIP)
    return _corners(ax + d[:, 0] * aw, ay + d[:, 1] * ah, aw * dw, ah * dh)


def decode_corners(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0)):
    """Adds the scaled deltas to the corners."""
    w, h = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    return anchors.to(deltas.dtype) + _divided(deltas, weights) * torch.stack([w, h, w, h], 1)


def decode_weights_multiplied(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0)):
    """Multiplies by the weights (that is what encoding does)."""
    ax, ay, aw, ah = _sizes(anchors.to(deltas.dtype))
    d = deltas * torch.tensor(weights, dtype=deltas.dtype)
    dw, dh = d[:, 2].clamp(max=CLIP), d[:, 3].clamp(max=CLIP)
    return _corners(ax + d[:, 0] * aw, ay + d[:, 1] * ah, aw * dw.exp(), ah * dh.exp())


def decode_clamp_then_divide(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0)):
    """Clamps the raw deltas, then divides by the weights."""
    ax, ay, aw, ah = _sizes(anchors.to(deltas.dtype))
    clamped = torch.cat([deltas[:, :2], deltas[:, 2:].clamp(max=CLIP)], 1)
    d = _divided(clamped, weights)
    return _corners(ax + d[:, 0] * aw, ay + d[:, 1] * ah, aw * d[:, 2].exp(), ah * d[:, 3].exp())


def decode_returns_cxcywh(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0)):
    """Returns (cx, cy, w, h) instead of corners."""
    ax, ay, aw, ah = _sizes(anchors.to(deltas.dtype))
    d = _divided(deltas, weights)
    dw, dh = d[:, 2].clamp(max=CLIP), d[:, 3].clamp(max=CLIP)
    return torch.stack([ax + d[:, 0] * aw, ay + d[:, 1] * ah, aw * dw.exp(), ah * dh.exp()], 1)


def decode_weights_ignored(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0)):
    """Takes `weights` but never divides by them."""
    ax, ay, aw, ah = _sizes(anchors.to(deltas.dtype))
    dw, dh = deltas[:, 2].clamp(max=CLIP), deltas[:, 3].clamp(max=CLIP)
    return _corners(ax + deltas[:, 0] * aw, ay + deltas[:, 1] * ah, aw * dw.exp(), ah * dh.exp())


def decode_clamp_in_place(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0)):
    """Clamps the caller's deltas in place (deltas[:, 2:].clamp_), before dividing by the weights."""
    ax, ay, aw, ah = _sizes(anchors.to(deltas.dtype))
    deltas[:, 2:].clamp_(max=CLIP * weights[2])
    d = _divided(deltas, weights)
    dw, dh = d[:, 2].clamp(max=CLIP), d[:, 3].clamp(max=CLIP)
    return _corners(ax + d[:, 0] * aw, ay + d[:, 1] * ah, aw * dw.exp(), ah * dh.exp())


def decode_float32_output(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0)):
    """Fills a torch.zeros(N, 4) (float32, whatever the dtype of the deltas)."""
    ax, ay, aw, ah = _sizes(anchors.to(deltas.dtype))
    d = _divided(deltas, weights)
    cx, cy = ax + d[:, 0] * aw, ay + d[:, 1] * ah
    w, h = aw * d[:, 2].clamp(max=CLIP).exp(), ah * d[:, 3].clamp(max=CLIP).exp()
    out = torch.zeros(len(deltas), 4)
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    return out


def decode_via_cxcywh(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0)):
    """Correct: anchors as (cx, cy, w, h), shifts and sizes as two vector operations."""
    a = box_xyxy_to_cxcywh(anchors.to(deltas.dtype))
    d = _divided(deltas, weights)
    centres = a[:, :2] + d[:, :2] * a[:, 2:]
    sizes = a[:, 2:] * torch.exp(torch.minimum(d[:, 2:], torch.tensor(CLIP, dtype=d.dtype)))
    return torch.cat([centres - sizes / 2, centres + sizes / 2], 1)


# ------------------------------------------------------------------------------------------------
# generate_anchors(feature_size (H, W), stride, sizes, ratios) -> (H W A, 4) float32
# ------------------------------------------------------------------------------------------------
def _cell(sizes, ratios, size_major=False, ratio_is_wh=False, sqrt=True):
    """(A, 4) unrounded cell anchors [-w, -h, w, h] / 2 as float64."""
    s = torch.tensor(sizes, dtype=torch.float64)
    r = torch.tensor(ratios, dtype=torch.float64)
    h_ratio = r.sqrt() if sqrt else r
    if ratio_is_wh:
        h_ratio = 1 / h_ratio
    w_ratio = 1 / h_ratio
    if size_major:
        ws, hs = (s[:, None] * w_ratio[None]).reshape(-1), (s[:, None] * h_ratio[None]).reshape(-1)
    else:
        ws, hs = (w_ratio[:, None] * s[None]).reshape(-1), (h_ratio[:, None] * s[None]).reshape(-1)
    return torch.stack([-ws, -hs, ws, hs], 1) / 2


def _shifted(cell, feature_size, stride, start=0.0, indexing="ij", step=None):
    """(H W A, 4) float32: the cell anchors at every location, rows outer."""
    height, width = feature_size
    step = stride if step is None else step
    ys = (torch.arange(height, dtype=torch.float64) + start) * step
    xs = (torch.arange(width, dtype=torch.float64) + start) * step
    if indexing == "ij":
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    else:
        xx, yy = torch.meshgrid(xs, ys, indexing="ij")
    shifts = torch.stack([xx, yy, xx, yy], -1).reshape(-1, 1, 4)
    return (shifts + cell[None]).reshape(-1, 4).float()


def anchors_ratio_w_over_h(feature_size, stride, sizes, ratios):
    """Takes the aspect ratio as w / h."""
    return _shifted(_cell(sizes, ratios, ratio_is_wh=True).round(), feature_size, stride)


def anchors_size_major(feature_size, stride, sizes, ratios):
    """Loops over sizes outside, ratios inside."""
    return _shifted(_cell(sizes, ratios, size_major=True).round(), feature_size, stride)


def anchors_half_cell(feature_size, stride, sizes, ratios):
    """Centres the anchors in their cell: (x + 0.5) * stride."""
    return _shifted(_cell(sizes, ratios).round(), feature_size, stride, start=0.5)


def anchors_no_stride(feature_size, stride, sizes, ratios):
    """Shifts by feature-map cells, not image pixels."""
    return _shifted(_cell(sizes, ratios).round(), feature_size, stride, step=1)


def anchors_not_rounded(feature_size, stride, sizes, ratios):
    """Leaves the cell anchors unrounded."""
    return _shifted(_cell(sizes, ratios), feature_size, stride)


def anchors_half_up(feature_size, stride, sizes, ratios):
    """Rounds with floor(x + 0.5): halves go up."""
    return _shifted(torch.floor(_cell(sizes, ratios) + 0.5), feature_size, stride)


def anchors_truncated(feature_size, stride, sizes, ratios):
    """Casts the cell anchors to int (.long(): towards zero) instead of rounding."""
    return _shifted(_cell(sizes, ratios).long().double(), feature_size, stride)


def anchors_meshgrid_xy(feature_size, stride, sizes, ratios):
    """meshgrid(xs, ys, indexing='ij'): columns outer, rows inner."""
    return _shifted(_cell(sizes, ratios).round(), feature_size, stride, indexing="xy")


def anchors_grouped_by_type(feature_size, stride, sizes, ratios):
    """Concatenates all locations of anchor 0, then of anchor 1, ..."""
    cell = _cell(sizes, ratios).round()
    return torch.cat([_shifted(cell[a:a + 1], feature_size, stride) for a in range(len(cell))])


def anchors_twice_too_large(feature_size, stride, sizes, ratios):
    """Cell anchors [-w, -h, w, h], without the / 2."""
    return _shifted((_cell(sizes, ratios) * 2).round(), feature_size, stride)


def anchors_no_sqrt(feature_size, stride, sizes, ratios):
    """h = size * ratio, w = size / ratio."""
    return _shifted(_cell(sizes, ratios, sqrt=False).round(), feature_size, stride)


def anchors_height_width_swapped(feature_size, stride, sizes, ratios):
    """Unpacks feature_size as (W, H)."""
    width, height = feature_size
    return _shifted(_cell(sizes, ratios).round(), (height, width), stride)


def anchors_grid_from_one(feature_size, stride, sizes, ratios):
    """Numbers the locations from 1: the first anchor centre at (stride, stride)."""
    return _shifted(_cell(sizes, ratios).round(), feature_size, stride, start=1.0)


def anchors_float64(feature_size, stride, sizes, ratios):
    """Correct values, left in float64."""
    return _shifted(_cell(sizes, ratios).round(), feature_size, stride).double()


def anchors_python_round(feature_size, stride, sizes, ratios):
    """Python loops with round(): integer rows, so torch.tensor makes an int64 tensor."""
    height, width = feature_size
    cell = []
    for r in ratios:
        for s in sizes:
            h, w = s * math.sqrt(r), s / math.sqrt(r)
            cell.append([round(-w / 2), round(-h / 2), round(w / 2), round(h / 2)])
    rows = [[x * stride + x1, y * stride + y1, x * stride + x2, y * stride + y2]
            for y in range(height) for x in range(width) for x1, y1, x2, y2 in cell]
    return torch.tensor(rows)


def anchors_loops(feature_size, stride, sizes, ratios):
    """Correct: Python loops with round() (half to even, like torch.round), float32 at the end."""
    return anchors_python_round(feature_size, stride, sizes, ratios).to(torch.float32)


def anchors_numpy(feature_size, stride, sizes, ratios):
    """Correct: NumPy broadcasting over (H, W, A, 4), np.round (half to even)."""
    height, width = feature_size
    r, s = np.asarray(ratios, np.float64)[:, None], np.asarray(sizes, np.float64)[None, :]
    hs, ws = (s * np.sqrt(r)).ravel(), (s / np.sqrt(r)).ravel()
    cell = np.round(np.stack([-ws, -hs, ws, hs], 1) / 2)
    ys, xs = np.arange(height) * stride, np.arange(width) * stride
    shifts = np.stack(np.broadcast_arrays(xs[None, :], ys[:, None], xs[None, :], ys[:, None]), -1)
    return torch.from_numpy((shifts[:, :, None, :] + cell).reshape(-1, 4)).float()


# ------------------------------------------------------------------------------------------------
# label_anchors(anchors (N, 4), gt_boxes (G, 4), high, low, allow_low_quality) -> labels, matched
# ------------------------------------------------------------------------------------------------
def _no_boxes(n):
    return torch.zeros(n, dtype=torch.int64), torch.full((n,), -1, dtype=torch.int64)


def _thresholds(best, high, low, neg=0, ign=-1, strict_high=False, low_inclusive=False):
    labels = torch.full(best.shape, ign, dtype=torch.int64)
    labels[(best <= low) if low_inclusive else (best < low)] = neg
    labels[(best > high) if strict_high else (best >= high)] = 1
    return labels


def _low_quality_ties(iou):
    """(N,) bool: the anchors tying for some box's best IoU (that IoU > 0)."""
    per_gt = iou.max(dim=1, keepdim=True).values
    return ((iou == per_gt) & (per_gt > 0)).any(dim=0)


def labels_zero_iou_trap(anchors, gt_boxes, high=0.7, low=0.3, allow_low_quality=True):
    """Low-quality ties without the best IoU > 0 guard."""
    if len(gt_boxes) == 0:
        return _no_boxes(len(anchors))
    iou = box_iou(gt_boxes, anchors)
    best, matched = iou.max(dim=0)
    labels = _thresholds(best, high, low)
    if allow_low_quality:
        labels[(iou == iou.max(dim=1, keepdim=True).values).any(dim=0)] = 1
    return labels, matched


def labels_no_low_quality(anchors, gt_boxes, high=0.7, low=0.3, allow_low_quality=True):
    """Only the two thresholds; allow_low_quality is ignored."""
    if len(gt_boxes) == 0:
        return _no_boxes(len(anchors))
    best, matched = box_iou(gt_boxes, anchors).max(dim=0)
    return _thresholds(best, high, low), matched


def labels_argmax_only(anchors, gt_boxes, high=0.7, low=0.3, allow_low_quality=True):
    """One low-quality anchor per box (argmax), not every anchor tying for the best IoU."""
    if len(gt_boxes) == 0:
        return _no_boxes(len(anchors))
    iou = box_iou(gt_boxes, anchors)
    best, matched = iou.max(dim=0)
    labels = _thresholds(best, high, low)
    if allow_low_quality:
        best_per_gt, best_anchor = iou.max(dim=1)
        labels[best_anchor[best_per_gt > 0]] = 1
    return labels, matched


def labels_flag_ignored(anchors, gt_boxes, high=0.7, low=0.3, allow_low_quality=True):
    """Always adds the low-quality matches."""
    if len(gt_boxes) == 0:
        return _no_boxes(len(anchors))
    iou = box_iou(gt_boxes, anchors)
    best, matched = iou.max(dim=0)
    labels = _thresholds(best, high, low)
    labels[_low_quality_ties(iou)] = 1
    return labels, matched


def labels_strict_high(anchors, gt_boxes, high=0.7, low=0.3, allow_low_quality=True):
    """Positive only when IoU > high."""
    if len(gt_boxes) == 0:
        return _no_boxes(len(anchors))
    iou = box_iou(gt_boxes, anchors)
    best, matched = iou.max(dim=0)
    labels = _thresholds(best, high, low, strict_high=True)
    if allow_low_quality:
        labels[_low_quality_ties(iou)] = 1
    return labels, matched


def labels_low_inclusive(anchors, gt_boxes, high=0.7, low=0.3, allow_low_quality=True):
    """Negative when IoU <= low."""
    if len(gt_boxes) == 0:
        return _no_boxes(len(anchors))
    iou = box_iou(gt_boxes, anchors)
    best, matched = iou.max(dim=0)
    labels = _thresholds(best, high, low, low_inclusive=True)
    if allow_low_quality:
        labels[_low_quality_ties(iou)] = 1
    return labels, matched


def labels_values_swapped(anchors, gt_boxes, high=0.7, low=0.3, allow_low_quality=True):
    """Negative -1 and ignored 0."""
    if len(gt_boxes) == 0:
        return _no_boxes(len(anchors))
    iou = box_iou(gt_boxes, anchors)
    best, matched = iou.max(dim=0)
    labels = _thresholds(best, high, low, neg=-1, ign=0)
    if allow_low_quality:
        labels[_low_quality_ties(iou)] = 1
    return labels, matched


def labels_matched_to_own_box(anchors, gt_boxes, high=0.7, low=0.3, allow_low_quality=True):
    """A low-quality positive is matched to the box it was the best anchor for."""
    if len(gt_boxes) == 0:
        return _no_boxes(len(anchors))
    iou = box_iou(gt_boxes, anchors)
    best, matched = iou.max(dim=0)
    labels = _thresholds(best, high, low)
    if allow_low_quality:
        per_gt = iou.max(dim=1, keepdim=True).values
        g, i = ((iou == per_gt) & (per_gt > 0)).nonzero(as_tuple=True)
        labels[i] = 1
        matched[i] = g
    return labels, matched


def labels_low_quality_first(anchors, gt_boxes, high=0.7, low=0.3, allow_low_quality=True):
    """Sets the low-quality positives first; the thresholds then overwrite them."""
    if len(gt_boxes) == 0:
        return _no_boxes(len(anchors))
    iou = box_iou(gt_boxes, anchors)
    best, matched = iou.max(dim=0)
    labels = torch.full((len(anchors),), -1, dtype=torch.int64)
    if allow_low_quality:
        labels[_low_quality_ties(iou)] = 1
    labels[best < low] = 0
    labels[best >= high] = 1
    return labels, matched


def labels_no_boxes_crash(anchors, gt_boxes, high=0.7, low=0.3, allow_low_quality=True):
    """Never handles G = 0: iou.max(dim=0) of a (0, N) matrix raises."""
    iou = box_iou(gt_boxes, anchors)
    best, matched = iou.max(dim=0)
    labels = _thresholds(best, high, low)
    if allow_low_quality:
        labels[_low_quality_ties(iou)] = 1
    return labels, matched


def labels_no_boxes_ignored(anchors, gt_boxes, high=0.7, low=0.3, allow_low_quality=True):
    """Without boxes every anchor is ignored (-1) instead of negative."""
    n = len(anchors)
    if len(gt_boxes) == 0:
        return torch.full((n,), -1, dtype=torch.int64), torch.full((n,), -1, dtype=torch.int64)
    iou = box_iou(gt_boxes, anchors)
    best, matched = iou.max(dim=0)
    labels = _thresholds(best, high, low)
    if allow_low_quality:
        labels[_low_quality_ties(iou)] = 1
    return labels, matched


def labels_last_box_on_ties(anchors, gt_boxes, high=0.7, low=0.3, allow_low_quality=True):
    """A loop with `>=`: on equal IoUs the LAST box becomes the match."""
    if len(gt_boxes) == 0:
        return _no_boxes(len(anchors))
    iou = box_iou(gt_boxes, anchors)
    best = torch.full((len(anchors),), -1.0, dtype=iou.dtype)
    matched = torch.zeros(len(anchors), dtype=torch.int64)
    for g in range(len(gt_boxes)):
        better = iou[g] >= best
        best[better], matched[better] = iou[g][better], g
    labels = _thresholds(best, high, low)
    if allow_low_quality:
        labels[_low_quality_ties(iou)] = 1
    return labels, matched


def labels_int32(anchors, gt_boxes, high=0.7, low=0.3, allow_low_quality=True):
    """Builds the labels with dtype=torch.int32."""
    labels, matched = labels_loops(anchors, gt_boxes, high, low, allow_low_quality)
    return labels.to(torch.int32), matched


def labels_loops(anchors, gt_boxes, high=0.7, low=0.3, allow_low_quality=True):
    """Correct: per anchor and per box in plain Python (IoUs from box_iou in float64)."""
    n = len(anchors)
    if len(gt_boxes) == 0:
        return _no_boxes(n)
    iou = box_iou(anchors.double(), gt_boxes.double()).tolist()          # (N, G)
    labels, matched = [], []
    for row in iou:
        best = max(row)
        matched.append(row.index(best))
        labels.append(1 if best >= high else (0 if best < low else -1))
    if allow_low_quality:
        for g in range(len(gt_boxes)):
            column = [row[g] for row in iou]
            best = max(column)
            for i, value in enumerate(column):
                if best > 0 and value == best:
                    labels[i] = 1
    return torch.tensor(labels, dtype=torch.int64), torch.tensor(matched, dtype=torch.int64)


# ------------------------------------------------------------------------------------------------
# nms(boxes (N, 4), scores (N,), iou_threshold) -> kept indices (K,) int64 by decreasing score
# ------------------------------------------------------------------------------------------------
def _greedy(iou, order, threshold):
    """Kept indices of greedy NMS over ``order`` with the (N, N) ``iou`` (input indices)."""
    keep, suppressed = [], torch.zeros(len(order), dtype=torch.bool)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > threshold
    return torch.tensor(keep, dtype=torch.int64)


def _sorted(scores):
    return torch.sort(scores, descending=True, stable=True).indices


def nms_suppress_equal(boxes, scores, iou_threshold):
    """Suppresses when IoU >= threshold."""
    iou = box_iou(boxes, boxes).double()
    keep, suppressed = [], torch.zeros(len(boxes), dtype=torch.bool)
    for i in _sorted(scores).tolist():
        if not suppressed[i]:
            keep.append(i)
            suppressed |= iou[i] >= iou_threshold
    return torch.tensor(keep, dtype=torch.int64)


def nms_input_order(boxes, scores, iou_threshold):
    """Never sorts: walks the boxes in input order."""
    return _greedy(box_iou(boxes, boxes).double(), torch.arange(len(boxes)), iou_threshold)


def nms_ascending(boxes, scores, iou_threshold):
    """Sorts by increasing score."""
    order = torch.sort(scores, stable=True).indices
    return _greedy(box_iou(boxes, boxes).double(), order, iou_threshold)


def nms_against_all_earlier(boxes, scores, iou_threshold):
    """Drops a box that overlaps ANY higher-scored box, kept or not."""
    iou = box_iou(boxes, boxes).double()
    order = _sorted(scores)
    keep = [int(i) for rank, i in enumerate(order) if not (iou[i, order[:rank]] > iou_threshold).any()]
    return torch.tensor(keep, dtype=torch.int64)


def nms_index_order(boxes, scores, iou_threshold):
    """Returns the kept indices sorted by index."""
    return _greedy(box_iou(boxes, boxes).double(), _sorted(scores), iou_threshold).sort().values


def nms_unstable_ties(boxes, scores, iou_threshold):
    """Equal scores taken in reverse input order (what an unstable sort may do)."""
    groups = {}
    for i, s in enumerate(scores.tolist()):
        groups.setdefault(s, []).append(i)
    order = torch.tensor([i for s in sorted(groups, reverse=True) for i in reversed(groups[s])], dtype=torch.int64)
    return _greedy(box_iou(boxes, boxes).double(), order, iou_threshold)


def nms_float32_comparison(boxes, scores, iou_threshold):
    """Compares the float32 IoU with the threshold as a float32 tensor comparison (iou > t)."""
    order = _sorted(scores)
    iou = box_iou(boxes[order], boxes[order])
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.int64)]


def nms_iou_in_float64(boxes, scores, iou_threshold):
    """Converts the boxes to float64 before computing the IoU."""
    boxes = boxes.double()
    return _greedy(box_iou(boxes, boxes), _sorted(scores), iou_threshold)


def nms_scores_zeroed(boxes, scores, iou_threshold):
    """Suppresses by setting the caller's scores to -1 and taking the argmax again."""
    iou = box_iou(boxes, boxes).double()
    keep = []
    while len(scores) and scores.max() >= 0:
        i = int(torch.argmax(scores))
        keep.append(i)
        scores[iou[i] > iou_threshold] = -1.0
        scores[i] = -1.0
    return torch.tensor(keep, dtype=torch.int64)


def nms_sorted_positions(boxes, scores, iou_threshold):
    """Returns positions in the sorted order, not the input indices."""
    order = _sorted(scores)
    iou = box_iou(boxes[order], boxes[order]).double()
    keep, suppressed = [], torch.zeros(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= iou[i] > iou_threshold
    return torch.tensor(keep, dtype=torch.int64)


def nms_plus_one(boxes, scores, iou_threshold):
    """py-faster-rcnn's IoU with "+1" pixel widths."""
    b = boxes.double()
    x1, y1, x2, y2 = b.unbind(1)
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    w = (torch.minimum(x2[:, None], x2[None]) - torch.maximum(x1[:, None], x1[None]) + 1).clamp(min=0)
    h = (torch.minimum(y2[:, None], y2[None]) - torch.maximum(y1[:, None], y1[None]) + 1).clamp(min=0)
    inter = w * h
    return _greedy(inter / (areas[:, None] + areas[None] - inter), _sorted(scores), iou_threshold)


def nms_empty_float(boxes, scores, iou_threshold):
    """torch.tensor(keep) of a Python list: float32 when nothing is kept (no boxes)."""
    iou = box_iou(boxes, boxes).double()
    keep, suppressed = [], torch.zeros(len(boxes), dtype=torch.bool)
    for i in _sorted(scores).tolist():
        if not suppressed[i]:
            keep.append(i)
            suppressed |= iou[i] > iou_threshold
    return torch.tensor(keep)


def nms_numpy(boxes, scores, iou_threshold):
    """Correct: the classic py-faster-rcnn loop without +1, IoU in the boxes' dtype, compared in float64."""
    b, s = boxes.numpy(), scores.double().numpy()
    x1, y1, x2, y2 = b.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-s, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        union = areas[i] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0).astype(np.float64)
        order = rest[iou <= iou_threshold]
    return torch.tensor(keep, dtype=torch.int64)


def nms_by_argmax(boxes, scores, iou_threshold):
    """Correct: repeatedly take the best remaining box (first on ties) and drop its overlaps, on a copy."""
    iou = box_iou(boxes, boxes).double()
    alive = torch.ones(len(boxes), dtype=torch.bool)
    keep = []
    while alive.any():
        candidates = torch.where(alive, scores.double(), torch.tensor(-math.inf, dtype=torch.float64))
        i = int(torch.nonzero(candidates == candidates.max())[0])
        keep.append(i)
        alive &= ~(iou[i] > iou_threshold)
        alive[i] = False
    return torch.tensor(keep, dtype=torch.int64)


# ------------------------------------------------------------------------------------------------
# The library
# ------------------------------------------------------------------------------------------------
_BOX_DTYPE = "the output has the dtype of the input boxes"
_DELTA_DTYPE = "the output has the dtype of the deltas"
_NO_BOXES_RAISE = "N = 0"
_ANCHOR_DTYPE = "the anchors are float32"
_IN_PLACE = "the inputs stay unchanged"
_THRESHOLD_DTYPE = ("the IoU is computed in the boxes' dtype and compared with the threshold as a float64 number "
                    "(torchvision)")

MUTANTS = {
    "encode_boxes": [
        Mutant("deltas between corners", encode_corners, "between corners"),
        Mutant("no log", encode_no_log, "plain ratios"),
        Mutant("relative size difference", encode_relative_difference, "relative differences"),
        Mutant("weights ignored", encode_weights_ignored, "weights were ignored"),
        Mutant("divided by the weights", encode_weights_divided, "divided by the weights"),
        Mutant("roles swapped", encode_swapped_roles, "swapped"),
        Mutant("+1 widths", encode_plus_one, "x2 - x1 + 1", rule="width = x2 - x1 (no +1)"),
        Mutant("dy over the width", encode_dy_over_width, "only positions 1 of the last axis differ"),
        Mutant("float32 output", encode_float32_output, "keep the dtype of the input", rule=_BOX_DTYPE),
        Mutant("sizes computed in place", encode_sizes_in_place, "modified its argument `anchors` in place",
               rule=_IN_PLACE),
        Mutant("torch.stack of the rows", encode_rows_stacked, _NO_BOXES_RAISE,
               rule="no boxes gives a (0, 4) output"),
        Mutant("RoI-head default weights", encode_rcnn_default, "default weights are (1, 1, 1, 1)",
               rule="weights default to (1, 1, 1, 1)"),
    ],
    "decode_boxes": [
        Mutant("no clamp", decode_no_clamp, "not clamped", rule="dw, dh clamped from above at log(1000 / 16)"),
        Mutant("clamped from below too", decode_clamp_both, "from below too",
               rule="dw, dh clamped from above at log(1000 / 16)"),
        Mutant("no exp", decode_no_exp, "exp(dw)"),
        Mutant("added to the corners", decode_corners, "added to the corners"),
        Mutant("multiplied by the weights", decode_weights_multiplied, "multiplied by the weights"),
        Mutant("clamp before dividing", decode_clamp_then_divide, "before dividing by the weights",
               rule="divide by the weights, then clamp"),
        Mutant("(cx, cy, w, h) returned", decode_returns_cxcywh, "(cx, cy, w, h)"),
        Mutant("weights ignored", decode_weights_ignored, "weights were ignored"),
        Mutant("deltas clamped in place", decode_clamp_in_place, "modified its argument `deltas` in place",
               rule=_IN_PLACE),
        Mutant("float32 output", decode_float32_output, "keep the dtype of the input", rule=_DELTA_DTYPE),
    ],
    "generate_anchors": [
        Mutant("ratio as w / h", anchors_ratio_w_over_h, "ratio = h / w", rule="ratio = h / w"),
        Mutant("size-major order", anchors_size_major, "ratio-major", rule="ratio-major order inside a location"),
        Mutant("half-cell offset", anchors_half_cell, "half a cell", rule="no half-cell offset"),
        Mutant("stride forgotten", anchors_no_stride, "not multiplied by the stride"),
        Mutant("not rounded", anchors_not_rounded, "were not rounded", rule="cell anchors rounded"),
        Mutant("halves rounded up", anchors_half_up, "halves were rounded up",
               rule="torch.round: halves to the even integer"),
        Mutant("truncated to int", anchors_truncated, "truncated"),
        Mutant("meshgrid x outer", anchors_meshgrid_xy, "column-major", rule="index (y W + x) A + a"),
        Mutant("grouped by anchor type", anchors_grouped_by_type, "grouped by anchor type",
               rule="index (y W + x) A + a"),
        Mutant("twice too large", anchors_twice_too_large, "twice too large"),
        Mutant("no square root", anchors_no_sqrt, "take square roots"),
        Mutant("feature_size read as (W, H)", anchors_height_width_swapped, "feature_size is (H, W)"),
        Mutant("grid numbered from 1", anchors_grid_from_one, "numbered from 1"),
        Mutant("float64 anchors", anchors_float64, "expected torch.float32", rule=_ANCHOR_DTYPE),
        Mutant("int64 anchors from Python round()", anchors_python_round, "expected torch.float32",
               rule=_ANCHOR_DTYPE),
    ],
    "label_anchors": [
        Mutant("zero-IoU trap", labels_zero_iou_trap, "overlaps NO anchor",
               rule="a box with best IoU 0 adds no positives"),
        Mutant("no low-quality matches", labels_no_low_quality, "low-quality matches are missing"),
        Mutant("argmax only", labels_argmax_only, "only one anchor per ground truth",
               rule="every anchor tying for a box's best IoU is positive"),
        Mutant("flag ignored", labels_flag_ignored, "allow_low_quality=False"),
        Mutant("IoU > high", labels_strict_high, "exactly `high`", rule="IoU >= high is positive"),
        Mutant("IoU <= low", labels_low_inclusive, "exactly `low`", rule="IoU < low is negative"),
        Mutant("label values swapped", labels_values_swapped, "label values are swapped"),
        Mutant("matched to its own box", labels_matched_to_own_box, "not the box for which it was the best anchor"),
        Mutant("low-quality before the thresholds", labels_low_quality_first, "overwrote them"),
        Mutant("G = 0 not handled", labels_no_boxes_crash, "G = 0",
               rule="no boxes: every anchor negative, matched -1"),
        Mutant("G = 0 all ignored", labels_no_boxes_ignored, "every anchor is negative",
               rule="no boxes: every anchor negative, matched -1"),
        Mutant("last box on ties", labels_last_box_on_ties, "first box on ties", rule="matched: the first box on ties"),
        Mutant("int32 labels", labels_int32, "expected torch.int64", rule="labels and matched are int64"),
    ],
    "nms": [
        Mutant("IoU >= threshold", nms_suppress_equal, "IoU > threshold", rule="suppress only when IoU > threshold"),
        Mutant("input order", nms_input_order, "input order"),
        Mutant("ascending scores", nms_ascending, "LOWEST score"),
        Mutant("compared with every earlier box", nms_against_all_earlier, "KEPT so far"),
        Mutant("index order returned", nms_index_order, "index order", rule="kept indices by decreasing score"),
        Mutant("unstable sort", nms_unstable_ties, "stable sort", rule="equal scores keep their input order"),
        Mutant("float32 threshold comparison", nms_float32_comparison, "compare it with the threshold in float64",
               rule=_THRESHOLD_DTYPE),
        Mutant("IoU computed in float64", nms_iou_in_float64, "compare it with the threshold in float64",
               rule=_THRESHOLD_DTYPE),
        Mutant("scores zeroed in place", nms_scores_zeroed, "modified its argument `scores` in place",
               rule=_IN_PLACE),
        Mutant("sorted positions returned", nms_sorted_positions, "positions in the SORTED order"),
        Mutant("+1 pixel IoU", nms_plus_one, "+1"),
        Mutant("float tensor when empty", nms_empty_float, "expected torch.int64",
               rule="kept indices are int64, also when empty"),
    ],
}

ALTERNATIVES = {
    "encode_boxes": [Alternative("loop with math.log", encode_loop),
                     Alternative("via (cx, cy, w, h)", encode_via_cxcywh)],
    "decode_boxes": [Alternative("via (cx, cy, w, h)", decode_via_cxcywh)],
    "generate_anchors": [Alternative("Python loops with round()", anchors_loops),
                         Alternative("NumPy broadcasting", anchors_numpy)],
    "label_anchors": [Alternative("plain Python loops", labels_loops)],
    "nms": [Alternative("py-faster-rcnn loop in NumPy", nms_numpy), Alternative("repeated argmax", nms_by_argmax)],
}


# ------------------------------------------------------------------------------------------------
# rpn_proposals(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold)
# (students may call their own decode_boxes and nms: the mutants call the reference ones)
# ------------------------------------------------------------------------------------------------
from ...reference.detection import decode_boxes as _decode, nms as _nms   # noqa: E402


def _clip_boxes(boxes, height, width):
    return torch.stack([boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height),
                        boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)], 1)


def _rpn(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold, *, merged=False,
         clip="before", wh_swapped=False, nms_global=False, final_sort=True, sigmoid=False, topk=False,
         nms_fn=_nms):
    """One student's RPN step, its bug chosen by the keywords."""
    height, width = image_size
    if wh_swapped:
        width, height = image_size
    if merged:
        objectness, deltas, anchors = [torch.cat(objectness)], [torch.cat(deltas)], [torch.cat(anchors)]
    all_boxes, all_scores = [], []
    for obj, dlt, anc in zip(objectness, deltas, anchors):
        if topk:
            top = torch.topk(obj, pre_nms_top_n).indices
        else:
            top = torch.sort(obj, descending=True, stable=True).indices[:pre_nms_top_n]
        boxes = _decode(anc[top], dlt[top])
        if clip == "before":
            boxes = _clip_boxes(boxes, height, width)
        keep = torch.arange(len(top)) if nms_global else nms_fn(boxes, obj[top], iou_threshold)
        all_boxes.append(boxes[keep])
        all_scores.append(obj[top][keep])
    boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
    if nms_global:
        keep = nms_fn(boxes, scores, iou_threshold)
        boxes, scores = boxes[keep], scores[keep]
    if final_sort:
        order = torch.sort(scores, descending=True, stable=True).indices[:post_nms_top_n]
    else:
        order = torch.arange(len(scores))[:post_nms_top_n]
    boxes, scores = boxes[order], scores[order]
    if clip == "after":
        boxes = _clip_boxes(boxes, height, width)
    return boxes, (torch.sigmoid(scores) if sigmoid else scores)


def rpn_levels_merged(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold):
    """Concatenates the levels first: one top-k and one NMS over everything."""
    return _rpn(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold, merged=True)


def rpn_nms_across_levels(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold):
    """Top-k per level, but a single NMS over the merged boxes."""
    return _rpn(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold,
                nms_global=True)


def rpn_no_clip(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold):
    """Forgets to clip the boxes to the image."""
    return _rpn(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold, clip=None)


def rpn_clip_after_nms(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold):
    """Clips the final proposals, after NMS."""
    return _rpn(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold, clip="after")


def rpn_image_size_wh(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold):
    """Reads image_size as (W, H)."""
    return _rpn(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold,
                wh_swapped=True)


def rpn_levels_not_sorted(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold):
    """Concatenates the levels' kept boxes and cuts at post_nms_top_n without sorting."""
    return _rpn(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold,
                final_sort=False)


def rpn_sigmoid_scores(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold):
    """Returns sigmoid(objectness) as the scores (torchvision's RPN does; this exercise returns the logits)."""
    return _rpn(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold, sigmoid=True)


def rpn_topk_without_min(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold):
    """torch.topk(obj, pre_nms_top_n): raises when a level has fewer anchors."""
    return _rpn(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold, topk=True)


def rpn_argsort_reversed(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold):
    """Sorts ascending (stable) and flips: equal logits end up in reverse anchor order."""
    height, width = image_size
    all_boxes, all_scores = [], []
    for obj, dlt, anc in zip(objectness, deltas, anchors):
        top = torch.argsort(obj, stable=True).flip(0)[:pre_nms_top_n]
        boxes = _clip_boxes(_decode(anc[top], dlt[top]), height, width)
        keep = _nms(boxes, obj[top], iou_threshold)
        all_boxes.append(boxes[keep])
        all_scores.append(obj[top][keep])
    boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
    order = torch.argsort(scores, stable=True).flip(0)[:post_nms_top_n]
    return boxes[order], scores[order]


def _nms_greater_equal(boxes, scores, iou_threshold):
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes[order], boxes[order]).double()
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= iou[i] >= iou_threshold
    return order[torch.tensor(keep, dtype=torch.int64)]


def rpn_nms_greater_equal(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold):
    """Its NMS suppresses at IoU == threshold."""
    return _rpn(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold,
                nms_fn=_nms_greater_equal)


def rpn_clip_in_place(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold):
    """Clips the anchors in place before decoding (and so changes the caller's anchors)."""
    height, width = image_size
    for anc in anchors:
        anc[:, 0::2].clamp_(0, width)
        anc[:, 1::2].clamp_(0, height)
    return _rpn(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold)


def rpn_boxes_float32(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold):
    """Collects the boxes into a float32 tensor."""
    boxes, scores = _rpn(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold)
    return boxes.float(), scores


def rpn_by_level_offsets(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n, iou_threshold):
    """Correct: torchvision's batched-NMS trick (offset each level's boxes so levels never overlap), then one NMS."""
    height, width = image_size
    boxes_l, scores_l, level_l = [], [], []
    for level, (obj, dlt, anc) in enumerate(zip(objectness, deltas, anchors)):
        top = torch.sort(obj, descending=True, stable=True).indices[:min(pre_nms_top_n, len(obj))]
        boxes_l.append(_clip_boxes(_decode(anc[top], dlt[top]), height, width))
        scores_l.append(obj[top])
        level_l.append(torch.full((len(top),), level, dtype=boxes_l[-1].dtype))
    boxes, scores, levels = torch.cat(boxes_l), torch.cat(scores_l), torch.cat(level_l)
    offset = levels[:, None] * (max(height, width) + 1)
    # one NMS over all levels, in the merged stable order: equal scores keep (level, rank) order
    keep = _nms(boxes + offset, scores, iou_threshold)[:post_nms_top_n]
    return boxes[keep], scores[keep]


# ------------------------------------------------------------------------------------------------
# yolo_target(boxes, labels, S, B, C, image_size) -> (S, S, 5 B + C) float32
# ------------------------------------------------------------------------------------------------
def _yolo(boxes, labels, S, B, C, image_size, *, last_wins=False, first_slot=False, absolute=False, rowcol=False,
          sqrt=False, cells=False, index="floor", wh_swapped=False, classes_first=False, dtype=torch.float32,
          clamp=True):
    """One student's loop over the objects, its bug chosen by the keywords."""
    height, width = image_size
    if wh_swapped:
        width, height = image_size
    target = torch.zeros(S, S, 5 * B + C, dtype=dtype)
    cell_w, cell_h = width / S, height / S
    for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels.tolist()):
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        if index == "floor":
            i, j = int(cy // cell_h), int(cx // cell_w)
        elif index == "round":
            i, j = round(cy / cell_h), round(cx / cell_w)
        else:
            i, j = max(math.ceil(cy / cell_h) - 1, 0), max(math.ceil(cx / cell_w) - 1, 0)
        if clamp:
            i, j = min(i, S - 1), min(j, S - 1)
        if target[i, j, 4] == 1 and not last_wins:
            continue
        x, y = (cx / width, cy / height) if absolute else (cx / cell_w - j, cy / cell_h - i)
        w, h = (x2 - x1) / width, (y2 - y1) / height
        if sqrt:
            w, h = math.sqrt(w), math.sqrt(h)
        if cells:
            w, h = w * S, h * S
        slot = torch.tensor([x, y, w, h, 1.0], dtype=dtype)
        row, col = (j, i) if rowcol else (i, j)
        if first_slot:
            target[row, col, :5] = slot
        else:
            target[row, col, :5 * B] = slot.repeat(B)
        target[row, col, 5 * B + label] = 1.0
    if classes_first:
        target = torch.cat([target[..., 5 * B:], target[..., :5 * B]], dim=-1)
    return target


def yolo_last_wins(boxes, labels, S, B, C, image_size):
    """Two objects in a cell: the second overwrites the first."""
    return _yolo(boxes, labels, S, B, C, image_size, last_wins=True)


def yolo_first_slot_only(boxes, labels, S, B, C, image_size):
    """Writes the box in slot 0 only."""
    return _yolo(boxes, labels, S, B, C, image_size, first_slot=True)


def yolo_xy_in_image(boxes, labels, S, B, C, image_size):
    """x, y relative to the image instead of the cell."""
    return _yolo(boxes, labels, S, B, C, image_size, absolute=True)


def yolo_row_col_swapped(boxes, labels, S, B, C, image_size):
    """target[j, i]: column first."""
    return _yolo(boxes, labels, S, B, C, image_size, rowcol=True)


def yolo_sqrt_sizes(boxes, labels, S, B, C, image_size):
    """Stores sqrt(w), sqrt(h) (what YOLO v1's loss compares)."""
    return _yolo(boxes, labels, S, B, C, image_size, sqrt=True)


def yolo_sizes_in_cells(boxes, labels, S, B, C, image_size):
    """w, h in cell units."""
    return _yolo(boxes, labels, S, B, C, image_size, cells=True)


def yolo_border_to_upper_left(boxes, labels, S, B, C, image_size):
    """ceil(c / cell) - 1: a centre on a border goes to the cell above / to the left."""
    return _yolo(boxes, labels, S, B, C, image_size, index="ceil")


def yolo_rounded_index(boxes, labels, S, B, C, image_size):
    """round(c / cell) for the cell index."""
    return _yolo(boxes, labels, S, B, C, image_size, index="round")


def yolo_image_size_wh(boxes, labels, S, B, C, image_size):
    """Reads image_size as (W, H)."""
    return _yolo(boxes, labels, S, B, C, image_size, wh_swapped=True)


def yolo_classes_first(boxes, labels, S, B, C, image_size):
    """Puts the class one-hot before the box slots."""
    return _yolo(boxes, labels, S, B, C, image_size, classes_first=True)


def yolo_no_clamp(boxes, labels, S, B, C, image_size):
    """No clamp: a centre on the right/bottom edge indexes cell S."""
    return _yolo(boxes, labels, S, B, C, image_size, clamp=False)


def yolo_dtype_of_boxes(boxes, labels, S, B, C, image_size):
    """torch.zeros(..., dtype=boxes.dtype): float64 for float64 boxes."""
    return _yolo(boxes, labels, S, B, C, image_size, dtype=boxes.dtype)


def yolo_normalised_in_place(boxes, labels, S, B, C, image_size):
    """Divides the caller's boxes by the image size in place first."""
    height, width = image_size
    boxes[:, 0::2] /= width
    boxes[:, 1::2] /= height
    return _yolo(boxes * torch.tensor([width, height, width, height], dtype=boxes.dtype), labels, S, B, C,
                 image_size)


def yolo_vectorised(boxes, labels, S, B, C, image_size):
    """Correct: vectorised, the first object of a cell found by processing the objects in reverse order
    (later writes win, so the first object's write is the last)."""
    height, width = image_size
    target = torch.zeros(S, S, 5 * B + C)
    if len(boxes) == 0:
        return target
    b = boxes.double()
    cx, cy = (b[:, 0] + b[:, 2]) / 2 * S / width, (b[:, 1] + b[:, 3]) / 2 * S / height
    i, j = cy.floor().long().clamp(max=S - 1), cx.floor().long().clamp(max=S - 1)
    slots = torch.stack([cx - j, cy - i, (b[:, 2] - b[:, 0]) / width, (b[:, 3] - b[:, 1]) / height,
                         torch.ones_like(cx)], 1).repeat(1, B)
    onehot = torch.nn.functional.one_hot(labels.long(), C).double()
    rows = torch.cat([slots, onehot], 1).float()
    for k in reversed(range(len(boxes))):
        target[i[k], j[k]] = rows[k]
    return target


_YOLO_EDGE = "clamp the cell index to S - 1"
_FIRST_KEEPS = "the first object (lowest index) keeps"

MUTANTS.update({
    "rpn_proposals": [
        Mutant("levels merged first", rpn_levels_merged, "of EACH level", rule="top pre_nms_top_n per level"),
        Mutant("one NMS across levels", rpn_nms_across_levels, "NMS runs within each level",
               rule="NMS within each level"),
        Mutant("no clipping", rpn_no_clip, "not clipped", rule="clip to the image before NMS"),
        Mutant("clipped after NMS", rpn_clip_after_nms, "clipped after NMS", rule="clip to the image before NMS"),
        Mutant("image_size as (W, H)", rpn_image_size_wh, "image_size is (H, W)", rule="image_size is (H, W)"),
        Mutant("levels not re-sorted", rpn_levels_not_sorted, "decreasing objectness",
               rule="merged by decreasing objectness"),
        Mutant("sigmoid scores", rpn_sigmoid_scores, "objectness logits", rule="the scores are the logits"),
        Mutant("topk without min", rpn_topk_without_min, "min(pre_nms_top_n, A_l)",
               rule="a level with fewer anchors than pre_nms_top_n (or none) keeps them all"),
        Mutant("reversed argsort", rpn_argsort_reversed, "stable sort", rule="equal logits keep their anchor order"),
        Mutant("NMS at IoU == threshold", rpn_nms_greater_equal, "IoU > iou_threshold",
               rule="suppress only when IoU > threshold"),
        Mutant("anchors clipped in place", rpn_clip_in_place, "modified its argument `anchors` in place",
               rule=_IN_PLACE),
        Mutant("float32 boxes", rpn_boxes_float32, "dtype of the deltas", rule="boxes in the dtype of the deltas"),
    ],
    "yolo_target": [
        Mutant("last object wins a cell", yolo_last_wins, _FIRST_KEEPS, rule="the first object keeps a shared cell"),
        Mutant("first slot only", yolo_first_slot_only, "every one of the B slots", rule="the box in all B slots"),
        Mutant("x, y relative to the image", yolo_xy_in_image, "WITHIN its cell"),
        Mutant("row and column swapped", yolo_row_col_swapped, "rows and columns are swapped"),
        Mutant("square roots stored", yolo_sqrt_sizes, "square roots", rule="w, h relative to the image, no sqrt"),
        Mutant("sizes in cells", yolo_sizes_in_cells, "relative to the IMAGE"),
        Mutant("border to the upper-left cell", yolo_border_to_upper_left, "below / to the right",
               rule="a centre on a border belongs to the cell below / to the right"),
        Mutant("rounded cell index", yolo_rounded_index, "floor(cx / cell width)"),
        Mutant("image_size as (W, H)", yolo_image_size_wh, "image_size is (H, W)", rule="image_size is (H, W)"),
        Mutant("classes first", yolo_classes_first, "the C classes", rule="layout: B slots, then C classes"),
        Mutant("no clamp at the image edge", yolo_no_clamp, _YOLO_EDGE, rule="cell index clamped to S - 1"),
        Mutant("dtype of the boxes", yolo_dtype_of_boxes, "expected torch.float32", rule="the target is float32"),
        Mutant("boxes normalised in place", yolo_normalised_in_place, "modified its argument `boxes` in place",
               rule=_IN_PLACE),
    ],
})

ALTERNATIVES.update({
    "rpn_proposals": [Alternative("batched NMS by level offsets", rpn_by_level_offsets)],
    "yolo_target": [Alternative("vectorised, written in reverse order", yolo_vectorised)],
})


# ------------------------------------------------------------------------------------------------
# focal_loss(logits, targets, alpha=0.25, gamma=2.0) -> per-element loss, the logits' shape and dtype
# ------------------------------------------------------------------------------------------------
import torch.nn.functional as F  # noqa: E402


def _focal(logits, targets, alpha=0.25, gamma=2.0, *, alpha_t="right", factor="right", ce="stable", p_from="sigmoid",
           reduce=None, sign=1.0):
    """One student's focal loss, its bug chosen by the keywords."""
    if p_from == "softmax":
        p = torch.softmax(logits, dim=-1)
    else:
        p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    if ce == "stable":
        loss_ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    elif ce == "probabilities":
        loss_ce = F.binary_cross_entropy_with_logits(p, targets, reduction="none")
    elif ce == "log_p_t":
        loss_ce = -torch.log(p_t)
    elif ce == "eps":
        loss_ce = -torch.log(p_t.clamp(min=1e-6))
    else:                                   # "bce": F.binary_cross_entropy on the probabilities
        loss_ce = F.binary_cross_entropy(p, targets, reduction="none")
    if factor == "one_minus_p":
        modulating = (1 - p) ** gamma
    elif factor == "p_t":
        modulating = p_t ** gamma
    elif factor == "fixed":
        modulating = (1 - p_t) ** 2
    else:
        modulating = (1 - p_t) ** gamma
    loss = modulating * loss_ce
    if alpha_t == "all":
        loss = alpha * loss
    elif alpha_t == "swapped":
        loss = loss * ((1 - alpha) * targets + alpha * (1 - targets))
    elif alpha_t == "always":
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    elif alpha_t == "right" and alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    loss = sign * loss
    if reduce == "mean":
        return loss.mean()
    if reduce == "sum":
        return loss.sum()
    return loss


def focal_alpha_everywhere(logits, targets, alpha=0.25, gamma=2.0):
    """loss * alpha for every element: forgot alpha_t."""
    return _focal(logits, targets, alpha, gamma, alpha_t="all")


def focal_alpha_swapped(logits, targets, alpha=0.25, gamma=2.0):
    """alpha on the negatives, 1 - alpha on the positives."""
    return _focal(logits, targets, alpha, gamma, alpha_t="swapped")


def focal_negative_alpha_used(logits, targets, alpha=0.25, gamma=2.0):
    """Applies alpha_t even for alpha < 0 (torchvision: no weighting)."""
    return _focal(logits, targets, alpha, gamma, alpha_t="always")


def focal_one_minus_p(logits, targets, alpha=0.25, gamma=2.0):
    """(1 - p)^gamma for every element instead of (1 - p_t)^gamma."""
    return _focal(logits, targets, alpha, gamma, factor="one_minus_p")


def focal_p_t_power(logits, targets, alpha=0.25, gamma=2.0):
    """p_t^gamma: weights the easy examples up instead of down."""
    return _focal(logits, targets, alpha, gamma, factor="p_t")


def focal_gamma_hard_coded(logits, targets, alpha=0.25, gamma=2.0):
    """(1 - p_t) ** 2 whatever gamma is."""
    return _focal(logits, targets, alpha, gamma, factor="fixed")


def focal_log_of_sigmoid(logits, targets, alpha=0.25, gamma=2.0):
    """-log(p_t) from the rounded sigmoid: inf for large logits."""
    return _focal(logits, targets, alpha, gamma, ce="log_p_t")


def focal_log_with_eps(logits, targets, alpha=0.25, gamma=2.0):
    """-log(p_t.clamp(min=1e-6)): finite, but at most 13.8 for large logits."""
    return _focal(logits, targets, alpha, gamma, ce="eps")


def focal_bce_on_probabilities(logits, targets, alpha=0.25, gamma=2.0):
    """F.binary_cross_entropy(sigmoid(logits), targets): torch clamps its log at -100."""
    return _focal(logits, targets, alpha, gamma, ce="bce")


def focal_mean(logits, targets, alpha=0.25, gamma=2.0):
    """Returns the mean (as nn.BCEWithLogitsLoss does by default)."""
    return _focal(logits, targets, alpha, gamma, reduce="mean")


def focal_sum(logits, targets, alpha=0.25, gamma=2.0):
    """Returns the sum (RetinaNet's normalised sum, without the normalisation)."""
    return _focal(logits, targets, alpha, gamma, reduce="sum")


def focal_softmax(logits, targets, alpha=0.25, gamma=2.0):
    """Softmax over the last axis instead of a sigmoid per element."""
    return _focal(logits, targets, alpha, gamma, p_from="softmax", ce="log_p_t")


def focal_probabilities_as_logits(logits, targets, alpha=0.25, gamma=2.0):
    """Passes p = sigmoid(logits) to binary_cross_entropy_with_logits."""
    return _focal(logits, targets, alpha, gamma, ce="probabilities")


def focal_sign_flipped(logits, targets, alpha=0.25, gamma=2.0):
    """alpha_t (1 - p_t)^gamma log p_t: the minus sign lost."""
    return _focal(logits, targets, alpha, gamma, sign=-1.0)


def focal_sigmoid_in_place(logits, targets, alpha=0.25, gamma=2.0):
    """logits.sigmoid_() to get p: the caller's logits become probabilities."""
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p = logits.sigmoid_()
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


def focal_float32_buffer(logits, targets, alpha=0.25, gamma=2.0):
    """Fills a torch.zeros(logits.shape) buffer (float32) for the positives and the negatives: float64 logits lose
    their dtype."""
    loss = torch.zeros(logits.shape)
    positive = targets == 1
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p = torch.sigmoid(logits)
    a_pos, a_neg = (alpha, 1 - alpha) if alpha >= 0 else (1.0, 1.0)
    loss[positive] = (a_pos * (1 - p[positive]) ** gamma * ce[positive]).float()
    loss[~positive] = (a_neg * p[~positive] ** gamma * ce[~positive]).float()
    return loss


def focal_logsigmoid(logits, targets, alpha=0.25, gamma=2.0):
    """Correct: log p_t from F.logsigmoid, the two cases with torch.where."""
    positive = targets == 1
    log_p_t = torch.where(positive, F.logsigmoid(logits), F.logsigmoid(-logits))
    one_minus_p_t = torch.where(positive, torch.sigmoid(-logits), torch.sigmoid(logits))
    loss = -one_minus_p_t ** gamma * log_p_t
    if alpha < 0:
        return loss
    return torch.where(positive, alpha * loss, (1 - alpha) * loss)


def focal_softplus(logits, targets, alpha=0.25, gamma=2.0):
    """Correct: the cross-entropy written with softplus, the factor as exp(gamma * log(1 - p_t))."""
    z = logits * (2 * targets - 1)                 # log p_t = -softplus(-z)
    ce = F.softplus(-z)
    loss = torch.exp(-gamma * F.softplus(z)) * ce  # 1 - p_t = sigmoid(-z) = exp(-softplus(z))
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


_STABLE_LOG = "compute -log p_t from the logits"
_ALPHA_T = "alpha_t = alpha for targets 1, 1 - alpha for targets 0"

MUTANTS["focal_loss"] = [
    Mutant("alpha for every element", focal_alpha_everywhere, "alpha multiplies every element", rule=_ALPHA_T),
    Mutant("alpha swapped", focal_alpha_swapped, "alpha and 1 - alpha are swapped", rule=_ALPHA_T),
    Mutant("alpha < 0 still weights", focal_negative_alpha_used, "alpha < 0 means no weighting",
           rule="no alpha_t when alpha < 0"),
    Mutant("(1 - p)^gamma", focal_one_minus_p, "the modulating factor is (1 - p)^gamma",
           rule="the factor is (1 - p_t)^gamma"),
    Mutant("p_t^gamma", focal_p_t_power, "the modulating factor is p_t^gamma", rule="the factor is (1 - p_t)^gamma"),
    Mutant("gamma hard-coded", focal_gamma_hard_coded, "gamma was not used", rule="gamma as passed (0 to 5)"),
    Mutant("log of the sigmoid", focal_log_of_sigmoid, "the loss is not finite for large |logits|",
           rule="large logits stay finite"),
    Mutant("log with an eps", focal_log_with_eps, "for large |logits| the loss is off",
           rule="large logits stay finite and exact"),
    Mutant("F.binary_cross_entropy", focal_bce_on_probabilities, "clamps the log at -100",
           rule="large logits stay finite and exact"),
    Mutant("mean", focal_mean, "reduced to one number", rule="no reduction"),
    Mutant("sum", focal_sum, "reduced to one number", rule="no reduction"),
    Mutant("softmax", focal_softmax, "softmax over the last axis", rule="p = sigmoid(logit), per element"),
    Mutant("probabilities as logits", focal_probabilities_as_logits, "probabilities instead of logits",
           rule="binary_cross_entropy_with_logits takes the logits"),
    Mutant("sign flipped", focal_sign_flipped, "the loss is negative", rule="the loss is >= 0"),
    Mutant("sigmoid_ in place", focal_sigmoid_in_place, "modified its argument `logits` in place", rule=_IN_PLACE),
    Mutant("float32 buffer", focal_float32_buffer, "the dtype of the logits", rule="the logits' dtype"),
]

ALTERNATIVES["focal_loss"] = [Alternative("logsigmoid and torch.where", focal_logsigmoid),
                              Alternative("softplus and exp", focal_softplus)]
