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


_RCNN_DEFAULT = ("the default weights are (1, 1, 1, 1) (the RPN's); (10, 10, 5, 5) are the RoI heads' weights, "
                 "passed explicitly when wanted")


def _delta_data(oracle, bugs, first, second, spec) -> dict:
    """The expected output (in the case's dtype) and the outputs of the known bugs (float64); where the call
    passes no weights, also the output of a default of (10, 10, 5, 5)."""
    weights = _weights_of(spec)
    mistakes = mistake_outputs(_variants(oracle, bugs), first, second, weights)
    if "weights" not in spec:
        mistakes += mistake_outputs([(oracle, _RCNN_DEFAULT)], first, second, (10.0, 10.0, 5.0, 5.0))
    return {"expected": torch.from_numpy(oracle(first, second, weights)).to(dtype_of(spec)), "mistakes": mistakes}


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
    if variant == "hw_swapped":
        height, width = width, height
    half = 1.0 if variant == "no_half" else 0.5
    cell = np.stack([-ws, -hs, ws, hs], axis=1) * half
    if variant == "half_up":
        cell = np.floor(cell + 0.5)
    elif variant == "truncated":
        cell = np.trunc(cell)
    elif variant != "not_rounded":
        cell = np.round(cell)
    step = 1.0 if variant == "no_stride" else float(stride)
    offset = {"half_cell": 0.5 * stride, "from_one": float(stride)}.get(variant, 0.0)
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
    ("truncated", "the cell anchors were truncated towards zero (int(), .long(), .int()): round them with "
                  "torch.round (12.7 -> 13, halves to the even integer)"),
    ("hw_swapped", "feature_size is (H, W), height first: the grid has H rows (y) and W columns (x)"),
    ("from_one", "the locations are numbered from 1: location (0, 0) sits at (0, 0) in image pixels, location "
                 "(x, y) at (x * stride, y * stride)"),
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
        return np.full(n, -1 if variant == "empty_ignored" else 0, np.int64), np.full(n, -1, np.int64)
    iou = _iou_matrix(np.asarray(gt, np.float64), np.asarray(anchors, np.float64))   # (G, N)
    best, matched = iou.max(0), iou.argmax(0)
    if variant == "last_on_ties":
        matched = len(gt) - 1 - iou[::-1].argmax(0)
    neg, ign = (-1, 0) if variant == "swapped_values" else (0, -1)
    labels = np.full(n, ign, np.int64)
    if variant == "low_quality_first":        # the thresholds applied after the low-quality step overwrite it
        labels = _labels_oracle(anchors, gt, high, low, allow_low_quality)[0]
        labels[best < low], labels[best >= high] = 0, 1
        return labels, matched
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
    ("low_quality_first", "the low-quality positives were set first and the thresholds then overwrote them: apply "
                          "the thresholds first, the low-quality matches last"),
    ("empty_ignored", "without ground-truth boxes every anchor is negative (label 0), not ignored, and matched is "
                      "all -1"),
)


_OWN_GT = ("a low-quality positive keeps its own best box (the highest IoU over the boxes), not the box for which "
           "it was the best anchor: matched = IoU argmax over the boxes")
_LAST_ON_TIES = ("an anchor with the same IoU with two boxes was matched to the later one: matched is the first "
                 "box on ties (argmax; in a loop, replace the best only when IoU > best, not >=)")


def _merge_equal(mistakes: list) -> list:
    """Known mistakes whose outputs coincide on a case become one entry naming each cause: either may be the
    student's (the low-quality step missing and overwritten by the thresholds look alike when every low-quality
    positive is below `low`)."""
    merged: list = []
    for output, cause in mistakes:
        same = next((k for k, (o, _) in enumerate(merged) if np.array_equal(o, output)), None)
        if same is None:
            merged.append((output, cause))
        else:
            merged[same] = (merged[same][0], f"{merged[same][1]}; or: {cause}")
    return merged


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


def _box_ties_input(spec):
    """Anchors with the same IoU (>= high, or the best for a box) with two boxes: matched is the first box."""
    # anchor 0 ties two boxes at 0.75 (neither's best anchor: anchors 4 and 5 are the boxes themselves); anchor 1
    # ties boxes 2 and 3 at 0.5, a low-quality positive for both
    anchors = np.array([[0, 0, 4, 4], [10, 0, 14, 4], [30, 30, 34, 34], [20, 0, 24, 4], [0, 0, 4, 3], [0, 1, 4, 4]],
                       np.float64)
    gt = np.array([[0, 0, 4, 3], [0, 1, 4, 4], [10, 0, 12, 4], [12, 0, 14, 4], [21, 0, 25, 4]], np.float64)
    return anchors, gt, "anchors with the same IoU with two boxes"


def _empty_labels_input(spec):
    return _anchors_oracle((2, 2), 16, (16,), (1.0,)), np.zeros((0, 4)), "no ground-truth boxes"


_LABEL_INPUTS = {"random": _random_labels_input, "thresholds": _thresholds_input, "ties": _ties_input,
                 "far_gt": _far_gt_input, "cross": _cross_input, "box_ties": _box_ties_input,
                 "empty": _empty_labels_input}


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
                "mistakes": _merge_equal(mistake_outputs([(_label_part(v, 0), c) for v, c in _LABEL_BUGS], *args)),
                "matched_mistakes": mistake_outputs([(_label_part("matched_to_own_gt", 1), _OWN_GT),
                                                     (_label_part("last_on_ties", 1), _LAST_ON_TIES)], *args),
                # shown next to the first wrong label: the anchor and its IoU with each box, (G, N)
                "anchors": anchors, "iou": _iou_matrix(np.asarray(gt, np.float64), anchors)}
        call = Call(torch.from_numpy(anchors).to(dtype), torch.from_numpy(gt).to(dtype), **kwargs)
        yield Case(f"{what}; high {high}, low {low}, allow_low_quality {allow}, {spec.get('dtype', 'float64')}",
                   [call], "label_anchors", data, explain="label_anchors", about=spec.get("about", ""))


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
    if variant == "positions":                       # ranks in the sorted order instead of input indices
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        return rank[keep]
    return np.sort(keep) if variant == "index_order" else keep


_NMS_BUGS = (
    ("greater_equal", "a box whose IoU equals the threshold was suppressed: suppress only when IoU > threshold "
                      "(strictly)"),
    ("unsorted", "the boxes were processed in input order; sort by decreasing score first"),
    ("ascending", "the boxes were processed from the LOWEST score; sort by decreasing score"),
    ("against_all", "a box was suppressed by a box that had itself been suppressed: compare only with the boxes "
                    "KEPT so far"),
    ("index_order", "the kept indices are in index order; return them by decreasing score"),
    ("positions", "the kept positions in the SORTED order were returned; return the input indices of the kept "
                  "boxes (order[keep])"),
)
_PLUS_ONE = ("the IoU uses the old '+1' pixel convention (width x2 - x1 + 1); here a box's width is x2 - x1 "
             "(use box_iou)")
_FLOAT_THRESHOLD = ("a box whose float32 IoU equals the threshold (up to float32 rounding) was decided otherwise "
                    "than torchvision decides it: compute the IoU in the dtype of the boxes (what box_iou returns) "
                    "and compare it with the threshold in float64, iou.double() > iou_threshold; `iou > "
                    "iou_threshold` on a float32 tensor rounds the threshold to float32 first, and an IoU computed "
                    "from float64 boxes is not the float32 one")


def _iou_in(boxes: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """(N, N) IoU of the boxes computed in ``dtype`` (float32 boxes: float32 arithmetic, as box_iou and
    torchvision's kernel do), as float64: the values the threshold is compared with."""
    b = boxes.astype(np.float32) if dtype == torch.float32 else boxes.astype(np.float64)
    return _iou_matrix(b, b).astype(np.float64)


def _iou_plus_one(boxes: np.ndarray) -> np.ndarray:
    """(N, N) IoU with py-faster-rcnn's "+1" widths, float64."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    w = np.clip(np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None]) + 1, 0, None)
    h = np.clip(np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None]) + 1, 0, None)
    return w * h / (areas[:, None] + areas[None] - w * h)


def _nms_mistakes(boxes, iou, scores, threshold, dtype) -> list:
    """(output, cause) of the known NMS mistakes; with float32 boxes also a float32 comparison and an IoU
    computed in float64 (both keep a box whose float32 IoU is exactly at the threshold)."""
    mistakes = mistake_outputs(_variants(_nms_oracle, _NMS_BUGS), iou, scores, threshold)
    mistakes += mistake_outputs([(_nms_oracle, _PLUS_ONE)], _iou_plus_one(boxes), scores, threshold)
    if dtype == torch.float32:
        mistakes += mistake_outputs([(_nms_oracle, _FLOAT_THRESHOLD)], iou, scores, float(np.float32(threshold)))
        mistakes += mistake_outputs([(_nms_oracle, _FLOAT_THRESHOLD)], _iou_in(boxes, torch.float64), scores,
                                    threshold)
    return mistakes


def _chain_input(spec):
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10], [40, 40, 50, 50]], np.float64)
    return boxes, np.array([0.9, 0.8, 0.7, 0.6]), "a chain: A overlaps B, B overlaps C, A does not touch C"


def _exact_input(spec):
    boxes = np.array([[0, 0, 4, 4], [0, 0, 4, 2], [0, 0, 4, 3], [10, 10, 14, 14]], np.float64)
    return boxes, np.array([0.9, 0.8, 0.3, 0.5]), "IoU exactly equal to the threshold (0.5)"


def _float_threshold_input(spec):
    """Two pairs with IoU exactly ``threshold`` (10 * threshold an integer): in float32 the IoU rounds to
    float32(threshold), above the float64 threshold for 0.3, 0.4, 0.6, so torchvision suppresses them."""
    t = round(10 * spec["threshold"])
    boxes = np.array([[0, 0, 10, 10], [0, 0, t, 10], [20, 20, 30, 20 + t], [20, 20, 30, 30], [50, 0, 60, 10]],
                     np.float64)
    return boxes, np.array([0.9, 0.8, 0.7, 0.6, 0.5]), "two pairs with IoU exactly the threshold"


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


_NMS_INPUTS = {"chain": _chain_input, "exact": _exact_input, "float_threshold": _float_threshold_input,
               "empty": _empty_nms_input, "clusters": _clusters_input}


def _nms_cases(specs, reveal):
    for spec in specs:
        boxes, scores, what = _NMS_INPUTS[spec.get("kind", "clusters")](spec)
        threshold, dtype = spec.get("threshold", 0.5), dtype_of(spec)
        scores = torch.from_numpy(scores).to(dtype).double().numpy()   # the values the student's function sees
        iou = _iou_in(boxes, dtype)                                      # compared with the threshold in float64
        data = {"expected": _nms_oracle(iou, scores, threshold),
                "mistakes": _nms_mistakes(boxes, iou, scores, threshold, dtype),
                # what explains a failure: which kept box overlaps which, in the order of decreasing score
                "iou": iou, "scores": scores, "order": np.argsort(-scores, kind="stable"), "threshold": threshold}
        call = Call(torch.from_numpy(boxes).to(dtype), torch.from_numpy(scores).to(dtype), threshold)
        yield Case(f"{what}, IoU threshold {threshold}, {spec.get('dtype', 'float64')}", [call], "nms", data,
                   explain="nms", about=spec.get("about", ""))


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
        {"kind": "box_ties", "high": 0.7, "low": 0.3},
        {"kind": "random", "seed": 42, "allow_low_quality": False, "high": 0.5, "low": 0.4, "dtype": "float32"},
        {"kind": "empty"},
    ],
    "nms": [
        {"kind": "chain", "threshold": 0.3},
        {"kind": "exact", "threshold": 0.5},
        {"kind": "float_threshold", "threshold": 0.4, "dtype": "float32"},
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
        {"kind": "box_ties", "high": 0.7, "low": 0.3, "dtype": "float32", "about": "an anchor tying two boxes"},
        {"kind": "empty", "dtype": "float32", "about": "no boxes, float32"},
    ],
    "nms": [
        {"kind": "clusters", "seed": 151, "clusters": 5, "per": 8, "about": "clusters"},
        {"kind": "clusters", "seed": 152, "ties": True, "threshold": 0.5, "about": "equal scores"},
        {"kind": "chain", "threshold": 0.3, "dtype": "float32", "about": "a chain of overlaps, float32"},
        {"kind": "exact", "threshold": 0.5, "dtype": "float32", "about": "IoU exactly at the threshold"},
        {"kind": "float_threshold", "threshold": 0.3, "dtype": "float32",
         "about": "a float32 IoU exactly at the threshold"},
        {"kind": "clusters", "seed": 153, "clusters": 3, "per": 4, "threshold": 0.0,
         "about": "threshold 0: any overlap suppresses"},
        {"kind": "clusters", "seed": 154, "clusters": 20, "per": 50, "threshold": 0.5, "jitter": 4.0,
         "about": "1,000 boxes"},
        {"kind": "empty", "dtype": "float32", "about": "no boxes"},
    ],
}


# ------------------------------------------------------------------------------------------------
# rpn_proposals
# ------------------------------------------------------------------------------------------------
def _clip(boxes: np.ndarray, height: float, width: float) -> np.ndarray:
    return np.stack([np.clip(boxes[:, 0], 0, width), np.clip(boxes[:, 1], 0, height),
                     np.clip(boxes[:, 2], 0, width), np.clip(boxes[:, 3], 0, height)], axis=1)


def _stable_top(obj: np.ndarray, k: int, variant: str) -> np.ndarray:
    """Indices of the k largest values, equal values in index order (``ties_last``: in reverse index order)."""
    if variant == "ties_last":
        order = len(obj) - 1 - np.argsort(-obj[::-1], kind="stable")
    else:
        order = np.argsort(-obj, kind="stable")
    return order[:k]


def _rpn_oracle(objectness, deltas, anchors, image_size, pre, post, threshold, variant: str = ""):
    """(boxes (K, 4) float64, scores (K,) float64) of the RPN's proposal step; ``variant`` names a known bug."""
    height, width = image_size
    if variant == "wh_swapped":
        height, width = width, height
    levels = [(np.asarray(o, np.float64), np.asarray(d, np.float64), np.asarray(a, np.float64))
              for o, d, a in zip(objectness, deltas, anchors)]
    if variant == "merged":
        levels = [tuple(np.concatenate([lv[k] for lv in levels]) for k in range(3))]
    boxes_out, scores_out = [], []
    for obj, d, a in levels:
        top = _stable_top(obj, min(pre, len(obj)), variant)
        boxes = _decode_oracle(a[top].reshape(-1, 4), d[top].reshape(-1, 4), (1.0, 1.0, 1.0, 1.0))
        if variant not in ("no_clip", "clip_after"):
            boxes = _clip(boxes, height, width)
        if variant == "nms_global":
            keep = np.arange(len(top))
        else:
            keep = _nms_oracle(_iou_matrix(boxes, boxes), obj[top], threshold,
                               "greater_equal" if variant == "greater_equal" else "")
        boxes_out.append(boxes[keep])
        scores_out.append(obj[top][keep])
    boxes, scores = np.concatenate(boxes_out).reshape(-1, 4), np.concatenate(scores_out)
    if variant == "nms_global":
        keep = _nms_oracle(_iou_matrix(boxes, boxes), scores, threshold)
        boxes, scores = boxes[keep], scores[keep]
    if variant == "no_final_sort":
        order = np.arange(len(scores))[:post]
    else:
        order = _stable_top(scores, post, "ties_last" if variant == "ties_last" else "")
    boxes, scores = boxes[order], scores[order]
    if variant == "clip_after":
        boxes = _clip(boxes, height, width)
    if variant == "sigmoid":
        scores = 1 / (1 + np.exp(-scores))
    return boxes, scores


_RPN_BUGS = (
    ("merged", "the levels were merged before the top-k: take the top pre_nms_top_n of EACH level (and run NMS "
               "within each level), then merge"),
    ("nms_global", "one NMS ran over all levels together: NMS runs within each level (a box is suppressed only by "
                   "a box of its own level, as torchvision's batched_nms with the level as the class)"),
    ("no_clip", "the boxes were not clipped: clip x1, x2 to [0, W] and y1, y2 to [0, H] after decoding"),
    ("clip_after", "the boxes were clipped after NMS: clip them BEFORE NMS (clipping changes their overlaps)"),
    ("wh_swapped", "image_size is (H, W): x is clipped to [0, W] = [0, image_size[1]], y to [0, image_size[0]]"),
    ("no_final_sort", "the levels' proposals were concatenated level after level: sort the merged proposals by "
                      "decreasing objectness (stable) before keeping the first post_nms_top_n"),
    ("sigmoid", "the scores returned are sigmoid probabilities; return the objectness logits of the kept boxes"),
    ("ties_last", "equal objectness values were taken in reverse anchor order: sort with a stable sort "
                  "(torch.sort(..., descending=True, stable=True)); equal logits keep their anchor order"),
    ("greater_equal", "a box whose IoU equals the threshold was suppressed: as in nms, suppress only when "
                      "IoU > iou_threshold (strictly)"),
)


def _grid_anchors(height, width, stride, size) -> np.ndarray:
    ys, xs = np.meshgrid(np.arange(0, height, stride) + stride / 2, np.arange(0, width, stride) + stride / 2,
                         indexing="ij")
    c = np.stack([xs.ravel(), ys.ravel()], 1)
    return np.concatenate([c - size / 2, c + size / 2], 1)


def _rpn_random_input(spec):
    """One level per (stride, size) of ``spec['levels']``: anchors on the grid (some sticking out of the image),
    random deltas and objectness logits (``ties``: few distinct values)."""
    rng = np.random.default_rng(spec["seed"])
    height, width = spec["image_size"]
    objectness, deltas, anchors = [], [], []
    for stride, size in spec["levels"]:
        a = _grid_anchors(height, width, stride, size)
        anchors.append(a)
        deltas.append(rng.normal(scale=0.25, size=a.shape))
        objectness.append(rng.integers(0, 4, len(a)) / 2.0 if spec.get("ties") else rng.normal(size=len(a)))
    what = f"{len(anchors)} levels of {[len(a) for a in anchors]} anchors" + (
        ", many equal objectness values" if spec.get("ties") else "")
    return objectness, deltas, anchors, what


def _rpn_cross_level_input(spec):
    """Two levels with near-identical boxes: NMS within each level keeps both."""
    a0 = np.array([[4, 4, 20, 20], [30, 8, 46, 24], [5, 5, 21, 21]], np.float64)
    a1 = np.array([[5, 4, 21, 20], [28, 6, 52, 30], [0, 30, 24, 54]], np.float64)
    z = [np.zeros((3, 4)), np.zeros((3, 4))]
    return [np.array([2.0, 1.0, 0.5]), np.array([1.5, 0.8, 0.2])], z, [a0, a1], \
        "two levels with near-identical boxes"


def _rpn_clip_input(spec):
    """Boxes sticking out of a non-square image: clipped, a pair overlaps above the threshold."""
    a = np.array([[40, 0, 60, 10], [40, 0, 48, 10], [-10, 20, 8, 30], [0, 20, 8, 30], [10, 10, 20, 40]],
                 np.float64)
    return [np.array([1.0, 0.9, 0.8, 0.7, 0.6])], [np.zeros((5, 4))], [a], \
        "boxes sticking out of a non-square image"


def _rpn_exact_input(spec):
    a = np.array([[0, 0, 4, 4], [0, 0, 4, 2], [10, 10, 14, 14], [10, 10, 14, 12]], np.float64)
    return [np.array([0.9, 0.8, 0.7, 0.6])], [np.zeros((4, 4))], [a], "IoU exactly equal to the threshold (0.5)"


def _rpn_empty_level_input(spec):
    """A level without anchors and one with fewer anchors than pre_nms_top_n."""
    rng = np.random.default_rng(spec["seed"])
    a = _grid_anchors(32, 32, 16, 12)
    return [np.zeros(0), rng.normal(size=len(a))], [np.zeros((0, 4)), rng.normal(scale=0.2, size=a.shape)], \
        [np.zeros((0, 4)), a], "an empty level and a level with fewer anchors than pre_nms_top_n"


_RPN_INPUTS = {"random": _rpn_random_input, "cross_level": _rpn_cross_level_input, "clip": _rpn_clip_input,
               "exact": _rpn_exact_input, "empty_level": _rpn_empty_level_input}


def _rpn_cases(specs, reveal):
    for spec in specs:
        objectness, deltas, anchors, what = _RPN_INPUTS[spec.get("kind", "random")](spec)
        dtype = dtype_of(spec)
        image_size = tuple(spec.get("image_size", (32, 48)))
        pre, post, threshold = spec.get("pre", 1000), spec.get("post", 300), spec.get("threshold", 0.7)
        # the values the student's function sees
        objectness = [torch.from_numpy(o).to(dtype).double().numpy() for o in objectness]
        deltas = [torch.from_numpy(d).to(dtype).double().numpy() for d in deltas]
        anchors = [torch.from_numpy(a).to(dtype).double().numpy() for a in anchors]
        args = (objectness, deltas, anchors, image_size, pre, post, threshold)
        boxes, scores = _rpn_oracle(*args)
        mistakes = _merge_equal_pairs(mistake_outputs(_variants(_rpn_oracle, _RPN_BUGS), *args))
        data = {"boxes": torch.from_numpy(boxes).to(dtype), "scores": torch.from_numpy(scores).to(dtype),
                "mistakes": mistakes, "image_size": image_size, "post": post}
        call = Call([torch.from_numpy(o).to(dtype) for o in objectness],
                    [torch.from_numpy(d).to(dtype) for d in deltas],
                    [torch.from_numpy(a).to(dtype) for a in anchors], image_size, pre, post, threshold)
        yield Case(f"{what}; image (H, W) = {image_size}, pre_nms_top_n {pre}, post_nms_top_n {post}, "
                   f"IoU threshold {threshold}, {spec.get('dtype', 'float64')}", [call], "rpn_proposals", data,
                   explain="rpn_proposals", about=spec.get("about", ""))


def _merge_equal_pairs(mistakes: list) -> list:
    """As :func:`_merge_equal`, for (boxes, scores) outputs."""
    merged: list = []
    for output, cause in mistakes:
        same = next((k for k, (o, _) in enumerate(merged) if len(o[1]) == len(output[1])
                     and np.allclose(o[0], output[0]) and np.allclose(o[1], output[1])), None)
        if same is None:
            merged.append((output, cause))
        else:
            merged[same] = (merged[same][0], f"{merged[same][1]}; or: {cause}")
    return merged


# ------------------------------------------------------------------------------------------------
# yolo_target
# ------------------------------------------------------------------------------------------------
def _yolo_oracle(boxes, labels, S, B, C, image_size, variant: str = "") -> np.ndarray:
    """(S, S, 5 B + C) YOLO v1 target in float64; ``variant`` names a known bug."""
    height, width = image_size
    if variant == "wh_swapped":
        height, width = width, height
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    t = np.zeros((S, S, 5 * B + C))
    cx, cy = (b[:, 0] + b[:, 2]) / 2 / (width / S), (b[:, 1] + b[:, 3]) / 2 / (height / S)
    w, h = (b[:, 2] - b[:, 0]) / width, (b[:, 3] - b[:, 1]) / height
    for k in range(len(b)):
        if variant == "border_up":
            i, j = max(math.ceil(cy[k]) - 1, 0), max(math.ceil(cx[k]) - 1, 0)
        elif variant == "rounded":
            i, j = int(np.floor(cy[k] + 0.5)), int(np.floor(cx[k] + 0.5))
        else:
            i, j = math.floor(cy[k]), math.floor(cx[k])
        i, j = min(i, S - 1), min(j, S - 1)
        if t[i, j, 4] == 1 and variant != "last_wins":
            continue
        ox, oy = cx[k] - j, cy[k] - i
        if variant == "absolute_xy":
            ox, oy = cx[k] / S, cy[k] / S
        ww, hh = w[k], h[k]
        if variant == "sqrt_wh":
            ww, hh = math.sqrt(ww), math.sqrt(hh)
        elif variant == "wh_cells":
            ww, hh = ww * S, hh * S
        slot = np.array([ox, oy, ww, hh, 1.0])
        ci, cj = (j, i) if variant == "rowcol" else (i, j)
        if variant == "first_slot":
            t[ci, cj, :5] = slot
        else:
            t[ci, cj, :5 * B] = np.tile(slot, B)
        t[ci, cj, 5 * B + int(labels[k])] = 1.0
    if variant == "classes_first":
        t = np.concatenate([t[..., 5 * B:], t[..., :5 * B]], axis=-1)
    return t


_YOLO_BUGS = (
    ("last_wins", "two objects in one cell: the LAST one overwrote the first; the first object (lowest index) keeps "
                  "the cell and later ones in that cell are dropped"),
    ("first_slot", "only the first of the B box slots was written: as in YOLO v1 the target repeats the box in "
                   "every one of the B slots"),
    ("absolute_xy", "x, y were given relative to the whole image; they are the centre's offset WITHIN its cell "
                    "(cx / cell width - j), in [0, 1]"),
    ("rowcol", "rows and columns are swapped: the cell is target[i, j] with row i from cy, column j from cx"),
    ("sqrt_wh", "w, h were stored as square roots; the target holds w / W, h / H (the loss takes the square roots)"),
    ("wh_cells", "w, h were measured in cells; they are relative to the IMAGE: w = (x2 - x1) / W"),
    ("border_up", "a centre exactly on a cell border went to the cell above / to the left; it belongs to the cell "
                  "below / to the right: i = floor(cy / cell height)"),
    ("rounded", "the cell index was rounded to the nearest integer; it is floor(cx / cell width)"),
    ("wh_swapped", "image_size is (H, W): cell width = W / S = image_size[1] / S"),
    ("classes_first", "the class one-hot came first; the layout is B slots of (x, y, w, h, confidence), then the "
                      "C classes"),
)


def _yolo_random_input(spec):
    rng = np.random.default_rng(spec["seed"])
    height, width = spec.get("image_size", (64, 64))
    n = spec.get("n", 4)
    wh = rng.uniform(4, min(height, width) / 2, size=(n, 2))
    xy = rng.uniform(0, 1, size=(n, 2)) * (np.array([width, height]) - wh)
    boxes = np.concatenate([xy, xy + wh], 1)
    return boxes, rng.integers(0, spec.get("C", 3), n), f"{n} random boxes"


def _yolo_shared_cell_input(spec):
    """Two objects in one cell (and one alone), 2 x 2 grid of a 64 x 64 image."""
    boxes = np.array([[2, 2, 20, 14], [6, 8, 26, 28], [36, 40, 60, 62]], np.float64)
    return boxes, np.array([0, 1, 2]), "two objects with centres in one cell"


def _yolo_border_input(spec):
    """Centres exactly on cell borders, and one on the image's right/bottom edge."""
    height, width = spec.get("image_size", (64, 64))
    S = spec["S"]
    cw, ch = width / S, height / S
    boxes = np.array([[cw - 4, ch - 2, cw + 4, ch + 2],                  # centre on the corner of 4 cells
                      [2 * cw - 6, 0, 2 * cw + 6, 6],                    # on a vertical border
                      [width - 4, height - 4, width + 4, height + 4]],   # on the image's corner
                     np.float64)
    return boxes, np.array([2, 0, 1]), "centres exactly on cell borders and on the image's corner"


def _yolo_empty_input(spec):
    return np.zeros((0, 4)), np.zeros(0, np.int64), "no boxes"


_YOLO_INPUTS = {"random": _yolo_random_input, "shared_cell": _yolo_shared_cell_input, "border": _yolo_border_input,
                "empty": _yolo_empty_input}


def _yolo_cases(specs, reveal):
    for spec in specs:
        boxes, labels, what = _YOLO_INPUTS[spec.get("kind", "random")](spec)
        S, B, C = spec["S"], spec["B"], spec.get("C", 3)
        image_size = tuple(spec.get("image_size", (64, 64)))
        dtype = dtype_of(spec)
        args = (boxes, labels, S, B, C, image_size)
        data = {"expected": torch.from_numpy(_yolo_oracle(*args)).float(), "S": S, "B": B, "C": C,
                "mistakes": _merge_equal(mistake_outputs(_variants(_yolo_oracle, _YOLO_BUGS), *args))}
        call = Call(torch.from_numpy(boxes).to(dtype), torch.from_numpy(labels).long(), S, B, C, image_size)
        yield Case(f"{what}; S {S}, B {B}, C {C}, image (H, W) = {image_size}, boxes {spec.get('dtype', 'float64')}",
                   [call], "yolo_target", data, explain="yolo_target", about=spec.get("about", ""))


BUILDERS.update({"rpn_proposals": _rpn_cases, "yolo_target": _yolo_cases})

VISIBLE.update({
    "rpn_proposals": [
        {"kind": "random", "seed": 61, "image_size": (32, 48), "levels": ((8, 12), (16, 24)), "pre": 10, "post": 8,
         "threshold": 0.5},
        {"kind": "cross_level", "image_size": (64, 64), "pre": 10, "post": 10, "threshold": 0.7},
        {"kind": "clip", "image_size": (48, 48), "pre": 10, "post": 10, "threshold": 0.5},
        {"kind": "exact", "image_size": (32, 32), "pre": 10, "post": 10, "threshold": 0.5},
        {"kind": "random", "seed": 62, "image_size": (48, 32), "levels": ((8, 10),), "pre": 12, "post": 6,
         "threshold": 0.6, "ties": True, "dtype": "float32"},
        {"kind": "empty_level", "seed": 63, "image_size": (32, 32), "pre": 50, "post": 20, "threshold": 0.7},
    ],
    "yolo_target": [
        {"kind": "random", "seed": 71, "S": 4, "B": 2, "C": 3, "n": 3},
        {"kind": "shared_cell", "S": 2, "B": 1, "C": 3},
        {"kind": "border", "S": 4, "B": 2, "C": 3},
        {"kind": "random", "seed": 72, "S": 3, "B": 2, "C": 4, "n": 5, "image_size": (48, 96), "dtype": "float32"},
        {"kind": "empty", "S": 2, "B": 2, "C": 3},
    ],
})

SPECS.update({
    "rpn_proposals": [
        {"kind": "random", "seed": 161, "image_size": (48, 64), "levels": ((8, 12), (16, 24), (32, 40)), "pre": 15,
         "post": 20, "threshold": 0.5, "about": "three levels"},
        {"kind": "random", "seed": 162, "image_size": (64, 40), "levels": ((8, 16), (16, 32)), "pre": 30,
         "post": 12, "threshold": 0.6, "dtype": "float32", "about": "non-square image, float32"},
        {"kind": "cross_level", "image_size": (64, 64), "pre": 3, "post": 5, "threshold": 0.6,
         "about": "overlapping boxes on two levels"},
        {"kind": "clip", "image_size": (32, 48), "pre": 10, "post": 10, "threshold": 0.5,
         "about": "boxes outside a non-square image"},
        {"kind": "exact", "image_size": (32, 32), "pre": 10, "post": 10, "threshold": 0.5, "dtype": "float32",
         "about": "IoU exactly at the threshold"},
        {"kind": "random", "seed": 163, "image_size": (32, 32), "levels": ((8, 10), (16, 20)), "pre": 9, "post": 7,
         "threshold": 0.5, "ties": True, "about": "equal objectness values"},
        {"kind": "random", "seed": 166, "image_size": (40, 56), "levels": ((8, 14),), "pre": 20, "post": 10,
         "threshold": 0.5, "ties": True, "dtype": "float32", "about": "equal objectness values, float32"},
        {"kind": "empty_level", "seed": 164, "image_size": (32, 32), "pre": 100, "post": 300, "threshold": 0.7,
         "about": "an empty level, fewer anchors than pre_nms_top_n"},
        {"kind": "random", "seed": 165, "image_size": (64, 64), "levels": ((4, 8), (8, 16)), "pre": 200,
         "post": 50, "threshold": 0.7, "about": "300 anchors"},
    ],
    "yolo_target": [
        {"kind": "random", "seed": 171, "S": 7, "B": 2, "C": 4, "n": 6, "about": "random boxes, 7 x 7 grid"},
        {"kind": "random", "seed": 172, "S": 5, "B": 3, "C": 2, "n": 8, "image_size": (80, 40),
         "about": "non-square image, three slots"},
        {"kind": "shared_cell", "S": 2, "B": 2, "C": 3, "dtype": "float32", "about": "two objects in one cell"},
        {"kind": "border", "S": 4, "B": 1, "C": 3, "image_size": (48, 96), "about": "centres on cell borders"},
        {"kind": "border", "S": 8, "B": 2, "C": 3, "about": "centres on cell borders, 8 x 8"},
        {"kind": "random", "seed": 173, "S": 3, "B": 2, "C": 5, "n": 10, "dtype": "float32",
         "about": "many boxes, float32"},
        {"kind": "empty", "S": 3, "B": 1, "C": 2, "about": "no boxes"},
    ],
})


# ------------------------------------------------------------------------------------------------
# focal_loss
# ------------------------------------------------------------------------------------------------
def _softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)) without overflow."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _expit(x: np.ndarray) -> np.ndarray:
    """sigmoid(x) without overflow."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _focal_oracle(logits, targets, alpha=0.25, gamma=2.0, variant: str = "") -> np.ndarray:
    """RetinaNet's sigmoid focal loss per element in float64 (torchvision's convention, written from the
    formula); ``variant`` names a known bug."""
    x, t = np.asarray(logits, np.float64), np.asarray(targets, np.float64)
    if variant == "double_sigmoid":
        x = _expit(x)
    if variant == "softmax":
        if x.size == 0:
            return np.zeros_like(x)
        z = x - x.max(axis=-1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        p = np.exp(log_p)
        p_t = np.where(t == 1, p, 1 - p)
        one_minus_p_t = 1 - p_t
        with np.errstate(divide="ignore"):
            ce = -np.where(t == 1, log_p, np.log1p(-p))
    else:
        p = _expit(x)
        p_t = np.where(t == 1, p, 1 - p)
        one_minus_p_t = np.where(t == 1, _expit(-x), p)                  # 1 - p_t without cancellation
        ce = np.where(t == 1, _softplus(-x), _softplus(x))               # -log p_t from the logits
    if variant == "bce_on_probabilities":
        q = _expit(x)
        ce = np.where(t == 1, _softplus(-q), _softplus(q))
    factor = {"one_minus_p": (1 - p) ** gamma, "p_power": p ** gamma, "p_t_power": p_t ** gamma,
              "gamma_fixed": one_minus_p_t ** 2.0}.get(variant, one_minus_p_t ** gamma)
    if variant == "no_alpha_t":
        alpha_t = np.full_like(x, alpha)
    elif variant == "alpha_swapped":
        alpha_t = np.where(t == 1, 1 - alpha, alpha)
    elif variant == "alpha_ignored" or (alpha < 0 and variant != "negative_alpha_used"):
        alpha_t = np.ones_like(x)
    else:
        alpha_t = np.where(t == 1, alpha, 1 - alpha)
    loss = alpha_t * factor * ce
    return -loss if variant == "negated" else loss


_FOCAL_BUGS = (
    ("no_alpha_t", "alpha multiplies every element: alpha_t = alpha for the foreground (targets 1) and 1 - alpha "
                   "for the background (targets 0)"),
    ("alpha_swapped", "alpha and 1 - alpha are swapped: alpha weights the FOREGROUND (targets 1), 1 - alpha the "
                      "background (targets 0)"),
    ("alpha_ignored", "alpha was ignored: multiply by alpha_t (alpha for targets 1, 1 - alpha for targets 0)"),
    ("negative_alpha_used", "alpha < 0 means no weighting at all (torchvision's convention): leave alpha_t out when "
                            "alpha < 0"),
    ("one_minus_p", "the modulating factor is (1 - p)^gamma for every element; it is (1 - p_t)^gamma, and "
                    "1 - p_t = p for the background (targets 0)"),
    ("p_power", "the modulating factor is p^gamma; it is (1 - p_t)^gamma: 1 - p for the foreground (targets 1), p "
                "for the background (targets 0)"),
    ("p_t_power", "the modulating factor is p_t^gamma; it is (1 - p_t)^gamma, so that EASY examples (p_t near 1) "
                  "get the small weight"),
    ("gamma_fixed", "gamma was not used (a hard-coded 2?): the factor is (1 - p_t)^gamma with the gamma passed in"),
    ("softmax", "the probabilities came from a softmax over the last axis; the focal loss is per element, with "
                "p = sigmoid(logit)"),
    ("double_sigmoid", "probabilities were used as logits (the sigmoid applied twice): the sigmoid and "
                       "binary_cross_entropy_with_logits take the raw LOGITS"),
    ("bce_on_probabilities", "binary_cross_entropy_with_logits was given sigmoid(logits), probabilities instead of "
                             "logits: it applies the sigmoid itself, pass it the raw logits"),
    ("negated", "the loss is negative: FL = -alpha_t (1 - p_t)^gamma log p_t, and log p_t <= 0, so every entry is "
                ">= 0"),
)


def _merge_close(mistakes: list, expected: np.ndarray) -> list:
    """Known mistakes whose outputs coincide on a case become one entry naming each cause; a mistake that gives
    the right answer on this case (alpha_t with alpha = 0.5, every factor with gamma = 0) is left out."""
    merged: list = []
    for output, cause in mistakes:
        output = np.asarray(output)
        if output.shape == expected.shape and np.allclose(output, expected, rtol=1e-9, atol=1e-12, equal_nan=True):
            continue
        same = next((k for k, (o, _) in enumerate(merged) if o.shape == output.shape
                     and np.allclose(o, output, rtol=1e-9, atol=1e-12, equal_nan=True)), None)
        if same is None:
            merged.append((output, cause))
        else:
            merged[same] = (merged[same][0], f"{merged[same][1]}; or: {cause}")
    return [(torch.from_numpy(o), cause) for o, cause in merged]


def _focal_random_input(spec):
    g = np.random.default_rng(spec["seed"])
    shape = tuple(spec["shape"])
    x = g.normal(0.0, spec.get("scale", 3.0), size=shape)
    t = (g.uniform(size=shape) < spec.get("positive", 0.3)).astype(np.float64)
    return x, t, f"random logits {'x'.join(map(str, shape))}"


def _focal_extreme_input(spec):
    """Every combination of a large logit (both signs, up to |x| = 200) and a target, plus moderate ones."""
    g = np.random.default_rng(spec.get("seed", 0))
    big = np.array([20.0, 40.0, 100.0, 200.0]) * spec.get("scale", 1.0)
    x = np.concatenate([-big, big, [-3.0, -0.5, 0.0, 0.5, 3.0, 8.0]])
    x = np.concatenate([x, x])
    t = np.concatenate([np.zeros(len(x) // 2), np.ones(len(x) // 2)])
    order = g.permutation(len(x))
    return x[order].reshape(spec.get("rows", 4), -1), t[order].reshape(spec.get("rows", 4), -1), \
        "large logits (|x| up to 200) with both targets"


def _focal_anchor_input(spec):
    """Imbalanced like a detector's anchors: a few foreground anchors, many easy negatives."""
    g = np.random.default_rng(spec["seed"])
    images, anchors = spec["shape"]
    t = (g.uniform(size=(images, anchors)) < spec.get("positive", 0.05)).astype(np.float64)
    x = np.where(t == 1, g.normal(1.0, 2.0, size=t.shape), g.normal(-5.0, 2.0, size=t.shape))
    return x, t, f"{images} images x {anchors} anchors, few foreground"


def _focal_empty_input(spec):
    shape = tuple(spec.get("shape", (0,)))
    return np.zeros(shape), np.zeros(shape), f"no elements (shape {tuple(shape)})"


_FOCAL_INPUTS = {"random": _focal_random_input, "extreme": _focal_extreme_input, "anchors": _focal_anchor_input,
                 "empty": _focal_empty_input}


def _focal_cases(specs, reveal):
    for spec in specs:
        x, t, what = _FOCAL_INPUTS[spec.get("kind", "random")](spec)
        dtype = dtype_of(spec)
        logits, targets = torch.from_numpy(x).to(dtype), torch.from_numpy(t).to(dtype)
        x, t = logits.double().numpy(), targets.double().numpy()          # what the student's function gets
        alpha, gamma = spec.get("alpha"), spec.get("gamma")
        params = {k: v for k, v in (("alpha", alpha), ("gamma", gamma)) if v is not None}
        expected = _focal_oracle(x, t, **params)
        data = {"expected": torch.from_numpy(expected).to(dtype), "dtype": dtype,
                "large": torch.from_numpy(np.abs(x) > (15.0 if dtype == torch.float32 else 30.0)),
                "mistakes": _merge_close(mistake_outputs(_variants(_focal_oracle, _FOCAL_BUGS), x, t, **params),
                                         expected)}
        call = Call(logits, targets, **params)
        shown = ", ".join(f"{k}={v:g}" for k, v in params.items()) or "default alpha and gamma"
        yield Case(f"{what}, {shown}, {spec.get('dtype', 'float64')}", [call], "focal_loss", data,
                   explain="focal_loss", about=spec.get("about", ""))


BUILDERS["focal_loss"] = _focal_cases

VISIBLE["focal_loss"] = [
    {"kind": "random", "seed": 81, "shape": (2, 6)},
    {"kind": "random", "seed": 82, "shape": (3, 4, 5), "alpha": 0.6, "gamma": 1.0, "dtype": "float32"},
    {"kind": "random", "seed": 83, "shape": (8,), "alpha": -1.0, "gamma": 0.0},
    {"kind": "extreme", "seed": 84, "alpha": 0.25, "gamma": 2.0, "dtype": "float32"},
    {"kind": "anchors", "seed": 85, "shape": (4, 36), "alpha": 0.25, "gamma": 2.0, "dtype": "float32"},
    {"kind": "empty", "shape": (0, 3), "alpha": 0.25, "gamma": 2.0},
]

SPECS["focal_loss"] = [
    {"kind": "random", "seed": 181, "shape": (3, 7), "about": "default alpha and gamma"},
    {"kind": "random", "seed": 182, "shape": (2, 3, 6), "alpha": 0.9, "gamma": 0.5, "dtype": "float32",
     "about": "alpha 0.9, gamma 0.5, float32"},
    {"kind": "random", "seed": 183, "shape": (5, 4), "alpha": -1.0, "gamma": 2.0, "about": "alpha < 0: no weighting"},
    {"kind": "random", "seed": 184, "shape": (12,), "alpha": 0.1, "gamma": 5.0, "positive": 0.5,
     "about": "gamma 5, 1-D"},
    {"kind": "random", "seed": 185, "shape": (4, 5), "alpha": 0.25, "gamma": 0.0, "dtype": "float32",
     "about": "gamma 0: alpha-weighted cross-entropy"},
    {"kind": "extreme", "seed": 186, "alpha": 0.25, "gamma": 2.0, "dtype": "float32", "rows": 2,
     "about": "large logits, float32"},
    {"kind": "extreme", "seed": 187, "alpha": 0.75, "gamma": 1.5, "rows": 7, "about": "large logits, float64"},
    {"kind": "anchors", "seed": 188, "shape": (6, 50), "alpha": 0.25, "gamma": 2.0, "dtype": "float32",
     "about": "imbalanced anchors"},
    {"kind": "empty", "shape": (0,), "dtype": "float32", "about": "no elements"},
]
