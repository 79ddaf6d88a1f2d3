"""The tiny anchor-based detector: output layout in anchor order, input checks, and its training script."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from lecturelib import data, detection
from lecturelib import reference as ref
from lecturelib.detection_models import TinyDetector
from lecturelib.train import read_metadata


def test_outputs_are_per_anchor_in_generate_anchors_order():
    """Head channel a * k + c at cell (y, x) must land at row (y * W + x) * A + a, column c."""
    b, a, k, h, w = 2, 3, 4, 5, 6
    code = torch.zeros(b, a * k, h, w)
    for ai in range(a):
        for c in range(k):
            for y in range(h):
                for x in range(w):
                    code[:, ai * k + c, y, x] = ((y * w + x) * a + ai) * 10 + c
    rows = TinyDetector._per_anchor(code, a)
    assert rows.shape == (b, h * w * a, k)
    expected = torch.arange(h * w * a)[:, None] * 10 + torch.arange(k)[None, :]
    assert torch.equal(rows[1], expected.float())


def test_shapes_and_bad_input():
    torch.manual_seed(0)
    model = TinyDetector()                      # the shipped detector's shape: 9 anchors per cell of 8 x 8
    out = model(torch.rand(2, 3, 64, 64))
    assert out["objectness"].shape == (2, 576) and out["deltas"].shape == (2, 576, 4)
    assert out["class_logits"].shape == (2, 576, 4) and model.anchors.shape == (576, 4)
    assert TinyDetector(num_anchors=3, width=64)(torch.rand(1, 3, 64, 64))["deltas"].shape == (1, 192, 4)
    with pytest.raises(ValueError, match="8x8 feature map"):
        model(torch.rand(1, 3, 32, 32))
    with pytest.raises(TypeError, match="images"):
        model(np.zeros((1, 3, 64, 64)))
    with pytest.raises(ValueError, match="num_anchors"):
        TinyDetector(num_anchors=0)


def test_training_uses_the_given_functions_and_lowers_the_loss():
    torch.manual_seed(0)
    model = TinyDetector()
    model.anchors.copy_(ref.generate_anchors(**detection.DETECTOR_ANCHORS))
    shapes = data.make_shapes(32, seed=6, occlusion=False)
    calls = {"label": 0, "encode": 0}

    def label(*args, **kwargs):
        calls["label"] += 1
        assert kwargs == {"high": 0.5, "low": 0.3, "allow_low_quality": True}
        return ref.label_anchors(*args, **kwargs)

    def encode(*args):
        calls["encode"] += 1
        return ref.encode_boxes(*args)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is faster, and the machine is shared
    try:
        losses = detection.train_detector(model, shapes, label_fn=label, encode_fn=encode, epochs=4, batch_size=16,
                                          lr=3e-3, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert calls["label"] == 4 * 32 and calls["encode"] == 4 * 32
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0]
    with pytest.raises(TypeError, match="label_fn"):
        detection.train_detector(model, shapes, label_fn=None, encode_fn=encode, epochs=1)


@pytest.mark.slow
def test_training_script_writes_loadable_weights_with_metadata(tmp_path):
    spec = importlib.util.spec_from_file_location("train_weights", Path(__file__).resolve().parent.parent / "scripts"
                                                  / "train_weights.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "tiny.pt"
    threads = torch.get_num_threads()
    try:
        options = ["--epochs", "1", "--train-size", "128", "--test-size", "50", "--out", str(out)]
        scores = script.main(["detection", *options, "--no-progress"])["detection"]
    finally:
        torch.set_num_threads(threads)
    meta = read_metadata(out)
    assert meta["command"] == "python scripts/train_weights.py detection " + " ".join(options) and meta["threads"] == 2
    assert meta["epochs"] == 1 and meta["map50"] == round(scores["map"][0.5], 4)
    assert meta["test"] == "make_shapes(50, seed=1)" and len(meta["losses"]) == 1
    assert meta["test_unoccluded"] == "make_shapes(50, seed=1, occlusion=False)"
    assert meta["train"] == "make_shapes(128, seed=0)" and meta["min_visibility"] == 0.25
    assert meta["coco"] == round(scores["coco"], 4) and "map50_unoccluded" in meta
    assert meta["anchors"] == {"feature_size": [8, 8], "stride": 8, "sizes": [12, 18, 26], "ratios": [0.5, 1.0, 2.0]}
    model = TinyDetector(**meta["config"])
    from lecturelib.train import load_weights
    load_weights(model, out)
    assert torch.equal(model.anchors, ref.generate_anchors(**detection.DETECTOR_ANCHORS))
