"""The checkers of the segmentation exercises: message format, reveal rules, refused library calls and the
messages issue 12 found misleading. The realistic bugs and the cause each must be told are the mutant library
(``lecturelib/hidden/mutants/segmentation.py``), run by tests/test_audit.py."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from check_tools import fails
from lecturelib import reference as ref
from lecturelib.checks import EXERCISES, check
from lecturelib.hidden.mutants.segmentation import (ct_by_conv2d, ct_flipped_kernel, ct_loop_over_taps,
                                                    ct_negative_slice_crop, ct_overwrite_taps, miou_dice)

SEGMENTATION = [name for name, ex in EXERCISES.items() if ex.topic == "segmentation"]


# ---------------------------------------------------------------------------------------------
# conv_transpose2d
# ---------------------------------------------------------------------------------------------
def test_visible_failure_shows_index_expected_and_got_values():
    message = fails("conv_transpose2d", ct_flipped_kernel)
    assert "first mismatch at index (" in message
    assert "expected" in message and "got" in message and "tolerance" in message


def test_hidden_failure_reveals_no_values():
    message = fails("conv_transpose2d", ct_flipped_kernel, "hidden")
    assert "hidden case" in message
    assert "first mismatch" not in message and "rel_error" not in message


def test_library_op_is_refused():
    message = fails("conv_transpose2d", lambda x, w, bias=None, stride=1, padding=0:
                     F.conv_transpose2d(x, w, bias, stride=stride, padding=padding))
    assert "implement it yourself" in message and "transposed convolution" in message


def test_module_and_autograd_routes_are_refused():
    def via_module(x, w, bias=None, stride=1, padding=0):
        layer = torch.nn.ConvTranspose2d(w.shape[0], w.shape[1], w.shape[2:], stride, padding,
                                         bias=bias is not None).to(x.dtype)
        with torch.no_grad():
            layer.weight.copy_(w)
            if bias is not None:
                layer.bias.copy_(bias)
        return layer(x).detach()

    def via_autograd(x, w, bias=None, stride=1, padding=0):
        h = (x.shape[2] - 1) * stride - 2 * padding + w.shape[2]
        wd = (x.shape[3] - 1) * stride - 2 * padding + w.shape[3]
        z = torch.zeros(x.shape[0], w.shape[1], h, wd, dtype=x.dtype, requires_grad=True)
        y = F.conv2d(z, w, stride=stride, padding=padding)
        (grad,) = torch.autograd.grad(y, z, grad_outputs=x)
        return grad if bias is None else grad + bias.view(1, -1, 1, 1)

    assert "implement it yourself" in fails("conv_transpose2d", via_module)
    assert "gradient of a convolution" in fails("conv_transpose2d", via_autograd)


def test_wrong_types_are_refused():
    class EqualsAnything(torch.Tensor):
        def __eq__(self, other):
            return True

    message = fails("conv_transpose2d", lambda *a, **k: ref.conv_transpose2d(*a, **k).numpy())
    assert "np.ndarray; expected a torch.Tensor" in message
    message = fails("conv_transpose2d",
                     lambda *a, **k: ref.conv_transpose2d(*a, **k).as_subclass(EqualsAnything))
    assert "object of type" in message and "EqualsAnything" in message
    message = fails("conv_transpose2d", lambda *a, **k: ref.conv_transpose2d(*a, **k).float())
    assert "dtype torch.float32; expected torch.float64" in message


@pytest.mark.parametrize("suite", ["visible", "hidden"])
def test_input_modified_in_place_is_named(suite):
    """A right answer that changes the caller's tensors fails, naming the argument (the framework checks every
    exercise this way; the names are the student's own parameter names)."""
    def mutating(inp, kernel, bias=None, stride=1, padding=0):
        out = ref.conv_transpose2d(inp, kernel, bias, stride, padding)
        kernel.mul_(2)
        return out

    message = fails("conv_transpose2d", mutating, suite)
    assert "modified its argument `kernel` in place: its values changed" in message

    def grad_flag(x, weight, bias=None, stride=1, padding=0):
        x.requires_grad_()
        return ref.conv_transpose2d(x.detach(), weight, bias, stride, padding)

    assert "argument `x` in place: its requires_grad flag changed" in fails("conv_transpose2d", grad_flag, suite)


def test_check_leaves_random_state_and_warnings_alone(capsys):
    import warnings
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)

    def noisy(*args, **kwargs):
        warnings.warn("a torch-like warning", UserWarning)
        return ct_loop_over_taps(*args, **kwargs)

    check("conv_transpose2d", noisy)
    assert torch.equal(torch.rand(3), before)
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.startswith("PASSED conv_transpose2d (visible)") and captured.out.count("\n") == 1


def test_overlap_message_counts_agree():
    """Issue 12: "3 of 49 entries are off" next to "24 output pixels get several copies" read as a contradiction;
    the positions that several copies reach and the wrong entries are now told apart."""
    message = fails("conv_transpose2d", ct_overwrite_taps)
    assert "5 of 49 entries are off" in message
    assert ("here 24 of the 49 output positions receive several copies, and every wrong entry is at one of them"
            in message)


@pytest.mark.parametrize("suite", ["visible", "hidden"])
def test_empty_crop_is_named_not_the_size_formula(suite):
    """Issue 12: full[:, :, p:-p, p:-p] (empty when p = 0) was told the H_out formula it follows."""
    message = fails("conv_transpose2d", ct_negative_slice_crop, suite)
    assert "full[..., p:-p] is empty when p = 0" in message
    assert "likely cause: H_out" not in message


# ---------------------------------------------------------------------------------------------
# unpooling
# ---------------------------------------------------------------------------------------------
def test_unpooling_library_calls_are_refused():
    assert "F.interpolate" in fails("nearest_unpool", lambda x, scale=2: F.interpolate(x, scale_factor=scale))

    def via_library(x, indices, output_size):
        k = output_size[0] // x.shape[2]
        return F.max_unpool2d(x, indices, k, output_size=output_size)

    assert "F.max_unpool2d" in fails("max_unpool", via_library)


# ---------------------------------------------------------------------------------------------
# mean IoU
# ---------------------------------------------------------------------------------------------
def test_mean_iou_shape_of_return_value():
    assert "return a tuple (iou_per_class, miou)" in fails("mean_iou",
                                                            lambda p, t, c: ref.mean_iou(p, t, c)[1])


# ---------------------------------------------------------------------------------------------
# check() itself
# ---------------------------------------------------------------------------------------------
def test_check_arguments():
    with pytest.raises(ValueError, match="unknown exercise 'conv_transpose'"):
        check("conv_transpose", ref.conv_transpose2d)
    with pytest.raises(ValueError, match="suite must be one of"):
        check("conv_transpose2d", ref.conv_transpose2d, suite="secret")
    with pytest.raises(TypeError, match="fn must be the function"):
        check("conv_transpose2d", "conv_transpose2d")


def test_check_failed_is_an_assertion_error_with_result():
    with pytest.raises(AssertionError) as info:
        check("mean_iou", miou_dice, verbose=False)
    result = info.value.result
    assert not result.passed and result.failures
    assert result.to_dict()["cases"][0]["name"] == result.cases[0].name


def test_reference_rejects_bad_input():
    x = torch.randn(1, 2, 3, 3)
    w = torch.randn(2, 3, 3, 3)
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        ref.conv_transpose2d(x[0], w)
    with pytest.raises(ValueError, match="weight must have shape \\(C_in=2"):
        ref.conv_transpose2d(x, torch.randn(3, 2, 3, 3))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        ref.conv_transpose2d(x, w, stride=-1)
    with pytest.raises(TypeError, match="stride must be an int"):
        ref.conv_transpose2d(x, w, stride=1.5)
    with pytest.raises(ValueError, match="bias must have shape \\(3\\)"):
        ref.conv_transpose2d(x, w, bias=torch.randn(2))
    with pytest.raises(ValueError, match="padding=5 crops"):
        ref.conv_transpose2d(x, w, padding=5)
    pooled, idx = F.max_pool2d(torch.randn(1, 1, 4, 4), 2, return_indices=True)
    with pytest.raises(TypeError, match="indices must have an integer dtype"):
        ref.max_unpool(pooled, idx.float(), (4, 4))
    with pytest.raises(ValueError, match="indices must lie in"):
        ref.max_unpool(pooled, idx, (2, 2))
    with pytest.raises(ValueError, match="pred must hold labels in"):
        ref.mean_iou(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)
    with pytest.raises(TypeError, match="pred must have an integer dtype"):
        ref.mean_iou(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="scale must be >= 1"):
        ref.nearest_unpool(x, 0)


def test_reference_mean_iou_handles_absent_classes():
    pred = torch.tensor([[0, 0, 1], [1, 1, 0]])
    target = torch.tensor([[0, 1, 1], [1, 1, 0]])
    iou, miou = ref.mean_iou(pred, target, 3)
    assert torch.isnan(iou[2])
    np.testing.assert_allclose(iou[:2].numpy(), [2 / 3, 3 / 4])
    assert miou == pytest.approx((2 / 3 + 3 / 4) / 2)


@pytest.mark.parametrize("suite", ["visible", "hidden"])
def test_max_unpool_expectations_agree_with_torch(suite):
    """The check's scatter oracle accepts exactly what F.max_unpool2d returns, on every case."""
    from lecturelib.checks.core import build_cases, verify_case
    _, cases = build_cases("max_unpool", suite)
    for case in cases:
        pooled, indices, size = case.calls[0].args
        k = size[0] // pooled.shape[2]
        assert verify_case(case, [F.max_unpool2d(pooled, indices, k, stride=k, output_size=size)]).passed
        assert not verify_case(case, [F.max_unpool2d(pooled, indices, k, stride=k, output_size=size) + 1e-3]).passed


def test_conv2d_on_a_zero_inserted_input_is_an_allowed_implementation():
    check("conv_transpose2d", ct_by_conv2d, verbose=False)
    check("conv_transpose2d", ct_by_conv2d, suite="hidden", verbose=False)
