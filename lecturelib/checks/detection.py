"""Checks of the detection exercises: box deltas (encode/decode), RPN anchors, anchor labelling and NMS.

Oracles are independent float64 NumPy versions written from the conventions (torchvision's BoxCoder,
AnchorGenerator, Matcher and CPU NMS; see the notebook). Properties give a second view and the
messages: the round trip decode(encode(g)) = g; anchors counted, centred on the grid, of area size^2
and aspect ratio h / w = ratio, in the order (y W + x) A + a; for NMS the characterisation of greedy
NMS (a box is kept iff no earlier kept box overlaps it above the threshold) is checked directly, so a
failure names the two boxes involved. Failures are compared with the outputs of known bugs (corners
instead of centres, a missing log or clamp, ratio as w / h, a half-cell offset, >= instead of >...)
to name the likely cause.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .core import Call, Case, Exercise, Mismatch, compare, expect_tensor, matches, register
from .watch import CallableWatch, ForbiddenCallable, oracles

__all__ = []

CLIP = math.log(1000.0 / 16)


def _oracles(*names: str) -> tuple[ForbiddenCallable, ...]:
    return oracles(__name__, *names)


def _dtype(spec) -> torch.dtype:
    return getattr(torch, spec.get("dtype", "float64"))


# ------------------------------------------------------------------------------------------------
# Box deltas
# ------------------------------------------------------------------------------------------------
def _parts(boxes: np.ndarray, plus_one: bool = False):
    w = boxes[:, 2] - boxes[:, 0] + (1.0 if plus_one else 0.0)
    h = boxes[:, 3] - boxes[:, 1] + (1.0 if plus_one else 0.0)
    return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h


def _encode_oracle(anchors, gt, weights, variant: str = "") -> np.ndarray:
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


def _diagnose(got, oracle, bugs, args) -> str | None:
    g = got.detach().to(torch.float64)
    for variant, message in bugs:
        try:
            candidate = oracle(*args, variant=variant)
        except (FloatingPointError, ValueError, ZeroDivisionError):
            continue
        if np.isfinite(candidate).all() and matches(g, torch.from_numpy(candidate), 1e-4):
            return message
    return None


def _random_boxes(rng, n, low=0.0, high=60.0, min_size=2.0, max_size=30.0) -> np.ndarray:
    xy = rng.uniform(low, high, size=(n, 2))
    wh = rng.uniform(min_size, max_size, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def _delta_inputs(spec):
    rng = np.random.default_rng(spec["seed"])
    n = spec.get("n", 6)
    anchors = _random_boxes(rng, n)
    gt = _random_boxes(rng, n)
    if spec.get("same"):
        gt = anchors.copy()
    return anchors, gt


def _weights_of(spec):
    return tuple(float(w) for w in spec.get("weights", (1.0, 1.0, 1.0, 1.0)))


def _delta_call(first, second, spec, dtype):
    args = (torch.from_numpy(first).to(dtype), torch.from_numpy(second).to(dtype))
    if "weights" in spec:
        return Call(*args, weights=_weights_of(spec)), args
    return Call(*args), args


def _describe_weights(spec) -> str:
    return f"weights {_weights_of(spec)}" if "weights" in spec else "default weights (1, 1, 1, 1)"


def _explain_weights_error(raised) -> str | None:
    if "weights" in raised.message and ("unexpected keyword" in raised.message or "positional" in raised.message):
        return "the function must take a `weights` argument (wx, wy, ww, wh), default (1, 1, 1, 1)"
    return None


def _encode_case(spec, reveal) -> Case:
    anchors, gt = _delta_inputs(spec)
    dtype, weights = _dtype(spec), _weights_of(spec)
    call, args = _delta_call(anchors, gt, spec, dtype)
    expected = torch.from_numpy(_encode_oracle(anchors, gt, weights)).to(dtype)
    n = len(anchors)
    what = "identical boxes (all deltas 0)" if spec.get("same") else "random anchors and boxes"
    name = f"{n} {what}, {_describe_weights(spec)}, {spec.get('dtype', 'float64')}"

    def verify(outcomes):
        got = expect_tensor(outcomes[0], shape=(n, 4), dtype=dtype, name="deltas")
        compare(got, expected, reveal=reveal, name="deltas",
                diagnose=lambda g: _diagnose(g, _encode_oracle, _ENCODE_BUGS, (anchors, gt, weights)))
    return Case(name, [call], verify, explain_error=_explain_weights_error, about=spec.get("about", ""))


def _decode_case(spec, reveal) -> Case:
    rng = np.random.default_rng(spec["seed"])
    n = spec.get("n", 6)
    anchors = _random_boxes(rng, n)
    dtype, weights = _dtype(spec), _weights_of(spec)
    if spec.get("kind") == "round_trip":
        gt = _random_boxes(rng, n)
        deltas = _encode_oracle(anchors, gt, weights)
        what = "round trip: deltas from encoding known boxes must decode to them"
    else:
        deltas = rng.normal(size=(n, 4)) * 0.5 * np.array(weights)
        for i, value in enumerate(spec.get("extreme", ())):
            deltas[i % n, 2 + i % 2] = value * weights[2 + i % 2]
        what = "random deltas" + (f", some dw/dh far outside +-log(1000/16) ({spec['extreme']})"
                                  if spec.get("extreme") else "")
    call, args = _delta_call(anchors, deltas, spec, dtype)
    expected = torch.from_numpy(_decode_oracle(anchors, deltas, weights)).to(dtype)
    name = f"{n} anchors, {what}, {_describe_weights(spec)}, {spec.get('dtype', 'float64')}"

    def verify(outcomes):
        got = expect_tensor(outcomes[0], shape=(n, 4), dtype=dtype, name="boxes")
        tol = {"atol": 1e-3, "rtol": 1e-4} if dtype == torch.float32 else {}
        compare(got, expected, reveal=reveal, name="boxes", **tol,
                diagnose=lambda g: _diagnose(g, _decode_oracle, _DECODE_BUGS, (anchors, deltas, weights)))
    return Case(name, [call], verify, explain_error=_explain_weights_error, about=spec.get("about", ""))


register(Exercise(
    "encode_boxes", topic="detection",
    summary="Faster R-CNN deltas (dx, dy, dw, dh) = weights * ((gx - ax) / aw, (gy - ay) / ah, log(gw / aw), "
            "log(gh / ah)) on centres and sizes, equal to a float64 oracle with default and (10, 10, 5, 5) "
            "weights, float32 and float64; identical boxes give 0",
    cases=lambda specs, reveal: [_encode_case(s, reveal) for s in specs],
    visible=[
        {"seed": 1, "n": 5},
        {"seed": 2, "n": 4, "same": True},
        {"seed": 3, "n": 6, "weights": (10.0, 10.0, 5.0, 5.0)},
        {"seed": 4, "n": 7, "dtype": "float32", "weights": (2.0, 3.0, 1.0, 0.5)},
    ],
    forbidden=(CallableWatch(_oracles("_encode_oracle", "_decode_oracle")),),
))

register(Exercise(
    "decode_boxes", topic="detection",
    summary="boxes = anchors moved and scaled by deltas / weights (dw, dh clamped from above at log(1000/16)), "
            "equal to a float64 oracle; decode(encode(g)) = g; extreme deltas stay finite; float32 and float64",
    cases=lambda specs, reveal: [_decode_case(s, reveal) for s in specs],
    visible=[
        {"seed": 11, "n": 5},
        {"seed": 12, "n": 6, "kind": "round_trip"},
        {"seed": 13, "n": 6, "kind": "round_trip", "weights": (10.0, 10.0, 5.0, 5.0)},
        {"seed": 14, "n": 4, "extreme": (9.0, -9.0), "dtype": "float32"},
        {"seed": 15, "n": 4, "extreme": (6.0, 5.0), "weights": (10.0, 10.0, 5.0, 5.0)},
    ],
    forbidden=(CallableWatch(_oracles("_encode_oracle", "_decode_oracle")),),
))


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


def _anchor_properties(got: torch.Tensor, feature_size, stride, sizes, ratios, reveal: bool = True) -> str | None:
    """The first violated property of the anchors (centres, sizes, aspect ratios), as a message (without
    values when ``reveal`` is False)."""
    message = _anchor_property_values(got, feature_size, stride, sizes, ratios)
    if message is None or reveal:
        return message
    return message.split(":")[0]


def _anchor_property_values(got: torch.Tensor, feature_size, stride, sizes, ratios) -> str | None:
    height, width = feature_size
    a = len(sizes) * len(ratios)
    g = got.detach().to(torch.float64).numpy().reshape(height * width, a, 4)
    centres = (g[..., :2] + g[..., 2:]) / 2
    yy, xx = np.meshgrid(np.arange(height) * stride, np.arange(width) * stride, indexing="ij")
    grid = np.stack([xx, yy], axis=-1).reshape(-1, 1, 2)
    bad = np.argwhere(np.abs(centres - grid).max(-1) > 0.51)
    if bad.size:
        loc, k = bad[0]
        return (f"some anchors are not centred on the grid points (x * stride, y * stride): anchor {loc * a + k} "
                f"(location y={loc // width}, x={loc % width}, anchor {k}) is centred at ({centres[loc, k, 0]:g}, "
                f"{centres[loc, k, 1]:g}); expected ({grid[loc, 0, 0]:g}, {grid[loc, 0, 1]:g})")
    w, h = g[0, :, 2] - g[0, :, 0], g[0, :, 3] - g[0, :, 1]
    for k, (ratio, size) in enumerate((r, s) for r in ratios for s in sizes):
        if abs(w[k] * h[k] - size * size) > 2.0 * size + 2:
            return (f"some anchors do not have area size^2: anchor {k} of location (0, 0) has area "
                    f"{w[k] * h[k]:g} ({w[k]:g} x {h[k]:g}); with a = r * len(sizes) + s it should be ratio "
                    f"{ratio:g}, size {size:g}: area about {size * size:g}")
        if abs(h[k] / max(w[k], 1e-9) - ratio) > 0.15 * ratio + 0.1:
            return (f"some anchors do not have h / w = ratio in the order a = r * len(sizes) + s: anchor {k} of "
                    f"location (0, 0) has h / w = {h[k] / max(w[k], 1e-9):.3g}; with "
                    f"a = r * len(sizes) + s it should be ratio {ratio:g} (h / w), size {size:g}")
    return None


def _anchor_case(spec, reveal) -> Case:
    feature_size, stride = tuple(spec["feature_size"]), spec["stride"]
    sizes, ratios = tuple(spec["sizes"]), tuple(spec["ratios"])
    args = (feature_size, stride, sizes, ratios)
    expected = torch.from_numpy(_anchors_oracle(*args))
    count = feature_size[0] * feature_size[1] * len(sizes) * len(ratios)
    name = (f"feature_size {feature_size}, stride {stride}, sizes {sizes}, ratios {ratios}" if reveal
            else spec.get("about", "anchors"))

    def verify(outcomes):
        got = outcomes[0]
        if isinstance(got, torch.Tensor) and got.ndim == 2 and got.shape[1] == 4 and len(got) != count:
            numbers = (f"got {len(got)} anchors; expected H * W * A = {feature_size[0]} * {feature_size[1]} * "
                       f"{len(sizes) * len(ratios)} = {count}" if reveal
                       else "wrong number of anchors; expected H * W * A")
            raise Mismatch(numbers + " (A = len(sizes) * len(ratios): every size with every ratio at every location)")
        got = expect_tensor(got, shape=(count, 4), floating=True, name="anchors")
        def diagnose(g):
            cause = _diagnose(g, _anchors_oracle, _ANCHOR_BUGS, args)
            return cause or _anchor_properties(g, *args, reveal=reveal)
        compare(got, expected, atol=1e-4, rtol=1e-6, reveal=reveal, name="anchors", diagnose=diagnose)
    return Case(name, [Call(*args)], verify, about=spec.get("about", ""))


register(Exercise(
    "generate_anchors", topic="detection",
    summary="(H W A, 4) anchors: count, centres (x stride, y stride), area size^2 and h / w = ratio (cell anchors "
            "rounded), order (y W + x) A + a with ratio-major a, equal to a float64 oracle on square and "
            "non-square grids, odd sizes, several ratios",
    cases=lambda specs, reveal: [_anchor_case(s, reveal) for s in specs],
    visible=[
        {"feature_size": (2, 2), "stride": 16, "sizes": (32,), "ratios": (1.0,)},
        {"feature_size": (2, 3), "stride": 8, "sizes": (16,), "ratios": (1.0,)},
        {"feature_size": (1, 1), "stride": 16, "sizes": (32,), "ratios": (0.5, 1.0, 2.0)},
        {"feature_size": (3, 2), "stride": 8, "sizes": (12, 20), "ratios": (0.5, 2.0)},
        {"feature_size": (4, 5), "stride": 16, "sizes": (25, 40, 63), "ratios": (0.5, 1.0, 2.0)},
    ],
    forbidden=(CallableWatch(_oracles("_anchors_oracle")),),
))


# ------------------------------------------------------------------------------------------------
# label_anchors
# ------------------------------------------------------------------------------------------------
def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU in float64; 0 where the union is empty."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    wh = np.clip(np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]), 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


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


def _label_inputs(spec):
    """(anchors, gt, description) for a spec: a grid of anchors and random or constructed boxes."""
    kind = spec.get("kind", "random")
    if kind == "random":
        rng = np.random.default_rng(spec["seed"])
        anchors = _anchors_oracle(tuple(spec.get("grid", (4, 4))), spec.get("stride", 16), (24, 40), (0.5, 1.0, 2.0))
        k = spec.get("gt", 3)
        centres = rng.uniform(4, 60, size=(k, 2))
        sizes = rng.uniform(12, 48, size=(k, 2))
        gt = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
        if spec.get("integer"):
            gt = np.round(gt)
        return anchors, gt, f"{len(anchors)} grid anchors, {k} random boxes"
    if kind == "thresholds":            # IoU exactly 0.5 and exactly 0.25 with the first gt
        anchors = np.array([[0, 0, 4, 4], [0, 0, 4, 2], [0, 0, 4, 1], [0, 0, 1, 4], [20, 20, 24, 24],
                            [0, 0, 2, 4]], np.float64)
        gt = np.array([[0, 0, 4, 4]], np.float64)
        return anchors, gt, "IoU exactly equal to high (0.5) and to low (0.25)"
    if kind == "ties":                  # two anchors tie for the gt's best IoU (0.25), below low
        anchors = np.array([[0, 0, 4, 4], [4, 0, 8, 4], [2, -6, 6, -2], [20, 20, 24, 24], [0, 4, 4, 8]],
                           np.float64)
        gt = np.array([[2, 0, 6, 2], [22, 22, 26, 26]], np.float64)
        return anchors, gt, "anchors tying for a box's best IoU, all below `low`"
    if kind == "far_gt":                # the second gt overlaps no anchor
        anchors = _anchors_oracle((3, 3), 16, (16,), (1.0,))
        gt = np.array([[8, 8, 30, 28], [200, 200, 220, 230]], np.float64)
        return anchors, gt, "one box overlaps no anchor at all"
    if kind == "cross":                 # anchor 1 is gt 0's best but has a higher IoU with gt 1
        anchors = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [20, 0, 30, 10], [40, 0, 50, 10]], np.float64)
        gt = np.array([[18, 4, 20, 6], [16, 0, 26, 10]], np.float64)
        return anchors, gt, "an anchor that is one box's best match but overlaps another box more"
    if kind == "empty":
        return _anchors_oracle((2, 2), 16, (16,), (1.0,)), np.zeros((0, 4)), "no ground-truth boxes"
    raise ValueError(kind)


def _label_case(spec, reveal) -> Case:
    anchors, gt, what = _label_inputs(spec)
    dtype = _dtype(spec)
    high, low = spec.get("high", 0.7), spec.get("low", 0.3)
    allow = spec.get("allow_low_quality", True)
    exp_labels, exp_matched = _labels_oracle(anchors, gt, high, low, allow)
    kwargs = {}
    if "high" in spec or "low" in spec:
        kwargs.update(high=high, low=low)
    if "allow_low_quality" in spec:
        kwargs["allow_low_quality"] = allow
    call = Call(torch.from_numpy(anchors).to(dtype), torch.from_numpy(gt).to(dtype), **kwargs)
    n = len(anchors)
    name = f"{what}; high {high}, low {low}, allow_low_quality {allow}, {spec.get('dtype', 'float64')}"

    def verify(outcomes):
        out = outcomes[0]
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise Mismatch(f"return a tuple (labels, matched); got {type(out).__name__}"
                           + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
        labels = expect_tensor(out[0], shape=(n,), dtype=torch.int64, name="labels")
        matched = expect_tensor(out[1], shape=(n,), dtype=torch.int64, name="matched")
        got = labels.numpy()
        if not np.array_equal(got, exp_labels):
            wrong = np.flatnonzero(got != exp_labels)
            i = int(wrong[0])
            lines = [f"labels differ at {len(wrong)} of {n} anchors"]
            if reveal:
                iou = _iou_matrix(np.asarray(gt, np.float64), anchors[i:i + 1])[:, 0] if len(gt) else np.zeros(0)
                lines.append(f"first at anchor {i} {anchors[i].tolist()}: expected {exp_labels[i]}, got {got[i]} "
                             f"(its IoU with each box: {np.round(iou, 4).tolist()})")
            for variant, message in _LABEL_BUGS:
                candidate, _ = _labels_oracle(anchors, gt, high, low, allow, variant=variant)
                if np.array_equal(got, candidate):
                    lines.append(f"likely cause: {message}")
                    break
            raise Mismatch("\n".join(lines))
        got_m = matched.numpy()
        if len(gt) == 0:
            if not np.all(got_m == -1):
                raise Mismatch("without ground-truth boxes every anchor is negative and matched must be all -1")
            return
        positive = exp_labels == 1
        if not np.array_equal(got_m[positive], exp_matched[positive]):
            i = int(np.flatnonzero(positive & (got_m != exp_matched))[0])
            shown = f": expected box {exp_matched[i]}, got {got_m[i]}" if reveal else ""
            cause = ""
            if np.array_equal(got_m[positive], _labels_oracle(anchors, gt, high, low, allow,
                                                              variant="matched_to_own_gt")[1][positive]):
                cause = ("\nlikely cause: a low-quality positive keeps its own best box (the highest IoU over the "
                         "boxes), not the box for which it was the best anchor: matched = IoU argmax over the boxes")
            raise Mismatch(f"matched box of positive anchor {i} is wrong{shown}{cause}")
    return Case(name, [call], verify, about=spec.get("about", ""))


register(Exercise(
    "label_anchors", topic="detection",
    summary="labels 1 (IoU >= high), 0 (< low), -1 (between) plus low-quality positives for every anchor tying for "
            "a box's best IoU (not when that IoU is 0), matched = best box of each positive, exact thresholds, "
            "allow_low_quality=False, no boxes",
    cases=lambda specs, reveal: [_label_case(s, reveal) for s in specs],
    visible=[
        {"kind": "random", "seed": 41},
        {"kind": "thresholds", "high": 0.5, "low": 0.25, "allow_low_quality": False},
        {"kind": "ties"},
        {"kind": "far_gt"},
        {"kind": "cross", "high": 0.7, "low": 0.3},
        {"kind": "random", "seed": 42, "allow_low_quality": False, "high": 0.5, "low": 0.4, "dtype": "float32"},
        {"kind": "empty"},
    ],
    forbidden=(CallableWatch(_oracles("_labels_oracle")),),
))


# ------------------------------------------------------------------------------------------------
# nms
# ------------------------------------------------------------------------------------------------
def _nms_oracle(boxes, scores, threshold, variant: str = "") -> np.ndarray:
    boxes, scores = np.asarray(boxes, np.float64), np.asarray(scores, np.float64)
    if variant == "unsorted":
        order = np.arange(len(scores))
    elif variant == "ascending":
        order = np.argsort(scores, kind="stable")
    else:
        order = np.argsort(-scores, kind="stable")
    iou = _iou_matrix(boxes, boxes)
    keep, removed = [], np.zeros(len(boxes), bool)
    for i in order:
        if variant == "against_all":
            earlier = order[:int(np.flatnonzero(order == i)[0])]
            if (iou[i, earlier] > threshold).any():
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


def _nms_inputs(spec):
    kind = spec.get("kind", "clusters")
    if kind == "chain":
        boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10], [40, 40, 50, 50]], np.float64)
        return boxes, np.array([0.9, 0.8, 0.7, 0.6]), "a chain: A overlaps B, B overlaps C, A does not touch C"
    if kind == "exact":
        boxes = np.array([[0, 0, 4, 4], [0, 0, 4, 2], [0, 0, 4, 3], [10, 10, 14, 14]], np.float64)
        return boxes, np.array([0.9, 0.8, 0.3, 0.5]), "IoU exactly equal to the threshold (0.5)"
    if kind == "empty":
        return np.zeros((0, 4)), np.zeros(0), "no boxes"
    rng = np.random.default_rng(spec["seed"])
    n_clusters, per = spec.get("clusters", 4), spec.get("per", 6)
    base = _random_boxes(rng, n_clusters, 0, 80, 8, 30)
    boxes = np.repeat(base, per, axis=0) + rng.normal(scale=spec.get("jitter", 2.5), size=(n_clusters * per, 4))
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    order = rng.permutation(len(boxes))
    boxes = boxes[order]
    if spec.get("ties"):
        scores = rng.integers(1, 4, size=len(boxes)) / 4.0
    else:
        scores = rng.random(len(boxes))
    what = f"{len(boxes)} boxes in {n_clusters} clusters" + (", many equal scores" if spec.get("ties") else "")
    return boxes, scores, what


def _nms_explanation(keep: np.ndarray, boxes, scores, threshold, reveal: bool) -> str:
    """Which box breaks the characterisation of greedy NMS, in words."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    iou = _iou_matrix(np.asarray(boxes, np.float64), np.asarray(boxes, np.float64))
    kept = set(keep.tolist())
    if any(rank[a] > rank[b] for a, b in zip(keep[:-1], keep[1:])):
        return "the kept indices must be sorted by decreasing score (ties: lower index first)"
    for i in order:                     # the first box (by score) whose fate is wrong
        earlier = [j for j in order[:rank[i]] if j in kept]
        blockers = [j for j in earlier if iou[i, j] > threshold]
        if i in kept and blockers:
            j = blockers[0]
            return (f"box {i} (score {scores[i]:.3g}) was kept although the kept box {j} (score {scores[j]:.3g}) "
                    f"overlaps it with IoU {iou[i, j]:.3g} > {threshold:g}" if reveal else
                    "a box was kept although a kept box with a higher score overlaps it above the threshold")
        if i not in kept and not blockers:
            top = max(earlier, key=lambda j: iou[i, j], default=None)
            detail = (f" (largest IoU with a kept box: {iou[i, top]:.3g} with box {top})" if top is not None else "")
            return (f"box {i} (score {scores[i]:.3g}) was suppressed although no kept box with a higher score "
                    f"overlaps it above {threshold:g}{detail}" if reveal else
                    "a box was suppressed although no kept box with a higher score overlaps it above the threshold")
    return "the kept set differs from greedy NMS"


def _valid_up_to_ties(keep: np.ndarray, boxes, scores, threshold) -> bool:
    """Is ``keep`` greedy NMS for SOME order of the equal scores (an unstable sort)?"""
    scores = np.asarray(scores)
    if len(np.unique(scores)) == len(scores) or len(set(keep.tolist())) != len(keep):
        return False
    if np.any(np.diff(scores[keep]) > 0):
        return False
    iou = _iou_matrix(np.asarray(boxes, np.float64), np.asarray(boxes, np.float64))
    kept = keep.tolist()
    for pos, i in enumerate(kept):
        if any(iou[i, j] > threshold for j in kept[:pos]):
            return False
    for i in set(range(len(scores))) - set(kept):
        if not any(iou[i, j] > threshold and scores[j] >= scores[i] for j in kept):
            return False
    return True


def _nms_case(spec, reveal) -> Case:
    boxes, scores, what = _nms_inputs(spec)
    threshold = spec.get("threshold", 0.5)
    dtype = _dtype(spec)
    expected = _nms_oracle(boxes, scores, threshold)
    name = f"{what}, IoU threshold {threshold}, {spec.get('dtype', 'float64')}"

    def verify(outcomes):
        got = expect_tensor(outcomes[0], dtype=torch.int64, name="kept indices")
        if got.ndim != 1:
            raise Mismatch(f"kept indices must be 1-D (K,), got shape {tuple(got.shape)}")
        keep = got.numpy()
        if len(keep) and (keep.min() < 0 or keep.max() >= len(boxes)):
            raise Mismatch(f"kept indices must index the input boxes (0..{len(boxes) - 1})")
        if np.array_equal(keep, expected):
            return
        lines = [f"kept {len(keep)} boxes, expected {len(expected)}" if len(keep) != len(expected) and reveal
                 else "the kept indices differ from greedy NMS"]
        if reveal and len(boxes) <= 12:
            lines.append(f"expected {expected.tolist()}, got {keep.tolist()}")
        lines.append(_nms_explanation(keep, boxes, scores, threshold, reveal))
        cause = next((message for variant, message in _NMS_BUGS
                      if np.array_equal(keep, _nms_oracle(boxes, scores, threshold, variant))), None)
        if cause is None and _valid_up_to_ties(keep, boxes, scores, threshold):
            cause = ("boxes with EQUAL scores were taken in another order than their input order: sort with a "
                     "stable sort (torch.sort(scores, descending=True, stable=True))")
        if cause:
            lines.append(f"likely cause: {cause}")
        raise Mismatch("\n".join(lines))
    call = Call(torch.from_numpy(boxes).to(dtype), torch.from_numpy(scores).to(dtype), threshold)
    return Case(name, [call], verify, about=spec.get("about", ""))


register(Exercise(
    "nms", topic="detection",
    summary="greedy NMS: kept indices by decreasing score (stable on ties), a box kept iff no kept box with a "
            "higher score overlaps it with IoU > threshold (strictly), equal to brute force on clusters, a chain, "
            "exact-threshold IoU, equal scores, no boxes",
    cases=lambda specs, reveal: [_nms_case(s, reveal) for s in specs],
    visible=[
        {"kind": "chain", "threshold": 0.3},
        {"kind": "exact", "threshold": 0.5},
        {"kind": "clusters", "seed": 51},
        {"kind": "clusters", "seed": 52, "ties": True, "threshold": 0.4, "dtype": "float32"},
        {"kind": "clusters", "seed": 53, "clusters": 6, "per": 10, "threshold": 0.7},
        {"kind": "empty"},
    ],
    forbidden=(CallableWatch(
        (ForbiddenCallable("torchvision.ops", "nms", "torchvision.ops.nms"),
         ForbiddenCallable("torchvision.ops", "batched_nms", "torchvision.ops.batched_nms"))
        + _oracles("_nms_oracle", "_valid_up_to_ties"),
        slow_hint="greedy NMS needs one pass over the sorted boxes (an endless loop?)"),),
))
