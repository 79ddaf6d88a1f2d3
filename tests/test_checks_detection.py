"""The checkers of the detection exercises: references pass, realistic bugs fail with their cause."""
import math
import sys
import types

import numpy as np
import pytest
import torch

from check_tools import fails
from lecturelib import reference as ref
from lecturelib.boxes import box_iou
from lecturelib.checks import EXERCISES, run_suite

DETECTION = [name for name, ex in EXERCISES.items() if ex.topic == "detection"]
CLIP = math.log(1000 / 16)


def test_the_five_exercises_are_registered():
    assert set(DETECTION) == {"encode_boxes", "decode_boxes", "generate_anchors", "label_anchors", "nms"}


def _assert_cause(name, fn, cause, suite="visible"):
    message = fails(name, fn, suite)
    assert "likely cause" in message and cause in message, message


# ---------------------------------------------------------------------------------------------
# encode_boxes / decode_boxes
# ---------------------------------------------------------------------------------------------
def _centres(b, plus_one=0.0):
    w, h = b[:, 2] - b[:, 0] + plus_one, b[:, 3] - b[:, 1] + plus_one
    return b[:, 0] + w / 2, b[:, 1] + h / 2, w, h


def encode_loop(anchors, gt_boxes, weights=(1.0, 1.0, 1.0, 1.0)):
    """An alternative correct implementation: one box at a time with math.log."""
    rows = []
    for a, g in zip(anchors.tolist(), gt_boxes.tolist()):
        aw, ah, gw, gh = a[2] - a[0], a[3] - a[1], g[2] - g[0], g[3] - g[1]
        ax, ay, gx, gy = a[0] + aw / 2, a[1] + ah / 2, g[0] + gw / 2, g[1] + gh / 2
        rows.append([weights[0] * (gx - ax) / aw, weights[1] * (gy - ay) / ah,
                     weights[2] * math.log(gw / aw), weights[3] * math.log(gh / ah)])
    return torch.tensor(rows, dtype=anchors.dtype).reshape(-1, 4)


def encode_corners(anchors, gt_boxes, weights=(1.0, 1.0, 1.0, 1.0)):
    w = anchors[:, 2] - anchors[:, 0]
    h = anchors[:, 3] - anchors[:, 1]
    return (gt_boxes - anchors) / torch.stack([w, h, w, h], 1) * torch.tensor(weights, dtype=anchors.dtype)


def encode_no_log(anchors, gt_boxes, weights=(1.0, 1.0, 1.0, 1.0)):
    ax, ay, aw, ah = _centres(anchors)
    gx, gy, gw, gh = _centres(gt_boxes)
    return torch.stack([weights[0] * (gx - ax) / aw, weights[1] * (gy - ay) / ah, weights[2] * gw / aw,
                        weights[3] * gh / ah], 1)


def encode_no_weights(anchors, gt_boxes, weights=(1.0, 1.0, 1.0, 1.0)):
    return ref.encode_boxes(anchors, gt_boxes)


def encode_plus_one(anchors, gt_boxes, weights=(1.0, 1.0, 1.0, 1.0)):
    ax, ay, aw, ah = _centres(anchors, 1.0)
    gx, gy, gw, gh = _centres(gt_boxes, 1.0)
    return torch.stack([weights[0] * (gx - ax) / aw, weights[1] * (gy - ay) / ah,
                        weights[2] * torch.log(gw / aw), weights[3] * torch.log(gh / ah)], 1)


def encode_swapped(anchors, gt_boxes, weights=(1.0, 1.0, 1.0, 1.0)):
    return ref.encode_boxes(gt_boxes, anchors, weights)


def test_encode_alternative_implementation_passes_both_suites():
    assert run_suite("encode_boxes", encode_loop, "visible").passed
    assert run_suite("encode_boxes", encode_loop, "hidden").passed


@pytest.mark.parametrize("fn, cause", [
    (encode_corners, "between corners"),
    (encode_no_log, "plain ratios"),
    (encode_no_weights, "weights were ignored"),
    (encode_plus_one, "x2 - x1 + 1"),
    (encode_swapped, "swapped"),
])
def test_encode_bugs_are_named(fn, cause):
    _assert_cause("encode_boxes", fn, cause)


def decode_no_clamp(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0)):
    ax, ay, aw, ah = _centres(anchors)
    d = deltas / torch.tensor(weights, dtype=deltas.dtype)
    cx, cy, w, h = ax + d[:, 0] * aw, ay + d[:, 1] * ah, aw * d[:, 2].exp(), ah * d[:, 3].exp()
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


def decode_clamp_both(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0)):
    d = deltas / torch.tensor(weights, dtype=deltas.dtype)
    d = torch.cat([d[:, :2], d[:, 2:].clamp(-CLIP, CLIP)], 1)
    return decode_no_clamp(anchors, d)


def decode_no_exp(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0)):
    ax, ay, aw, ah = _centres(anchors)
    d = deltas / torch.tensor(weights, dtype=deltas.dtype)
    dw, dh = d[:, 2].clamp(max=CLIP), d[:, 3].clamp(max=CLIP)
    cx, cy, w, h = ax + d[:, 0] * aw, ay + d[:, 1] * ah, aw * dw, ah * dh
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


def decode_corners(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0)):
    w, h = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    return anchors + deltas / torch.tensor(weights, dtype=deltas.dtype) * torch.stack([w, h, w, h], 1)


def decode_multiplied_weights(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0)):
    return ref.decode_boxes(anchors, deltas * torch.tensor(weights, dtype=deltas.dtype) ** 2, weights)


def test_decode_round_trip_of_the_reference():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g, dtype=torch.float64) * 50
    anchors = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=g, dtype=torch.float64) * 30], 1)
    xy = torch.rand(50, 2, generator=g, dtype=torch.float64) * 50
    gt = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=g, dtype=torch.float64) * 30], 1)
    for weights in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
        torch.testing.assert_close(ref.decode_boxes(anchors, ref.encode_boxes(anchors, gt, weights), weights), gt)
    huge = ref.decode_boxes(anchors[:1], torch.tensor([[0.0, 0.0, 50.0, 50.0]], dtype=torch.float64))
    assert torch.isfinite(huge).all()
    width = huge[0, 2] - huge[0, 0]
    assert torch.isclose(width, (anchors[0, 2] - anchors[0, 0]) * 1000 / 16)


@pytest.mark.parametrize("fn, cause", [
    (decode_no_clamp, "not clamped"),
    (decode_clamp_both, "from below too"),
    (decode_no_exp, "exp(dw)"),
    (decode_corners, "added to the corners"),
    (decode_multiplied_weights, "multiplied by the weights"),
])
def test_decode_bugs_are_named(fn, cause):
    _assert_cause("decode_boxes", fn, cause)


def test_decode_without_weights_argument_is_explained():
    message = fails("decode_boxes", lambda anchors, deltas: ref.decode_boxes(anchors, deltas))
    assert "must take a `weights` argument" in message


# ---------------------------------------------------------------------------------------------
# generate_anchors
# ---------------------------------------------------------------------------------------------
def anchors_loops(feature_size, stride, sizes, ratios):
    """An alternative correct implementation with Python loops and round() (half to even, like torch)."""
    height, width = feature_size
    cell = []
    for r in ratios:
        for s in sizes:
            h, w = s * math.sqrt(r), s / math.sqrt(r)
            cell.append([round(-w / 2), round(-h / 2), round(w / 2), round(h / 2)])
    rows = []
    for y in range(height):
        for x in range(width):
            for x1, y1, x2, y2 in cell:
                rows.append([x * stride + x1, y * stride + y1, x * stride + x2, y * stride + y2])
    return torch.tensor(rows, dtype=torch.float32)


def _variant(**changes):
    """generate_anchors with one convention changed (a realistic bug)."""
    def fn(feature_size, stride, sizes, ratios):
        height, width = feature_size
        r = torch.tensor(ratios, dtype=torch.float64)
        s = torch.tensor(sizes, dtype=torch.float64)
        hr = 1 / r.sqrt() if changes.get("ratio_wh") else r.sqrt()
        wr = 1 / hr
        if changes.get("size_major"):
            ws, hs = (s[:, None] * wr[None]).reshape(-1), (s[:, None] * hr[None]).reshape(-1)
        else:
            ws, hs = (wr[:, None] * s[None]).reshape(-1), (hr[:, None] * s[None]).reshape(-1)
        cell = torch.stack([-ws, -hs, ws, hs], 1) / 2
        if changes.get("half_up"):
            cell = torch.floor(cell + 0.5)
        elif not changes.get("not_rounded"):
            cell = cell.round()
        step = 1 if changes.get("no_stride") else stride
        offset = stride / 2 if changes.get("half_cell") else 0.0
        ys = torch.arange(height, dtype=torch.float64) * step + offset
        xs = torch.arange(width, dtype=torch.float64) * step + offset
        if changes.get("xy_swapped"):
            xx, yy = torch.meshgrid(xs, ys, indexing="ij")
        else:
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([xx, yy, xx, yy], -1).reshape(-1, 1, 4)
        anchors = shifts + cell[None]
        if changes.get("location_minor"):
            anchors = anchors.transpose(0, 1)
        return anchors.reshape(-1, 4).float()
    return fn


def test_anchor_alternative_implementation_passes_both_suites():
    assert run_suite("generate_anchors", anchors_loops, "visible").passed
    assert run_suite("generate_anchors", anchors_loops, "hidden").passed
    assert run_suite("generate_anchors", _variant(), "hidden").passed


@pytest.mark.parametrize("bug, cause", [
    ("ratio_wh", "ratio = h / w"),
    ("size_major", "ratio-major"),
    ("half_cell", "half a cell"),
    ("no_stride", "not multiplied by the stride"),
    ("not_rounded", "were not rounded"),
    ("half_up", "halves were rounded up"),
    ("xy_swapped", "column-major"),
    ("location_minor", "grouped by anchor type"),
])
@pytest.mark.parametrize("suite", ["visible", "hidden"])
def test_anchor_bugs_are_named(bug, cause, suite):
    _assert_cause("generate_anchors", _variant(**{bug: True}), cause, suite)


def test_anchor_count_is_explained():
    message = fails("generate_anchors", lambda f, s, sizes, ratios: anchors_loops(f, s, sizes, ratios[:1]))
    assert "expected H * W * A" in message and "every size with every ratio" in message


def test_unknown_anchor_bug_gets_a_property_message():
    def shifted_by_one(feature_size, stride, sizes, ratios):
        return anchors_loops(feature_size, stride, sizes, ratios) + torch.tensor([1.0, 0.0, 1.0, 0.0])
    message = fails("generate_anchors", shifted_by_one)
    assert "is centred at" in message and "(x * stride, y * stride)" in message


def test_hidden_anchor_failure_reveals_no_inputs():
    message = fails("generate_anchors", _variant(half_cell=True), "hidden")
    head = message.split("likely cause")[0]      # the cause may say what is expected, never which values
    assert "feature_size" not in message and "expected" not in head and "entries" not in head, message
    assert "likely cause: the anchors are shifted by half a cell" in message


# ---------------------------------------------------------------------------------------------
# label_anchors
# ---------------------------------------------------------------------------------------------
def labels_loops(anchors, gt_boxes, high=0.7, low=0.3, allow_low_quality=True):
    """An alternative correct implementation: per anchor and per box in plain Python (with lecturelib's box_iou)."""
    n = len(anchors)
    if len(gt_boxes) == 0:
        return torch.zeros(n, dtype=torch.int64), torch.full((n,), -1, dtype=torch.int64)
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
    return torch.tensor(labels), torch.tensor(matched)


def _labels_variant(bug):
    def fn(anchors, gt_boxes, high=0.7, low=0.3, allow_low_quality=True):
        n = len(anchors)
        if len(gt_boxes) == 0:
            return torch.zeros(n, dtype=torch.int64), torch.full((n,), -1, dtype=torch.int64)
        iou = box_iou(gt_boxes, anchors)
        best, matched = iou.max(0)
        neg, ign = (-1, 0) if bug == "swapped_values" else (0, -1)
        labels = torch.full((n,), ign, dtype=torch.int64)
        labels[(best <= low) if bug == "low_inclusive" else (best < low)] = neg
        labels[(best > high) if bug == "strict_high" else (best >= high)] = 1
        if (allow_low_quality or bug == "flag_ignored") and bug != "no_low_quality":
            per_gt = iou.max(1, keepdim=True).values
            if bug == "argmax_only":
                labels[iou.argmax(1)[per_gt[:, 0] > 0]] = 1
            else:
                ties = iou == per_gt
                if bug != "zero_iou_trap":
                    ties &= per_gt > 0
                labels[ties.any(0)] = 1
                if bug == "matched_to_own_gt":
                    g, i = ties.nonzero(as_tuple=True)
                    matched[i] = g
        return labels, matched
    return fn


def test_labels_alternative_implementation_passes_both_suites():
    assert run_suite("label_anchors", labels_loops, "visible").passed
    assert run_suite("label_anchors", labels_loops, "hidden").passed


@pytest.mark.parametrize("bug, cause", [
    ("zero_iou_trap", "overlaps NO anchor"),
    ("no_low_quality", "low-quality matches are missing"),
    ("argmax_only", "only one anchor per ground truth"),
    ("flag_ignored", "allow_low_quality=False"),
    ("strict_high", "exactly `high`"),
    ("low_inclusive", "exactly `low`"),
    ("swapped_values", "swapped"),
    ("matched_to_own_gt", "not the box for which it was the best anchor"),
])
@pytest.mark.parametrize("suite", ["visible", "hidden"])
def test_label_bugs_are_named(bug, cause, suite):
    _assert_cause("label_anchors", _labels_variant(bug), cause, suite)


def test_labels_without_boxes_must_match_nothing():
    def zeros(anchors, gt_boxes, high=0.7, low=0.3, allow_low_quality=True):
        if len(gt_boxes) == 0:
            return torch.zeros(len(anchors), dtype=torch.int64), torch.zeros(len(anchors), dtype=torch.int64)
        return ref.label_anchors(anchors, gt_boxes, high, low, allow_low_quality)
    assert "matched must be all -1" in fails("label_anchors", zeros)


def test_labels_wrong_return_type_is_named():
    message = fails("label_anchors", lambda *a, **k: ref.label_anchors(*a, **k)[0])
    assert "return a tuple (labels, matched)" in message


# ---------------------------------------------------------------------------------------------
# nms
# ---------------------------------------------------------------------------------------------
def nms_numpy(boxes, scores, iou_threshold):
    """An alternative correct implementation in NumPy (the classic py-faster-rcnn loop, without +1)."""
    b, s = boxes.double().numpy(), scores.double().numpy()
    x1, y1, x2, y2 = b.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-s, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        w = np.maximum(0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]))
        h = np.maximum(0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]))
        inter = w * h
        union = areas[i] + areas[order[1:]] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
        order = order[1:][iou <= iou_threshold]
    return torch.tensor(keep, dtype=torch.int64)


def _nms_variant(bug):
    def fn(boxes, scores, iou_threshold):
        if bug == "unsorted":
            order = torch.arange(len(scores))
        elif bug == "unstable":
            order = torch.sort(scores + 0.0, descending=True).indices.flip(0).flip(0)
            groups = {}
            for i in order.tolist():
                groups.setdefault(float(scores[i]), []).append(i)
            order = torch.tensor([i for key in sorted(groups, reverse=True) for i in reversed(groups[key])],
                                 dtype=torch.int64)
        else:
            order = torch.sort(scores, descending=True, stable=True).indices
        iou = box_iou(boxes, boxes)
        keep, removed = [], torch.zeros(len(boxes), dtype=torch.bool)
        for rank, i in enumerate(order.tolist()):
            if bug == "against_all":
                if (iou[i, order[:rank]] > iou_threshold).any():
                    continue
            elif removed[i]:
                continue
            keep.append(i)
            removed |= (iou[i] >= iou_threshold) if bug == "greater_equal" else (iou[i] > iou_threshold)
        keep = torch.tensor(keep, dtype=torch.int64)
        return keep.sort().values if bug == "index_order" else keep
    return fn


def test_nms_alternative_implementation_passes_both_suites():
    assert run_suite("nms", nms_numpy, "visible").passed
    assert run_suite("nms", nms_numpy, "hidden").passed


@pytest.mark.parametrize("bug, cause", [
    ("greater_equal", "IoU > threshold"),
    ("unsorted", "input order"),
    ("against_all", "KEPT so far"),
    ("index_order", "index order"),
    ("unstable", "stable sort"),
])
def test_nms_bugs_are_named(bug, cause):
    _assert_cause("nms", _nms_variant(bug), cause)


def test_nms_failure_names_the_boxes_involved():
    message = fails("nms", _nms_variant("against_all"))
    assert "box 2 (score 0.7) was suppressed although no kept box with a higher score overlaps it" in message


def test_nms_characterisation_holds_for_the_reference():
    """A box is kept iff no kept box with a higher score overlaps it with IoU > threshold."""
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(300, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(300, 2, generator=g) * 20], 1)
    scores = torch.rand(300, generator=g)
    keep = ref.nms(boxes, scores, 0.45)
    assert torch.all(scores[keep][:-1] >= scores[keep][1:])
    kept = set(keep.tolist())
    iou = box_iou(boxes, boxes)
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    for rank, i in enumerate(order):
        blocked = any(iou[i, j] > 0.45 for j in order[:rank] if j in kept)
        assert (i in kept) != blocked


def test_nms_library_is_refused_and_no_oracle_ships(monkeypatch):
    """The oracle lives grader-side only (the student package has none to paste); the library NMS is refused.
    torchvision is not installed here: a stand-in module holds the reference under its name."""
    from lecturelib.checks import detection as checks
    assert not hasattr(checks, "_nms_oracle")
    ops = types.ModuleType("torchvision.ops")
    ops.nms = ref.nms
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "torchvision.ops", ops)
    message = fails("nms", lambda b, s, t: sys.modules["torchvision.ops"].nms(b, s, t))
    assert "your function calls torchvision.ops.nms" in message and "implement it yourself" in message, message
