"""Reference solutions of the semantic-segmentation exercises."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._validate import require_int, require_pair, require_tensor

__all__ = ["nearest_unpool", "bed_of_nails_unpool", "max_unpool", "conv_transpose_output_size",
           "conv_transpose2d", "mean_iou"]


def nearest_unpool(x: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """Copy each value into a ``scale x scale`` block.

    x: (N, C, H, W) -> (N, C, H * scale, W * scale)
    """
    x = require_tensor("x", x, ndim=4)
    scale = require_int("scale", scale, minimum=1)
    return x.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)


def bed_of_nails_unpool(x: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """Put each value in the top-left corner of a ``scale x scale`` block of zeros.

    x: (N, C, H, W) -> (N, C, H * scale, W * scale)
    """
    x = require_tensor("x", x, ndim=4)
    scale = require_int("scale", scale, minimum=1)
    n, c, h, w = x.shape
    out = x.new_zeros(n, c, h * scale, w * scale)
    out[..., ::scale, ::scale] = x
    return out


def max_unpool(x: torch.Tensor, indices: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
    """Put each pooled value back where max pooling found it ("switches"), zeros elsewhere.

    x: (N, C, h, w) pooled values; indices: (N, C, h, w) flat positions in each (H, W) plane,
    as returned by ``F.max_pool2d(..., return_indices=True)``; output_size: (H, W).
    Returns (N, C, H, W).
    """
    x = require_tensor("x", x, ndim=4)
    indices = require_tensor("indices", indices, ndim=4, integer=True)
    if indices.shape != x.shape:
        raise ValueError(f"indices must have the shape of x {tuple(x.shape)}, got {tuple(indices.shape)}")
    height, width = require_pair("output_size", output_size, minimum=1)
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= height * width):
        raise ValueError(f"indices must lie in [0, {height * width}) for output_size {(height, width)}")
    n, c = x.shape[:2]
    out = x.new_zeros(n, c, height * width)
    out.scatter_(2, indices.flatten(2), x.flatten(2))
    return out.view(n, c, height, width)


def conv_transpose_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0) -> int:
    """H_out = (H_in - 1) * stride - 2 * padding + kernel_size."""
    size = require_int("size", size, minimum=1)
    kernel_size = require_int("kernel_size", kernel_size, minimum=1)
    stride = require_int("stride", stride, minimum=1)
    padding = require_int("padding", padding, minimum=0)
    out = (size - 1) * stride - 2 * padding + kernel_size
    if out < 1:
        raise ValueError(f"padding={padding} crops the whole output (size {out}); use a smaller padding")
    return out


def conv_transpose2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     stride: int = 1, padding: int = 0) -> torch.Tensor:
    """Transposed convolution with the semantics of ``F.conv_transpose2d`` (groups=1, dilation=1).

    x: (N, C_in, H, W); weight: (C_in, C_out, kH, kW); bias: (C_out,) or None.
    Returns (N, C_out, (H - 1) * stride - 2 * padding + kH, (W - 1) * stride - 2 * padding + kW).

    Each input pixel x[n, :, i, j] scales the kernel, and the copy lands at rows i * stride + (0..kH-1)
    and columns j * stride + (0..kW-1) of the uncropped output, where overlapping copies are summed.
    Vectorised: one matrix product gives every copy, ``F.fold`` (col2im) sums them into place, and
    ``padding`` rows and columns are cropped from each side.
    """
    x = require_tensor("x", x, ndim=4, floating=True)
    weight = require_tensor("weight", weight, ndim=4, floating=True)
    n, c_in, h, w = x.shape
    if weight.shape[0] != c_in:
        raise ValueError(f"weight must have shape (C_in={c_in}, C_out, kH, kW) to match x with C_in={c_in} "
                         f"channels, got {tuple(weight.shape)}")
    c_out, kh, kw = weight.shape[1:]
    if bias is not None:
        bias = require_tensor("bias", bias, shape=(c_out,), floating=True)
    stride = require_int("stride", stride, minimum=1)
    padding = require_int("padding", padding, minimum=0)
    full_h, full_w = (h - 1) * stride + kh, (w - 1) * stride + kw
    if full_h - 2 * padding < 1 or full_w - 2 * padding < 1:
        raise ValueError(f"padding={padding} crops the whole output of size {(full_h, full_w)}")
    if x.dtype != weight.dtype:
        raise TypeError(f"x and weight must have the same dtype, got {x.dtype} and {weight.dtype}")

    copies = torch.einsum("nchw,cokl->noklhw", x, weight).reshape(n, c_out * kh * kw, h * w)
    full = F.fold(copies, output_size=(full_h, full_w), kernel_size=(kh, kw), stride=stride)
    out = full[..., padding: full_h - padding, padding: full_w - padding]
    if bias is not None:
        out = out + bias.view(1, c_out, 1, 1)
    return out.contiguous()


def mean_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, float]:
    """Per-class intersection over union and their mean over the whole batch.

    pred, target: integer label maps of the same shape (e.g. (N, H, W)) with values in [0, num_classes).
    Returns (iou, miou): iou (num_classes,) float64 with NaN for classes absent from both pred and
    target; miou = mean of the non-NaN entries.
    """
    pred = require_tensor("pred", pred, integer=True)
    target = require_tensor("target", target, integer=True)
    num_classes = require_int("num_classes", num_classes, minimum=1)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    for name, labels in (("pred", pred), ("target", target)):
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(f"{name} must hold labels in [0, {num_classes}), got values in "
                             f"[{int(labels.min())}, {int(labels.max())}]")
    pairs = pred.reshape(-1).long() * num_classes + target.reshape(-1).long()
    confusion = torch.bincount(pairs, minlength=num_classes ** 2).reshape(num_classes, num_classes)
    inter = confusion.diag().double()
    union = confusion.sum(0).double() + confusion.sum(1).double() - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, float("nan")))
    present = ~torch.isnan(iou)
    miou = float(iou[present].mean()) if bool(present.any()) else float("nan")
    return iou, miou
