"""Tests of the segmentation models, their helpers and the shipped weights."""
import numpy as np
import pytest
import torch

from lecturelib import segmentation_models
from lecturelib.data import NUM_CLASSES, make_shapes
from lecturelib.segmentation_models import (FCN, WEIGHTS_DIR, UNet, confusion_matrix, load_pretrained,
                                            predict_masks, train_segmenter)
from lecturelib.train import load_weights, save_weights


def _mean_iou(cm: torch.Tensor) -> float:
    cm = cm.double()
    iou = cm.diag() / (cm.sum(0) + cm.sum(1) - cm.diag())
    return iou.mean().item()


@pytest.mark.parametrize("model", [FCN(), UNet(), FCN(num_classes=3, width=4), UNet(widths=(4, 8))])
@pytest.mark.parametrize("size", [(32, 32), (64, 48)])
def test_output_shape(model, size):
    x = torch.rand(2, 3, *size)
    out = model.eval()(x)
    assert out.shape == (2, model.config["num_classes"], *size)
    assert out.dtype == torch.float32


def test_bad_input_shapes():
    with pytest.raises(ValueError, match="divisible by 8"):
        FCN()(torch.rand(1, 3, 36, 36))
    with pytest.raises(ValueError, match="3 channels"):
        UNet()(torch.rand(1, 1, 32, 32))
    with pytest.raises(TypeError, match="images"):
        UNet()(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="widths"):
        UNet(widths=(16,))
    with pytest.raises(ValueError, match="width"):
        FCN(width=0)


def test_fcn_upsampling_starts_bilinear():
    """The transposed convolution is initialised to bilinear interpolation: constants stay constant."""
    model = FCN(num_classes=2)
    coarse = torch.ones(1, 2, 4, 4)
    up = model.upsample(coarse)
    assert up.shape == (1, 2, 32, 32)
    assert torch.allclose(up[:, :, 8:-8, 8:-8], torch.ones(1, 2, 16, 16))


def test_unet_decoder_concatenates_skips():
    """Each decoder block sees the upsampled features and the encoder's features of its level."""
    model = UNet(widths=(4, 8, 16))
    assert len(model.encoder) == 3 and len(model.up) == len(model.decoder) == 2
    assert [block[0][0].in_channels for block in model.decoder] == [2 * 8, 2 * 4]
    assert all(isinstance(up, torch.nn.ConvTranspose2d) and up.stride == (2, 2) for up in model.up)
    seen = []
    hook = model.decoder[-1].register_forward_hook(lambda mod, inputs, out: seen.append(inputs[0].shape))
    model(torch.rand(1, 3, 16, 16))
    hook.remove()
    assert seen == [torch.Size([1, 8, 16, 16])]  # full resolution, 4 upsampled + 4 skipped channels


def test_confusion_matrix_matches_loop():
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 4, (3, 7, 5), generator=g)
    target = torch.randint(0, 4, (3, 7, 5), generator=g)
    cm = confusion_matrix(pred, target, 4)
    expected = torch.zeros(4, 4, dtype=torch.int64)
    for p, t in zip(pred.flatten().tolist(), target.flatten().tolist()):
        expected[t, p] += 1
    assert cm.dtype == torch.int64 and torch.equal(cm, expected)
    assert cm.sum() == pred.numel()
    assert torch.equal(confusion_matrix(pred.numpy(), target.numpy(), 4), expected)


def test_confusion_matrix_counts_unseen_classes():
    cm = confusion_matrix(torch.tensor([0, 0]), torch.tensor([0, 1]), 5)
    assert cm.shape == (5, 5) and cm[0, 0] == 1 and cm[1, 0] == 1 and cm.sum() == 2


def test_confusion_matrix_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="target"):
        confusion_matrix(torch.zeros(3, dtype=torch.long), torch.tensor([0, 1, 5]), 2)
    with pytest.raises(TypeError, match="pred"):
        confusion_matrix(torch.zeros(3), torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long), 0)


def test_no_mean_iou_in_student_package():
    """mean IoU is a graded exercise: the package must not give the answer away."""
    names = [n.lower() for n in dir(segmentation_models)]
    assert not any("iou" in n for n in names)


def test_predict_masks_accepts_all_inputs():
    shapes = make_shapes(5, seed=0)
    model = UNet(widths=(4, 8))
    model.train()
    a = predict_masks(model, shapes.image_tensor(), batch_size=2)
    b = predict_masks(model, shapes.images)
    c = predict_masks(model, shapes)
    assert a.shape == (5, 64, 64) and a.dtype == torch.int64
    assert torch.equal(a, b) and torch.equal(a, c)
    assert model.training  # mode restored
    with pytest.raises(ValueError, match="images"):
        predict_masks(model, shapes.images.astype(np.float32))


def test_train_segmenter_learns_a_little():
    shapes = make_shapes(32, size=32, seed=0, background="plain")
    torch.manual_seed(0)
    model = UNet(widths=(4, 8))
    losses = train_segmenter(model, shapes, epochs=3, batch_size=8, lr=1e-2, progress=False)
    assert len(losses) == 3 and losses[-1] < losses[0]
    with pytest.raises(TypeError, match="train"):
        train_segmenter(model, shapes.images, epochs=1)


def test_load_weights_rejects_mismatched_architecture(tmp_path):
    path = tmp_path / "unet.pt"
    save_weights(UNet(widths=(4, 8)), path)
    with pytest.raises(ValueError, match="do not fit UNet"):
        load_weights(UNet(), path)
    with pytest.raises(ValueError, match="saved from UNet"):
        load_weights(FCN(), path)


def test_shipped_weights_exist_and_are_small():
    for name in ("unet_shapes", "fcn_shapes"):
        path = WEIGHTS_DIR / f"{name}.pt"
        assert path.exists(), f"{path} missing: run `python scripts/train_weights.py segmentation`"
        assert path.stat().st_size < 2_000_000


@pytest.fixture(scope="module")
def held_out():
    return make_shapes(200, seed=1)


def test_pretrained_unet_segments_held_out_shapes(held_out):
    model = load_pretrained("unet_shapes")
    assert isinstance(model, UNet) and not model.training
    assert model.metadata["seed"] == 0 and "train_weights.py segmentation" in model.metadata["command"]
    pred = predict_masks(model, held_out)
    cm = confusion_matrix(pred, held_out.semantic_tensor(), NUM_CLASSES)
    assert _mean_iou(cm) >= 0.93


def test_pretrained_fcn_is_coarser_than_unet(held_out):
    fcn, unet = load_pretrained("fcn_shapes"), load_pretrained("unet_shapes")
    assert isinstance(fcn, FCN)
    target = held_out.semantic_tensor()
    fcn_iou = _mean_iou(confusion_matrix(predict_masks(fcn, held_out), target, NUM_CLASSES))
    unet_iou = _mean_iou(confusion_matrix(predict_masks(unet, held_out), target, NUM_CLASSES))
    assert 0.3 < fcn_iou < unet_iou


def test_load_pretrained_bad_name():
    with pytest.raises(ValueError, match="name"):
        load_pretrained("resnet")
    with pytest.raises(TypeError, match="name"):
        load_pretrained(3)
