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


def test_one_box_for_many_counts_what_one_box_can_find():
    """On two-object images a box equal to the first object's finds exactly half of the objects."""
    shapes = data.make_shapes(6, seed=3, min_objects=2, max_objects=2, occlusion=False, min_radius=0.15,
                              max_radius=0.22)
    size = shapes.images.shape[1]
    first = torch.stack([torch.as_tensor(b[0], dtype=torch.float32) for b in shapes.boxes]) / size
    from lecturelib.boxes import box_xyxy_to_cxcywh
    oracle = _Oracle(torch.zeros(6, 4), box_xyxy_to_cxcywh(first))
    out = localization.one_box_for_many(oracle, shapes)
    assert out["objects"] == 12 and out["found"] == 0.5
    assert out["best_iou"] == pytest.approx(1.0, abs=1e-5)
    assert out["boxes"].shape == (6, 4)
    with pytest.raises(TypeError, match="shapes"):
        localization.one_box_for_many(oracle, shapes.images)


def test_shipped_localizer_matches_its_sweep():
    """The shipped model is the sweep's row for its own box weight, re-measured on the same held-out images;
    the sweep shows what the notebook says: no box loss, no boxes; the shipped weight localizes best of the
    weights that keep the accuracy."""
    model = localization.load_pretrained()
    meta = model.metadata
    rows = {row["box_weight"]: row for row in meta["sweep"]}
    measured = localization.evaluate_localizer(model, data.make_classification(1000, seed=1))
    for key in ("accuracy", "mean_iou", "iou_at_0.5"):
        assert measured[key] == pytest.approx(rows[meta["box_weight"]][key], abs=1e-3)
    assert rows[0.0]["iou_at_0.5"] < 0.5 < rows[meta["box_weight"]]["iou_at_0.5"]


@pytest.mark.slow
def test_localizer_recipe_is_a_detection_model_and_writes_its_sweep(tmp_path):
    import importlib.util

    from lecturelib.train import load_weights, read_metadata
    spec = importlib.util.spec_from_file_location("train_weights", localization.__file__.replace(
        "lecturelib/localization.py", "scripts/train_weights.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.TOPICS.index("localizer") == script.TOPICS.index("detection") + 1
    out = tmp_path / "localizer.pt"
    threads = torch.get_num_threads()
    try:
        options = ["--epochs", "1", "--train-size", "64", "--out", str(out)]
        rows = script.main(["localizer", *options, "--no-progress"])["localizer"]
    finally:
        torch.set_num_threads(threads)
    meta = read_metadata(out)
    assert [r["box_weight"] for r in meta["sweep"]] == [0.0, 1.0, 10.0, 100.0] and meta["sweep"] == rows
    assert meta["command"] == "python scripts/train_weights.py localizer " + " ".join(options)
    assert meta["box_weight"] == 10.0 and meta["train"] == "make_classification(64, seed=0)"
    load_weights(localization.Localizer(**meta["config"]), out)
