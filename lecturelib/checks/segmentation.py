"""Checks of the semantic-segmentation exercises (student side: verifiers only).

Each case's data (built grader-side in ``lecturelib.hidden.segmentation``) holds the expected output and the
outputs that known mistakes give on the same inputs; the verifiers here compare, name the mistake a wrong
answer matches, and check properties that need no answer (linearity, adjointness with ``conv2d``).
"""
from __future__ import annotations

import re

import numpy as np
import torch

from .core import (Exercise, ForbiddenOp, Mismatch, compare, expect_number, expect_tensor, explainer,
                   known_mistake, register, revealing, verifier)

# ------------------------------------------------------------------------------------------------
# Library operators that the exercises ask students to write themselves
# ------------------------------------------------------------------------------------------------
_TRANSPOSED_CONV = (
    ForbiddenOp("convolution", "a transposed convolution (F.conv_transpose2d / nn.ConvTranspose2d)",
                flag_arg=6),  # aten::convolution(input, weight, bias, stride, padding, dilation, transposed, ...)
    ForbiddenOp("convolution_backward", "the gradient of a convolution (autograd through conv2d or "
                "torch.nn.grad.conv2d_input)"),
)
_UPSAMPLING = (
    ForbiddenOp("upsample_nearest2d", "F.interpolate / nn.Upsample"),
    ForbiddenOp("_upsample_nearest_exact2d", "F.interpolate / nn.Upsample"),
    ForbiddenOp("upsample_bilinear2d", "F.interpolate / nn.Upsample"),
    ForbiddenOp("max_unpool2d", "F.max_unpool2d / nn.MaxUnpool2d"),
    ForbiddenOp("max_pool2d_with_indices_backward", "the gradient of max pooling (autograd through F.max_pool2d)"),
) + _TRANSPOSED_CONV


# ------------------------------------------------------------------------------------------------
# Unpooling
# ------------------------------------------------------------------------------------------------
_UNPOOL_SHAPES = {  # why an unpooled output has the wrong shape (worded without the case's sizes)
    "unpool": "the output is (N, C, H * scale, W * scale): scale both the height and the width, and keep N and C",
    "max_unpool": ("the output is (N, C, H, W) with (H, W) = output_size: use output_size, not h * k (pooling drops "
                   "the last row or column when H or W is not a multiple of the window)"),
}


def _unpool_verifier(kind: str):
    """The verifier of one kind of unpooling: shape (with its likely cause), dtype, then values."""
    def verify(outcomes, data, reveal):
        expected, got = data["expected"], outcomes[0]
        if isinstance(got, torch.Tensor) and tuple(got.shape) != tuple(expected.shape):
            shown = (f"output has shape {tuple(got.shape)}; expected {tuple(expected.shape)}" if reveal
                     else "output has the wrong shape")
            raise Mismatch(f"{shown}\nlikely cause: {_UNPOOL_SHAPES[kind]}")
        got = expect_tensor(got, shape=expected.shape, dtype=expected.dtype)
        compare(got, expected, diagnose=lambda g: known_mistake(g, data["mistakes"]))
    return verify


verifier("unpool")(_unpool_verifier("unpool"))
verifier("max_unpool")(_unpool_verifier("max_unpool"))

_FLAT_INDEX = ("indices are flat positions in the output plane: row = index // W_out, column = index % W_out "
               "with W_out the width of the output, not of the pooled map")


@explainer("max_unpool")
def _explain_max_unpool_error(raised, data):
    """An index out of range is a wrong decoding (W_out) or an output plane of the wrong size (output_size):
    the size in torch's message tells them apart (compared, never shown)."""
    message = raised.message.lower()
    if "dtype" in message:
        return ("the output and the pooled values have different dtypes: create the output with the dtype of x "
                "(x.new_zeros(...) or torch.zeros(..., dtype=x.dtype))")
    size = re.search(r"with size (\d+)", message)
    plane = int(np.prod(tuple(data["expected"].shape[-2:])))
    if size and int(size.group(1)) not in (plane, data["expected"].numel()):
        return _UNPOOL_SHAPES["max_unpool"]
    if "index" in message or "bounds" in message:
        return _FLAT_INDEX
    return None


register(Exercise(
    "nearest_unpool", topic="segmentation",
    summary="matches F.interpolate(mode='nearest') for several scales, batch sizes and channel counts; keeps the dtype",
    forbidden=_UPSAMPLING,
))

register(Exercise(
    "bed_of_nails_unpool", topic="segmentation",
    summary="value in the top-left corner of each scale x scale block, zeros elsewhere, for several scales and shapes",
    forbidden=_UPSAMPLING,
))

register(Exercise(
    "max_unpool", topic="segmentation",
    summary="puts each value back where F.max_pool2d(return_indices=True) found it, zeros elsewhere; "
            "odd output sizes via output_size",
    forbidden=_UPSAMPLING,
))


# ------------------------------------------------------------------------------------------------
# Transposed convolution: output size
# ------------------------------------------------------------------------------------------------
@verifier("conv_transpose_output_size")
def _verify_output_size(outcomes, data, reveal):
    for (h, k, s, p), want, mistakes, got in zip(data["settings"], data["expected"], data["mistakes"], outcomes):
        if isinstance(got, float) or (isinstance(got, torch.Tensor) and got.is_floating_point()):
            # expect_number would quote the value, which in a hidden case is the answer
            raise Mismatch("the output size is a float" + (f" ({got!r})" if reveal else "")
                           + "; return an int (the formula has only integer operations)")
        got = expect_number(got, integer=True, name="the output size")
        if got != want:
            where = (f"conv_transpose_output_size({h}, kernel_size={k}, stride={s}, padding={p}) "
                     f"returned {got}, expected {want}") if reveal else "a returned size is wrong"
            causes = [cause for value, cause in mistakes if value == got]
            raise Mismatch(where + (f"\nlikely cause: {causes[0]}" if causes else ""))


register(Exercise(
    "conv_transpose_output_size", topic="segmentation",
    summary="agrees with the shapes F.conv_transpose1d produces for strides, kernels and paddings",
))


# ------------------------------------------------------------------------------------------------
# Transposed convolution
# ------------------------------------------------------------------------------------------------
_EMPTY_CROP = ("the output is empty along the height or width: a crop written full[..., p:-p] is empty when "
               "p = 0 (the slice 0:-0 is 0:0); crop with full[..., p:H_full - p, p:W_full - p]")
_SIZE_RULE = ("the output size must be H_out = (H_in - 1) * stride - 2 * padding + kH (likewise W_out): the full "
              "output, (H_in - 1) * stride + kH, with `padding` rows and columns cropped from each side")


def _shape_cause(got_shape, data) -> str | None:
    """Why an output has the wrong shape, from the shapes that known mistakes give (None: not recognised)."""
    want = tuple(data["expected"].shape)
    if len(got_shape) != 4:
        return f"the output must be 4-D (N, C_out, H_out, W_out) = {want}" if revealing() else \
            "the output must be 4-D (N, C_out, H_out, W_out)"
    if 0 in got_shape[2:]:
        return _EMPTY_CROP
    if got_shape[1] != want[1] and got_shape[1] == data["c_in"]:
        return ("the output has C_in channels: the weight of a transposed convolution is (C_in, C_out, kH, kW), "
                "the opposite of conv2d's (C_out, C_in, kH, kW); C_in and C_out axes of the weight look swapped")
    if got_shape[0] != want[0]:
        return "the batch dimension changed: process every image of the batch"
    for size, cause in data["size_mistakes"]:
        if tuple(size) == tuple(got_shape[2:]) != want[2:]:
            return cause
    return None


def _overlap_cause(got, data) -> str | None:
    """Right at every output position that one kernel copy reaches, wrong only where several copies overlap:
    contributions were overwritten. Needs positions of both kinds (with none reached by one copy alone, any
    error would fit)."""
    expected, copies = data["expected"].to(torch.float64), data["copies"]
    err = (got.to(torch.float64) - expected).abs() > 1e-5 * (1 + expected.abs())
    single, overlap = copies == 1, copies > 1
    if not (bool(single.any()) and bool(overlap.any())):
        return None
    if bool(err[..., single].any()) or not bool(err[..., overlap].any()):
        return None
    where = (f" (here {int(overlap.sum())} of the {copies.numel()} output positions receive several copies, and "
             "every wrong entry is at one of them)") if revealing() else ""
    return (f"values are right where one kernel copy lands but wrong where copies overlap{where}: "
            "overlapping contributions must be summed (+=), not overwritten")


def _conv_transpose_diagnosis(got, data) -> str | None:
    return (known_mistake(got, data["mistakes"]) or _overlap_cause(got, data)
            or known_mistake(got, data["late_mistakes"]))


def _check_output(got, data):
    expected = data["expected"]
    if isinstance(got, torch.Tensor) and tuple(got.shape) != tuple(expected.shape):
        shown = f"output has shape {tuple(got.shape)}; expected {tuple(expected.shape)}" if revealing() \
            else "output has the wrong shape"
        cause = _shape_cause(tuple(got.shape), data)
        raise Mismatch(f"{shown}\n" + (f"likely cause: {cause}" if cause else _SIZE_RULE))
    got = expect_tensor(got, shape=expected.shape, dtype=expected.dtype)
    compare(got, expected, diagnose=lambda g: _conv_transpose_diagnosis(g, data))
    return got


@verifier("conv_transpose2d:value")
@verifier("conv_transpose2d:impulse")
def _verify_conv_transpose(outcomes, data, reveal):
    _check_output(outcomes[0], data)


@verifier("conv_transpose2d:linearity")
def _verify_linearity(outcomes, data, reveal):
    shape, dtype = data["expected"].shape, data["expected"].dtype
    y1, y2, y12 = (expect_tensor(o, shape=shape, dtype=dtype) for o in outcomes)
    try:
        compare(y12, data["a"] * y1 + data["b"] * y2, name="f(2 x1 - 3 x2) vs 2 f(x1) - 3 f(x2)")
    except Mismatch as exc:
        raise Mismatch("your function is not linear: f(2 x1 - 3 x2) != 2 f(x1) - 3 f(x2)\n" + str(exc)) from None
    _check_output(y1, data)


@verifier("conv_transpose2d:adjoint")
def _verify_adjoint(outcomes, data, reveal):
    got = expect_tensor(outcomes[0], shape=data["expected"].shape, dtype=data["expected"].dtype)
    lhs, rhs = data["lhs"], float((data["z"] * got).sum())
    if abs(lhs - rhs) > 1e-6 * (1 + abs(lhs)):
        shown = f": <conv2d(z, w), x> = {lhs:.6g} but <z, yours(x)> = {rhs:.6g}" if reveal else ""
        cause = _conv_transpose_diagnosis(got, data)
        raise Mismatch("not the adjoint of conv2d with the same weight, stride and padding" + shown
                       + (f"\nlikely cause: {cause}" if cause else ""))


@explainer("conv_transpose2d")
def _explain_conv_transpose_error(raised, data):
    c_in, c_out = data["weight_shape"][:2]
    # "The size of tensor a (W_out) must match the size of tensor b (C_out) at non-singleton dimension 3"
    bias = re.search(r"size of tensor b \((\d+)\) at non-singleton dimension (\d+)", raised.message)
    if bias and int(bias.group(1)) == c_out and int(bias.group(2)) != 1:
        return ("the bias was added along the last axis (the width): a plain `out + bias` lines bias up with the "
                "last axis; add it per output channel with bias.view(1, -1, 1, 1)")
    if c_in != c_out and any(word in raised.message for word in ("size", "shape", "match", "broadcast", "channels")):
        return ("the weight of a transposed convolution is (C_in, C_out, kH, kW), the opposite of conv2d's "
                "(C_out, C_in, kH, kW): if your code reads it the conv2d way, the C_in and C_out axes of the "
                "weight look swapped")
    return None


register(Exercise(
    "conv_transpose2d", topic="segmentation",
    summary="matches F.conv_transpose2d (strides, paddings, channels, bias, dtype); impulse responses place "
            "the kernel at (i*stride - padding, j*stride - padding); linear; adjoint of conv2d",
    forbidden=_TRANSPOSED_CONV,
))


# ------------------------------------------------------------------------------------------------
# Mean IoU
# ------------------------------------------------------------------------------------------------
def _mean_iou_cause(got_iou, data) -> str | None:
    g = got_iou.detach().to(torch.float64).numpy()
    present = data["present"]
    for candidate, cause in data["mistakes"]:
        if np.allclose(g, candidate, atol=1e-6, equal_nan=True):
            return cause
    for candidate, cause in data["present_mistakes"]:
        if np.allclose(g[present], candidate[present], atol=1e-6):
            return cause
    return None


@verifier("mean_iou")
def _verify_mean_iou(outcomes, data, reveal):
    out = outcomes[0]
    if not isinstance(out, tuple) or len(out) != 2:
        raise Mismatch(f"return a tuple (iou_per_class, miou); got {type(out).__name__}"
                       + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
    expected_iou, expected_miou = data["expected_iou"], data["expected_miou"]
    iou = expect_tensor(out[0], shape=expected_iou.shape, floating=True, name="iou_per_class")
    if isinstance(out[1], torch.Tensor):  # the spec asks for a Python float (expect_number takes 0-d tensors)
        raise Mismatch("miou is a torch.Tensor; return it as a Python float: float(...) or .item()")
    miou = expect_number(out[1], name="miou")
    compare(iou, expected_iou, atol=1e-6, rtol=1e-6, name="iou_per_class", diagnose=lambda g: _mean_iou_cause(g, data))
    if not abs(miou - expected_miou) <= 1e-6:
        hint = ("mIoU is NaN: average only over the classes whose IoU is defined (torch.nanmean)"
                if miou != miou else "mIoU is the mean of the per-class IoUs that are not NaN")
        shown = f": expected {expected_miou:.6g}, got {miou:.6g}" if reveal else ""
        raise Mismatch(f"miou is wrong{shown}\nlikely cause: {hint}")


@explainer("mean_iou")
def _explain_mean_iou_error(raised, data):
    if "invalid for input of size" in raised.message:
        return ("torch.bincount returns max(input) + 1 bins: pass minlength=num_classes ** 2, so the confusion "
                "matrix has a row and a column for every class, also when the last classes do not occur")
    return None


register(Exercise(
    "mean_iou", topic="segmentation",
    summary="per-class IoU and mIoU on label maps with known confusion matrices: perfect, disjoint, batches, "
            "classes absent from both (NaN, ignored)",
))
