"""Grader side of the semantic-segmentation checks: oracles, known mistakes, case builders, visible and
hidden specs (grader copy only).

Oracles are torch built-ins (``F.interpolate``, ``F.conv_transpose2d``; max unpooling by its definition) and
constructions whose answer is known by design (``mean_iou``). Each known mistake is a small wrong
implementation with the cause a student must be told; its outputs on a case's inputs go into the case's
data, so the student package can name the cause without holding the code that made the mistake.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from ..checks.core import Call, Case
from . import mistake_outputs
from ._inputs import randn, generator, shape_str

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


def _tiled(x, scale):
    return x.repeat(1, 1, scale, scale)


_TILED = ("the whole map was tiled scale x scale times; each input value must fill (or mark) its "
          "own scale x scale block: repeat each row and each column, not the whole image")


def _unpool_mistakes(kind, scale):
    """The usual unpooling mix-ups, as (wrong implementation, cause)."""
    mistakes = [(_tiled, _TILED)]
    if kind == "bed_of_nails":
        mistakes.append((_nearest_oracle,
                         "every position of each block holds the value: that is nearest-neighbour unpooling; bed of "
                         "nails puts the value in the top-left corner of its block and zeros elsewhere"))
        for r in range(scale):
            for c in range(scale):
                if (r, c) != (0, 0):
                    mistakes.append((lambda x, s, r=r, c=c: _bed_of_nails_oracle(x, s, r, c),
                                     f"the value sits at position ({r}, {c}) of its block; by convention it goes "
                                     "to the top-left corner (0, 0): out[..., i * scale, j * scale] = x[..., i, j]"))
    else:
        mistakes.append((_bed_of_nails_oracle,
                         "only the top-left corner of each block holds the value: that is bed-of-nails unpooling; "
                         "nearest-neighbour unpooling copies the value into the whole block"))
    return mistakes


def _unpool_cases(kind):
    oracle = _nearest_oracle if kind == "nearest" else _bed_of_nails_oracle

    def cases(specs, reveal):
        for spec in specs:
            dtype = getattr(torch, spec.get("dtype", "float64"))
            x = randn(spec["shape"], spec["seed"], dtype)
            scale = spec["scale"]
            data = {"expected": oracle(x, scale), "mistakes": mistake_outputs(_unpool_mistakes(kind, scale), x, scale)}
            yield Case(f"x of shape {shape_str(spec['shape'])}, scale {scale}"
                       + (f", {spec['dtype']}" if "dtype" in spec else ""),
                       [Call(x, scale)], "unpool", data, about=spec.get("about", ""))
    return cases


def _max_unpool_expected(pooled, indices, out_hw, row_width=None):
    """The definition, as a scatter (F.max_unpool2d agrees: see the tests). ``row_width`` decodes the flat
    indices with another width (a known mistake)."""
    n, c = pooled.shape[:2]
    H, W = out_hw
    flat = indices
    if row_width is not None:
        rows, cols = indices // row_width, indices % row_width
        if not bool((rows < H).all()):
            raise IndexError("out of range")
        flat = rows * W + cols
    out = pooled.new_zeros(n, c, H * W).scatter_(2, flat.flatten(2), pooled.flatten(2))
    return out.reshape(n, c, H, W)


def _ignored_switches(pooled, indices, out_hw):
    h, w = pooled.shape[-2:]
    k = out_hw[0] // h
    nails = pooled.new_zeros(*pooled.shape[:2], *out_hw)
    nails[..., : h * k: k, : w * k: k] = pooled
    return nails


def _whole_tensor_scatter(pooled, indices, out_hw):
    """The per-plane indices used as indices into the whole flattened tensor (CPU scatter_ writes in order, so
    the last of several values at one position wins, as in the student's code)."""
    n, c = pooled.shape[:2]
    out = pooled.new_zeros(n * c * out_hw[0] * out_hw[1])
    return out.scatter_(0, indices.flatten(), pooled.flatten()).view(n, c, *out_hw)


_MAX_UNPOOL_MISTAKES = (
    (_ignored_switches, "every value went to the top-left corner of its window: the switches (indices) are "
                        "ignored; put each value back where the maximum came from"),
    (lambda p, i, hw: _max_unpool_expected(p, i, hw, row_width=p.shape[-1]),
     "indices are flat positions in the output plane: row = index // W_out, column = index % W_out "
     "with W_out the width of the output, not of the pooled map"),
    (_whole_tensor_scatter,
     "the indices are positions within each channel's (H, W) plane, as max_pool2d returns them, not in the whole "
     "flattened tensor: flatten each plane (flatten(2)) and scatter along that axis, one plane per (image, channel)"),
)


def _max_unpool_cases(specs, reveal):
    for spec in specs:
        n, c, H, W = spec["shape"]
        k = spec["kernel"]
        # Distinct values, so every window has a unique maximum.
        values = torch.randperm(n * c * H * W, generator=generator(spec["seed"])).to(torch.float64)
        image = (values / values.numel()).reshape(n, c, H, W)
        pooled, indices = F.max_pool2d(image, k, stride=k, return_indices=True)
        # The definition (F.max_unpool2d would cost every grading process torch's 0.7 s import of sympy).
        data = {"expected": _max_unpool_expected(pooled, indices, (H, W)),
                "mistakes": mistake_outputs(_MAX_UNPOOL_MISTAKES, pooled, indices, (H, W))}
        yield Case(f"image {n}x{c}x{H}x{W} max-pooled with a {k}x{k} window (stride {k})",
                   [Call(pooled, indices, (H, W))], "max_unpool", data, explain="max_unpool",
                   about=spec.get("about", ""))


# ------------------------------------------------------------------------------------------------
# Transposed convolution: output size
# ------------------------------------------------------------------------------------------------
def _torch_output_size(size, kernel_size, stride, padding):
    """The output length torch's own conv_transpose1d produces (the oracle)."""
    x = torch.zeros(1, 1, size)
    w = torch.zeros(1, 1, kernel_size)
    return F.conv_transpose1d(x, w, stride=stride, padding=padding).shape[-1]


SIZE_MISTAKES = (  # padding mistakes first: when two formulas give the same number, they are the likelier
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
    (lambda h, k, s, p: (h - 1) * s - 2 * p + k - 1,
     "one short: the last copy covers kernel_size pixels, so the general formula ends with "
     "dilation * (kernel_size - 1) + 1, that is + kernel_size when dilation = 1"),
)


def _output_size_cases(specs, reveal):
    for spec in specs:
        settings = [tuple(s) for s in spec["settings"]]
        data = {"settings": settings, "expected": [_torch_output_size(*s) for s in settings],
                "mistakes": [mistake_outputs(SIZE_MISTAKES, *s) for s in settings]}
        yield Case(spec["name"], [Call(h, k, s, p) for h, k, s, p in settings], "conv_transpose_output_size", data,
                   about=spec["name"])


# ------------------------------------------------------------------------------------------------
# Transposed convolution
# ------------------------------------------------------------------------------------------------
def _shape_causes(x, weight, stride, padding):
    """(H_out, W_out) that each output-size mistake gives, with its cause (worded for a whole tensor)."""
    h, w = x.shape[-2:]
    kh, kw = weight.shape[-2:]
    causes = []
    for size, cause in SIZE_MISTAKES:
        if "ordinary" not in cause and "overhang" not in cause:
            cause = cause.replace("is ignored", "looks ignored").replace(
                "padding is cropped from both sides", "padding looks cropped on one side only; it is cropped from "
                                                      "both sides")
        causes.append(((size(h, kh, stride, padding), size(w, kw, stride, padding)), cause))
    return causes


def _ct(x, weight, bias, stride, padding):
    return F.conv_transpose2d(x, weight, bias, stride=stride, padding=padding)


def _full_output(x, weight, stride):
    """Zeros of the uncropped output size ((H - 1) * stride + kH, (W - 1) * stride + kW)."""
    (n, _, h, w), (c_out, kh, kw) = x.shape, weight.shape[1:]
    return x.new_zeros(n, c_out, (h - 1) * stride + kh, (w - 1) * stride + kw)


def _crop_and_bias(full, bias, padding):
    out = full[..., padding: full.shape[-2] - padding, padding: full.shape[-1] - padding]
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def _overwritten(x, weight, bias, stride, padding):
    """The notebook's loop over input pixels (row-major) with = instead of +=: the last copy wins."""
    full = _full_output(x, weight, stride)
    kh, kw = weight.shape[-2:]
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            full[:, :, i * stride: i * stride + kh, j * stride: j * stride + kw] = \
                torch.einsum("nc,cokl->nokl", x[:, :, i, j], weight)
    return _crop_and_bias(full, bias, padding)


def _unstrided_placement(x, weight, bias, stride, padding):
    """The strided output size, but the copy of pixel (i, j) placed at (i, j) as if stride were 1."""
    full = _full_output(x, weight, stride)
    packed = _ct(x, weight, None, 1, 0)
    full[..., : packed.shape[-2], : packed.shape[-1]] = packed
    return _crop_and_bias(full, bias, padding)


_OVERWRITTEN = ("each kernel copy was assigned (=) instead of added: where copies overlap only the last one "
                "survives; overlapping contributions must be summed (+=), not overwritten")
_UNSTRIDED = ("the output has the strided size but the copies are packed as if stride were 1 (the error grows "
              "with the stride): the copy of input pixel (i, j) starts at (i * stride, j * stride) of the full "
              "output")
_BIAS_ALONG_WIDTH = ("the bias was added along the last axis (the width): a plain `out + bias` lines bias up "
                     "with the last axis; add it per output channel with bias.view(1, -1, 1, 1)")


def _conv_transpose_mistakes(x, weight, bias, stride, padding, expected):
    """Known mistakes in the order they are recognised: ``(early, late)``; the overlap pattern is checked
    between them (see ``checks.segmentation``). Built from ``expected`` where they can be (a case's build
    time is mostly F.conv_transpose2d calls)."""
    early = [(lambda: _ct(x, weight.flip(-1, -2), bias, stride, padding),
              "the kernel looks flipped: a transposed convolution places the kernel as it is "
              "(out[i * stride + a, j * stride + b] += x[i, j] * w[a, b]), without flipping it")]
    if weight.shape[0] == weight.shape[1]:
        early.append((lambda: _ct(x, weight.transpose(0, 1), bias, stride, padding),
                      "C_in and C_out axes of the weight look swapped: the weight of a transposed convolution is "
                      "(C_in, C_out, kH, kW), so out[:, o] += x[:, i] * weight[i, o]"))
    if weight.shape[-1] == weight.shape[-2]:
        early.append((lambda: _ct(x, weight.transpose(-1, -2), bias, stride, padding),
                      "the kernel's rows and columns look swapped (kH and kW axes)"))
    if bias is not None:
        unbiased = expected - bias.view(1, -1, 1, 1)
        early.append((lambda: unbiased, "the bias is missing: add bias[o] to every pixel of output channel o"))
        early.append((lambda: unbiased + bias.sum(),
                      "every output channel got the sum of all biases: add bias[o] only to output channel o"))
        early.append((lambda: unbiased + bias, _BIAS_ALONG_WIDTH))
    if padding > 0:
        full = _ct(x, weight, bias, stride, 0)
        h, w = expected.shape[-2:]
        for top in (0, 2 * padding):
            early.append((lambda top=top: full[..., top: top + h, top: top + w],
                          "the padding is cropped on one side only: remove `padding` rows and columns from EACH "
                          "side (top and bottom, left and right)"))
    if stride > 1:
        early.append((lambda: _unstrided_placement(x, weight, bias, stride, padding), _UNSTRIDED))
    early.append((lambda: _overwritten(x, weight, bias, stride, padding), _OVERWRITTEN))
    late = []
    if x.shape[1] > 1:
        late.append((lambda: _ct(x[:, -1:], weight[-1:], bias, stride, padding),
                     "only the last input channel contributes: sum the contributions of all input channels"))
    return mistake_outputs(early), mistake_outputs(late)


def _copies_1d(size, k, stride, padding, out):
    """(out,) how many of the ``size`` kernel copies (length k, stride apart) cover each cropped position."""
    offset = torch.arange(out)[:, None] + padding - torch.arange(size)[None, :] * stride
    return ((offset >= 0) & (offset < k)).sum(1).to(torch.float64)


def _conv_transpose_data(x, weight, bias, stride, padding) -> dict:
    """What the verifier needs to check an output and name its mistakes: the expected output, the outputs
    of known mistakes, how many kernel copies land on each output pixel, and the shapes of size mistakes."""
    expected = _ct(x, weight, bias, stride, padding)
    early, late = _conv_transpose_mistakes(x, weight, bias, stride, padding, expected)
    (h, w), (kh, kw), (out_h, out_w) = x.shape[-2:], weight.shape[-2:], expected.shape[-2:]
    copies = _copies_1d(h, kh, stride, padding, out_h)[:, None] * _copies_1d(w, kw, stride, padding, out_w)[None, :]
    return {"expected": expected, "mistakes": early, "late_mistakes": late,
            "copies": copies, "c_in": x.shape[1], "weight_shape": tuple(weight.shape),
            "size_mistakes": _shape_causes(x, weight, stride, padding)}


def _conv_transpose_inputs(spec):
    n, c_in, h, w = spec["x"]
    c_out = spec["c_out"]
    kh, kw = (spec["k"], spec["k"]) if isinstance(spec["k"], int) else spec["k"]
    dtype = getattr(torch, spec.get("dtype", "float64"))
    seed = spec["seed"]
    x = randn((n, c_in, h, w), seed, dtype)
    weight = randn((c_in, c_out, kh, kw), seed + 1000, dtype)
    bias = randn((c_out,), seed + 2000, dtype) if spec.get("bias") else None
    return x, weight, bias, spec.get("stride", 1), spec.get("padding", 0)


def _conv_transpose_name(spec):
    kind = spec.get("kind", "value")
    kh, kw = (spec["k"], spec["k"]) if isinstance(spec["k"], int) else spec["k"]
    c_in = spec["x"][1]
    text = (f"x {shape_str(spec['x'])}, weight {c_in}x{spec['c_out']}x{kh}x{kw}, "
            f"stride {spec.get('stride', 1)}, padding {spec.get('padding', 0)}")
    if spec.get("bias"):
        text += ", with bias"
    if "dtype" in spec:
        text += f", {spec['dtype']}"
    prefix = {"value": "", "impulse": "impulse response: ", "linearity": "linearity: ",
              "adjoint": "adjoint of conv2d: "}[kind]
    return prefix + text


def _impulse(x, weight, bias, spec):
    i, j = spec["at"]
    x = torch.zeros_like(x)
    x[0, 0, i, j] = 1.0
    return [Call(x, weight, bias, stride=spec.get("stride", 1), padding=spec.get("padding", 0))], \
        _conv_transpose_data(x, weight, bias, spec.get("stride", 1), spec.get("padding", 0))


def _value(x, weight, bias, spec):
    stride, padding = spec.get("stride", 1), spec.get("padding", 0)
    return [Call(x, weight, bias, stride=stride, padding=padding)], \
        _conv_transpose_data(x, weight, bias, stride, padding)


def _linearity(x, weight, bias, spec):
    """f(a x1 + b x2) = a f(x1) + b f(x2), and f(x1) right."""
    stride, padding = spec.get("stride", 1), spec.get("padding", 0)
    x2 = randn(tuple(x.shape), spec["seed"] + 3000, x.dtype)
    a, b = 2.0, -3.0
    data = dict(_conv_transpose_data(x, weight, None, stride, padding), a=a, b=b)
    calls = [Call(xx, weight, None, stride=stride, padding=padding) for xx in (x, x2, a * x + b * x2)]
    return calls, data


def _adjoint(x, weight, bias, spec):
    """<conv2d(z, w), x> = <z, conv_transpose2d(x, w)> for a random z."""
    stride, padding = spec.get("stride", 1), spec.get("padding", 0)
    data = _conv_transpose_data(x, weight, None, stride, padding)
    z = randn(tuple(data["expected"].shape), spec["seed"] + 4000, x.dtype)
    data.update(z=z, lhs=float((F.conv2d(z, weight, stride=stride, padding=padding) * x).sum()))
    return [Call(x, weight, None, stride=stride, padding=padding)], data


_CONV_TRANSPOSE_KINDS = {"value": _value, "impulse": _impulse, "linearity": _linearity, "adjoint": _adjoint}


def _conv_transpose_case(spec) -> Case:
    kind = spec.get("kind", "value")
    x, weight, bias, _, _ = _conv_transpose_inputs(spec)
    calls, data = _CONV_TRANSPOSE_KINDS[kind](x, weight, bias, spec)
    about = spec.get("about", kind.replace("adjoint", "adjoint of conv2d") if kind in ("linearity", "adjoint")
                     else "")
    return Case(_conv_transpose_name(spec), calls, f"conv_transpose2d:{kind}", data, explain="conv_transpose2d",
                about=about)


def _conv_transpose_cases(specs, reveal):
    yield from (_conv_transpose_case(spec) for spec in specs)


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


def _random_confusion(num_classes, total, absent, seed, unlabelled=()) -> np.ndarray:
    """A random confusion matrix with ``total`` pixels, no pixel of the ``absent`` classes, and no target pixel
    (but predicted ones) of the ``unlabelled`` classes."""
    rng = np.random.default_rng(seed)
    weights = rng.random((num_classes, num_classes)) + 3 * np.eye(num_classes)
    weights[list(absent), :] = 0
    weights[:, list(absent) + list(unlabelled)] = 0
    return rng.multinomial(total, (weights / weights.sum()).ravel()).reshape(num_classes, num_classes)


def _mean_iou_mistakes(confusion, pred, target):
    """Per-class IoU vectors of known mistakes: ``(on every class, on the classes present only)``."""
    expected = _iou_from_confusion(confusion)
    absent = np.isnan(expected)
    inter = np.diag(confusion).astype(np.float64)
    size_p, size_t = confusion.sum(1).astype(np.float64), confusion.sum(0).astype(np.float64)
    everywhere = []
    unlabelled = (size_t == 0) & (size_p > 0)
    if unlabelled.any():
        everywhere.append((np.where(size_t == 0, np.nan, expected),
                           "a class that is predicted but absent from the target got NaN: its union is not empty, so "
                           "its IoU is 0; only a class absent from both prediction and target gets NaN"))
    if absent.any():
        everywhere = [(np.where(absent, 0.0, expected),
                       "a class absent from both prediction and target got IoU 0: its IoU is undefined (0 / 0); "
                       "return NaN for it and leave it out of the mean"),
                      (np.where(absent, 1.0, expected),
                       "a class absent from both prediction and target got IoU 1: return NaN for it and leave it "
                       "out of the mean")]
    with np.errstate(invalid="ignore", divide="ignore"):
        present_only = [
            (np.where(size_p + size_t > 0, 2 * inter / (size_p + size_t), np.nan),
             "that is the Dice coefficient 2|P ∩ T| / (|P| + |T|); IoU is |P ∩ T| / |P ∪ T|"),
            (np.where(size_p + size_t > 0, inter / (size_p + size_t), np.nan),
             "the union counts the intersection twice: |P ∪ T| = |P| + |T| - |P ∩ T|"),
            (np.where(size_p + size_t > 0, inter / np.maximum(size_t, 1), np.nan),
             "that is the per-class recall (accuracy on the pixels of class c), |P ∩ T| / |T|; IoU divides by the "
             "union |P ∪ T| = |P| + |T| - |P ∩ T|")]
    if pred.ndim == 3 and pred.shape[0] > 1:
        per_image = []
        for p, t in zip(pred, target):
            cm = np.zeros_like(confusion)
            np.add.at(cm, (p.numpy().ravel(), t.numpy().ravel()), 1)
            per_image.append(_iou_from_confusion(cm))
        stacked = np.stack(per_image)
        if np.isfinite(stacked).any():
            with np.errstate(invalid="ignore"), warnings.catch_warnings(action="ignore"):
                present_only.append((np.nanmean(stacked, axis=0),
                                     "per-image IoUs were averaged; count intersections and unions over ALL pixels "
                                     "of the batch first, then divide once per class"))
    return everywhere, present_only


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
            confusion = _random_confusion(c, total, spec.get("absent", ()), spec["seed"], spec.get("unlabelled", ()))
        pred, target = _pixels_from_confusion(confusion, shape, spec["seed"])
        expected_iou = torch.from_numpy(_iou_from_confusion(confusion))
        present = ~torch.isnan(expected_iou)
        everywhere, present_only = _mean_iou_mistakes(confusion, pred, target)
        data = {"expected_iou": expected_iou, "expected_miou": float(expected_iou[present].mean()),
                "present": present.numpy(), "mistakes": everywhere, "present_mistakes": present_only}
        desc = spec.get("name") or (f"{c} classes, labels of shape {shape_str(shape)}"
                                    + (f", class {list(spec['absent'])} absent from both" if spec.get("absent") else ""))
        yield Case(desc, [Call(pred, target, c)], "mean_iou", data, explain="mean_iou", about=spec.get("about", ""))


BUILDERS = {
    "nearest_unpool": _unpool_cases("nearest"),
    "bed_of_nails_unpool": _unpool_cases("bed_of_nails"),
    "max_unpool": _max_unpool_cases,
    "conv_transpose_output_size": _output_size_cases,
    "conv_transpose2d": _conv_transpose_cases,
    "mean_iou": _mean_iou_cases,
}

VISIBLE = {
    "nearest_unpool": [{"shape": (1, 1, 2, 2), "scale": 2, "seed": 1},
                       {"shape": (2, 3, 3, 4), "scale": 2, "seed": 2},
                       {"shape": (1, 2, 2, 3), "scale": 3, "seed": 3}],
    "bed_of_nails_unpool": [{"shape": (1, 1, 2, 2), "scale": 2, "seed": 4},
                            {"shape": (2, 3, 3, 4), "scale": 2, "seed": 5},
                            {"shape": (1, 2, 2, 3), "scale": 3, "seed": 6}],
    "max_unpool": [{"shape": (1, 1, 4, 4), "kernel": 2, "seed": 7},
                   {"shape": (2, 3, 6, 4), "kernel": 2, "seed": 8}],
    "conv_transpose_output_size": [
        {"name": "stride 1, no padding", "settings": [(4, 3, 1, 0), (1, 1, 1, 0), (5, 2, 1, 0)]},
        {"name": "stride 2 and padding", "settings": [(4, 4, 2, 1), (3, 3, 2, 0), (8, 3, 2, 1)]}],
    "conv_transpose2d": [
        {"kind": "impulse", "x": (1, 1, 3, 3), "c_out": 1, "k": 3, "stride": 2, "at": (1, 2), "seed": 10},
        {"x": (1, 1, 2, 2), "c_out": 1, "k": 2, "stride": 1, "seed": 11},
        {"x": (1, 1, 3, 3), "c_out": 1, "k": 3, "stride": 2, "seed": 12},
        {"x": (2, 2, 3, 4), "c_out": 3, "k": 3, "stride": 1, "padding": 1, "bias": True, "seed": 13},
        {"x": (1, 3, 4, 4), "c_out": 2, "k": 4, "stride": 2, "padding": 1, "seed": 14},
        {"kind": "linearity", "x": (1, 2, 3, 3), "c_out": 2, "k": 3, "stride": 2, "seed": 15},
        {"kind": "adjoint", "x": (2, 2, 3, 3), "c_out": 3, "k": 3, "stride": 2, "padding": 1, "seed": 16},
        {"x": (1, 2, 3, 3), "c_out": 2, "k": 2, "stride": 2, "dtype": "float32", "seed": 17},
    ],
    "mean_iou": [{"name": "perfect prediction", "num_classes": 3, "shape": (4, 5), "perfect": True, "seed": 20},
                 {"name": "prediction and target disjoint", "num_classes": 2, "shape": (4, 4), "disjoint": True,
                  "seed": 21},
                 {"num_classes": 3, "shape": (6, 7), "seed": 22},
                 {"num_classes": 4, "shape": (2, 5, 6), "absent": (2,), "seed": 23}],
}

SPECS = {
    "nearest_unpool": [
        {"shape": (3, 2, 5, 2), "scale": 2, "seed": 101, "about": "batch of 3, non-square"},
        {"shape": (1, 4, 3, 3), "scale": 4, "seed": 102, "about": "larger scale"},
        {"shape": (2, 1, 1, 6), "scale": 3, "dtype": "float32", "seed": 103, "about": "float32 input"},
    ],
    "bed_of_nails_unpool": [
        {"shape": (3, 2, 5, 2), "scale": 2, "seed": 111, "about": "batch of 3, non-square"},
        {"shape": (1, 4, 3, 3), "scale": 4, "seed": 112, "about": "larger scale"},
        {"shape": (2, 1, 1, 6), "scale": 3, "dtype": "float32", "seed": 113, "about": "float32 input"},
    ],
    "max_unpool": [
        {"shape": (2, 2, 7, 5), "kernel": 2, "seed": 121, "about": "odd image size"},
        {"shape": (1, 3, 9, 6), "kernel": 3, "seed": 122, "about": "3x3 windows"},
        {"shape": (3, 1, 8, 12), "kernel": 4, "seed": 123, "about": "4x4 windows, batch"},
    ],
    "conv_transpose_output_size": [
        {"name": "stride larger than the kernel", "settings": [(5, 2, 3, 0), (7, 1, 4, 0), (2, 3, 5, 1)]},
        {"name": "padding and odd kernels", "settings": [(6, 5, 2, 2), (9, 7, 3, 3), (10, 4, 2, 1), (1, 5, 1, 2)]},
    ],
    "conv_transpose2d": [
        {"kind": "impulse", "x": (1, 1, 4, 5), "c_out": 1, "k": (3, 2), "stride": 3, "padding": 1, "at": (2, 4),
         "seed": 130, "about": "impulse response, non-square kernel"},
        {"x": (3, 2, 4, 3), "c_out": 5, "k": 3, "stride": 2, "padding": 0, "seed": 131, "about": "C_in != C_out, batch"},
        {"x": (2, 3, 3, 5), "c_out": 3, "k": 2, "stride": 3, "padding": 0, "bias": True, "seed": 132, "about": "stride larger than the kernel"},
        {"x": (1, 2, 5, 4), "c_out": 4, "k": 5, "stride": 2, "padding": 2, "seed": 133, "about": "kernel 5, stride 2, padding 2"},
        {"x": (2, 4, 3, 3), "c_out": 4, "k": 3, "stride": 1, "padding": 2, "bias": True, "seed": 134, "about": "padding 2, bias"},
        {"x": (1, 1, 6, 2), "c_out": 2, "k": (4, 3), "stride": 2, "padding": 1, "seed": 135, "about": "non-square kernel"},
        {"x": (2, 3, 4, 4), "c_out": 3, "k": 3, "stride": 2, "padding": 1, "seed": 139, "about": "kernel 3, stride 2, padding 1"},
        {"kind": "linearity", "x": (2, 3, 4, 3), "c_out": 2, "k": 3, "stride": 3, "padding": 1, "seed": 136},
        {"kind": "adjoint", "x": (1, 3, 5, 4), "c_out": 2, "k": 5, "stride": 2, "padding": 2, "seed": 137},
        {"x": (2, 2, 4, 3), "c_out": 3, "k": 3, "stride": 2, "padding": 1, "bias": True, "dtype": "float32",
         "seed": 138, "about": "float32 input"},
    ],
    "mean_iou": [
        {"num_classes": 5, "shape": (3, 8, 9), "absent": (0, 3), "seed": 141, "about": "two classes absent"},
        {"num_classes": 2, "shape": (17,), "seed": 142, "about": "1-D labels"},
        {"num_classes": 6, "shape": (4, 6, 6), "seed": 143, "about": "6 classes, batch of 4"},
        {"name": "one class only, predicted perfectly", "num_classes": 4, "shape": (5, 5), "absent": (0, 1, 3),
         "seed": 144, "about": "one class only"},
        {"name": "perfect prediction, batch", "num_classes": 5, "shape": (2, 4, 7), "perfect": True, "seed": 145,
         "about": "perfect prediction"},
        {"name": "prediction and target disjoint, 1-D", "num_classes": 2, "shape": (9,), "disjoint": True,
         "seed": 146, "about": "prediction and target disjoint"},
        # Predicted but never labelled: its IoU is 0, not NaN (only classes absent from both are NaN).
        {"num_classes": 4, "shape": (3, 7), "unlabelled": (1,), "seed": 147,
         "about": "a class predicted but absent from the target"},
    ],
}
