"""Classification + localization with a multitask loss (lecturelib.localization)."""
import math

import pytest
import torch
from torch import nn

from lecturelib import data, localization


def test_localizer_contract():
    model = localization.Localizer()
    out = model(torch.rand(3, 3, 64, 64))
    assert out["logits"].shape == (3, 4) and out["boxes"].shape == (3, 4)
    assert bool(((out["boxes"] > 0) & (out["boxes"] < 1)).all())


def test_multitask_loss_by_hand():
    outputs = {"logits": torch.zeros(2, 4), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2]])}
    labels = torch.tensor([0, 3])
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.6]])       # one coordinate off by 0.4
    parts = localization.multitask_loss(outputs, labels, boxes, box_weight=10.0)
    assert math.isclose(float(parts["cls"]), math.log(4), rel_tol=1e-6)     # uniform logits: ln C
    smooth = 0.4 - 0.1 / 2                                                  # smooth-L1, beta 0.1, |d| >= beta
    assert math.isclose(float(parts["box"]), smooth / 8, rel_tol=1e-5)      # mean over 2 x 4 coordinates
    assert math.isclose(float(parts["loss"]), math.log(4) + 10 * smooth / 8, rel_tol=1e-5)


def test_multitask_loss_bad_weight():
    with pytest.raises(ValueError, match="box_weight"):
        localization.multitask_loss({"logits": torch.zeros(1, 4), "boxes": torch.zeros(1, 4)},
                                    torch.tensor([0]), torch.zeros(1, 4), box_weight=-1)


class _Oracle(nn.Module):
    """Returns given outputs whatever the input (to test the evaluation)."""

    def __init__(self, logits, boxes):
        super().__init__()
        self.logits, self.boxes = logits, boxes

    def forward(self, x):
        return {"logits": self.logits, "boxes": self.boxes}


def test_evaluation_of_a_perfect_and_a_wrong_model():
    shapes = data.make_classification(8, seed=2)
    _, labels, boxes = localization._targets(shapes)
    perfect = localization.evaluate_localizer(_Oracle(nn.functional.one_hot(labels, 4).float(), boxes), shapes)
    assert perfect == {"accuracy": 1.0, "mean_iou": pytest.approx(1.0), "iou_at_0.5": 1.0}
    shifted = boxes.clone()
    shifted[:, 0] += 1.0                                                    # every box moved one image width
    wrong = localization.evaluate_localizer(_Oracle(nn.functional.one_hot((labels + 1) % 4, 4).float(), shifted),
                                            shapes)
    assert wrong == {"accuracy": 0.0, "mean_iou": 0.0, "iou_at_0.5": 0.0}


def test_several_objects_are_refused():
    with pytest.raises(ValueError, match="exactly one object"):
        localization.train_localizer(data.make_shapes(4, seed=0, min_objects=2))
