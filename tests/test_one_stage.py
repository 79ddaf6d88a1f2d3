"""lecturelib.one_stage: SSD's anchor count, the imbalance measurement and the YOLO view, which run the functions
they are given (the student's label_anchors, focal_loss and yolo_target) and compute no answer themselves."""

import pytest
import torch

from lecturelib import data, detection, one_stage
from lecturelib import reference as ref


def test_ssd300_has_8732_anchors():
    assert sum(r["anchors"] for r in one_stage.ssd_anchor_counts()) == 8732


def test_anchor_imbalance_on_the_tiny_detector():
    shapes = data.make_shapes(20, seed=1, occlusion=False)
    model = detection.load_pretrained()
    r = one_stage.anchor_imbalance(model, shapes, ref.label_anchors, ref.focal_loss)
    assert r["anchors"] == 20 * len(model.anchors) == r["positives"] + r["negatives"] + r["ignored"]
    assert r["ratio"] > 5 and r["focal_share_easy"] < r["ce_share_easy"]
    stub = lambda *a, **k: (_ for _ in ()).throw(NotImplementedError())   # noqa: E731
    assert "implement label_anchors" in one_stage.anchor_imbalance(model, shapes, stub, ref.focal_loss)["error"]
    assert one_stage.anchor_imbalance(model, shapes, ref.label_anchors, stub)["error"] == "implement focal_loss above"
    reduced = one_stage.anchor_imbalance(model, shapes, ref.label_anchors, lambda *a: ref.focal_loss(*a).mean())
    assert "focal_loss returned ()" in reduced["error"] and "one loss per anchor" in reduced["error"]


def test_anchor_imbalance_measures_the_focal_loss_it_is_given():
    """With gamma = 0 and alpha < 0 the focal loss is the cross-entropy: the two shares agree."""
    shapes = data.make_shapes(5, seed=2, occlusion=False)
    model = detection.load_pretrained()
    r = one_stage.anchor_imbalance(model, shapes, ref.label_anchors, ref.focal_loss, gamma=0.0, alpha=-1.0)
    assert r["focal_share_easy"] == pytest.approx(r["ce_share_easy"], rel=1e-5)
    seen = []
    one_stage.anchor_imbalance(model, shapes, ref.label_anchors,
                               lambda logits, targets, alpha, gamma: seen.append((alpha, gamma)) or
                               ref.focal_loss(logits, targets, alpha, gamma))
    assert seen == [(0.25, 2.0)]


def test_yolo_view_runs_the_given_function():
    shapes = data.make_shapes(3, seed=1, occlusion=False)
    view = one_stage.yolo_view(ref.yolo_target, shapes, 1, S=4, B=2)
    assert view["target"].shape == (4, 4, 14) and int(view["owned"].sum()) <= len(shapes.boxes[1])
    wrong = one_stage.yolo_view(lambda *a: torch.zeros(2, 2), shapes, 0)
    assert "expected (4, 4, 14)" in wrong["error"]
    assert one_stage.yolo_view(lambda *a: (_ for _ in ()).throw(NotImplementedError()), shapes)["error"] == \
        "implement yolo_target above"


def test_plot_yolo_draws_a_view_and_an_error():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    shapes = data.make_shapes(2, seed=1, occlusion=False)
    one_stage.plot_yolo(one_stage.yolo_view(ref.yolo_target, shapes, 0, 2, 1), shapes.images[0])
    one_stage.plot_yolo({"error": "implement yolo_target above"}, shapes.images[0])
    plt.close("all")
