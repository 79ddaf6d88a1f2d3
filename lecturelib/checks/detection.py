"""Checks of the detection exercises: box deltas (encode/decode), RPN anchors, anchor labelling and NMS
(student side: verifiers only).

Each case's data (built grader-side in ``lecturelib.hidden.detection``) holds the expected output and the
outputs that known bugs give on the same inputs (corners instead of centres, a missing log or clamp, ratio as
w / h, a half-cell offset, >= instead of >...); a wrong answer that matches one is told its likely cause.
Properties give a second view and the messages: anchors centred on the grid, of area size^2 and aspect ratio
h / w = ratio; for NMS the characterisation of greedy NMS (a box is kept iff no earlier kept box overlaps it
above the threshold) is checked on the student's kept set with the case's IoU matrix, so a failure names the
two boxes involved.
"""
from __future__ import annotations

import numpy as np
import torch

from .core import (Exercise, Mismatch, compare, expect_tensor, explainer, known_mistake, matches, register, revealing,
                   verifier)
from .runner import CallableWatch, ForbiddenCallable

__all__ = []

_BUG_TOL = 1e-4  # a float32 answer still matches the float64 output of the bug it reproduces


def _expect_dtype(value, dtype: torch.dtype, name: str, why: str):
    """Mismatch naming the dtype the specification states (``why``), when a tensor has another one.
    (``expect_tensor``'s hidden message says "keep the dtype of the input", wrong for indices and labels.)"""
    if isinstance(value, torch.Tensor) and value.dtype != dtype:
        raise Mismatch(f"{name} has dtype {value.dtype}; expected {dtype} ({why})")


# ------------------------------------------------------------------------------------------------
# Box deltas
# ------------------------------------------------------------------------------------------------
def _check_boxes(outcome, data, name: str, tol: dict) -> None:
    expected = data["expected"]
    got = expect_tensor(outcome, shape=expected.shape, dtype=expected.dtype, name=name)
    compare(got, expected, name=name, **tol, diagnose=lambda g: known_mistake(g, data["mistakes"], _BUG_TOL))


@verifier("encode_boxes")
def _verify_encode(outcomes, data, reveal):
    _check_boxes(outcomes[0], data, "deltas", {})


@verifier("decode_boxes")
def _verify_decode(outcomes, data, reveal):
    # exp() of float32 size deltas near the clamp loses about 1e-4 of a box's size
    tol = {"atol": 1e-3, "rtol": 1e-4} if data["expected"].dtype == torch.float32 else {}
    _check_boxes(outcomes[0], data, "boxes", tol)


_EMPTY_STACK = ("with {what} the result is an empty {shape} tensor, but torch.stack / torch.cat of an empty list "
                "raises: work on whole tensors (vectorised), or handle the empty case first")


@explainer("box_deltas")
def _explain_weights_error(raised, data):
    if "weights" in raised.message and ("unexpected keyword" in raised.message or "positional" in raised.message):
        return "the function must take a `weights` argument (wx, wy, ww, wh), default (1, 1, 1, 1)"
    if "non-empty" in raised.message:
        return _EMPTY_STACK.format(what="no boxes (N = 0)", shape="(0, 4)")
    return None


register(Exercise(
    "encode_boxes", topic="detection",
    summary="Faster R-CNN deltas (dx, dy, dw, dh) = weights * ((gx - ax) / aw, (gy - ay) / ah, log(gw / aw), "
            "log(gh / ah)) on centres and sizes, equal to a float64 oracle with default and (10, 10, 5, 5) "
            "weights, float32 and float64; identical boxes give 0",
))

register(Exercise(
    "decode_boxes", topic="detection",
    summary="boxes = anchors moved and scaled by deltas / weights (dw, dh clamped from above at log(1000/16)), "
            "equal to a float64 oracle; decode(encode(g)) = g; extreme deltas stay finite; float32 and float64",
))


# ------------------------------------------------------------------------------------------------
# generate_anchors
# ------------------------------------------------------------------------------------------------
def _anchor_property_values(got: torch.Tensor, data) -> str | None:
    """The first property of (H W A, 4) anchors that fails (centres on the grid, area size^2, h / w = ratio),
    with values; ``data['centres']`` (H W, 2) and ``data['cell_shapes']`` (A (ratio, size) pairs) say what
    each location and anchor should be."""
    height, width, a = data["grid"]
    g = got.detach().to(torch.float64).numpy().reshape(height * width, a, 4)
    centres = (g[..., :2] + g[..., 2:]) / 2
    grid = data["centres"][:, None, :]
    bad = np.argwhere(np.abs(centres - grid).max(-1) > 0.51)   # rounding the cell anchor moves a centre by <= 0.5
    if bad.size:
        loc, k = bad[0]
        return (f"some anchors are not centred on the grid points (x * stride, y * stride): anchor {loc * a + k} "
                f"(location y={loc // width}, x={loc % width}, anchor {k}) is centred at ({centres[loc, k, 0]:g}, "
                f"{centres[loc, k, 1]:g}); expected ({grid[loc, 0, 0]:g}, {grid[loc, 0, 1]:g})")
    w, h = g[0, :, 2] - g[0, :, 0], g[0, :, 3] - g[0, :, 1]
    for k, (ratio, size) in enumerate(data["cell_shapes"]):
        if abs(w[k] * h[k] - size * size) > 2.0 * size + 2:
            return (f"some anchors do not have area size^2: anchor {k} of location (0, 0) has area "
                    f"{w[k] * h[k]:g} ({w[k]:g} x {h[k]:g}); with a = r * len(sizes) + s it should be ratio "
                    f"{ratio:g}, size {size:g}: area about {size * size:g}")
        if abs(h[k] / max(w[k], 1e-9) - ratio) > 0.15 * ratio + 0.1:
            return (f"some anchors do not have h / w = ratio in the order a = r * len(sizes) + s: anchor {k} of "
                    f"location (0, 0) has h / w = {h[k] / max(w[k], 1e-9):.3g}; with "
                    f"a = r * len(sizes) + s it should be ratio {ratio:g} (h / w), size {size:g}")
    return None


def _anchor_properties(got: torch.Tensor, data) -> str | None:
    """The first failing property as a message; for a hidden case only what it is about, no values."""
    message = _anchor_property_values(got, data)
    if message is None or revealing():
        return message
    return message.split(":")[0]


@verifier("generate_anchors")
def _verify_anchors(outcomes, data, reveal):
    got, expected = outcomes[0], data["expected"]
    count = expected.shape[0]
    if isinstance(got, torch.Tensor) and got.ndim == 2 and got.shape[1] == 4 and len(got) != count:
        height, width, a = data["grid"]
        numbers = (f"got {len(got)} anchors; expected H * W * A = {height} * {width} * {a} = {count}" if reveal
                   else "wrong number of anchors; expected H * W * A")
        raise Mismatch(numbers + " (A = len(sizes) * len(ratios): every size with every ratio at every location)")
    got = expect_tensor(got, shape=expected.shape, name="anchors")
    _expect_dtype(got, torch.float32, "anchors", "the exercise asks for float32 anchors: .float() or "
                  "dtype=torch.float32")
    compare(got, expected, atol=1e-4, rtol=1e-6, name="anchors",
            diagnose=lambda g: known_mistake(g, data["mistakes"], _BUG_TOL) or _anchor_properties(g, data))


register(Exercise(
    "generate_anchors", topic="detection",
    summary="(H W A, 4) float32 anchors: count, centres (x stride, y stride), area size^2 and h / w = ratio (cell "
            "anchors rounded), order (y W + x) A + a with ratio-major a, equal to a float64 oracle on square and "
            "non-square grids, odd sizes, several ratios",
))


# ------------------------------------------------------------------------------------------------
# label_anchors
# ------------------------------------------------------------------------------------------------
def _unpack_labels(out, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The (labels, matched) pair as two (N,) int64 arrays; Mismatch naming what is off."""
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise Mismatch(f"return a tuple (labels, matched); got {type(out).__name__}"
                       + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
    for value, name in ((out[0], "labels"), (out[1], "matched")):
        _expect_dtype(value, torch.int64, name, "labels and matched are int64 tensors")
    labels = expect_tensor(out[0], shape=(n,), name="labels")
    matched = expect_tensor(out[1], shape=(n,), name="matched")
    return labels.numpy(), matched.numpy()


def _check_labels(got: np.ndarray, data, reveal: bool) -> None:
    expected = data["labels"]
    if np.array_equal(got, expected):
        return
    wrong = np.flatnonzero(got != expected)
    lines = [f"labels differ at {len(wrong)} of {len(expected)} anchors" if reveal else "some labels are wrong"]
    if reveal:
        i = int(wrong[0])
        lines.append(f"first at anchor {i} {data['anchors'][i].tolist()}: expected {expected[i]}, got {got[i]} "
                     f"(its IoU with each box: {np.round(data['iou'][:, i], 4).tolist()})")
    cause = known_mistake(got, data["mistakes"])
    if cause:
        lines.append(f"likely cause: {cause}")
    raise Mismatch("\n".join(lines))


def _check_matched(got: np.ndarray, data, reveal: bool) -> None:
    """Only the positives' matched boxes are graded (the others are unused by the losses)."""
    expected = data["matched"]
    if data["iou"].shape[0] == 0:   # no ground-truth boxes
        if not np.all(got == -1):
            raise Mismatch("without ground-truth boxes every anchor is negative and matched must be all -1")
        return
    positive = data["labels"] == 1
    if np.array_equal(got[positive], expected[positive]):
        return
    i = int(np.flatnonzero(positive & (got != expected))[0])
    where = f"matched box of positive anchor {i} is wrong: expected box {expected[i]}, got {got[i]}" if reveal \
        else "the matched box of a positive anchor is wrong"
    cause = known_mistake(got[positive], [(m[positive], c) for m, c in data["matched_mistakes"]])
    raise Mismatch(where + (f"\nlikely cause: {cause}" if cause else ""))


@explainer("label_anchors")
def _explain_labels_error(raised, data):
    if data["iou"].shape[0] == 0:
        return ("without ground-truth boxes (G = 0) iou.max(dim=0) has nothing to reduce: handle G = 0 first, "
                "every anchor negative (label 0) and matched all -1")
    return None


@verifier("label_anchors")
def _verify_labels(outcomes, data, reveal):
    labels, matched = _unpack_labels(outcomes[0], len(data["labels"]))
    _check_labels(labels, data, reveal)
    _check_matched(matched, data, reveal)


register(Exercise(
    "label_anchors", topic="detection",
    summary="labels 1 (IoU >= high), 0 (< low), -1 (between) plus low-quality positives for every anchor tying for "
            "a box's best IoU (not when that IoU is 0), matched = best box of each positive, exact thresholds, "
            "allow_low_quality=False, no boxes",
))


# ------------------------------------------------------------------------------------------------
# nms
# ------------------------------------------------------------------------------------------------
_UNSTABLE = ("boxes with EQUAL scores were taken in another order than their input order: sort with a "
             "stable sort (torch.sort(scores, descending=True, stable=True))")


def _iou_text(iou: float, threshold: float) -> str:
    """An IoU for a message: 3 digits, or all of them where 3 would print it equal to the threshold (the float32
    IoU 0.40000001 of an exact 0.4 is above 0.4)."""
    return f"{iou:.3g}" if f"{iou:.3g}" != f"{threshold:.3g}" else f"{iou:.10g}"


def _nms_explanation(keep: np.ndarray, data, reveal: bool) -> str:
    """Which box breaks the characterisation of greedy NMS (kept iff no kept box earlier in ``data['order']``
    overlaps it above the threshold), in words."""
    order, iou, scores, threshold = data["order"], data["iou"], data["scores"], data["threshold"]
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    kept = set(keep.tolist())
    if any(rank[a] > rank[b] for a, b in zip(keep[:-1], keep[1:])):
        return "the kept indices must be sorted by decreasing score (ties: lower index first)"
    for i in order:                     # the first box (by score) whose fate is wrong
        earlier = [j for j in order[:rank[i]] if j in kept]
        blockers = [j for j in earlier if iou[i, j] > threshold]
        if i in kept and blockers:
            j = blockers[0]
            return (f"box {i} (score {scores[i]:.3g}) was kept although the kept box {j} (score {scores[j]:.3g}) "
                    f"overlaps it with IoU {_iou_text(iou[i, j], threshold)} > {threshold:g}" if reveal else
                    "a box was kept although a kept box with a higher score overlaps it above the threshold")
        if i not in kept and not blockers:
            top = max(earlier, key=lambda j: iou[i, j], default=None)
            detail = (f" (largest IoU with a kept box: {_iou_text(iou[i, top], threshold)} with box {top})"
                      if top is not None else "")
            return (f"box {i} (score {scores[i]:.3g}) was suppressed although no kept box with a higher score "
                    f"overlaps it above {threshold:g}{detail}" if reveal else
                    "a box was suppressed although no kept box with a higher score overlaps it above the threshold")
    return "the kept set differs from greedy NMS"


def _valid_up_to_ties(keep: np.ndarray, data) -> bool:
    """Is ``keep`` greedy NMS for SOME order of the equal scores (an unstable sort)?"""
    iou, scores, threshold = data["iou"], data["scores"], data["threshold"]
    if len(np.unique(scores)) == len(scores) or len(set(keep.tolist())) != len(keep):
        return False
    if np.any(np.diff(scores[keep]) > 0):
        return False
    kept = keep.tolist()
    for pos, i in enumerate(kept):
        if any(iou[i, j] > threshold for j in kept[:pos]):
            return False
    for i in set(range(len(scores))) - set(kept):
        if not any(iou[i, j] > threshold and scores[j] >= scores[i] for j in kept):
            return False
    return True


def _kept_indices(outcome, n: int, reveal: bool) -> np.ndarray:
    """The (K,) int64 kept indices, each in 0..n-1; Mismatch naming what is off."""
    _expect_dtype(outcome, torch.int64, "kept indices", "indices are int64, also when no box is kept: "
                  "torch.tensor([]) is float32, torch.tensor(keep, dtype=torch.int64) is not")
    got = expect_tensor(outcome, name="kept indices")
    if got.ndim != 1:
        raise Mismatch("kept indices must be 1-D (K,)" + (f", got shape {tuple(got.shape)}" if reveal else ""))
    keep = got.numpy()
    if len(keep) and (keep.min() < 0 or keep.max() >= n):
        raise Mismatch("kept indices must index the input boxes" + (f" (0..{n - 1})" if reveal else ""))
    return keep


@explainer("nms")
def _explain_nms_error(raised, data):
    if len(data["scores"]) == 0:
        return _EMPTY_STACK.format(what="no boxes (N = 0)", shape="(0,) int64")
    return None


@verifier("nms")
def _verify_nms(outcomes, data, reveal):
    expected, n = data["expected"], len(data["scores"])
    keep = _kept_indices(outcomes[0], n, reveal)
    if np.array_equal(keep, expected):
        return
    lines = [f"kept {len(keep)} boxes, expected {len(expected)}" if len(keep) != len(expected) and reveal
             else "the kept indices differ from greedy NMS"]
    if reveal and n <= 12:
        lines.append(f"expected {expected.tolist()}, got {keep.tolist()}")
    lines.append(_nms_explanation(keep, data, reveal))
    cause = known_mistake(keep, data["mistakes"])
    if cause is None and _valid_up_to_ties(keep, data):
        cause = _UNSTABLE
    if cause:
        lines.append(f"likely cause: {cause}")
    raise Mismatch("\n".join(lines))


# The library NMS, refused by nms and rpn_proposals (which may use the student's own nms).
_LIBRARY_NMS = (ForbiddenCallable("torchvision.ops", "nms", "torchvision.ops.nms"),
                ForbiddenCallable("torchvision.ops", "batched_nms", "torchvision.ops.batched_nms"))


register(Exercise(
    "nms", topic="detection",
    summary="greedy NMS: kept indices by decreasing score (stable on ties), a box kept iff no kept box with a "
            "higher score overlaps it with IoU > threshold (strictly; the IoU in the boxes' dtype compared in "
            "float64, as torchvision), equal to brute force on clusters, a chain, exact-threshold IoU, equal scores, "
            "no boxes",
    forbidden=(CallableWatch(_LIBRARY_NMS,
                             slow_hint="greedy NMS needs one pass over the sorted boxes (an endless loop?)"),),
))


# ------------------------------------------------------------------------------------------------
# rpn_proposals
# ------------------------------------------------------------------------------------------------
def _rpn_structure(boxes: torch.Tensor, scores: torch.Tensor, data) -> str | None:
    """What differs structurally when no known mistake matches."""
    height, width = data["image_size"]
    b = boxes.to(torch.float64)
    if len(b) and (b[:, 0::2].min() < -1e-6 or b[:, 0::2].max() > width + 1e-6 or b[:, 1::2].min() < -1e-6
                   or b[:, 1::2].max() > height + 1e-6):
        return ("some proposals lie outside the image: clip x1, x2 to [0, W] and y1, y2 to [0, H] (image_size is "
                "(H, W)) after decoding, before NMS")
    if len(scores) > 1 and bool((scores[1:].to(torch.float64) > scores[:-1].to(torch.float64)).any()):
        return "the proposals are not sorted by decreasing objectness over all levels"
    if len(scores) > data["post"]:
        return "more than post_nms_top_n proposals were returned"
    return None


@explainer("rpn_proposals")
def _explain_rpn_error(raised, data):
    message = raised.message
    if "selected index k out of range" in message or "k (" in message or "out of range" in message:
        return ("a level has fewer anchors than pre_nms_top_n (or none): take the top min(pre_nms_top_n, A_l) of "
                "each level")
    if "non-empty" in message or "expected a non-empty list" in message:
        return _EMPTY_STACK.format(what="a level without anchors or without kept boxes", shape="(0, 4)")
    return None


@verifier("rpn_proposals")
def _verify_rpn(outcomes, data, reveal):
    out = outcomes[0]
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise Mismatch(f"return a tuple (boxes, scores); got {type(out).__name__}"
                       + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
    expected_boxes, expected_scores = data["boxes"], data["scores"]
    boxes = expect_tensor(out[0], name="boxes")
    scores = expect_tensor(out[1], name="scores")
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or scores.ndim != 1 or len(scores) != len(boxes):
        raise Mismatch("boxes must be (K, 4) and scores (K,), one score per box"
                       + (f"; got {tuple(boxes.shape)} and {tuple(scores.shape)}" if reveal else ""))
    _expect_dtype(boxes, expected_boxes.dtype, "boxes", "the boxes have the dtype of the deltas")
    _expect_dtype(scores, expected_scores.dtype, "scores", "the scores are the objectness logits, in their dtype")
    same_count = len(boxes) == len(expected_boxes)
    if same_count and matches(boxes, expected_boxes, 1e-4) and matches(scores, expected_scores, 1e-5):
        return
    if not same_count:
        lines = [f"got {len(boxes)} proposals; expected {len(expected_boxes)}" if reveal
                 else "wrong number of proposals"]
    elif matches(scores, expected_scores, 1e-5):
        lines = ["the right anchors were kept, in the right order, but their boxes differ: decode with weights "
                 "(1, 1, 1, 1), then clip x to [0, W] and y to [0, H]"]
    else:
        lines = ["the kept proposals (or their order) differ from the expected ones"]
        if reveal and len(scores) <= 12:
            lines.append(f"expected scores {[round(float(s), 4) for s in expected_scores]}, got "
                         f"{[round(float(s), 4) for s in scores]}")
    cause = known_mistake((boxes, scores), data["mistakes"], 1e-4) or _rpn_structure(boxes, scores, data)
    if cause:
        lines.append(f"likely cause: {cause}")
    raise Mismatch("\n".join(lines))


register(Exercise(
    "rpn_proposals", topic="detection",
    summary="per level the top min(pre_nms_top_n, A_l) anchors by objectness (stable on ties), decoded, clipped to "
            "the (H, W) image, NMS within the level (IoU > threshold), then all levels by decreasing objectness "
            "(stable), the first post_nms_top_n; boxes in the deltas' dtype, scores the logits; several levels, "
            "overlaps across levels, boxes outside a non-square image, IoU at the threshold, equal logits, an "
            "empty level",
    forbidden=(CallableWatch(_LIBRARY_NMS,
                             slow_hint="one sort per level and your NMS (an endless loop?)"),),
))


# ------------------------------------------------------------------------------------------------
# yolo_target
# ------------------------------------------------------------------------------------------------
def _yolo_structure(got: torch.Tensor, data) -> str | None:
    """Which part of the target differs: the owning cells, the offsets, the sizes, the other slots, the classes."""
    expected, B = data["expected"], data["B"]
    close = torch.isclose(got.to(torch.float64), expected.to(torch.float64), atol=1e-5, rtol=1e-5)
    owned_got, owned_expected = got[..., 4] > 0.5, expected[..., 4] > 0.5
    if not torch.equal(owned_got, owned_expected):
        return ("the cells that hold an object (confidence 1 at [..., 4]) differ: the owner is row "
                "i = floor(cy / (H / S)), column j = floor(cx / (W / S)), at most S - 1")
    parts = (("the centre offsets (x, y) at [..., 0:2]", slice(0, 2)), ("the sizes (w, h) at [..., 2:4]", slice(2, 4)),
             ("the slots b > 0 (the box repeated in every slot)", slice(5, 5 * B)),
             ("the class one-hot at [..., 5 B:]", slice(5 * B, None)))
    wrong = [what for what, part in parts if not bool(close[..., part].all())]
    return ("the owning cells are right, but these differ: " + "; ".join(wrong)) if wrong else None


@explainer("yolo_target")
def _explain_yolo_error(raised, data):
    if "out of bounds" in raised.message:
        return ("an index reached S: a centre on the image's right or bottom edge (cx = W) gives floor(cx / (W / S)) "
                "= S; clamp the cell index to S - 1")
    return None


@verifier("yolo_target")
def _verify_yolo(outcomes, data, reveal):
    expected = data["expected"]
    got = expect_tensor(outcomes[0], shape=expected.shape, name="target")
    _expect_dtype(got, torch.float32, "target", "the target is float32, whatever the dtype of the boxes")
    compare(got, expected, atol=1e-5, rtol=1e-5, name="target",
            diagnose=lambda g: known_mistake(g, data["mistakes"], 1e-5) or _yolo_structure(g, data))


register(Exercise(
    "yolo_target", topic="detection",
    summary="(S, S, 5 B + C) float32: the cell (floor(cy / (H / S)), floor(cx / (W / S)), clamped to S - 1) that owns "
            "each centre gets (x, y) offsets in the cell, (w, h) / (W, H), confidence 1 in every one of the B slots "
            "and the class one-hot; the first object keeps a shared cell; centres on borders, non-square images, "
            "no boxes",
))


# ------------------------------------------------------------------------------------------------
# focal_loss
# ------------------------------------------------------------------------------------------------
_STABLE = ("compute -log p_t from the logits: F.binary_cross_entropy_with_logits(logits, targets, reduction=\"none\") "
           "or F.logsigmoid")


def _focal_properties(got: torch.Tensor, data) -> str | None:
    """What is wrong when no known mistake matches, from properties that need no answer: finite where the
    expected loss is, the large logits' loss not capped, no negative entry."""
    expected, large = data["expected"].to(torch.float64), data["large"]
    g = got.to(torch.float64)
    if not bool(torch.isfinite(g).all()):
        return ("the loss is not finite for large |logits|: log(sigmoid(x)) overflows (the sigmoid rounds to 0 or 1 "
                "and the log gives -inf; 0 * -inf is nan); " + _STABLE)
    off = ~torch.isclose(g, expected, rtol=1e-4, atol=1e-6)
    if bool(off.any()) and bool(large[off].all()):
        return ("for large |logits| the loss is off: log p_t was taken of a rounded or clamped probability (in "
                "float32 the sigmoid rounds to 1 from x of about 17; an eps in the log, or F.binary_cross_entropy, "
                "which clamps the log at -100); " + _STABLE)
    if bool((g < -1e-7).any()):
        return "the loss is negative somewhere: every entry of -alpha_t (1 - p_t)^gamma log p_t is >= 0"
    return None


@explainer("focal_loss")
def _explain_focal_error(raised, data):
    if ("alpha" in raised.message or "gamma" in raised.message) and \
            ("unexpected keyword" in raised.message or "positional" in raised.message):
        return "the function takes alpha and gamma as arguments: focal_loss(logits, targets, alpha=0.25, gamma=2.0)"
    return None


@verifier("focal_loss")
def _verify_focal(outcomes, data, reveal):
    expected, got = data["expected"], outcomes[0]
    if isinstance(got, torch.Tensor) and tuple(got.shape) != tuple(expected.shape) and \
            (got.ndim == 0 or (got.numel() == 1 and expected.numel() > 1)):
        raise Mismatch((f"loss has shape {tuple(got.shape)}; expected {tuple(expected.shape)}" if reveal
                        else "loss has the wrong shape")
                       + "\nlikely cause: the loss was reduced to one number (a mean or a sum); return it per "
                         "element (no reduction): one loss per logit, the shape of logits")
    got = expect_tensor(got, shape=expected.shape, name="loss")
    _expect_dtype(got, data["dtype"], "loss", "the loss has the dtype of the logits")
    tol = {"atol": 1e-6, "rtol": 1e-4} if data["dtype"] == torch.float32 else {"atol": 1e-8, "rtol": 1e-6}
    compare(got, expected, name="loss", **tol,
            diagnose=lambda g: known_mistake(g, data["mistakes"], 1e-4) or _focal_properties(g, data))


# torchvision's own focal loss (torchvision is not part of the course environment; refused where it is installed).
# F.binary_cross_entropy_with_logits is allowed: the stable -log p_t is mask_loss's exercise (notebook 05), here it
# is a building block; the exercise is the modulating factor and alpha_t.
_LIBRARY_FOCAL = (ForbiddenCallable("torchvision.ops", "sigmoid_focal_loss", "torchvision.ops.sigmoid_focal_loss"),)

register(Exercise(
    "focal_loss", topic="detection",
    summary="per element -alpha_t (1 - p_t)^gamma log p_t with p = sigmoid(logit), p_t and alpha_t = alpha for "
            "targets 1, 1 - p and 1 - alpha for targets 0, no alpha_t when alpha < 0, no reduction, the logits' "
            "shape and dtype: default and other alpha and gamma (0 to 5), large logits (|x| up to 200) stay finite, "
            "imbalanced anchors, float32 and float64, no elements",
    forbidden=(CallableWatch(_LIBRARY_FOCAL, slow_hint="one pass of elementwise operations (an endless loop?)"),),
))
