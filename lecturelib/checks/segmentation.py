"""Checks of the semantic-segmentation exercises.

Oracles are torch built-ins (``F.interpolate``, ``F.conv_transpose2d``; max unpooling by its definition) and
constructions whose answer is known by design (``mean_iou``); properties (impulse responses,
linearity, adjointness with ``conv2d``) give a second, reference-free view. Failures are matched
against the outputs of known bugs to name the likely cause.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .core import (Call, Case, Exercise, ForbiddenOp, Mismatch, compare, expect_number, expect_tensor,
                   matches, register)

# ------------------------------------------------------------------------------------------------
# Library operators that the exercises ask students to write themselves
# ------------------------------------------------------------------------------------------------
_TRANSPOSED_CONV = (
    ForbiddenOp("convolution", "a transposed convolution (F.conv_transpose2d / nn.ConvTranspose2d)",
                when=lambda args: len(args) > 6 and bool(args[6])),
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


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _randn(shape, seed, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=_generator(seed), dtype=dtype)


def _shape_str(shape) -> str:
    return "x".join(str(s) for s in shape)


# ------------------------------------------------------------------------------------------------
# Unpooling
# ------------------------------------------------------------------------------------------------
def _nearest_oracle(x, scale):
    return F.interpolate(x, scale_factor=scale, mode="nearest")


def _bed_of_nails_oracle(x, scale, row=0, col=0):
    """Bed of nails as a transposed convolution with a one-hot kernel, one group per channel."""
    c = x.shape[1]
    kernel = torch.zeros(c, 1, scale, scale, dtype=x.dtype)
    kernel[:, 0, row, col] = 1
    return F.conv_transpose2d(x, kernel, stride=scale, groups=c)


def _diagnose_unpool(got, x, scale, expected_kind):
    """Recognise the usual unpooling mix-ups."""
    tiled = x.repeat(1, 1, scale, scale)
    if matches(got, tiled):
        return ("the whole map was tiled scale x scale times; each input value must fill (or mark) its "
                "own scale x scale block: repeat each row and each column, not the whole image")
    if expected_kind == "bed_of_nails" and matches(got, _nearest_oracle(x, scale)):
        return ("every position of each block holds the value: that is nearest-neighbour unpooling; bed of "
                "nails puts the value in the top-left corner of its block and zeros elsewhere")
    if expected_kind == "nearest" and matches(got, _bed_of_nails_oracle(x, scale)):
        return ("only the top-left corner of each block holds the value: that is bed-of-nails unpooling; "
                "nearest-neighbour unpooling copies the value into the whole block")
    if expected_kind == "bed_of_nails":
        for r in range(scale):
            for c in range(scale):
                if (r, c) != (0, 0) and matches(got, _bed_of_nails_oracle(x, scale, r, c)):
                    return (f"the value sits at position ({r}, {c}) of its block; by convention it goes "
                            "to the top-left corner (0, 0): out[..., i * scale, j * scale] = x[..., i, j]")
    return None


def _unpool_cases(kind):
    oracle = _nearest_oracle if kind == "nearest" else _bed_of_nails_oracle

    def cases(specs, reveal):
        for spec in specs:
            dtype = getattr(torch, spec.get("dtype", "float64"))
            x = _randn(spec["shape"], spec["seed"], dtype)
            scale = spec["scale"]
            expected = oracle(x, scale)

            def verify(outcomes, x=x, scale=scale, expected=expected):
                got = expect_tensor(outcomes[0], shape=expected.shape, dtype=expected.dtype)
                compare(got, expected, reveal=reveal, diagnose=lambda g: _diagnose_unpool(g, x, scale, kind))

            yield Case(f"x of shape {_shape_str(spec['shape'])}, scale {scale}"
                       + (f", {spec['dtype']}" if "dtype" in spec else ""),
                       [Call(x, scale)], verify, about=spec.get("about", ""))
    return cases


register(Exercise(
    "nearest_unpool", topic="segmentation",
    summary="matches F.interpolate(mode='nearest') for several scales, batch sizes and channel counts; keeps the dtype",
    cases=_unpool_cases("nearest"),
    visible=[{"shape": (1, 1, 2, 2), "scale": 2, "seed": 1},
             {"shape": (2, 3, 3, 4), "scale": 2, "seed": 2},
             {"shape": (1, 2, 2, 3), "scale": 3, "seed": 3}],
    forbidden=_UPSAMPLING,
))

register(Exercise(
    "bed_of_nails_unpool", topic="segmentation",
    summary="value in the top-left corner of each scale x scale block, zeros elsewhere, for several scales and shapes",
    cases=_unpool_cases("bed_of_nails"),
    visible=[{"shape": (1, 1, 2, 2), "scale": 2, "seed": 4},
             {"shape": (2, 3, 3, 4), "scale": 2, "seed": 5},
             {"shape": (1, 2, 2, 3), "scale": 3, "seed": 6}],
    forbidden=_UPSAMPLING,
))


def _diagnose_max_unpool(got, pooled, indices, out_hw, expected):
    n, c, h, w = pooled.shape
    H, W = out_hw
    # Values back at the top-left of each window: the switches were ignored.
    k = H // h
    nails = torch.zeros_like(expected)
    nails[..., : h * k : k, : w * k : k] = pooled
    if matches(got, nails):
        return ("every value went to the top-left corner of its window: the switches (indices) are ignored; "
                "put each value back where the maximum came from")
    # Flat index decoded with the pooled width instead of the output width.
    rows, cols = indices // w, indices % w
    if bool((rows < H).all()):
        wrong = torch.zeros_like(expected)
        flat = (rows * W + cols).flatten(2)
        wrong.flatten(2).scatter_(2, flat, pooled.flatten(2))
        if matches(got, wrong):
            return ("indices are flat positions in the output plane: row = index // W_out, column = index % W_out "
                    "with W_out the width of the output, not of the pooled map")
    return None


def _explain_max_unpool_error(raised):
    if "index" in raised.message.lower() or "bounds" in raised.message.lower():
        return ("indices are flat positions in the output plane: row = index // W_out, column = index % W_out "
                "with W_out the width of the output, not of the pooled map")
    return None


def _max_unpool_cases(specs, reveal):
    for spec in specs:
        n, c, H, W = spec["shape"]
        k = spec["kernel"]
        # Distinct values, so every window has a unique maximum.
        values = torch.randperm(n * c * H * W, generator=_generator(spec["seed"])).to(torch.float64)
        image = (values / values.numel()).reshape(n, c, H, W)
        pooled, indices = F.max_pool2d(image, k, stride=k, return_indices=True)
        # The definition, as a scatter (F.max_unpool2d agrees: see the tests; calling it here would cost
        # every grading process torch's 0.7 s lazy import of sympy).
        expected = pooled.new_zeros(n, c, H * W).scatter_(2, indices.flatten(2), pooled.flatten(2))
        expected = expected.reshape(n, c, H, W)

        def verify(outcomes, pooled=pooled, indices=indices, hw=(H, W), expected=expected):
            got = expect_tensor(outcomes[0], shape=expected.shape, dtype=expected.dtype)
            compare(got, expected, reveal=reveal,
                    diagnose=lambda g: _diagnose_max_unpool(g, pooled, indices, hw, expected))

        yield Case(f"image {n}x{c}x{H}x{W} max-pooled with a {k}x{k} window (stride {k})",
                   [Call(pooled, indices, (H, W))], verify, explain_error=_explain_max_unpool_error,
                   about=spec.get("about", ""))


register(Exercise(
    "max_unpool", topic="segmentation",
    summary="puts each value back where F.max_pool2d(return_indices=True) found it, zeros elsewhere; "
            "odd output sizes via output_size",
    cases=_max_unpool_cases,
    visible=[{"shape": (1, 1, 4, 4), "kernel": 2, "seed": 7},
             {"shape": (2, 3, 6, 4), "kernel": 2, "seed": 8}],
    forbidden=_UPSAMPLING,
))


# ------------------------------------------------------------------------------------------------
# Transposed convolution: output size
# ------------------------------------------------------------------------------------------------
def _torch_output_size(size, kernel_size, stride, padding):
    """The output length torch's own conv_transpose1d produces (the oracle)."""
    x = torch.zeros(1, 1, size)
    w = torch.zeros(1, 1, kernel_size)
    return F.conv_transpose1d(x, w, stride=stride, padding=padding).shape[-1]


_SIZE_BUGS = (  # padding bugs first: when two formulas give the same number, they are the likelier
    (lambda h, k, s, p: (h - 1) * s - p + k, "padding is cropped from both sides: subtract 2 * padding"),
    (lambda h, k, s, p: (h - 1) * s + 2 * p + k,
     "in a transposed convolution padding removes rows at the border: subtract 2 * padding"),
    (lambda h, k, s, p: (h - 1) * s + k, "padding is ignored: subtract 2 * padding"),
    (lambda h, k, s, p: h * s - 2 * p + k,
     "the first copy of the kernel starts at 0 and the last at (H_in - 1) * stride, so "
     "H_out = (H_in - 1) * stride - 2 * padding + kernel_size"),
    (lambda h, k, s, p: (h - 1) - 2 * p + k, "stride is ignored: consecutive input pixels land stride apart"),
    (lambda h, k, s, p: (h + 2 * p - k) // s + 1,
     "that is the output size of an ordinary (forward) convolution; the transposed one inverts it"),
    (lambda h, k, s, p: h * s, "the kernel overhang is missing: add kernel_size - stride, minus 2 * padding"),
)


def _output_size_cases(specs, reveal):
    for spec in specs:
        settings = [tuple(s) for s in spec["settings"]]
        expected = [_torch_output_size(*s) for s in settings]

        def verify(outcomes, settings=settings, expected=expected):
            for (h, k, s, p), want, got in zip(settings, expected, outcomes):
                got = expect_number(got, integer=True, name="the output size")
                if got != want:
                    where = (f"conv_transpose_output_size({h}, kernel_size={k}, stride={s}, padding={p}) "
                             f"returned {got}, expected {want}") if reveal else "a returned size is wrong"
                    causes = [msg for bug, msg in _SIZE_BUGS if bug(h, k, s, p) == got != want]
                    raise Mismatch(where + (f"\nlikely cause: {causes[0]}" if causes else ""))

        yield Case(spec["name"], [Call(h, k, s, p) for h, k, s, p in settings], verify, about=spec["name"])


register(Exercise(
    "conv_transpose_output_size", topic="segmentation",
    summary="agrees with the shapes F.conv_transpose1d produces for strides, kernels and paddings",
    cases=_output_size_cases,
    visible=[{"name": "stride 1, no padding", "settings": [(4, 3, 1, 0), (1, 1, 1, 0), (5, 2, 1, 0)]},
             {"name": "stride 2 and padding", "settings": [(4, 4, 2, 1), (3, 3, 2, 0), (8, 3, 2, 1)]}],
))


# ------------------------------------------------------------------------------------------------
# Transposed convolution
# ------------------------------------------------------------------------------------------------
def _expected_size(h, k, s, p):
    return (h - 1) * s - 2 * p + k


def _diagnose_conv_transpose_shape(got_shape, x, weight, stride, padding):
    n, c_in, h, w = x.shape
    _, c_out, kh, kw = weight.shape
    want = (n, c_out, _expected_size(h, kh, stride, padding), _expected_size(w, kw, stride, padding))
    if len(got_shape) != 4:
        return f"the output must be 4-D (N, C_out, H_out, W_out) = {want}"
    if got_shape[1] != c_out and got_shape[1] == c_in:
        return ("the output has C_in channels: the weight of a transposed convolution is (C_in, C_out, kH, kW), "
                "the opposite of conv2d's (C_out, C_in, kH, kW); C_in and C_out axes of the weight look swapped")
    if got_shape[0] != n:
        return "the batch dimension changed: process every image of the batch"
    for bug, msg in _SIZE_BUGS:
        if (bug(h, kh, stride, padding), bug(w, kw, stride, padding)) == tuple(got_shape[2:]) != want[2:]:
            if "ordinary" in msg or "overhang" in msg:
                return msg
            return msg.replace("is ignored", "looks ignored").replace("padding is cropped from both sides",
                                                                       "padding looks cropped on one side only; it "
                                                                       "is cropped from both sides")
    return "H_out = (H_in - 1) * stride - 2 * padding + kH (and likewise W_out)"


def _diagnose_conv_transpose(got, x, weight, bias, stride, padding):
    """Name the likely cause of wrong values by comparing with the outputs of known bugs."""
    def ct(w=weight, b=bias, xx=x):
        return F.conv_transpose2d(xx, w, b, stride=stride, padding=padding)

    if matches(got, ct(w=weight.flip(-1, -2))):
        return ("the kernel looks flipped: a transposed convolution places the kernel as it is "
                "(out[i * stride + a, j * stride + b] += x[i, j] * w[a, b]), without flipping it")
    if weight.shape[0] == weight.shape[1] and matches(got, ct(w=weight.transpose(0, 1))):
        return ("C_in and C_out axes of the weight look swapped: the weight of a transposed convolution is "
                "(C_in, C_out, kH, kW), so out[:, o] += x[:, i] * weight[i, o]")
    if weight.shape[-1] == weight.shape[-2] and matches(got, ct(w=weight.transpose(-1, -2))):
        return "the kernel's rows and columns look swapped (kH and kW axes)"
    if bias is not None and matches(got, ct(b=None)):
        return "the bias is missing: add bias[o] to every pixel of output channel o"
    if bias is not None and matches(got, ct(b=None) + bias.sum()):
        return "every output channel got the sum of all biases: add bias[o] only to output channel o"
    if padding > 0:
        full = F.conv_transpose2d(x, weight, bias, stride=stride)
        h, w = got.shape[-2:]
        for top, left in ((0, 0), (2 * padding, 2 * padding)):
            if matches(got, full[..., top: top + h, left: left + w]):
                return ("the padding is cropped on one side only: remove `padding` rows and columns from EACH "
                        "side (top and bottom, left and right)")
    # Overlaps: right where a single kernel copy lands, wrong where copies overlap.
    ones = torch.ones(1, 1, *x.shape[-2:], dtype=torch.float64)
    count = F.conv_transpose2d(ones, torch.ones(1, 1, *weight.shape[-2:], dtype=torch.float64),
                               stride=stride, padding=padding)[0, 0]
    expected = ct()
    err = (got.to(torch.float64) - expected.to(torch.float64)).abs() > 1e-5 * (1 + expected.abs())
    single, overlap = count == 1, count > 1
    if bool(overlap.any()) and not bool(err[..., single].any()) and bool(err[..., overlap].any()):
        return (f"values are right where one kernel copy lands but wrong where copies overlap "
                f"({int(overlap.sum())} output pixels here): overlapping contributions must be summed (+=), "
                "not overwritten")
    if x.shape[1] > 1 and matches(got, ct(xx=x[:, -1:], w=weight[-1:])):
        return "only the last input channel contributes: sum the contributions of all input channels"
    return None


def _conv_transpose_inputs(spec):
    n, c_in, h, w = spec["x"]
    c_out = spec["c_out"]
    kh, kw = (spec["k"], spec["k"]) if isinstance(spec["k"], int) else spec["k"]
    dtype = getattr(torch, spec.get("dtype", "float64"))
    seed = spec["seed"]
    x = _randn((n, c_in, h, w), seed, dtype)
    weight = _randn((c_in, c_out, kh, kw), seed + 1000, dtype)
    bias = _randn((c_out,), seed + 2000, dtype) if spec.get("bias") else None
    return x, weight, bias, spec.get("stride", 1), spec.get("padding", 0)


def _conv_transpose_name(spec):
    kind = spec.get("kind", "value")
    kh, kw = (spec["k"], spec["k"]) if isinstance(spec["k"], int) else spec["k"]
    c_in = spec["x"][1]
    text = (f"x {_shape_str(spec['x'])}, weight {c_in}x{spec['c_out']}x{kh}x{kw}, "
            f"stride {spec.get('stride', 1)}, padding {spec.get('padding', 0)}")
    if spec.get("bias"):
        text += ", with bias"
    if "dtype" in spec:
        text += f", {spec['dtype']}"
    prefix = {"value": "", "impulse": "impulse response: ", "linearity": "linearity: ",
              "adjoint": "adjoint of conv2d: "}[kind]
    return prefix + text


def _conv_transpose_case(spec, reveal) -> Case:
    """One case of conv_transpose2d: a value comparison, an impulse response, linearity or adjointness."""
    kind = spec.get("kind", "value")
    x, weight, bias, stride, padding = _conv_transpose_inputs(spec)
    if kind == "impulse":
        i, j = spec["at"]
        x = torch.zeros_like(x)
        x[0, 0, i, j] = 1.0
    if kind in ("linearity", "adjoint"):
        bias = None
    kwargs = {"stride": stride, "padding": padding}
    expected = F.conv_transpose2d(x, weight, bias, **kwargs)
    name = _conv_transpose_name(spec)

    def check_output(got, x=x, bias=bias):
        if isinstance(got, torch.Tensor) and tuple(got.shape) != tuple(expected.shape):
            cause = _diagnose_conv_transpose_shape(tuple(got.shape), x, weight, stride, padding)
            raise Mismatch(f"output has shape {tuple(got.shape)}; expected {tuple(expected.shape)}\n"
                           f"likely cause: {cause}")
        got = expect_tensor(got, shape=expected.shape, dtype=expected.dtype)
        compare(got, expected, reveal=reveal,
                diagnose=lambda g: _diagnose_conv_transpose(g, x, weight, bias, stride, padding))
        return got

    def explain_error(raised):
        if weight.shape[0] != weight.shape[1] and any(
                word in raised.message for word in ("size", "shape", "match", "broadcast", "channels")):
            return ("the weight of a transposed convolution is (C_in, C_out, kH, kW), the opposite of conv2d's "
                    "(C_out, C_in, kH, kW): if your code reads it the conv2d way, the C_in and C_out axes of the "
                    "weight look swapped")
        return None

    if kind in ("value", "impulse"):
        return Case(name, [Call(x, weight, bias, **kwargs)], lambda outcomes: check_output(outcomes[0]),
                    explain_error=explain_error, about=spec.get("about", ""))

    if kind == "linearity":
        x2 = _randn(tuple(x.shape), spec["seed"] + 3000, x.dtype)
        a, b = 2.0, -3.0

        def verify_linear(outcomes):
            y1, y2, y12 = (expect_tensor(o, shape=expected.shape, dtype=expected.dtype) for o in outcomes)
            try:
                compare(y12, a * y1 + b * y2, name="f(2 x1 - 3 x2) vs 2 f(x1) - 3 f(x2)", reveal=reveal)
            except Mismatch as exc:
                raise Mismatch("your function is not linear: f(2 x1 - 3 x2) != 2 f(x1) - 3 f(x2)\n"
                               + str(exc)) from None
            check_output(y1)

        return Case(name, [Call(x, weight, None, **kwargs), Call(x2, weight, None, **kwargs),
                           Call(a * x + b * x2, weight, None, **kwargs)], verify_linear, explain_error=explain_error,
                    about=spec.get("about", "linearity"))

    if kind == "adjoint":
        z = _randn(tuple(expected.shape), spec["seed"] + 4000, x.dtype)
        lhs = float((F.conv2d(z, weight, stride=stride, padding=padding) * x).sum())

        def verify_adjoint(outcomes):
            got = expect_tensor(outcomes[0], shape=expected.shape, dtype=expected.dtype)
            rhs = float((z * got).sum())
            if abs(lhs - rhs) > 1e-6 * (1 + abs(lhs)):
                shown = f": <conv2d(z, w), x> = {lhs:.6g} but <z, yours(x)> = {rhs:.6g}" if reveal else ""
                cause = _diagnose_conv_transpose(got, x, weight, None, stride, padding)
                raise Mismatch("not the adjoint of conv2d with the same weight, stride and padding" + shown
                               + (f"\nlikely cause: {cause}" if cause else ""))

        return Case(name, [Call(x, weight, None, **kwargs)], verify_adjoint, explain_error=explain_error,
                    about=spec.get("about", "adjoint of conv2d"))
    raise ValueError(f"unknown conv_transpose2d case kind {kind!r}")


def _conv_transpose_cases(specs, reveal):
    return [_conv_transpose_case(spec, reveal) for spec in specs]


register(Exercise(
    "conv_transpose2d", topic="segmentation",
    summary="matches F.conv_transpose2d (strides, paddings, channels, bias, dtype); impulse responses place "
            "the kernel at (i*stride - padding, j*stride - padding); linear; adjoint of conv2d",
    cases=_conv_transpose_cases,
    visible=[
        {"kind": "impulse", "x": (1, 1, 3, 3), "c_out": 1, "k": 3, "stride": 2, "at": (1, 2), "seed": 10},
        {"x": (1, 1, 2, 2), "c_out": 1, "k": 2, "stride": 1, "seed": 11},
        {"x": (1, 1, 3, 3), "c_out": 1, "k": 3, "stride": 2, "seed": 12},
        {"x": (2, 2, 3, 4), "c_out": 3, "k": 3, "stride": 1, "padding": 1, "bias": True, "seed": 13},
        {"x": (1, 3, 4, 4), "c_out": 2, "k": 4, "stride": 2, "padding": 1, "seed": 14},
        {"kind": "linearity", "x": (1, 2, 3, 3), "c_out": 2, "k": 3, "stride": 2, "seed": 15},
        {"kind": "adjoint", "x": (2, 2, 3, 3), "c_out": 3, "k": 3, "stride": 2, "padding": 1, "seed": 16},
        {"x": (1, 2, 3, 3), "c_out": 2, "k": 2, "stride": 2, "dtype": "float32", "seed": 17},
    ],
    forbidden=_TRANSPOSED_CONV,
))


# ------------------------------------------------------------------------------------------------
# Mean IoU
# ------------------------------------------------------------------------------------------------
def _pixels_from_confusion(confusion: np.ndarray, shape, seed) -> tuple[torch.Tensor, torch.Tensor]:
    """Label maps whose confusion matrix (pred x target counts) is exactly ``confusion``."""
    pred_labels, target_labels = np.nonzero(confusion)
    counts = confusion[pred_labels, target_labels]
    pred = np.repeat(pred_labels, counts)
    target = np.repeat(target_labels, counts)
    order = np.random.default_rng(seed).permutation(pred.size)
    return (torch.from_numpy(pred[order].reshape(shape)).long(),
            torch.from_numpy(target[order].reshape(shape)).long())


def _iou_from_confusion(confusion: np.ndarray) -> np.ndarray:
    inter = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def _random_confusion(num_classes, total, absent, seed) -> np.ndarray:
    """A random confusion matrix with ``total`` pixels and no pixel of the ``absent`` classes."""
    rng = np.random.default_rng(seed)
    weights = rng.random((num_classes, num_classes)) + 3 * np.eye(num_classes)
    weights[list(absent), :] = 0
    weights[:, list(absent)] = 0
    return rng.multinomial(total, (weights / weights.sum()).ravel()).reshape(num_classes, num_classes)


def _diagnose_mean_iou(got_iou, got_miou, confusion, pred, target):
    expected = _iou_from_confusion(confusion)
    absent = np.isnan(expected)
    inter = np.diag(confusion).astype(np.float64)
    size_p, size_t = confusion.sum(1).astype(np.float64), confusion.sum(0).astype(np.float64)
    g = got_iou.detach().to(torch.float64).numpy()
    present = ~absent
    if absent.any() and np.allclose(g[present], expected[present], atol=1e-6):
        if np.allclose(g[absent], 0):
            return ("a class absent from both prediction and target got IoU 0: its IoU is undefined (0 / 0); "
                    "return NaN for it and leave it out of the mean")
        if np.allclose(g[absent], 1):
            return ("a class absent from both prediction and target got IoU 1: return NaN for it and leave it "
                    "out of the mean")
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(size_p + size_t > 0, 2 * inter / (size_p + size_t), np.nan)
        no_subtract = np.where(size_p + size_t > 0, inter / (size_p + size_t), np.nan)
    if np.allclose(g[present], dice[present], atol=1e-6):
        return "that is the Dice coefficient 2|P ∩ T| / (|P| + |T|); IoU is |P ∩ T| / |P ∪ T|"
    if np.allclose(g[present], no_subtract[present], atol=1e-6):
        return "the union counts the intersection twice: |P ∪ T| = |P| + |T| - |P ∩ T|"
    if pred.ndim == 3 and pred.shape[0] > 1:
        per_image = []
        for p, t in zip(pred, target):
            cm = np.zeros_like(confusion)
            np.add.at(cm, (p.numpy().ravel(), t.numpy().ravel()), 1)
            per_image.append(_iou_from_confusion(cm))
        with np.errstate(invalid="ignore"):
            averaged = np.nanmean(np.stack(per_image), axis=0) if np.isfinite(np.stack(per_image)).any() else None
        if averaged is not None and np.allclose(g[present], averaged[present], atol=1e-6):
            return ("per-image IoUs were averaged; count intersections and unions over ALL pixels of the batch "
                    "first, then divide once per class")
    return None


def _mean_iou_cases(specs, reveal):
    for spec in specs:
        c, shape = spec["num_classes"], tuple(spec["shape"])
        total = int(np.prod(shape))
        if spec.get("perfect"):
            confusion = np.diag(np.random.default_rng(spec["seed"]).multinomial(total, np.ones(c) / c))
        elif spec.get("disjoint"):
            confusion = np.zeros((c, c), np.int64)
            confusion[0, 1] = total // 2
            confusion[1, 0] = total - total // 2
        else:
            confusion = _random_confusion(c, total, spec.get("absent", ()), spec["seed"])
        pred, target = _pixels_from_confusion(confusion, shape, spec["seed"])
        expected_iou = torch.from_numpy(_iou_from_confusion(confusion))
        present = ~torch.isnan(expected_iou)
        expected_miou = float(expected_iou[present].mean())

        def verify(outcomes, confusion=confusion, pred=pred, target=target, expected_iou=expected_iou,
                   expected_miou=expected_miou):
            out = outcomes[0]
            if not isinstance(out, tuple) or len(out) != 2:
                raise Mismatch(f"return a tuple (iou_per_class, miou); got {type(out).__name__}"
                               + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
            iou = expect_tensor(out[0], shape=expected_iou.shape, floating=True, name="iou_per_class")
            miou = expect_number(out[1], name="miou")
            compare(iou, expected_iou, atol=1e-6, rtol=1e-6, name="iou_per_class", reveal=reveal,
                    diagnose=lambda g: _diagnose_mean_iou(g, miou, confusion, pred, target))
            if not abs(miou - expected_miou) <= 1e-6:
                hint = ("mIoU is NaN: average only over the classes whose IoU is defined (torch.nanmean)"
                        if miou != miou else "mIoU is the mean of the per-class IoUs that are not NaN")
                shown = f": expected {expected_miou:.6g}, got {miou:.6g}" if reveal else ""
                raise Mismatch(f"miou is wrong{shown}\nlikely cause: {hint}")

        desc = spec.get("name") or (f"{c} classes, labels of shape {_shape_str(shape)}"
                                    + (f", class {list(spec['absent'])} absent from both" if spec.get("absent") else ""))
        yield Case(desc, [Call(pred, target, c)], verify, about=spec.get("about", ""))


register(Exercise(
    "mean_iou", topic="segmentation",
    summary="per-class IoU and mIoU on label maps with known confusion matrices: perfect, disjoint, batches, "
            "classes absent from both (NaN, ignored)",
    cases=_mean_iou_cases,
    visible=[{"name": "perfect prediction", "num_classes": 3, "shape": (4, 5), "perfect": True, "seed": 20},
             {"name": "prediction and target disjoint", "num_classes": 2, "shape": (4, 4), "disjoint": True,
              "seed": 21},
             {"num_classes": 3, "shape": (6, 7), "seed": 22},
             {"num_classes": 4, "shape": (2, 5, 6), "absent": (2,), "seed": 23}],
))
