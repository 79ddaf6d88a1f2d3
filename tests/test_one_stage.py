"""lecturelib.one_stage: SSD's anchor count, the focal loss, the imbalance measurement and the YOLO view, which
runs the function it is given (the student's yolo_target) and computes no answer itself."""
import math

import pytest
import torch
import torch.nn.functional as F

from lecturelib import data, detection, one_stage
from lecturelib import reference as ref


def test_ssd300_has_8732_anchors():
    assert sum(r["anchors"] for r in one_stage.ssd_anchor_counts()) == 8732


def test_focal_loss_reduces_to_cross_entropy_and_downweights_easy_examples():
    logits = torch.tensor([-4.0, 0.0, 3.0, 2.0])
    targets = torch.tensor([0.0, 1.0, 1.0, 0.0])
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    torch.testing.assert_close(one_stage.focal_loss(logits, targets, alpha=None, gamma=0.0), ce)
    fl = one_stage.focal_loss(logits, targets, alpha=None, gamma=2.0)
    p_t = torch.tensor([1 - torch.sigmoid(torch.tensor(-4.0)), 0.5, torch.sigmoid(torch.tensor(3.0)),
                        1 - torch.sigmoid(torch.tensor(2.0))])
    torch.testing.assert_close(fl, ce * (1 - p_t) ** 2)


def test_anchor_imbalance_on_the_tiny_detector():
    shapes = data.make_shapes(20, seed=1, occlusion=False)
    model = detection.load_pretrained()
    r = one_stage.anchor_imbalance(model, shapes, ref.label_anchors)
    assert r["anchors"] == 20 * len(model.anchors) == r["positives"] + r["negatives"] + r["ignored"]
    assert r["ratio"] > 5 and r["focal_share_easy"] < r["ce_share_easy"]
    assert "implement label_anchors" in one_stage.anchor_imbalance(
        detection.load_pretrained(), shapes, lambda *a, **k: (_ for _ in ()).throw(NotImplementedError()))["error"]


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
