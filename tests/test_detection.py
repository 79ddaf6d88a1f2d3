"""The detection topic module: inference and training plumbing, demos and widgets, shipped weights, notebook."""
import ast
import math
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pytest
import torch

from lecturelib import data, detection
from lecturelib import reference as ref
from lecturelib._student import reference_functions
from lecturelib.boxes import box_iou
from lecturelib.train import read_metadata
from notebook_tools import REPO

matplotlib.use("Agg")
NOTEBOOK = REPO / "notebooks" / "03_detection" / "detection.ipynb"
WEIGHTS = REPO / "lecturelib" / "weights" / "detector_shapes.pt"
GRADED = ref.detection.__all__


# ---------------------------------------------------------------------------------------------
# The reference functions: properties the checks rely on
# ---------------------------------------------------------------------------------------------
def test_reference_anchors_follow_torchvision_conventions():
    anchors = ref.generate_anchors((2, 3), 16, (32, 64), (0.5, 1.0, 2.0))
    assert anchors.shape == (2 * 3 * 6, 4) and anchors.dtype == torch.float32
    cell = anchors[:6]
    w, h = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]
    assert torch.allclose(h / w, torch.tensor([0.5, 0.5, 1.0, 1.0, 2.0, 2.0]), rtol=0.05)  # ratio-major
    assert torch.allclose(w * h, torch.tensor([32.0, 64, 32, 64, 32, 64]) ** 2, rtol=0.05)
    assert torch.equal(cell, cell.round())
    # location (y=1, x=2) is anchor block (1 * 3 + 2); shifted by (2 * 16, 1 * 16), no half cell
    assert torch.equal(anchors[(1 * 3 + 2) * 6:(1 * 3 + 2) * 6 + 6], cell + torch.tensor([32.0, 16, 32, 16]))
    # torchvision's documented example: size 32, ratio 1 at location 0 is [-16, -16, 16, 16]
    assert ref.generate_anchors((1, 1), 16, (32,), (1.0,)).tolist() == [[-16.0, -16.0, 16.0, 16.0]]


def test_reference_labels_match_torchvision_except_the_zero_iou_trap():
    anchors = torch.tensor([[0.0, 0, 10, 10], [10, 0, 20, 10], [30, 0, 40, 10]])
    gt = torch.tensor([[0.0, 0, 10, 10], [100, 100, 110, 110]])
    labels, matched = ref.label_anchors(anchors, gt)
    assert labels.tolist() == [1, 0, 0] and matched[0] == 0        # the far box adds no positives
    labels, _ = ref.label_anchors(anchors, gt[:0])
    assert labels.tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="low must be <= high"):
        ref.label_anchors(anchors, gt, high=0.3, low=0.7)


def test_reference_nms_matches_the_definition_on_random_clusters():
    g = torch.Generator().manual_seed(1)
    for trial in range(20):
        n = int(torch.randint(1, 60, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 40
        boxes = torch.cat([xy, xy + 4 + torch.rand(n, 2, generator=g) * 20], 1)
        scores = torch.randint(0, 5, (n,), generator=g).float() if trial % 2 else torch.rand(n, generator=g)
        keep = ref.nms(boxes, scores, 0.5)
        order = sorted(range(n), key=lambda i: (-float(scores[i]), i))      # stable descending
        iou = box_iou(boxes, boxes)
        expected = []
        for i in order:
            if all(iou[i, j] <= 0.5 for j in expected):
                expected.append(i)
        assert keep.tolist() == expected


def test_reference_decode_clamps_only_from_above():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]], dtype=torch.float64)
    big = ref.decode_boxes(anchors, torch.tensor([[0.0, 0.0, 20.0, -20.0]], dtype=torch.float64))
    assert math.isclose(float(big[0, 2] - big[0, 0]), 10 * 1000 / 16, rel_tol=1e-12)
    assert 0 < float(big[0, 3] - big[0, 1]) < 1e-7


@pytest.mark.parametrize("name", GRADED)
def test_reference_validates_arguments(name):
    bad = {"encode_boxes": (torch.zeros(2, 4), torch.zeros(3, 4)),
           "decode_boxes": (torch.zeros(2, 4), torch.zeros(2, 4), (1.0, 1.0)),
           "generate_anchors": ((2, 2, 2), 16, (32,), (1.0,)),
           "label_anchors": (torch.zeros(2, 3), torch.zeros(1, 4)),
           "nms": (torch.zeros(3, 4), torch.zeros(2), 0.5),
           "rpn_proposals": ([torch.zeros(2)], [torch.zeros(2, 4)], [], (64, 64), 10, 5, 0.7),
           "yolo_target": (torch.zeros(2, 4), torch.zeros(3, dtype=torch.int64), 2, 1, 3, (64, 64)),
           "focal_loss": (torch.zeros(2, 3), torch.zeros(3, 2))}[name]
    with pytest.raises((ValueError, TypeError)):
        getattr(ref, name)(*bad)


def test_reference_focal_loss_arguments_are_named_when_wrong():
    x, t = torch.zeros(2, 3), torch.zeros(2, 3)
    for args, word in (((x, torch.zeros(3, 2)), "targets"), ((x.long(), t.long()), "logits"),
                       ((x, t.long()), "targets"), ((x, t, 1.5), "alpha"), ((x, t, 0.25, -1.0), "gamma"),
                       ((x, t, None), "alpha")):
        with pytest.raises((ValueError, TypeError), match=word):
            ref.focal_loss(*args)


def test_reference_focal_loss_follows_torchvisions_convention():
    """torchvision's sigmoid_focal_loss (reduction="none"), written out: p_t, alpha_t, alpha < 0 = no weighting;
    gamma = 0 with alpha < 0 is the cross-entropy; float32 logits of +-200 stay finite; the logits' dtype."""
    import torch.nn.functional as F
    logits = torch.tensor([[-4.0, 0.0, 3.0, 2.0, 200.0, -200.0]], dtype=torch.float64)
    targets = torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    torch.testing.assert_close(ref.focal_loss(logits, targets, alpha=-1, gamma=0.0), ce)
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = 0.25 * targets + 0.75 * (1 - targets)
    torch.testing.assert_close(ref.focal_loss(logits, targets), alpha_t * ce * (1 - p_t) ** 2)
    torch.testing.assert_close(ref.focal_loss(logits, targets, alpha=-0.5), ce * (1 - p_t) ** 2)
    f32 = ref.focal_loss(logits.float(), targets.float())
    assert f32.dtype == torch.float32 and torch.isfinite(f32).all() and float(f32[0, 4]) == pytest.approx(150.0)


# ---------------------------------------------------------------------------------------------
# Inference plumbing: the functions passed in are the ones used
# ---------------------------------------------------------------------------------------------
def _model():
    torch.manual_seed(0)
    model = detection.TinyDetector().eval()
    model.anchors.copy_(ref.generate_anchors(**detection.DETECTOR_ANCHORS))
    return model


def test_predict_uses_the_given_decode_and_nms():
    model = _model()
    images = data.make_shapes(2, seed=5, occlusion=False)
    calls = {"decode": 0, "nms": []}

    def decode(anchors, deltas, weights):
        calls["decode"] += 1
        assert anchors.shape == deltas.shape == (576, 4) and weights == detection.BOX_WEIGHTS
        return ref.decode_boxes(anchors, deltas, weights)

    def keep_first_two(boxes, scores, iou_threshold):
        calls["nms"].append((len(boxes), iou_threshold))
        return torch.tensor([1, 0])
    raw = detection.raw_detections(model, images, decode)
    out = detection.predict(model, images, decode, keep_first_two, score_threshold=0.0, iou_threshold=0.3,
                            per_class=False)
    assert calls["decode"] == 4 and calls["nms"] == [(576, 0.3), (576, 0.3)]
    for r, o in zip(raw, out):
        kept = torch.tensor([1, 0])[torch.sort(r["scores"][[1, 0]], descending=True, stable=True).indices]
        assert torch.equal(o["boxes"], r["boxes"][kept]) and torch.equal(o["labels"], r["labels"][kept])
        assert bool(((r["boxes"] >= 0) & (r["boxes"] <= 64)).all())
        assert bool(((r["scores"] >= 0) & (r["scores"] <= 1)).all()) and set(r["labels"].tolist()) <= {1, 2, 3, 4}


def test_postprocess_thresholds_before_nms_and_caps_the_count():
    raw = {"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [1, 1, 11, 11], [40, 40, 50, 50]]),
           "scores": torch.tensor([0.9, 0.02, 0.8, 0.5]), "labels": torch.tensor([1, 2, 3, 4])}
    out = detection.postprocess(raw, ref.nms, score_threshold=0.05, iou_threshold=0.5, per_class=False)
    assert out["scores"].tolist() == pytest.approx([0.9, 0.5]) and out["labels"].tolist() == [1, 4]
    # per class (the default): the class-3 box overlapping the class-1 box (IoU 0.68) survives, by score order
    out = detection.postprocess(raw, ref.nms, score_threshold=0.05, iou_threshold=0.5)
    assert out["scores"].tolist() == pytest.approx([0.9, 0.8, 0.5]) and out["labels"].tolist() == [1, 3, 4]
    same_class = {**raw, "labels": torch.tensor([1, 2, 1, 4])}
    assert detection.postprocess(same_class, ref.nms, score_threshold=0.05)["labels"].tolist() == [1, 4]
    capped = detection.postprocess(raw, ref.nms, score_threshold=0.0, iou_threshold=0.5, max_detections=1)
    assert capped["labels"].tolist() == [1]
    with pytest.raises(ValueError, match="score_threshold"):
        detection.postprocess(raw, ref.nms, score_threshold=2.0)
    with pytest.raises(TypeError, match="nms_fn"):
        detection.postprocess(raw, None)


def test_detection_loss_is_small_for_a_perfect_output_and_larger_for_a_random_one():
    model = _model()
    shapes = data.make_shapes(3, seed=8, occlusion=False)
    targets = [detection.DetectorDataset(shapes)[i][1] for i in range(3)]
    anchors = model.anchors
    n = len(anchors)
    perfect = {"objectness": torch.zeros(3, n), "deltas": torch.zeros(3, n, 4), "class_logits": torch.zeros(3, n, 4)}
    for i, t in enumerate(targets):
        labels, matched = ref.label_anchors(anchors, t["boxes"], high=0.5, low=0.3)
        perfect["objectness"][i] = torch.where(labels == 1, 30.0, -30.0)
        pos = labels == 1
        perfect["deltas"][i, pos] = ref.encode_boxes(anchors[pos], t["boxes"][matched[pos]])
        perfect["class_logits"][i, pos, t["labels"][matched[pos]] - 1] = 30.0
    good = detection.detection_loss(perfect, targets, anchors, label_fn=ref.label_anchors,
                                    encode_fn=ref.encode_boxes)
    assert good["loss"].item() < 1e-6
    outputs = model(shapes.image_tensor())
    bad = detection.detection_loss(outputs, targets, anchors, label_fn=ref.label_anchors, encode_fn=ref.encode_boxes)
    assert bad["loss"].item() > 1.0
    bad["loss"].backward()
    assert model.deltas.weight.grad.abs().sum() > 0 and model.classes.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# Shipped weights
# ---------------------------------------------------------------------------------------------
def test_shipped_detector_is_small_trained_with_these_anchors_and_good_enough():
    assert WEIGHTS.stat().st_size < 1_500_000
    meta = read_metadata(WEIGHTS)
    assert meta["command"] == "python scripts/train_weights.py detection"
    # trained and measured on the data set's default (occlusion on), and measured unoccluded too
    assert meta["train"].startswith("make_shapes(") and "occlusion" not in meta["train"]
    assert meta["test"] == "make_shapes(1000, seed=1)" and meta["min_visibility"] == data.MIN_VISIBILITY
    assert meta["map50"] >= 0.9 and meta["map50_unoccluded"] > meta["map50"]
    assert meta["coco"] < meta["map75"] < meta["map50"]      # AP@[.5:.95] averages stricter thresholds in
    assert meta["train_seconds"] <= 400                       # "about 6 minutes" on 2 cores
    model = detection.load_pretrained()
    assert not model.training
    assert torch.equal(model.anchors, ref.generate_anchors(**detection.DETECTOR_ANCHORS))
    held_out = data.make_shapes(200, seed=1)
    scores = detection.evaluate(model, held_out, ref.decode_boxes, ref.nms, coco=True)
    assert scores["map"][0.5] > 0.85 and scores["coco"] < scores["map"][0.75] < scores["map"][0.5]
    unoccluded = detection.evaluate(model, data.make_shapes(200, seed=1, occlusion=False), ref.decode_boxes, ref.nms)
    assert unoccluded["map"][0.5] > 0.95
    with pytest.raises(ValueError, match="detector_shapes"):
        detection.load_pretrained("other")


# ---------------------------------------------------------------------------------------------
# Demos and widgets run the functions they are given
# ---------------------------------------------------------------------------------------------
def test_anchor_view_reports_stubs_and_wrong_counts():
    view = detection.anchor_view(ref.generate_anchors, 64, 16, (16, 32), (0.5, 1.0, 2.0), location=(1, 2))
    assert len(view["anchors"]) == 4 * 4 * 6 and view["location"] == (1, 2)
    assert torch.equal(view["highlight"], view["anchors"][(1 * 4 + 2) * 6:(1 * 4 + 2) * 6 + 6])
    assert view["centres"][1 * 4 + 2].tolist() == [32.0, 16.0]

    def stub(*args):
        raise NotImplementedError()
    assert "implement generate_anchors" in detection.anchor_view(stub)["error"]
    assert "expected 96" in detection.anchor_view(lambda *a: torch.zeros(5, 4), 64, 16, (16, 32),
                                                  (0.5, 1.0, 2.0))["error"]
    with pytest.raises(ValueError, match="stride"):
        detection.anchor_view(ref.generate_anchors, 64, 0)
    with pytest.raises(TypeError, match="ratios"):
        detection.anchor_view(ref.generate_anchors, 64, 16, (16,), ())


def test_explorers_run_the_functions_they_are_given():
    seen = []

    def counting(*args):
        seen.append(args[:2])
        return ref.generate_anchors(*args)
    box = detection.anchor_explorer(counting)
    assert seen == [((4, 4), 16)] and len(box.interactive.result["anchors"]) == 4 * 4 * 6
    kept_sizes = []

    def counting_nms(boxes, scores, threshold):
        keep = ref.nms(boxes, scores, threshold)
        kept_sizes.append(len(keep))
        return keep
    images = data.make_shapes(2, seed=9, occlusion=False).images
    box = detection.nms_explorer(_model(), images, ref.decode_boxes, counting_nms)
    views = box.interactive.result
    # NMS runs per class, as in the evaluation: one call per class present among each image's candidates
    calls = sum(len(torch.unique(v["candidates"]["labels"])) for v in views)
    assert len(views) == 2 and len(kept_sizes) == calls
    assert sum(len(v["kept"]["scores"]) for v in views) == sum(kept_sizes)
    for view in views:
        assert len(view["kept"]["scores"]) <= len(view["candidates"]["scores"])


def test_nms_view_reports_a_failing_nms():
    raw = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}

    def broken(*args):
        raise IndexError("oops")
    assert detection.nms_view(raw, broken)["error"] == "your nms raised IndexError: oops"


def test_roi_align_follows_a_sliding_box_and_roi_pool_jumps():
    shifts = np.linspace(0, 2, 17)
    curve = detection.roi_shift_curve(shifts)
    assert np.allclose(curve["align"], curve["exact"], atol=1e-9)
    steps = np.unique(np.round(np.diff(curve["pool"]), 9))
    assert set(steps) <= {0.0, 1.0}                                  # a staircase of whole cells
    assert np.abs(curve["pool"] - curve["pool"][0] - shifts).max() >= 0.5 - 1e-9


def test_ramp_features_hold_the_ramp_at_cell_centres():
    ramp = detection.ramp_features(3, 4, a=2.0, b=1.0, c=0.5)
    assert ramp.shape == (1, 1, 3, 4) and float(ramp[0, 0, 2, 1]) == 2 * 1.5 + 2.5 + 0.5


def test_family_costs_lists_the_four_designs():
    rows = detection.family_costs(regions=5, repeat=1)
    assert [r["design"] for r in rows] == ["R-CNN", "Fast R-CNN", "Faster R-CNN", "one-stage (YOLO/SSD)"]
    assert rows[0]["shared"] == "nothing" and rows[-1]["per_region"].startswith("nothing")
    with pytest.raises(ValueError, match="regions"):
        detection.family_costs(regions=0)
    with pytest.raises(TypeError, match="TinyDetector"):
        detection.family_costs(model=torch.nn.Linear(2, 2))


def test_drawing_functions_return_figures():
    shapes = data.make_shapes(3, seed=7, occlusion=False)
    dets = detection.predict(_model(), shapes, ref.decode_boxes, ref.nms)
    assert len(detection.show_detections(shapes, dets).axes) == 6
    assert len(detection.plot_roi_grid(shift=0.25).axes) == 3
    view = detection.anchor_view(ref.generate_anchors)
    ax = detection.plot_anchors(view, shapes.images[0])
    assert len(ax.patches) == view["A"]


# ---------------------------------------------------------------------------------------------
# What ships to students, and the notebook
# ---------------------------------------------------------------------------------------------
def _defined_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


def test_student_modules_hold_no_graded_implementation():
    for module in ("detection.py", "detection_models.py", "boxes.py", "evaluation.py", "checks/detection.py"):
        names = _defined_functions(REPO / "lecturelib" / module)
        assert not names & set(GRADED), (module, names & set(GRADED))


def test_reference_exports_the_graded_functions():
    assert set(GRADED) <= set(ref.__all__)
    assert set(reference_functions("detection")) == set(GRADED)


def _notebook_solutions() -> dict:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    namespace = {"torch": torch, "F": torch.nn.functional, "math": math, "box_iou": box_iou,
                 "BBOX_CLIP": math.log(1000 / 16)}
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("solution"):   # not written answers
            exec(cell.source, namespace)
    return {name: namespace[name] for name in GRADED}


def test_notebook_solutions_pass_both_suites():
    from lecturelib.checks import run_suite
    for name, fn in _notebook_solutions().items():
        for suite in ("visible", "hidden"):
            assert run_suite(name, fn, suite).passed, (name, suite)


def test_notebook_points_and_structure():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    points = {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"]["points"] for c in nb.cells
              if c.metadata.get("nbgrader", {}).get("grade")}     # agree with the README: tests/test_topics.py
    intro = nb.cells[0].source
    for name, value in points.items():
        assert f"`{name.removeprefix('test_')}`" in intro and f"| {value} |" in intro
