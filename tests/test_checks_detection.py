"""The checkers of the detection exercises: what the mutant library (lecturelib/hidden/mutants/detection.py, run
by tests/test_audit.py) does not pin: message details, explainers, the NMS threshold rule, refused calls."""
import sys
import types

import pytest
import torch

from check_tools import fails
from lecturelib import reference as ref
from lecturelib.boxes import box_iou
from lecturelib.checks import EXERCISES
from lecturelib.hidden.mutants import detection as library

DETECTION = [name for name, ex in EXERCISES.items() if ex.topic == "detection"]


def test_the_eight_exercises_are_registered():
    assert set(DETECTION) == {"encode_boxes", "decode_boxes", "generate_anchors", "label_anchors", "nms",
                              "rpn_proposals", "yolo_target", "focal_loss"}


# ---------------------------------------------------------------------------------------------
# encode_boxes / decode_boxes (the realistic bugs and alternatives: lecturelib/hidden/mutants/detection.py,
# run by tests/test_audit.py)
# ---------------------------------------------------------------------------------------------
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


def test_decode_without_weights_argument_is_explained():
    message = fails("decode_boxes", lambda anchors, deltas: ref.decode_boxes(anchors, deltas))
    assert "must take a `weights` argument" in message


def test_encode_failing_on_no_boxes_is_explained_without_the_error_message():
    message = fails("encode_boxes", library.encode_rows_stacked, "hidden")
    assert "its message is not shown" in message and "stack expects" not in message
    assert "likely cause: with no boxes (N = 0) the result is an empty (0, 4) tensor" in message, message


# ---------------------------------------------------------------------------------------------
# generate_anchors
# ---------------------------------------------------------------------------------------------
def test_anchor_count_is_explained():
    message = fails("generate_anchors",
                    lambda f, s, sizes, ratios: library.anchors_loops(f, s, sizes, ratios[:1]))
    assert "expected H * W * A" in message and "every size with every ratio" in message


def test_unknown_anchor_bug_gets_a_property_message():
    def shifted_by_one(feature_size, stride, sizes, ratios):
        return library.anchors_loops(feature_size, stride, sizes, ratios) + torch.tensor([1.0, 0.0, 1.0, 0.0])
    message = fails("generate_anchors", shifted_by_one)
    assert "is centred at" in message and "(x * stride, y * stride)" in message


def test_hidden_anchor_failure_reveals_no_inputs():
    message = fails("generate_anchors", library.anchors_half_cell, "hidden")
    head = message.split("likely cause")[0]      # the cause may say what is expected, never which values
    assert "feature_size" not in message and "expected" not in head and "entries" not in head, message
    assert "likely cause: the anchors are shifted by half a cell" in message


def test_anchors_must_be_float32_as_the_exercise_says():
    message = fails("generate_anchors", library.anchors_float64, "hidden")
    assert "anchors has dtype torch.float64; expected torch.float32" in message, message


# ---------------------------------------------------------------------------------------------
# label_anchors
# ---------------------------------------------------------------------------------------------
def test_labels_without_boxes_must_match_nothing():
    def zeros(anchors, gt_boxes, high=0.7, low=0.3, allow_low_quality=True):
        if len(gt_boxes) == 0:
            return torch.zeros(len(anchors), dtype=torch.int64), torch.zeros(len(anchors), dtype=torch.int64)
        return ref.label_anchors(anchors, gt_boxes, high, low, allow_low_quality)
    assert "matched must be all -1" in fails("label_anchors", zeros)


def test_labels_wrong_return_type_is_named():
    message = fails("label_anchors", lambda *a, **k: ref.label_anchors(*a, **k)[0])
    assert "return a tuple (labels, matched)" in message


def test_label_mistakes_with_the_same_output_are_both_named():
    """Low-quality positives all below `low`: missing them and overwriting them with the thresholds give the same
    labels, and the message names both causes (either may be the student's)."""
    for fn in (library.labels_no_low_quality, library.labels_low_quality_first):
        message = fails("label_anchors", fn, "hidden")
        assert "low-quality matches are missing" in message or "overwrote them" in message, message
    message = fails("label_anchors", library.labels_low_quality_first, "hidden")
    assert "; or: the low-quality positives were set first" in message, message


# ---------------------------------------------------------------------------------------------
# nms
# ---------------------------------------------------------------------------------------------
def test_nms_failure_names_the_boxes_involved():
    message = fails("nms", library.nms_against_all_earlier)
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


@pytest.mark.parametrize("threshold, width", [(0.3, 3), (0.4, 4), (0.6, 6)])
def test_nms_compares_the_float32_iou_with_a_float64_threshold(threshold, width):
    """torchvision's rule (its kernel compares a float IoU with a double threshold): the float32 IoU of these
    boxes is float32(threshold) > threshold, so the second box is suppressed; the same boxes in float64 have
    IoU == threshold and both are kept (strictly greater suppresses)."""
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, width, 10.0]])
    scores = torch.tensor([0.9, 0.8])
    assert float(box_iou(boxes, boxes)[0, 1]) > threshold
    assert ref.nms(boxes, scores, threshold).tolist() == [0]
    assert ref.nms(boxes.double(), scores.double(), threshold).tolist() == [0, 1]
    assert library.nms_float32_comparison(boxes, scores, threshold).tolist() == [0, 1]


def test_nms_threshold_rule_is_in_the_exercise_text():
    import nbformat
    from notebook_tools import NOTEBOOKS
    path = next(p for p in NOTEBOOKS if p.stem == "detection")
    text = next(c.source for c in nbformat.read(path, as_version=4).cells
                if c.cell_type == "markdown" and "**Exercise: `nms(" in c.source)
    assert "float64" in text and "iou.double() > iou_threshold" in text, text


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


# ---------------------------------------------------------------------------------------------
# rpn_proposals
# ---------------------------------------------------------------------------------------------
def test_rpn_topk_larger_than_a_level_is_explained():
    message = fails("rpn_proposals", library.rpn_topk_without_min)
    assert "likely cause: a level has fewer anchors than pre_nms_top_n" in message, message


def test_rpn_the_students_own_nms_and_decode_are_allowed_and_the_library_nms_refused(monkeypatch):
    ops = types.ModuleType("torchvision.ops")
    ops.nms = lambda boxes, scores, threshold: ref.nms(boxes, scores, threshold)   # not the reference object itself
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "torchvision.ops", ops)
    message = fails("rpn_proposals", lambda *args: library._rpn(*args, nms_fn=sys.modules["torchvision.ops"].nms))
    assert "your function calls torchvision.ops.nms" in message, message
    from lecturelib.checks import run_suite
    assert run_suite("rpn_proposals", lambda *args: library._rpn(*args), "hidden").passed   # reference nms/decode


def test_rpn_rules_are_in_the_exercise_text():
    import nbformat
    from notebook_tools import NOTEBOOKS
    path = next(p for p in NOTEBOOKS if p.stem == "detection")
    text = " ".join(next(c.source for c in nbformat.read(path, as_version=4).cells
                         if c.cell_type == "markdown" and "**Exercise: `rpn_proposals(" in c.source).split())
    for rule in ("stable=True", "min(pre_nms_top_n, A_l)", "IoU > threshold", "NMS within each level",
                 "dtype of the deltas", "objectness logits", "your own `decode_boxes` and `nms`", "`(H, W)`"):
        assert rule in text, rule


def test_rpn_hidden_failure_reveals_no_count():
    message = fails("rpn_proposals", library.rpn_levels_merged, "hidden")
    assert "wrong number of proposals" in message and "expected scores" not in message, message


# ---------------------------------------------------------------------------------------------
# yolo_target
# ---------------------------------------------------------------------------------------------
def test_yolo_edge_index_is_explained():
    message = fails("yolo_target", library.yolo_no_clamp)
    assert "clamp the cell index to S - 1" in message, message


def test_yolo_unknown_bug_says_which_part_differs():
    def offsets_halved(*args):
        t = ref.yolo_target(*args)
        t[..., 0:2] *= 0.5
        return t
    message = fails("yolo_target", offsets_halved)
    assert "the owning cells are right, but these differ: the centre offsets (x, y)" in message, message


def test_yolo_rules_are_in_the_exercise_text():
    import nbformat
    from notebook_tools import NOTEBOOKS
    path = next(p for p in NOTEBOOKS if p.stem == "detection")
    text = " ".join(c.source for c in nbformat.read(path, as_version=4).cells
                    if c.cell_type == "markdown" and "YOLO" in c.source)
    text = " ".join(text.split())
    for rule in ("below / to the right", "clamp the index to $S - 1$", "same box in every one of the B slots",
                 "the **first** object (lowest index in `boxes`) keeps", "**float32**", "relative to the image",
                 "offset within its cell", "`(H, W)`"):
        assert rule in text, rule


# ---------------------------------------------------------------------------------------------
# focal_loss
# ---------------------------------------------------------------------------------------------
def test_focal_loss_reduced_is_explained_without_the_shape_in_hidden_cases():
    message = fails("focal_loss", library.focal_mean)
    assert "loss has shape (); expected (2, 6)" in message and "reduced to one number" in message, message
    hidden = fails("focal_loss", library.focal_sum, "hidden")
    assert "loss has the wrong shape" in hidden and "expected (" not in hidden and "reduced to one number" in hidden


def test_focal_loss_unstable_log_names_the_stable_form():
    message = fails("focal_loss", library.focal_log_of_sigmoid)
    assert "large logits (|x| up to 200)" in message and "got inf" in message, message
    assert "the loss is not finite for large |logits|" in message and "F.binary_cross_entropy_with_logits" in message


def test_focal_loss_unknown_bug_at_large_logits_gets_the_property_message():
    def clamped_at_10(logits, targets, alpha=0.25, gamma=2.0):
        return ref.focal_loss(logits.clamp(-10, 10), targets, alpha, gamma)
    message = fails("focal_loss", clamped_at_10)
    assert "for large |logits| the loss is off" in message, message


def test_focal_loss_without_alpha_and_gamma_arguments_is_explained():
    message = fails("focal_loss", lambda logits, targets: ref.focal_loss(logits, targets))
    assert "takes alpha and gamma as arguments" in message, message


def test_focal_loss_refuses_torchvision_and_allows_the_stable_cross_entropy(monkeypatch):
    """torchvision is not in the course environment: a fake ``torchvision.ops`` stands in for it."""
    calls = []

    def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
        calls.append(1)
        return ref.focal_loss(inputs, targets, alpha, gamma)
    torchvision = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    ops.sigmoid_focal_loss = sigmoid_focal_loss
    torchvision.ops = ops
    monkeypatch.setitem(sys.modules, "torchvision", torchvision)
    monkeypatch.setitem(sys.modules, "torchvision.ops", ops)
    message = fails("focal_loss", lambda logits, targets, alpha=0.25, gamma=2.0:
                    sys.modules["torchvision.ops"].sigmoid_focal_loss(logits, targets, alpha, gamma))
    assert calls and "your function calls torchvision.ops.sigmoid_focal_loss" in message, message
    from lecturelib.checks import run_suite
    assert run_suite("focal_loss", library.focal_logsigmoid, "visible").passed
    assert run_suite("focal_loss", ref.focal_loss, "hidden").passed     # uses F.binary_cross_entropy_with_logits


def test_focal_loss_rules_are_in_the_exercise_text():
    import nbformat
    from notebook_tools import NOTEBOOKS
    path = next(p for p in NOTEBOOKS if p.stem == "detection")
    cell = next(c for c in nbformat.read(path, as_version=4).cells if c.get("id") == "ssd-focal-text")
    text = " ".join(cell.source.split())
    for rule in ("$\\alpha_t = \\alpha$", "$\\alpha < 0$", "no reduction", "dtype of `logits`",
                 "`F.binary_cross_entropy_with_logits(logits, targets, reduction=\"none\")` is allowed",
                 "`torchvision.ops.sigmoid_focal_loss` is refused", "up to $|x| = 200$"):
        assert rule in text, rule
