"""The checkers of the segmentation exercises: references pass, realistic bugs fail with their cause."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from check_tools import fails
from lecturelib import reference as ref
from lecturelib.checks import EXERCISES, check

SEGMENTATION = [name for name, ex in EXERCISES.items() if ex.topic == "segmentation"]


# ---------------------------------------------------------------------------------------------
# conv_transpose2d
# ---------------------------------------------------------------------------------------------
def _crop(full, padding):
    if padding == 0:
        return full
    return full[..., padding:-padding, padding:-padding]


def ct_loop_over_pixels(x, weight, bias=None, stride=1, padding=0, *, overwrite=False, flip=False,
                        stride_used=None, crop="both", swap_axes=False):
    """A loop over input pixels, with switches for the classic bugs."""
    s = stride if stride_used is None else stride_used
    if flip:
        weight = weight.flip(-1, -2)
    n, c_in, h, w = x.shape
    # swap_axes reads the weight the conv2d way, as (C_out, C_in, kH, kW)
    c_out, kh, kw = (weight.shape[0], *weight.shape[2:]) if swap_axes else weight.shape[1:]
    full = x.new_zeros(n, c_out, (h - 1) * s + kh, (w - 1) * s + kw)
    for i in range(h):
        for j in range(w):
            patch = torch.einsum("nc,ockl->nokl" if swap_axes else "nc,cokl->nokl", x[:, :, i, j], weight)
            if overwrite:
                full[:, :, i * s: i * s + kh, j * s: j * s + kw] = patch
            else:
                full[:, :, i * s: i * s + kh, j * s: j * s + kw] += patch
    if crop == "both":
        out = _crop(full, padding)
    else:  # one side only
        out = full[..., padding:, padding:]
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def ct_loop_over_taps(x, weight, bias=None, stride=1, padding=0):
    """An alternative correct implementation: one strided scatter per kernel tap."""
    n, c_in, h, w = x.shape
    c_out, kh, kw = weight.shape[1:]
    full = x.new_zeros(n, c_out, (h - 1) * stride + kh, (w - 1) * stride + kw)
    for a in range(kh):
        for b in range(kw):
            full[:, :, a: a + (h - 1) * stride + 1: stride, b: b + (w - 1) * stride + 1: stride] += \
                torch.einsum("nchw,co->nohw", x, weight[:, :, a, b])
    out = _crop(full, padding)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def test_alternative_correct_implementation_passes_both_suites():
    check("conv_transpose2d", ct_loop_over_taps, verbose=False)
    check("conv_transpose2d", ct_loop_over_taps, suite="hidden", verbose=False)


def test_loop_reference_without_bugs_passes():
    check("conv_transpose2d", ct_loop_over_pixels, suite="hidden", verbose=False)


@pytest.mark.parametrize("bug, cause", [
    (dict(overwrite=True), "overlapping contributions must be summed"),
    (dict(flip=True), "kernel looks flipped"),
    (dict(stride_used=1), "stride looks ignored"),
    (dict(crop="one side"), "padding looks cropped on one side only"),
    (dict(swap_axes=True), "C_in and C_out axes of the weight look swapped"),
])
@pytest.mark.parametrize("suite", ["visible", "hidden"])
def test_conv_transpose_bugs_are_named(bug, cause, suite):
    def buggy(x, weight, bias=None, stride=1, padding=0):
        return ct_loop_over_pixels(x, weight, bias, stride, padding, **bug)

    message = fails("conv_transpose2d", buggy, suite)
    assert cause in message, message


def test_missing_bias_is_named():
    message = fails("conv_transpose2d", lambda x, w, bias=None, stride=1, padding=0:
                     ct_loop_over_taps(x, w, None, stride, padding))
    assert "bias is missing" in message


def test_visible_failure_shows_index_expected_and_got_values():
    def buggy(x, weight, bias=None, stride=1, padding=0):
        return ct_loop_over_pixels(x, weight, bias, stride, padding, flip=True)

    message = fails("conv_transpose2d", buggy)
    assert "first mismatch at index (" in message
    assert "expected" in message and "got" in message and "tolerance" in message


def test_hidden_failure_reveals_no_values():
    def buggy(x, weight, bias=None, stride=1, padding=0):
        return ct_loop_over_pixels(x, weight, bias, stride, padding, flip=True)

    message = fails("conv_transpose2d", buggy, "hidden")
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


# ---------------------------------------------------------------------------------------------
# output size
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bug, cause", [
    (lambda h, k, s=1, p=0: h * s - 2 * p + k, "(H_in - 1) * stride"),
    (lambda h, k, s=1, p=0: (h - 1) * s - p + k, "subtract 2 * padding"),
    (lambda h, k, s=1, p=0: (h + 2 * p - k) // s + 1, "ordinary (forward) convolution"),
    (lambda h, k, s=1, p=0: (h - 1) - 2 * p + k, "stride is ignored"),
])
def test_output_size_bugs_are_named(bug, cause):
    assert cause in fails("conv_transpose_output_size", bug)


def test_output_size_must_be_int():
    message = fails("conv_transpose_output_size", lambda h, k, s=1, p=0: float((h - 1) * s - 2 * p + k))
    assert "expected an int" in message


# ---------------------------------------------------------------------------------------------
# unpooling
# ---------------------------------------------------------------------------------------------
def test_unpooling_mixups_are_named():
    tiled = lambda x, scale=2: x.repeat(1, 1, scale, scale)  # noqa: E731
    assert "tiled" in fails("nearest_unpool", tiled)
    assert "that is bed-of-nails" in fails("nearest_unpool", ref.bed_of_nails_unpool)
    assert "that is nearest-neighbour" in fails("bed_of_nails_unpool", ref.nearest_unpool)

    def bottom_right(x, scale=2):
        out = x.new_zeros(*x.shape[:2], x.shape[2] * scale, x.shape[3] * scale)
        out[..., scale - 1::scale, scale - 1::scale] = x
        return out

    assert "top-left corner (0, 0)" in fails("bed_of_nails_unpool", bottom_right)
    assert "F.interpolate" in fails("nearest_unpool", lambda x, scale=2: F.interpolate(x, scale_factor=scale))


def test_max_unpool_mixups_are_named():
    def ignores_switches(x, indices, output_size):
        h, w = output_size
        k = h // x.shape[2]
        out = x.new_zeros(*x.shape[:2], h, w)
        out[..., : x.shape[2] * k: k, : x.shape[3] * k: k] = x
        return out

    def pooled_width(x, indices, output_size):
        h, w = output_size
        rows, cols = indices // x.shape[3], indices % x.shape[3]
        out = x.new_zeros(*x.shape[:2], h * w)
        out.scatter_(2, (rows * w + cols).flatten(2), x.flatten(2))
        return out.view(*x.shape[:2], h, w)

    def via_library(x, indices, output_size):
        k = output_size[0] // x.shape[2]
        return F.max_unpool2d(x, indices, k, output_size=output_size)

    assert "switches (indices) are ignored" in fails("max_unpool", ignores_switches)
    assert "W_out the width of the output" in fails("max_unpool", pooled_width)
    assert "F.max_unpool2d" in fails("max_unpool", via_library)


def test_max_unpool_hidden_needs_output_size():
    def ignores_output_size(x, indices, output_size):
        k = 2
        return ref.max_unpool(x, indices, (x.shape[2] * k, x.shape[3] * k))

    message = fails("max_unpool", ignores_output_size, "hidden")
    assert "shape" in message or "raised" in message


# ---------------------------------------------------------------------------------------------
# mean IoU
# ---------------------------------------------------------------------------------------------
def _confusion(pred, target, c):
    return torch.bincount(pred.reshape(-1) * c + target.reshape(-1), minlength=c * c).reshape(c, c).double()


def miou_absent_as_zero(pred, target, num_classes):
    cm = _confusion(pred, target, num_classes)
    inter = cm.diag()
    union = cm.sum(0) + cm.sum(1) - inter
    iou = inter / union.clamp_min(1)
    return iou, float(iou.mean())


def miou_dice(pred, target, num_classes):
    cm = _confusion(pred, target, num_classes)
    inter = cm.diag()
    total = cm.sum(0) + cm.sum(1)
    iou = torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.tensor(float("nan"), dtype=torch.float64))
    return iou, float(iou.nanmean())


def miou_no_subtract(pred, target, num_classes):
    cm = _confusion(pred, target, num_classes)
    total = cm.sum(0) + cm.sum(1)
    iou = torch.where(total > 0, cm.diag() / total.clamp_min(1), torch.tensor(float("nan"), dtype=torch.float64))
    return iou, float(iou.nanmean())


def miou_per_image(pred, target, num_classes):
    if pred.ndim < 3:
        return ref.mean_iou(pred, target, num_classes)
    ious = torch.stack([ref.mean_iou(p, t, num_classes)[0] for p, t in zip(pred, target)])
    iou = ious.nanmean(0)
    return iou, float(iou.nanmean())


def miou_nan_mean(pred, target, num_classes):
    iou, _ = ref.mean_iou(pred, target, num_classes)
    return iou, float(iou.mean())


@pytest.mark.parametrize("fn, cause", [
    (miou_absent_as_zero, "absent from both"),
    (miou_dice, "Dice coefficient"),
    (miou_no_subtract, "counts the intersection twice"),
    (miou_per_image, "per-image IoUs were averaged"),
    (miou_nan_mean, "mIoU is NaN"),
])
def test_mean_iou_bugs_are_named(fn, cause):
    assert cause in fails("mean_iou", fn)


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


def ct_by_conv2d(x, weight, bias=None, stride=1, padding=0):
    """An allowed route: conv2d (forward) on the zero-inserted input with the flipped, transposed kernel."""
    n, c_in, h, w = x.shape
    kh, kw = weight.shape[-2:]
    dilated = x.new_zeros(n, c_in, (h - 1) * stride + 1, (w - 1) * stride + 1)
    dilated[..., ::stride, ::stride] = x
    kernel = weight.flip(-1, -2).transpose(0, 1)
    out = F.conv2d(F.pad(dilated, (kw - 1, kw - 1, kh - 1, kh - 1)), kernel)
    out = out[..., padding: out.shape[-2] - padding, padding: out.shape[-1] - padding]
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def test_conv2d_on_a_zero_inserted_input_is_an_allowed_implementation():
    check("conv_transpose2d", ct_by_conv2d, verbose=False)
    check("conv_transpose2d", ct_by_conv2d, suite="hidden", verbose=False)
