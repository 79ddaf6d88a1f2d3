"""Grader side of the detection checks: oracles, known mistakes, case builders, visible and hidden specs
(grader copy only).

Oracles are independent float64 NumPy versions written from the conventions (torchvision's BoxCoder,
AnchorGenerator, Matcher and CPU NMS; see the notebook). Each oracle takes a ``variant`` naming a known bug
(corners instead of centres, a missing log or clamp, ratio as w / h, a half-cell offset, >= instead of >...);
the outputs of these variants on a case's inputs go into the case's data with the cause a student must be
told, so the student package names the cause without holding the code that made the mistake. What the
verifiers need beyond that (IoU matrices, the grid centres of the anchors, the order of the scores) is data
too, computed here.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ..checks.core import Call, Case
from . import mistake_outputs
from ._inputs import dtype_of

CLIP = math.log(1000.0 / 16)


def _variants(oracle, bugs) -> list:
    """``(oracle with variant=v, cause)`` for each ``(v, cause)`` of ``bugs``: the known mistakes of an exercise."""
    return [(functools.partial(oracle, variant=variant), cause) for variant, cause in bugs]


def _random_boxes(rng, n, low=0.0, high=60.0, min_size=2.0, max_size=30.0) -> np.ndarray:
    """(n, 4) xyxy boxes with corners in [low, high) and sides in [min_size, max_size)."""
    xy = rng.uniform(low, high, size=(n, 2))
    wh = rng.uniform(min_size, max_size, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of (N, 4) and (M, 4) xyxy boxes in float64; 0 where the union is empty."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    wh = np.clip(np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]), 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


# ------------------------------------------------------------------------------------------------
# Box deltas
# ------------------------------------------------------------------------------------------------
def _parts(boxes: np.ndarray, plus_one: bool = False):
    """Centres and sizes (cx, cy, w, h) of (N, 4) xyxy boxes, each (N,)."""
    w = boxes[:, 2] - boxes[:, 0] + (1.0 if plus_one else 0.0)
    h = boxes[:, 3] - boxes[:, 1] + (1.0 if plus_one else 0.0)
    return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h


def _encode_oracle(anchors, gt, weights, variant: str = "") -> np.ndarray:
    """(N, 4) deltas of (N, 4) gt boxes relative to (N, 4) anchors; ``variant`` names a known bug."""
    a, g = np.asarray(anchors, np.float64), np.asarray(gt, np.float64)
    if variant == "swapped_args":
        a, g = g, a
    wx, wy, ww, wh = (1.0, 1.0, 1.0, 1.0) if variant == "no_weights" else weights
    if variant == "divided_weights":
        wx, wy, ww, wh = 1 / wx, 1 / wy, 1 / ww, 1 / wh
    ax, ay, aw, ah = _parts(a, variant == "plus_one")
    gx, gy, gw, gh = _parts(g, variant == "plus_one")
    if variant == "corners":
        d = (g - a) / np.stack([aw, ah, aw, ah], axis=1)
        return d * np.array([wx, wy, ww, wh])
    if variant == "no_log":
        sw, sh = gw / aw, gh / ah
    elif variant == "no_log_minus_one":
        sw, sh = (gw - aw) / aw, (gh - ah) / ah
    else:
        sw, sh = np.log(gw / aw), np.log(gh / ah)
    return np.stack([wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * sw, wh * sh], axis=1)


def _decode_oracle(anchors, deltas, weights, variant: str = "") -> np.ndarray:
    """(N, 4) xyxy boxes: (N, 4) anchors moved by (N, 4) deltas; ``variant`` names a known bug."""
    a, d = np.asarray(anchors, np.float64), np.asarray(deltas, np.float64)
    wx, wy, ww, wh = (1.0, 1.0, 1.0, 1.0) if variant == "no_weights" else weights
    if variant == "multiplied_weights":
        wx, wy, ww, wh = 1 / wx, 1 / wy, 1 / ww, 1 / wh
    ax, ay, aw, ah = _parts(a, variant == "plus_one")
    if variant == "clamp_before_weights":
        dw, dh = np.minimum(d[:, 2], CLIP) / ww, np.minimum(d[:, 3], CLIP) / wh
    else:
        dw, dh = d[:, 2] / ww, d[:, 3] / wh
        if variant == "clamp_both":
            dw, dh = np.clip(dw, -CLIP, CLIP), np.clip(dh, -CLIP, CLIP)
        elif variant != "no_clamp":
            dw, dh = np.minimum(dw, CLIP), np.minimum(dh, CLIP)
    dx, dy = d[:, 0] / wx, d[:, 1] / wy
    if variant == "corners":
        return a + d / np.array([wx, wy, ww, wh]) * np.stack([aw, ah, aw, ah], axis=1)
    cx, cy = ax + dx * aw, ay + dy * ah
    if variant == "no_exp":
        w, h = aw * dw, ah * dh
    else:
        with np.errstate(over="ignore"):
            w, h = aw * np.exp(dw), ah * np.exp(dh)
    if variant == "cxcywh":
        return np.stack([cx, cy, w, h], axis=1)
    if variant == "plus_one":
        return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w - 1, cy + 0.5 * h - 1], axis=1)
    return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=1)


_ENCODE_BUGS = (
    ("corners", "the deltas were taken between corners (x1, y1, x2, y2); Faster R-CNN's are on centres and "
                "sizes: dx = (gx - ax) / aw with gx, ax the box centres, dw = log(gw / aw)"),
    ("no_log", "dw, dh are the plain ratios gw / aw; they are their logarithms: dw = log(gw / aw)"),
    ("no_log_minus_one", "dw, dh are relative differences (gw - aw) / aw; they are log(gw / aw)"),
    ("no_weights", "the weights were ignored: multiply each delta by its weight (wx, wy, ww, wh)"),
    ("divided_weights", "the deltas were divided by the weights; encoding MULTIPLIES by them (decoding divides)"),
    ("swapped_args", "anchors and ground truth are swapped: the deltas say how to move the ANCHOR onto the "
                     "ground-truth box, relative to the anchor's size"),
    ("plus_one", "widths were computed as x2 - x1 + 1 (the old py-faster-rcnn pixel convention); here a box's "
                 "width is x2 - x1"),
)
_DECODE_BUGS = (
    ("corners", "the deltas were added to the corners; decode on centres and sizes: cx = ax + dx aw, "
                "w = aw exp(dw), then corners cx -/+ w / 2"),
    ("no_exp", "w = aw dw: the size deltas are logarithms, so w = aw exp(dw)"),
    ("no_clamp", "dw, dh were not clamped: clamp them from above at log(1000 / 16) before exp, or a wild "
                 "prediction overflows to inf"),
    ("clamp_both", "dw, dh were clamped from below too; the convention clamps only from above "
                   "(min(dw, log(1000 / 16))): shrinking cannot overflow"),
    ("clamp_before_weights", "the clamp was applied before dividing by the weights; divide first, then clamp "
                             "dw / ww at log(1000 / 16)"),
    ("no_weights", "the weights were ignored: divide each delta by its weight before applying it"),
    ("multiplied_weights", "the deltas were multiplied by the weights; decoding DIVIDES by them (encoding "
                           "multiplies)"),
    ("cxcywh", "the result is (cx, cy, w, h); return corners (x1, y1, x2, y2)"),
    ("plus_one", "the old '+1' pixel convention was used; here a box's width is x2 - x1"),
)


def _weights_of(spec) -> tuple[float, ...]:
    return tuple(float(w) for w in spec.get("weights", (1.0, 1.0, 1.0, 1.0)))


def _describe_weights(spec) -> str:
    return f"weights {_weights_of(spec)}" if "weights" in spec else "default weights (1, 1, 1, 1)"


def _delta_call(first, second, spec, dtype) -> Call:
    """The call on two (N, 4) float64 arrays as ``dtype`` tensors; ``weights`` passed only when the spec sets
    them (the default must be (1, 1, 1, 1))."""
    args = (torch.from_numpy(first).to(dtype), torch.from_numpy(second).to(dtype))
    return Call(*args, weights=_weights_of(spec)) if "weights" in spec else Call(*args)


def _delta_data(oracle, bugs, first, second, spec) -> dict:
    """The expected output (in the case's dtype) and the outputs of the known bugs (float64)."""
    weights = _weights_of(spec)
    return {"expected": torch.from_numpy(oracle(first, second, weights)).to(dtype_of(spec)),
            "mistakes": mistake_outputs(_variants(oracle, bugs), first, second, weights)}


def _encode_cases(specs, reveal):
    for spec in specs:
        rng = np.random.default_rng(spec["seed"])
        n = spec.get("n", 6)
        anchors, gt = _random_boxes(rng, n), _random_boxes(rng, n)
        if spec.get("same"):
            gt = anchors.copy()
        what = "identical boxes (all deltas 0)" if spec.get("same") else "random anchors and boxes"
        yield Case(f"{n} {what}, {_describe_weights(spec)}, {spec.get('dtype', 'float64')}",
                   [_delta_call(anchors, gt, spec, dtype_of(spec))], "encode_boxes",
                   _delta_data(_encode_oracle, _ENCODE_BUGS, anchors, gt, spec), explain="box_deltas",
                   about=spec.get("about", ""))


def _random_deltas(rng, anchors, spec):
    """(N, 4) random deltas, some size deltas set to ``spec['extreme']`` (times their weight)."""
    n, weights = len(anchors), _weights_of(spec)
    deltas = rng.normal(size=(n, 4)) * 0.5 * np.array(weights)
    for i, value in enumerate(spec.get("extreme", ())):
        deltas[i % n, 2 + i % 2] = value * weights[2 + i % 2]
    what = "random deltas" + (f", some dw/dh far outside +-log(1000/16) ({spec['extreme']})"
                              if spec.get("extreme") else "")
    return deltas, what


def _round_trip_deltas(rng, anchors, spec):
    """The deltas of random boxes: decoding them must give the boxes back."""
    deltas = _encode_oracle(anchors, _random_boxes(rng, len(anchors)), _weights_of(spec))
    return deltas, "round trip: deltas from encoding known boxes must decode to them"


_DECODE_KINDS = {"random": _random_deltas, "round_trip": _round_trip_deltas}


def _decode_cases(specs, reveal):
    for spec in specs:
        rng = np.random.default_rng(spec["seed"])
        n = spec.get("n", 6)
        anchors = _random_boxes(rng, n)
        deltas, what = _DECODE_KINDS[spec.get("kind", "random")](rng, anchors, spec)
        yield Case(f"{n} anchors, {what}, {_describe_weights(spec)}, {spec.get('dtype', 'float64')}",
                   [_delta_call(anchors, deltas, spec, dtype_of(spec))], "decode_boxes",
                   _delta_data(_decode_oracle, _DECODE_BUGS, anchors, deltas, spec), explain="box_deltas",
                   about=spec.get("about", ""))


# ------------------------------------------------------------------------------------------------
# generate_anchors
# ------------------------------------------------------------------------------------------------
def _anchors_oracle(feature_size, stride, sizes, ratios, variant: str = "") -> np.ndarray:
    """Anchors in float64 NumPy (torchvision's convention); ``variant`` names a known bug."""
    height, width = feature_size
    sizes, ratios = np.asarray(sizes, np.float64), np.asarray(ratios, np.float64)
    h_ratios = np.sqrt(ratios)
    if variant == "ratio_wh":
        h_ratios = 1 / h_ratios
    w_ratios = 1 / h_ratios
    if variant == "no_sqrt":
        h_ratios, w_ratios = ratios, 1 / ratios
    if variant == "size_major":
        ws, hs = (sizes[:, None] * w_ratios[None, :]).ravel(), (sizes[:, None] * h_ratios[None, :]).ravel()
    else:
        ws, hs = (w_ratios[:, None] * sizes[None, :]).ravel(), (h_ratios[:, None] * sizes[None, :]).ravel()
    half = 1.0 if variant == "no_half" else 0.5
    cell = np.stack([-ws, -hs, ws, hs], axis=1) * half
    if variant == "half_up":
        cell = np.floor(cell + 0.5)
    elif variant != "not_rounded":
        cell = np.round(cell)
    step = 1.0 if variant == "no_stride" else float(stride)
    offset = 0.5 * stride if variant == "half_cell" else 0.0
    ys, xs = np.arange(height) * step + offset, np.arange(width) * step + offset
    if variant == "xy_swapped":
        xx, yy = np.meshgrid(xs, ys, indexing="ij")        # x outer, y inner
    else:
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
    shifts = np.stack([xx, yy, xx, yy], axis=-1).reshape(-1, 1, 4)
    anchors = shifts + cell[None]
    if variant == "location_minor":
        anchors = anchors.transpose(1, 0, 2)               # all locations of anchor 0, then anchor 1...
    return anchors.reshape(-1, 4)


_ANCHOR_BUGS = (
    ("ratio_wh", "the aspect ratio was taken as w / h; the convention is ratio = h / w: h = size sqrt(ratio), "
                 "w = size / sqrt(ratio) (ratio 2 means tall)"),
    ("size_major", "inside a location the anchors are in size-major order (for each size, every ratio); the "
                   "convention is ratio-major: for each ratio, every size (a = r * len(sizes) + s)"),
    ("half_cell", "the anchors are shifted by half a cell: the convention puts location (x, y) at "
                  "(x * stride, y * stride), no + stride / 2"),
    ("no_stride", "the grid shifts were not multiplied by the stride: location (x, y) sits at "
                  "(x * stride, y * stride) in IMAGE pixels"),
    ("not_rounded", "the cell anchors [-w, -h, w, h] / 2 were not rounded; the convention rounds them (torch.round) "
                    "before adding the shifts"),
    ("half_up", "halves were rounded up (floor(x + 0.5)); torch.round sends them to the even integer "
                "(12.5 -> 12, -12.5 -> -12), which keeps the cell anchor symmetric about its centre"),
    ("xy_swapped", "the locations are in column-major order (x outer, y inner); the index is (y * W + x) * A + a: "
                   "rows outer (meshgrid with indexing='ij' over (ys, xs))"),
    ("location_minor", "the anchors are grouped by anchor type (all locations of anchor 0 first); the A anchors of "
                       "one location must be consecutive: index (y * W + x) * A + a"),
    ("no_half", "the anchors are twice too large: the cell anchor is [-w, -h, w, h] / 2 (half the size on each "
                "side of the centre)"),
    ("no_sqrt", "h = size * ratio and w = size / ratio changes the area; take square roots (h = size sqrt(ratio), "
                "w = size / sqrt(ratio)) so that every anchor has area about size^2"),
)


def _anchor_cases(specs, reveal):
    for spec in specs:
        feature_size, stride = tuple(spec["feature_size"]), spec["stride"]
        sizes, ratios = tuple(spec["sizes"]), tuple(spec["ratios"])
        args = (feature_size, stride, sizes, ratios)
        height, width = feature_size
        yy, xx = np.meshgrid(np.arange(height) * stride, np.arange(width) * stride, indexing="ij")
        data = {"expected": torch.from_numpy(_anchors_oracle(*args)),
                "mistakes": mistake_outputs(_variants(_anchors_oracle, _ANCHOR_BUGS), *args),
                # what the property messages compare with: the H W grid centres (x, y) and, per anchor of a
                # location, its (ratio, size) in the ratio-major order
                "grid": (height, width, len(sizes) * len(ratios)),
                "centres": np.stack([xx, yy], axis=-1).reshape(-1, 2).astype(np.float64),
                "cell_shapes": [(float(r), float(s)) for r in ratios for s in sizes]}
        yield Case(f"feature_size {feature_size}, stride {stride}, sizes {sizes}, ratios {ratios}", [Call(*args)],
                   "generate_anchors", data, about=spec.get("about", ""))


# ------------------------------------------------------------------------------------------------
# label_anchors
# ------------------------------------------------------------------------------------------------
def _labels_oracle(anchors, gt, high, low, allow_low_quality, variant: str = ""):
    """(labels, matched) in NumPy; ``variant`` names a known bug."""
    n = len(anchors)
    if len(gt) == 0:
        return np.zeros(n, np.int64), np.full(n, -1, np.int64)
    iou = _iou_matrix(np.asarray(gt, np.float64), np.asarray(anchors, np.float64))   # (G, N)
    best, matched = iou.max(0), iou.argmax(0)
    neg, ign = (-1, 0) if variant == "swapped_values" else (0, -1)
    labels = np.full(n, ign, np.int64)
    labels[(best <= low) if variant == "low_inclusive" else (best < low)] = neg
    labels[(best > high) if variant == "strict_high" else (best >= high)] = 1
    if (allow_low_quality or variant == "flag_ignored") and variant != "no_low_quality":
        per_gt = iou.max(1, keepdims=True)
        if variant == "argmax_only":
            labels[iou.argmax(1)[per_gt[:, 0] > 0]] = 1
        else:
            ties = iou == per_gt
            if variant != "zero_iou_trap":
                ties &= per_gt > 0
            labels[ties.any(0)] = 1
            if variant == "matched_to_own_gt":
                for g, i in zip(*np.nonzero(ties)):
                    matched[i] = g
    return labels, matched


_LABEL_BUGS = (
    ("zero_iou_trap", "a ground-truth box that overlaps NO anchor has best IoU 0, and every anchor 'ties' with it at "
                      "0: only ground truths with best IoU > 0 may add low-quality positives"),
    ("no_low_quality", "the low-quality matches are missing: with allow_low_quality=True every anchor whose IoU "
                       "equals a ground truth's best IoU (ties included) is positive, even below `high`"),
    ("argmax_only", "only one anchor per ground truth got the low-quality match (argmax); every anchor that TIES "
                    "for a ground truth's best IoU must be positive"),
    ("flag_ignored", "low-quality matches were added although allow_low_quality=False"),
    ("strict_high", "an anchor with IoU exactly `high` must be positive (IoU >= high), not ignored"),
    ("low_inclusive", "an anchor with IoU exactly `low` is ignored (low <= IoU < high), not negative"),
    ("swapped_values", "the label values are swapped: 1 positive, 0 negative (background), -1 ignored"),
)


_OWN_GT = ("a low-quality positive keeps its own best box (the highest IoU over the boxes), not the box for which "
           "it was the best anchor: matched = IoU argmax over the boxes")


def _label_part(variant: str, part: int):
    """The labels (part 0) or matched boxes (part 1) of the ``variant`` bug, as a mistake of its own."""
    return lambda *args: _labels_oracle(*args, variant=variant)[part]


def _random_labels_input(spec):
    rng = np.random.default_rng(spec["seed"])
    anchors = _anchors_oracle(tuple(spec.get("grid", (4, 4))), spec.get("stride", 16), (24, 40), (0.5, 1.0, 2.0))
    k = spec.get("gt", 3)
    centres = rng.uniform(4, 60, size=(k, 2))
    sizes = rng.uniform(12, 48, size=(k, 2))
    gt = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    if spec.get("integer"):
        gt = np.round(gt)
    return anchors, gt, f"{len(anchors)} grid anchors, {k} random boxes"


def _thresholds_input(spec):
    """IoU exactly 0.5 and exactly 0.25 with the box."""
    anchors = np.array([[0, 0, 4, 4], [0, 0, 4, 2], [0, 0, 4, 1], [0, 0, 1, 4], [20, 20, 24, 24],
                        [0, 0, 2, 4]], np.float64)
    gt = np.array([[0, 0, 4, 4]], np.float64)
    return anchors, gt, "IoU exactly equal to high (0.5) and to low (0.25)"


def _ties_input(spec):
    """Two anchors tie for the first box's best IoU (0.25), below low."""
    anchors = np.array([[0, 0, 4, 4], [4, 0, 8, 4], [2, -6, 6, -2], [20, 20, 24, 24], [0, 4, 4, 8]], np.float64)
    gt = np.array([[2, 0, 6, 2], [22, 22, 26, 26]], np.float64)
    return anchors, gt, "anchors tying for a box's best IoU, all below `low`"


def _far_gt_input(spec):
    """The second box overlaps no anchor."""
    anchors = _anchors_oracle((3, 3), 16, (16,), (1.0,))
    gt = np.array([[8, 8, 30, 28], [200, 200, 220, 230]], np.float64)
    return anchors, gt, "one box overlaps no anchor at all"


def _cross_input(spec):
    """Anchor 1 is box 0's best anchor but has a higher IoU with box 1."""
    anchors = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [20, 0, 30, 10], [40, 0, 50, 10]], np.float64)
    gt = np.array([[18, 4, 20, 6], [16, 0, 26, 10]], np.float64)
    return anchors, gt, "an anchor that is one box's best match but overlaps another box more"


def _empty_labels_input(spec):
    return _anchors_oracle((2, 2), 16, (16,), (1.0,)), np.zeros((0, 4)), "no ground-truth boxes"


_LABEL_INPUTS = {"random": _random_labels_input, "thresholds": _thresholds_input, "ties": _ties_input,
                 "far_gt": _far_gt_input, "cross": _cross_input, "empty": _empty_labels_input}


def _label_cases(specs, reveal):
    for spec in specs:
        anchors, gt, what = _LABEL_INPUTS[spec.get("kind", "random")](spec)
        dtype = dtype_of(spec)
        high, low = spec.get("high", 0.7), spec.get("low", 0.3)
        allow = spec.get("allow_low_quality", True)
        kwargs = {"high": high, "low": low} if "high" in spec or "low" in spec else {}
        if "allow_low_quality" in spec:
            kwargs["allow_low_quality"] = allow
        args = (anchors, gt, high, low, allow)
        labels, matched = _labels_oracle(*args)
        data = {"labels": labels, "matched": matched,
                "mistakes": mistake_outputs([(_label_part(v, 0), cause) for v, cause in _LABEL_BUGS], *args),
                "matched_mistakes": mistake_outputs([(_label_part("matched_to_own_gt", 1), _OWN_GT)], *args),
                # shown next to the first wrong label: the anchor and its IoU with each box, (G, N)
                "anchors": anchors, "iou": _iou_matrix(np.asarray(gt, np.float64), anchors)}
        call = Call(torch.from_numpy(anchors).to(dtype), torch.from_numpy(gt).to(dtype), **kwargs)
        yield Case(f"{what}; high {high}, low {low}, allow_low_quality {allow}, {spec.get('dtype', 'float64')}",
                   [call], "label_anchors", data, about=spec.get("about", ""))


# ------------------------------------------------------------------------------------------------
# nms
# ------------------------------------------------------------------------------------------------
def _nms_oracle(iou, scores, threshold, variant: str = "") -> np.ndarray:
    """Greedy NMS from the (N, N) IoU matrix and (N,) scores: (K,) kept indices; ``variant`` names a known bug."""
    scores = np.asarray(scores, np.float64)
    if variant == "unsorted":
        order = np.arange(len(scores))
    elif variant == "ascending":
        order = np.argsort(scores, kind="stable")
    else:
        order = np.argsort(-scores, kind="stable")
    keep, removed = [], np.zeros(len(scores), bool)
    for rank, i in enumerate(order):
        if variant == "against_all":
            if (iou[i, order[:rank]] > threshold).any():
                continue
        elif removed[i]:
            continue
        keep.append(int(i))
        removed |= (iou[i] >= threshold) if variant == "greater_equal" else (iou[i] > threshold)
    keep = np.asarray(keep, np.int64)
    return np.sort(keep) if variant == "index_order" else keep


_NMS_BUGS = (
    ("greater_equal", "a box whose IoU equals the threshold was suppressed: suppress only when IoU > threshold "
                      "(strictly)"),
    ("unsorted", "the boxes were processed in input order; sort by decreasing score first"),
    ("ascending", "the boxes were processed from the LOWEST score; sort by decreasing score"),
    ("against_all", "a box was suppressed by a box that had itself been suppressed: compare only with the boxes "
                    "KEPT so far"),
    ("index_order", "the kept indices are in index order; return them by decreasing score"),
)


def _chain_input(spec):
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10], [40, 40, 50, 50]], np.float64)
    return boxes, np.array([0.9, 0.8, 0.7, 0.6]), "a chain: A overlaps B, B overlaps C, A does not touch C"


def _exact_input(spec):
    boxes = np.array([[0, 0, 4, 4], [0, 0, 4, 2], [0, 0, 4, 3], [10, 10, 14, 14]], np.float64)
    return boxes, np.array([0.9, 0.8, 0.3, 0.5]), "IoU exactly equal to the threshold (0.5)"


def _empty_nms_input(spec):
    return np.zeros((0, 4)), np.zeros(0), "no boxes"


def _clusters_input(spec):
    """Jittered copies of a few random boxes, shuffled; random scores (or few distinct ones with ``ties``)."""
    rng = np.random.default_rng(spec["seed"])
    n_clusters, per = spec.get("clusters", 4), spec.get("per", 6)
    base = _random_boxes(rng, n_clusters, 0, 80, 8, 30)
    boxes = np.repeat(base, per, axis=0) + rng.normal(scale=spec.get("jitter", 2.5), size=(n_clusters * per, 4))
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    boxes = boxes[rng.permutation(len(boxes))]
    if spec.get("ties"):
        scores = rng.integers(1, 4, size=len(boxes)) / 4.0
    else:
        scores = rng.random(len(boxes))
    what = f"{len(boxes)} boxes in {n_clusters} clusters" + (", many equal scores" if spec.get("ties") else "")
    return boxes, scores, what


_NMS_INPUTS = {"chain": _chain_input, "exact": _exact_input, "empty": _empty_nms_input, "clusters": _clusters_input}


def _nms_cases(specs, reveal):
    for spec in specs:
        boxes, scores, what = _NMS_INPUTS[spec.get("kind", "clusters")](spec)
        threshold, dtype = spec.get("threshold", 0.5), dtype_of(spec)
        iou = _iou_matrix(boxes, boxes)
        data = {"expected": _nms_oracle(iou, scores, threshold),
                "mistakes": mistake_outputs(_variants(_nms_oracle, _NMS_BUGS), iou, scores, threshold),
                # what explains a failure: which kept box overlaps which, in the order of decreasing score
                "iou": iou, "scores": scores, "order": np.argsort(-scores, kind="stable"), "threshold": threshold}
        call = Call(torch.from_numpy(boxes).to(dtype), torch.from_numpy(scores).to(dtype), threshold)
        yield Case(f"{what}, IoU threshold {threshold}, {spec.get('dtype', 'float64')}", [call], "nms", data,
                   about=spec.get("about", ""))


BUILDERS = {
    "encode_boxes": _encode_cases,
    "decode_boxes": _decode_cases,
    "generate_anchors": _anchor_cases,
    "label_anchors": _label_cases,
    "nms": _nms_cases,
}

VISIBLE = {
    "encode_boxes": [
        {"seed": 1, "n": 5},
        {"seed": 2, "n": 4, "same": True},
        {"seed": 3, "n": 6, "weights": (10.0, 10.0, 5.0, 5.0)},
        {"seed": 4, "n": 7, "dtype": "float32", "weights": (2.0, 3.0, 1.0, 0.5)},
    ],
    "decode_boxes": [
        {"seed": 11, "n": 5},
        {"seed": 12, "n": 6, "kind": "round_trip"},
        {"seed": 13, "n": 6, "kind": "round_trip", "weights": (10.0, 10.0, 5.0, 5.0)},
        {"seed": 14, "n": 4, "extreme": (9.0, -9.0), "dtype": "float32"},
        {"seed": 15, "n": 4, "extreme": (6.0, 5.0), "weights": (10.0, 10.0, 5.0, 5.0)},
    ],
    "generate_anchors": [
        {"feature_size": (2, 2), "stride": 16, "sizes": (32,), "ratios": (1.0,)},
        {"feature_size": (2, 3), "stride": 8, "sizes": (16,), "ratios": (1.0,)},
        {"feature_size": (1, 1), "stride": 16, "sizes": (32,), "ratios": (0.5, 1.0, 2.0)},
        {"feature_size": (3, 2), "stride": 8, "sizes": (12, 20), "ratios": (0.5, 2.0)},
        {"feature_size": (4, 5), "stride": 16, "sizes": (25, 40, 63), "ratios": (0.5, 1.0, 2.0)},
    ],
    "label_anchors": [
        {"kind": "random", "seed": 41},
        {"kind": "thresholds", "high": 0.5, "low": 0.25, "allow_low_quality": False},
        {"kind": "ties"},
        {"kind": "far_gt"},
        {"kind": "cross", "high": 0.7, "low": 0.3},
        {"kind": "random", "seed": 42, "allow_low_quality": False, "high": 0.5, "low": 0.4, "dtype": "float32"},
        {"kind": "empty"},
    ],
    "nms": [
        {"kind": "chain", "threshold": 0.3},
        {"kind": "exact", "threshold": 0.5},
        {"kind": "clusters", "seed": 51},
        {"kind": "clusters", "seed": 52, "ties": True, "threshold": 0.4, "dtype": "float32"},
        {"kind": "clusters", "seed": 53, "clusters": 6, "per": 10, "threshold": 0.7},
        {"kind": "empty"},
    ],
}

# Hidden specs: other sizes, weights, grids, thresholds and seeds. ``about`` is what the feedback may show.
SPECS = {
    "encode_boxes": [
        {"seed": 101, "n": 9, "about": "random boxes"},
        {"seed": 102, "n": 5, "weights": (10.0, 10.0, 5.0, 5.0), "dtype": "float32",
         "about": "RoI-head weights, float32"},
        {"seed": 103, "n": 1, "weights": (0.5, 4.0, 2.0, 3.0), "about": "one box, unequal weights"},
        {"seed": 104, "n": 0, "about": "no boxes"},
        {"seed": 105, "n": 6, "same": True, "dtype": "float32", "about": "identical boxes (all deltas 0), float32"},
    ],
    "decode_boxes": [
        {"seed": 111, "n": 8, "about": "random deltas"},
        {"seed": 112, "n": 7, "kind": "round_trip", "weights": (2.0, 3.0, 0.5, 4.0),
         "about": "round trip, unequal weights"},
        {"seed": 113, "n": 5, "extreme": (12.0, -12.0, 4.5), "weights": (10.0, 10.0, 5.0, 5.0),
         "about": "extreme size deltas with weights"},
        {"seed": 114, "n": 6, "extreme": (7.0, -7.0), "about": "extreme size deltas"},
        {"seed": 115, "n": 0, "about": "no boxes"},
        {"seed": 116, "n": 6, "dtype": "float32", "weights": (2.0, 3.0, 0.5, 4.0), "about": "float32, unequal weights"},
    ],
    "generate_anchors": [
        {"feature_size": (3, 5), "stride": 32, "sizes": (64, 90), "ratios": (1.0,), "about": "wide grid, two sizes"},
        {"feature_size": (5, 2), "stride": 4, "sizes": (15,), "ratios": (0.5, 1.0, 2.0),
         "about": "tall grid, odd size"},
        {"feature_size": (1, 4), "stride": 64, "sizes": (128, 256, 512), "ratios": (0.25, 4.0),
         "about": "one row, extreme ratios"},
        {"feature_size": (6, 7), "stride": 8, "sizes": (21, 33), "ratios": (0.5, 1.0, 2.0, 3.0),
         "about": "FPN-like level, four ratios"},
        {"feature_size": (1, 1), "stride": 16, "sizes": (37,), "ratios": (1.5,), "about": "one anchor"},
    ],
    "label_anchors": [
        {"kind": "random", "seed": 141, "gt": 5, "grid": (5, 3), "about": "random boxes"},
        {"kind": "random", "seed": 142, "gt": 2, "integer": True, "high": 0.6, "low": 0.2,
         "about": "other thresholds"},
        {"kind": "thresholds", "high": 0.5, "low": 0.25, "about": "IoU exactly at the thresholds"},
        {"kind": "ties", "dtype": "float32", "about": "ties for a box's best IoU, float32"},
        {"kind": "far_gt", "allow_low_quality": True, "about": "a box overlapping no anchor"},
        {"kind": "cross", "high": 0.7, "low": 0.3, "dtype": "float32",
         "about": "an anchor best for one box, closer to another"},
        {"kind": "random", "seed": 143, "allow_low_quality": False, "about": "without low-quality matches"},
        {"kind": "empty", "dtype": "float32", "about": "no boxes, float32"},
    ],
    "nms": [
        {"kind": "clusters", "seed": 151, "clusters": 5, "per": 8, "about": "clusters"},
        {"kind": "clusters", "seed": 152, "ties": True, "threshold": 0.5, "about": "equal scores"},
        {"kind": "chain", "threshold": 0.3, "dtype": "float32", "about": "a chain of overlaps, float32"},
        {"kind": "exact", "threshold": 0.5, "dtype": "float32", "about": "IoU exactly at the threshold"},
        {"kind": "clusters", "seed": 153, "clusters": 3, "per": 4, "threshold": 0.0,
         "about": "threshold 0: any overlap suppresses"},
        {"kind": "clusters", "seed": 154, "clusters": 20, "per": 50, "threshold": 0.5, "jitter": 4.0,
         "about": "1,000 boxes"},
        {"kind": "empty", "dtype": "float32", "about": "no boxes"},
    ],
}
