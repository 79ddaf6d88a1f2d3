"""Mutant library of the semantic-segmentation exercises (format: ``mutants/__init__``).

Each mutant is a whole function the way a student would write it, with one realistic bug; its ``cause`` is
the text the hidden suite's report must contain. The alternatives are correct implementations written
differently from the reference (``lecturelib.reference.segmentation``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import Alternative, Mutant


# ------------------------------------------------------------------------------------------------
# nearest_unpool and bed_of_nails_unpool: x (N, C, H, W) -> (N, C, H * scale, W * scale)
# ------------------------------------------------------------------------------------------------
def nearest_tiled(x, scale=2):
    """Tiles the whole map scale x scale times instead of repeating each pixel."""
    return x.repeat(1, 1, scale, scale)


def nearest_corner_only(x, scale=2):
    """Puts each value in the top-left corner of its block only (that is bed of nails)."""
    n, c, h, w = x.shape
    out = x.new_zeros(n, c, h * scale, w * scale)
    out[..., ::scale, ::scale] = x
    return out


def nearest_float32_output(x, scale=2):
    """Allocates the output with torch.zeros (float32, whatever the dtype of x), then fills the blocks."""
    n, c, h, w = x.shape
    out = torch.zeros(n, c, h * scale, w * scale)
    for a in range(scale):
        for b in range(scale):
            out[..., a::scale, b::scale] = x
    return out


def nearest_same_dim_twice(x, scale=2):
    """Repeats along the height twice (dim=2 typed twice), never along the width."""
    return x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=2)


def nearest_expand_wrong_order(x, scale=2):
    """expand + reshape with the block axes last: (N, C, H, W, s, s) reshaped to (N, C, H*s, W*s)."""
    n, c, h, w = x.shape
    return x[..., None, None].expand(n, c, h, w, scale, scale).reshape(n, c, h * scale, w * scale)


def nearest_first_image(x, scale=2):
    """Only the first image of the batch is upsampled (code written for one (C, H, W) image)."""
    n, c, h, w = x.shape
    out = x.new_zeros(n, c, h * scale, w * scale)
    out[0] = x[0].repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    return out


def nearest_by_expand(x, scale=2):
    """Correct: broadcast each pixel over a (scale, scale) block, then merge the axes."""
    n, c, h, w = x.shape
    return x[:, :, :, None, :, None].expand(n, c, h, scale, w, scale).reshape(n, c, h * scale, w * scale)


def nearest_by_kron(x, scale=2):
    """Correct: a Kronecker product with an all-ones block."""
    return torch.kron(x, x.new_ones(1, 1, scale, scale))


def nails_nearest(x, scale=2):
    """Fills the whole block (that is nearest-neighbour unpooling)."""
    return x.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)


def nails_bottom_right(x, scale=2):
    """Puts the value in the bottom-right corner of its block."""
    n, c, h, w = x.shape
    out = x.new_zeros(n, c, h * scale, w * scale)
    out[..., scale - 1::scale, scale - 1::scale] = x
    return out


def nails_centre(x, scale=2):
    """Puts the value at the centre (scale // 2, scale // 2) of its block."""
    n, c, h, w = x.shape
    out = x.new_zeros(n, c, h * scale, w * scale)
    out[..., scale // 2::scale, scale // 2::scale] = x
    return out


def nails_float32_output(x, scale=2):
    """Allocates the output with torch.zeros (float32, whatever the dtype of x)."""
    n, c, h, w = x.shape
    out = torch.zeros(n, c, h * scale, w * scale)
    out[..., ::scale, ::scale] = x
    return out


def nails_first_image(x, scale=2):
    """Only the first image of the batch is filled in."""
    n, c, h, w = x.shape
    out = x.new_zeros(n, c, h * scale, w * scale)
    out[0, :, ::scale, ::scale] = x[0]
    return out


def nails_strided_size(x, scale=2):
    """Allocates (H - 1) * scale + 1 rows, as a strided convolution's input would have (the last block cut)."""
    n, c, h, w = x.shape
    out = x.new_zeros(n, c, (h - 1) * scale + 1, (w - 1) * scale + 1)
    out[..., ::scale, ::scale] = x
    return out


def nails_by_stack(x, scale=2):
    """Correct: stack the value with scale * scale - 1 zeros along new block axes, then merge."""
    n, c, h, w = x.shape
    blocks = x.new_zeros(n, c, h, scale, w, scale)
    blocks[:, :, :, 0, :, 0] = x
    return blocks.reshape(n, c, h * scale, w * scale)


# ------------------------------------------------------------------------------------------------
# max_unpool: x, indices (N, C, h, w), output_size (H, W) -> (N, C, H, W)
# ------------------------------------------------------------------------------------------------
def unpool_ignores_switches(x, indices, output_size):
    """Puts every value in the top-left corner of its window: the indices are never used."""
    height, width = output_size
    k = height // x.shape[2]
    out = x.new_zeros(*x.shape[:2], height, width)
    out[..., : x.shape[2] * k: k, : x.shape[3] * k: k] = x
    return out


def unpool_pooled_width(x, indices, output_size):
    """Decodes the flat index with the pooled width: row = index // w, col = index % w."""
    height, width = output_size
    rows, cols = indices // x.shape[3], indices % x.shape[3]
    out = x.new_zeros(*x.shape[:2], height * width)
    out.scatter_(2, (rows * width + cols).flatten(2), x.flatten(2))
    return out.view(*x.shape[:2], height, width)


def unpool_size_from_scale(x, indices, output_size):
    """Uses output_size only for the window size k and allocates (h * k, w * k): odd sizes lose a row."""
    n, c, h, w = x.shape
    k = output_size[0] // h
    out = x.new_zeros(n, c, h * k * w * k)
    out.scatter_(2, indices.flatten(2), x.flatten(2))
    return out.view(n, c, h * k, w * k)


def unpool_offsets_in_place(x, indices, output_size):
    """Turns the per-plane indices into indices of the whole tensor with `indices +=` (the caller's tensor)."""
    n, c = x.shape[:2]
    height, width = output_size
    indices += torch.arange(n * c).view(n, c, 1, 1) * (height * width)
    out = x.new_zeros(n * c * height * width)
    out[indices.flatten()] = x.flatten()
    return out.view(n, c, height, width)


def unpool_float32_output(x, indices, output_size):
    """Allocates the output with torch.zeros (float32) and scatters float64 values into it."""
    n, c = x.shape[:2]
    height, width = output_size
    out = torch.zeros(n, c, height * width)
    out.scatter_(2, indices.flatten(2), x.flatten(2))
    return out.view(n, c, height, width)


def unpool_first_image(x, indices, output_size):
    """Only the first image of the batch is unpooled."""
    n, c = x.shape[:2]
    height, width = output_size
    out = x.new_zeros(n, c, height * width)
    out[0].scatter_(1, indices[0].flatten(1), x[0].flatten(1))
    return out.view(n, c, height, width)


def unpool_whole_tensor_index(x, indices, output_size):
    """Scatters into the flattened whole tensor: every plane's values land in the first plane."""
    n, c = x.shape[:2]
    height, width = output_size
    out = x.new_zeros(n * c * height * width)
    out.scatter_(0, indices.flatten(), x.flatten())
    return out.view(n, c, height, width)


def unpool_by_index_put(x, indices, output_size):
    """Correct: decode row and column, then advanced indexing with broadcast batch and channel indices."""
    n, c = x.shape[:2]
    height, width = output_size
    out = x.new_zeros(n, c, height, width)
    batch = torch.arange(n).view(n, 1, 1, 1).expand_as(indices)
    channel = torch.arange(c).view(1, c, 1, 1).expand_as(indices)
    out[batch, channel, indices // width, indices % width] = x
    return out


# ------------------------------------------------------------------------------------------------
# conv_transpose_output_size(size, kernel_size, stride=1, padding=0) -> int
# ------------------------------------------------------------------------------------------------
def size_no_minus_one(size, kernel_size, stride=1, padding=0):
    """H_in * stride instead of (H_in - 1) * stride."""
    return size * stride - 2 * padding + kernel_size


def size_padding_once(size, kernel_size, stride=1, padding=0):
    """Subtracts the padding once."""
    return (size - 1) * stride - padding + kernel_size


def size_padding_added(size, kernel_size, stride=1, padding=0):
    """Adds the padding, as if it enlarged the output."""
    return (size - 1) * stride + 2 * padding + kernel_size


def size_forward_conv(size, kernel_size, stride=1, padding=0):
    """The output size of an ordinary convolution."""
    return (size + 2 * padding - kernel_size) // stride + 1


def size_stride_ignored(size, kernel_size, stride=1, padding=0):
    """Forgets the stride."""
    return (size - 1) - 2 * padding + kernel_size


def size_no_plus_one(size, kernel_size, stride=1, padding=0):
    """Writes the dilation formula's kernel extent as kernel_size - 1 and forgets the + 1."""
    return (size - 1) * stride - 2 * padding + (kernel_size - 1)


def size_float(size, kernel_size, stride=1, padding=0):
    """Returns a float (the stride converted with float() for a division it later dropped)."""
    stride = float(stride)
    return (size - 1) * stride - 2 * padding + kernel_size


def size_by_counting(size, kernel_size, stride=1, padding=0):
    """Correct: the last copy's end, minus what padding crops from both ends."""
    last_start = (size - 1) * stride
    return int(last_start + kernel_size - padding - padding)


# ------------------------------------------------------------------------------------------------
# conv_transpose2d(x (N, C_in, H, W), weight (C_in, C_out, kH, kW), bias (C_out,) or None, stride, padding)
# ------------------------------------------------------------------------------------------------
def _full_size(x, weight, stride):
    h, w = x.shape[-2:]
    kh, kw = weight.shape[-2:]
    return (h - 1) * stride + kh, (w - 1) * stride + kw


def ct_overwrite(x, weight, bias=None, stride=1, padding=0):
    """Assigns each kernel copy with = instead of +=: overlapping copies overwrite each other."""
    n = x.shape[0]
    c_out, kh, kw = weight.shape[1:]
    full = x.new_zeros(n, c_out, *_full_size(x, weight, stride))
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            full[:, :, i * stride: i * stride + kh, j * stride: j * stride + kw] = \
                torch.einsum("nc,cokl->nokl", x[:, :, i, j], weight)
    out = full[..., padding: full.shape[-2] - padding, padding: full.shape[-1] - padding]
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def ct_overwrite_taps(x, weight, bias=None, stride=1, padding=0):
    """The loop over kernel taps with = instead of +=: a later tap overwrites an earlier one where they meet."""
    n, c_in, h, w = x.shape
    c_out, kh, kw = weight.shape[1:]
    full = x.new_zeros(n, c_out, (h - 1) * stride + kh, (w - 1) * stride + kw)
    for a in range(kh):
        for b in range(kw):
            full[:, :, a: a + (h - 1) * stride + 1: stride, b: b + (w - 1) * stride + 1: stride] = \
                torch.einsum("nchw,co->nohw", x, weight[:, :, a, b])
    out = full[..., padding: full.shape[-2] - padding, padding: full.shape[-1] - padding]
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def ct_flipped_kernel(x, weight, bias=None, stride=1, padding=0):
    """Flips the kernel (as a convolution written as a correlation would)."""
    weight = weight.flip(-1, -2)
    n = x.shape[0]
    c_out, kh, kw = weight.shape[1:]
    full = x.new_zeros(n, c_out, *_full_size(x, weight, stride))
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            full[:, :, i * stride: i * stride + kh, j * stride: j * stride + kw] += \
                torch.einsum("nc,cokl->nokl", x[:, :, i, j], weight)
    out = full[..., padding: full.shape[-2] - padding, padding: full.shape[-1] - padding]
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def ct_stride_ignored(x, weight, bias=None, stride=1, padding=0):
    """Never uses the stride: the output has the size of a stride-1 transposed convolution."""
    n = x.shape[0]
    c_out, kh, kw = weight.shape[1:]
    full = x.new_zeros(n, c_out, x.shape[2] - 1 + kh, x.shape[3] - 1 + kw)
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            full[:, :, i: i + kh, j: j + kw] += torch.einsum("nc,cokl->nokl", x[:, :, i, j], weight)
    out = full[..., padding: full.shape[-2] - padding, padding: full.shape[-1] - padding]
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def ct_stride_in_size_only(x, weight, bias=None, stride=1, padding=0):
    """Allocates the strided output size but places the copy of pixel (i, j) at (i, j), not (i*s, j*s)."""
    n = x.shape[0]
    c_out, kh, kw = weight.shape[1:]
    full = x.new_zeros(n, c_out, *_full_size(x, weight, stride))
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            full[:, :, i: i + kh, j: j + kw] += torch.einsum("nc,cokl->nokl", x[:, :, i, j], weight)
    out = full[..., padding: full.shape[-2] - padding, padding: full.shape[-1] - padding]
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def ct_crop_one_side(x, weight, bias=None, stride=1, padding=0):
    """Crops the padding from the top and left only."""
    n = x.shape[0]
    c_out, kh, kw = weight.shape[1:]
    full = x.new_zeros(n, c_out, *_full_size(x, weight, stride))
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            full[:, :, i * stride: i * stride + kh, j * stride: j * stride + kw] += \
                torch.einsum("nc,cokl->nokl", x[:, :, i, j], weight)
    out = full[..., padding:, padding:]
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def ct_negative_slice_crop(x, weight, bias=None, stride=1, padding=0):
    """Crops with full[..., p:-p, p:-p], which is empty when p = 0."""
    n = x.shape[0]
    c_out, kh, kw = weight.shape[1:]
    full = x.new_zeros(n, c_out, *_full_size(x, weight, stride))
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            full[:, :, i * stride: i * stride + kh, j * stride: j * stride + kw] += \
                torch.einsum("nc,cokl->nokl", x[:, :, i, j], weight)
    out = full[:, :, padding:-padding, padding:-padding]
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def ct_conv2d_weight_layout(x, weight, bias=None, stride=1, padding=0):
    """Reads the weight the conv2d way, as (C_out, C_in, kH, kW)."""
    n = x.shape[0]
    c_out, kh, kw = weight.shape[0], *weight.shape[2:]
    full = x.new_zeros(n, c_out, *_full_size(x, weight, stride))
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            full[:, :, i * stride: i * stride + kh, j * stride: j * stride + kw] += \
                torch.einsum("nc,ockl->nokl", x[:, :, i, j], weight)
    out = full[..., padding: full.shape[-2] - padding, padding: full.shape[-1] - padding]
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def ct_first_image(x, weight, bias=None, stride=1, padding=0):
    """Written for one image: only x[0] is computed, the rest of the batch stays zero."""
    n = x.shape[0]
    c_out, kh, kw = weight.shape[1:]
    full = x.new_zeros(n, c_out, *_full_size(x, weight, stride))
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            full[0, :, i * stride: i * stride + kh, j * stride: j * stride + kw] += \
                torch.einsum("c,cokl->okl", x[0, :, i, j], weight)
    out = full[..., padding: full.shape[-2] - padding, padding: full.shape[-1] - padding]
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def ct_bias_missing(x, weight, bias=None, stride=1, padding=0):
    """Never adds the bias."""
    n = x.shape[0]
    c_out, kh, kw = weight.shape[1:]
    full = x.new_zeros(n, c_out, *_full_size(x, weight, stride))
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            full[:, :, i * stride: i * stride + kh, j * stride: j * stride + kw] += \
                torch.einsum("nc,cokl->nokl", x[:, :, i, j], weight)
    return full[..., padding: full.shape[-2] - padding, padding: full.shape[-1] - padding]


def ct_bias_last_axis(x, weight, bias=None, stride=1, padding=0):
    """Adds the bias as `out + bias`, which broadcasts it along the width, not the channels."""
    out = ct_bias_missing(x, weight, None, stride, padding)
    return out if bias is None else out + bias


def ct_last_channel_only(x, weight, bias=None, stride=1, padding=0):
    """Loops over the input channels and assigns each channel's copy: only the last channel survives."""
    n, c_in = x.shape[:2]
    c_out, kh, kw = weight.shape[1:]
    full = x.new_zeros(n, c_out, *_full_size(x, weight, stride))
    for c in range(c_in):
        layer = x.new_zeros(n, c_out, *full.shape[-2:])
        for i in range(x.shape[2]):
            for j in range(x.shape[3]):
                layer[:, :, i * stride: i * stride + kh, j * stride: j * stride + kw] += \
                    x[:, c, i, j].view(n, 1, 1, 1) * weight[c]
        full = layer
    out = full[..., padding: full.shape[-2] - padding, padding: full.shape[-1] - padding]
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def ct_float32_output(x, weight, bias=None, stride=1, padding=0):
    """Allocates the full output with torch.zeros (float32, whatever the dtype of x)."""
    n = x.shape[0]
    c_out, kh, kw = weight.shape[1:]
    full = torch.zeros(n, c_out, *_full_size(x, weight, stride))
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            full[:, :, i * stride: i * stride + kh, j * stride: j * stride + kw] += \
                torch.einsum("nc,cokl->nokl", x[:, :, i, j], weight)
    out = full[..., padding: full.shape[-2] - padding, padding: full.shape[-1] - padding]
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def ct_weight_transposed_in_place(x, weight, bias=None, stride=1, padding=0):
    """The conv2d route, but with weight.transpose_(0, 1), which changes the caller's weight."""
    n, c_in, h, w = x.shape
    kh, kw = weight.shape[-2:]
    dilated = x.new_zeros(n, c_in, (h - 1) * stride + 1, (w - 1) * stride + 1)
    dilated[..., ::stride, ::stride] = x
    kernel = weight.transpose_(0, 1).flip(-1, -2)
    out = F.conv2d(F.pad(dilated, (kw - 1, kw - 1, kh - 1, kh - 1)), kernel)
    out = out[..., padding: out.shape[-2] - padding, padding: out.shape[-1] - padding]
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def ct_loop_over_pixels(x, weight, bias=None, stride=1, padding=0):
    """Correct: the notebook's loop over input pixels, adding each scaled kernel into its window."""
    return ct_bias_missing(x, weight, None, stride, padding) + (0 if bias is None else bias.view(1, -1, 1, 1))


def ct_loop_over_taps(x, weight, bias=None, stride=1, padding=0):
    """Correct: one strided slice per kernel tap."""
    n, c_in, h, w = x.shape
    c_out, kh, kw = weight.shape[1:]
    full = x.new_zeros(n, c_out, (h - 1) * stride + kh, (w - 1) * stride + kw)
    for a in range(kh):
        for b in range(kw):
            full[:, :, a: a + (h - 1) * stride + 1: stride, b: b + (w - 1) * stride + 1: stride] += \
                torch.einsum("nchw,co->nohw", x, weight[:, :, a, b])
    out = full[..., padding: full.shape[-2] - padding, padding: full.shape[-1] - padding]
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def ct_by_conv2d(x, weight, bias=None, stride=1, padding=0):
    """Correct (allowed route): conv2d on the zero-inserted input with the flipped, transposed kernel."""
    n, c_in, h, w = x.shape
    kh, kw = weight.shape[-2:]
    dilated = x.new_zeros(n, c_in, (h - 1) * stride + 1, (w - 1) * stride + 1)
    dilated[..., ::stride, ::stride] = x
    kernel = weight.flip(-1, -2).transpose(0, 1)
    out = F.conv2d(F.pad(dilated, (kw - 1, kw - 1, kh - 1, kh - 1)), kernel)
    out = out[..., padding: out.shape[-2] - padding, padding: out.shape[-1] - padding]
    return out if bias is None else out + bias.view(1, -1, 1, 1)


# ------------------------------------------------------------------------------------------------
# mean_iou(pred, target, num_classes) -> (iou (num_classes,) float, miou float)
# ------------------------------------------------------------------------------------------------
def _confusion(pred, target, c):
    """(num_classes, num_classes) pred x target counts, float64."""
    return torch.bincount(pred.reshape(-1) * c + target.reshape(-1), minlength=c * c).reshape(c, c).double()


def _nan():
    return torch.tensor(float("nan"), dtype=torch.float64)


def miou_absent_as_zero(pred, target, num_classes):
    """Guards the division with clamp(min=1): a class absent from both gets 0, and counts in the mean."""
    cm = _confusion(pred, target, num_classes)
    inter = cm.diag()
    union = cm.sum(0) + cm.sum(1) - inter
    iou = inter / union.clamp_min(1)
    return iou, float(iou.mean())


def miou_absent_as_one(pred, target, num_classes):
    """Treats a class absent from both as perfectly predicted: IoU 1."""
    cm = _confusion(pred, target, num_classes)
    inter = cm.diag()
    union = cm.sum(0) + cm.sum(1) - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))
    return iou, float(iou.mean())


def miou_dice(pred, target, num_classes):
    """Computes the Dice coefficient 2|P ∩ T| / (|P| + |T|)."""
    cm = _confusion(pred, target, num_classes)
    total = cm.sum(0) + cm.sum(1)
    iou = torch.where(total > 0, 2 * cm.diag() / total.clamp_min(1), _nan())
    return iou, float(iou.nanmean())


def miou_union_without_subtraction(pred, target, num_classes):
    """Union = |P| + |T| (the intersection counted twice)."""
    cm = _confusion(pred, target, num_classes)
    total = cm.sum(0) + cm.sum(1)
    iou = torch.where(total > 0, cm.diag() / total.clamp_min(1), _nan())
    return iou, float(iou.nanmean())


def miou_per_image(pred, target, num_classes):
    """Averages per-image IoUs instead of counting over the whole batch."""
    if pred.ndim < 3:
        pred, target = pred[None], target[None]
    ious = []
    for p, t in zip(pred, target):
        cm = _confusion(p, t, num_classes)
        inter = cm.diag()
        union = cm.sum(0) + cm.sum(1) - inter
        ious.append(torch.where(union > 0, inter / union.clamp_min(1), _nan()))
    iou = torch.stack(ious).nanmean(0)
    return iou, float(iou.nanmean())


def miou_nan_in_mean(pred, target, num_classes):
    """Takes the plain mean of the per-class IoUs, NaN included."""
    cm = _confusion(pred, target, num_classes)
    inter = cm.diag()
    union = cm.sum(0) + cm.sum(1) - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1), _nan())
    return iou, float(iou.mean())


def miou_nan_if_not_in_target(pred, target, num_classes):
    """Gives NaN to every class absent from the target, even one that is predicted (its IoU is 0)."""
    cm = _confusion(pred, target, num_classes)
    inter = cm.diag()
    union = cm.sum(0) + cm.sum(1) - inter
    iou = torch.where(cm.sum(0) > 0, inter / union.clamp_min(1), _nan())
    return iou, float(iou.nanmean())


def miou_recall(pred, target, num_classes):
    """Divides by the target count |T| (per-class recall) instead of the union."""
    cm = _confusion(pred, target, num_classes)
    inter = cm.diag()
    union = cm.sum(0) + cm.sum(1) - inter
    iou = torch.where(union > 0, inter / cm.sum(0).clamp_min(1), _nan())
    return iou, float(iou.nanmean())


def miou_bincount_without_minlength(pred, target, num_classes):
    """bincount without minlength: the reshape fails when the last classes are absent."""
    counts = torch.bincount(pred.reshape(-1) * num_classes + target.reshape(-1))
    cm = counts.reshape(num_classes, num_classes).double()
    inter = cm.diag()
    union = cm.sum(0) + cm.sum(1) - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1), _nan())
    return iou, float(iou.nanmean())


def miou_pairs_in_place(pred, target, num_classes):
    """Builds the pair index with pred.mul_(num_classes).add_(target): changes the caller's pred."""
    pairs = pred.mul_(num_classes).add_(target).reshape(-1)
    cm = torch.bincount(pairs, minlength=num_classes ** 2).reshape(num_classes, num_classes).double()
    inter = cm.diag()
    union = cm.sum(0) + cm.sum(1) - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1), _nan())
    return iou, float(iou.nanmean())


def miou_tensor_mean(pred, target, num_classes):
    """Returns miou as the 0-d tensor iou.nanmean() instead of a Python float."""
    cm = _confusion(pred, target, num_classes)
    inter = cm.diag()
    union = cm.sum(0) + cm.sum(1) - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1), _nan())
    return iou, iou.nanmean()


def miou_by_masks(pred, target, num_classes):
    """Correct: one boolean mask per class, logical and / or."""
    ious = []
    for c in range(num_classes):
        p, t = pred == c, target == c
        union = int((p | t).sum())
        ious.append(int((p & t).sum()) / union if union else float("nan"))
    iou = torch.tensor(ious, dtype=torch.float64)
    return iou, float(iou.nanmean())


# ------------------------------------------------------------------------------------------------
# The library
# ------------------------------------------------------------------------------------------------
_DTYPE = "the output has the dtype of x"
_BATCH = "only the first entry along the first axis"

MUTANTS = {
    "nearest_unpool": [
        Mutant("whole map tiled", nearest_tiled, "the whole map was tiled"),
        Mutant("corner only (bed of nails)", nearest_corner_only, "that is bed-of-nails unpooling"),
        Mutant("float32 output", nearest_float32_output, "keep the dtype of the input", rule=_DTYPE),
        Mutant("height repeated twice", nearest_same_dim_twice, "scale both the height and the width",
               rule="the output is (N, C, H * scale, W * scale)"),
        Mutant("expand with block axes last", nearest_expand_wrong_order, "the right values, in the wrong places"),
        Mutant("first image only", nearest_first_image, _BATCH),
    ],
    "bed_of_nails_unpool": [
        Mutant("whole block filled (nearest)", nails_nearest, "that is nearest-neighbour unpooling",
               rule="zeros elsewhere in the block"),
        Mutant("bottom-right corner", nails_bottom_right, "top-left corner (0, 0)",
               rule="the value goes to the top-left corner of its block"),
        Mutant("centre of the block", nails_centre, "top-left corner (0, 0)",
               rule="the value goes to the top-left corner of its block"),
        Mutant("float32 output", nails_float32_output, "keep the dtype of the input", rule=_DTYPE),
        Mutant("first image only", nails_first_image, _BATCH),
        Mutant("(H - 1) * scale + 1 rows", nails_strided_size, "scale both the height and the width"),
    ],
    "max_unpool": [
        Mutant("switches ignored", unpool_ignores_switches, "switches (indices) are ignored"),
        Mutant("decoded with the pooled width", unpool_pooled_width, "W_out the width of the output",
               rule="index = row * W + col in each channel's (H, W) plane"),
        Mutant("output_size only for k", unpool_size_from_scale, "use output_size",
               rule="the output has shape output_size (odd sizes)"),
        Mutant("indices += offsets in place", unpool_offsets_in_place, "modified its argument `indices` in place"),
        Mutant("float32 output", unpool_float32_output, "dtype of x", rule="the output has the dtype of x"),
        Mutant("first image only", unpool_first_image, _BATCH),
        Mutant("indices of the whole tensor", unpool_whole_tensor_index, "positions within each channel's"),
    ],
    "conv_transpose_output_size": [
        Mutant("H_in * stride", size_no_minus_one, "(H_in - 1) * stride"),
        Mutant("padding subtracted once", size_padding_once, "subtract 2 * padding"),
        Mutant("padding added", size_padding_added, "padding removes rows at the border"),
        Mutant("forward convolution's size", size_forward_conv, "ordinary (forward) convolution"),
        Mutant("stride ignored", size_stride_ignored, "stride is ignored"),
        Mutant("kernel_size - 1 without + 1", size_no_plus_one, "dilation * (kernel_size - 1) + 1"),
        Mutant("float returned", size_float, "return an int", rule="returns an int"),
    ],
    "conv_transpose2d": [
        Mutant("copies overwritten", ct_overwrite, "must be summed", rule="overlapping contributions are summed"),
        Mutant("copies overwritten (tap loop)", ct_overwrite_taps, "must be summed"),
        Mutant("kernel flipped", ct_flipped_kernel, "kernel looks flipped"),
        Mutant("stride ignored", ct_stride_ignored, "stride looks ignored",
               rule="H_out = (H - 1) * stride - 2 * padding + kH"),
        Mutant("stride in the size only", ct_stride_in_size_only, "starts at (i * stride, j * stride)"),
        Mutant("padding cropped on one side", ct_crop_one_side, "cropped on one side only",
               rule="padding is cropped from each side"),
        Mutant("crop with p:-p", ct_negative_slice_crop, "full[..., p:-p] is empty"),
        Mutant("weight read as (C_out, C_in)", ct_conv2d_weight_layout, "C_in and C_out axes of the weight look swapped",
               rule="weight is (C_in, C_out, kH, kW)"),
        Mutant("first image only", ct_first_image, _BATCH),
        Mutant("bias missing", ct_bias_missing, "bias is missing"),
        Mutant("bias along the width", ct_bias_last_axis, "bias.view(1, -1, 1, 1)",
               rule="bias (C_out,) is added per output channel"),
        Mutant("last input channel only", ct_last_channel_only, "only the last input channel contributes"),
        Mutant("float32 output", ct_float32_output, "keep the dtype of the input",
               rule="the output has the dtype of x"),
        Mutant("weight.transpose_ in place", ct_weight_transposed_in_place, "modified its argument `weight` in place"),
    ],
    "mean_iou": [
        Mutant("absent class as 0", miou_absent_as_zero, "absent from both prediction and target got IoU 0",
               rule="a class absent from both gets NaN and is left out of the mean"),
        Mutant("absent class as 1", miou_absent_as_one, "absent from both prediction and target got IoU 1"),
        Mutant("Dice", miou_dice, "Dice coefficient"),
        Mutant("union without subtraction", miou_union_without_subtraction, "counts the intersection twice"),
        Mutant("per-image mean", miou_per_image, "per-image IoUs were averaged",
               rule="count over all pixels at once, not per image"),
        Mutant("NaN in the mean", miou_nan_in_mean, "mIoU is NaN", rule="miou is the mean of the non-NaN IoUs"),
        Mutant("miou as a tensor", miou_tensor_mean, "return it as a Python float", rule="miou is a Python float"),
        Mutant("NaN when absent from the target", miou_nan_if_not_in_target, "predicted but absent from the target",
               rule="NaN only for classes absent from both prediction and target"),
        Mutant("recall instead of IoU", miou_recall, "|P ∩ T| / |T|"),
        Mutant("bincount without minlength", miou_bincount_without_minlength, "minlength"),
        Mutant("pred.mul_ in place", miou_pairs_in_place, "modified its argument `pred` in place"),
    ],
}

ALTERNATIVES = {
    "nearest_unpool": [Alternative("expand + reshape", nearest_by_expand), Alternative("kron", nearest_by_kron)],
    "bed_of_nails_unpool": [Alternative("zeros with block axes", nails_by_stack)],
    "max_unpool": [Alternative("index_put with decoded rows and columns", unpool_by_index_put)],
    "conv_transpose_output_size": [Alternative("counted from the last copy", size_by_counting)],
    "conv_transpose2d": [Alternative("loop over input pixels", ct_loop_over_pixels),
                         Alternative("loop over kernel taps", ct_loop_over_taps),
                         Alternative("conv2d on the zero-inserted input", ct_by_conv2d)],
    "mean_iou": [Alternative("boolean masks per class", miou_by_masks)],
}
