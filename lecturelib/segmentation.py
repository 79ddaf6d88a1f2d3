"""Semantic segmentation: sliding windows vs fully convolutional nets, unpooling, transposed
convolution, FCN and U-Net.

Demos and widgets of the segmentation notebook. Models (``FCN``, ``UNet``), training and the
confusion matrix live in :mod:`lecturelib.segmentation_models` and are re-exported here.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._student import call_student, function_or_reference
from ._validate import require_int, require_pair, require_tensor
from .plot import display_only, explorer
from .segmentation_models import (FCN, PRETRAINED, UNet, confusion_matrix, load_pretrained,  # noqa: F401
                                  predict_masks, train_segmenter)

__all__ = [
    "FCN", "UNet", "train_segmenter", "predict_masks", "confusion_matrix", "load_pretrained",
    "sliding_window_cost", "strided_conv_demo", "plot_strided_windows", "transposed_conv_example",
    "plot_transposed_conv_example", "conv2d_as_matrix", "conv_transpose_footprint", "plot_conv_transpose",
    "conv_transpose_explorer",
]


# ------------------------------------------------------------------------------------------------
# Why not sliding windows
# ------------------------------------------------------------------------------------------------
def sliding_window_cost(model: nn.Module, image: torch.Tensor, patch: int) -> dict:
    """Label every pixel twice: once by classifying the patch around each pixel (sliding window),
    once by running ``model`` fully convolutionally on the whole image. Measures both.

    model: maps (B, 3, patch, patch) -> (B, C, 1, 1) scores and (1, 3, H, W) -> (1, C, H, W)
    (any fully convolutional net whose receptive field is ``patch``); image: (3, H, W).
    Returns forward passes, seconds and the largest difference between the two label maps' scores.
    """
    image = require_tensor("image", image, ndim=3, floating=True)
    patch = require_int("patch", patch, minimum=1)
    if patch % 2 == 0:
        raise ValueError(f"patch must be odd so that a pixel sits at its centre, got {patch}")
    _, h, w = image.shape
    padded = F.pad(image[None], [patch // 2] * 4)
    with torch.no_grad():
        start = time.perf_counter()
        windows = F.unfold(padded, patch).transpose(1, 2).reshape(h * w, 3, patch, patch)
        window_scores = model(windows).reshape(h, w, -1).permute(2, 0, 1)
        window_seconds = time.perf_counter() - start
        start = time.perf_counter()
        dense_scores = model(padded)[0]
        dense_seconds = time.perf_counter() - start
    return {"window_passes": h * w, "dense_passes": 1, "window_seconds": window_seconds,
            "dense_seconds": dense_seconds, "max_difference": float((window_scores - dense_scores).abs().max())}


# ------------------------------------------------------------------------------------------------
# Strided convolution: learnable downsampling
# ------------------------------------------------------------------------------------------------
def strided_conv_demo(size: int = 16, channels: int = 8, kernel_size: int = 3, stride: int = 2, padding: int = 1,
                      seed: int = 0) -> dict:
    """A strided convolution measured against the stride-1 convolution it subsamples, and against pooling.

    Returns a dict with the output shapes, "max_difference" between conv2d(stride s) and conv2d(stride 1) keeping
    every s-th output, "flops" of both (``FlopCounterMode``), and "avg_pool_difference": a 2 x 2 stride-2
    convolution whose kernel is all 1/4 (per channel) against ``F.avg_pool2d(x, 2)``: pooling is one particular
    strided convolution, with fixed weights.
    """
    from torch.utils.flop_counter import FlopCounterMode

    n = require_int("size", size, minimum=2)
    c = require_int("channels", channels, minimum=1)
    k, s, p = (require_int(name, v, minimum=m) for name, v, m in
               (("kernel_size", kernel_size, 1), ("stride", stride, 1), ("padding", padding, 0)))
    g = torch.Generator().manual_seed(require_int("seed", seed, minimum=0))
    x = torch.randn(1, c, n, n, generator=g)
    weight = torch.randn(c, c, k, k, generator=g)
    with torch.no_grad():
        with FlopCounterMode(display=False) as strided_counter:
            strided = F.conv2d(x, weight, stride=s, padding=p)
        with FlopCounterMode(display=False) as dense_counter:
            dense = F.conv2d(x, weight, stride=1, padding=p)
        averaging = torch.zeros(c, c, 2, 2)
        averaging[range(c), range(c)] = 0.25
        pooled = F.avg_pool2d(x, 2)
        as_conv = F.conv2d(x, averaging, stride=2)
    return {"input_shape": tuple(x.shape[2:]), "strided_shape": tuple(strided.shape[2:]),
            "dense_shape": tuple(dense.shape[2:]),
            "max_difference": float((strided - dense[:, :, ::s, ::s]).abs().max()),
            "flops": {"strided": int(strided_counter.get_total_flops()), "dense": int(dense_counter.get_total_flops())},
            "avg_pool_difference": float((pooled - as_conv).abs().max())}


@display_only
def plot_strided_windows(input_size: int = 4, kernel_size: int = 3, stride: int = 2, padding: int = 1, fig=None):
    """Where each output pixel's window sits on the (zero-padded) input: stride 1 and stride ``stride`` side by side.

    The filter moves ``stride`` input pixels for every output pixel (the lecture's "stride gives the ratio between
    movement in the input and in the output").
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n, k = require_int("input_size", input_size, minimum=1), require_int("kernel_size", kernel_size, minimum=1)
    s, p = require_int("stride", stride, minimum=1), require_int("padding", padding, minimum=0)
    if fig is None:
        fig = plt.figure(figsize=(11, 4.2))
    fig.clear()
    axes = fig.subplots(1, 2)
    colours = plt.get_cmap("tab10")
    for ax, step in zip(axes, (1, s)):
        size = n + 2 * p
        out = (size - k) // step + 1
        grid = np.zeros((size, size))
        grid[p:p + n, p:p + n] = 1
        ax.imshow(grid, cmap="Blues", vmin=0, vmax=2.5)
        for i in range(size + 1):
            ax.axhline(i - 0.5, color="white", lw=0.8)
            ax.axvline(i - 0.5, color="white", lw=0.8)
        shown = [(i, j) for i in range(min(out, 2)) for j in range(min(out, 2))]
        for number, (i, j) in enumerate(shown):
            offset = 0.1 + 0.07 * number
            ax.add_patch(Rectangle((j * step - 0.5 + offset, i * step - 0.5 + offset), k - 2 * offset,
                                   k - 2 * offset, fill=False, edgecolor=colours(number), lw=2.2))
            ax.text(j * step - 0.5 + offset + 0.1, i * step - 0.5 + offset + 0.1, f"y{i}{j}", color=colours(number),
                    fontsize=8, ha="left", va="top", fontweight="bold")
        ax.set_xlim(-0.7, size - 0.3)
        ax.set_ylim(size - 0.3, -0.7)
        ax.set_title(f"{k} x {k} conv, stride {step}, padding {p}: {n} x {n} input -> {out} x {out} output\n"
                     f"the window moves {step} input pixel{'s' if step > 1 else ''} per output pixel "
                     f"(pale: zero padding)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.set_layout_engine("tight")
    return fig


# ------------------------------------------------------------------------------------------------
# The lecture's transposed-convolution example: 3 x 3 kernel, stride 2, padding 1, 2 x 2 -> 4 x 4
# ------------------------------------------------------------------------------------------------
def transposed_conv_example(x=((1.0, 2.0), (3.0, 4.0)), kernel_size: int = 3, stride: int = 2,
                            padding: int = 1) -> dict:
    """The lecture's example computed with ``F.conv_transpose2d`` and an all-ones kernel (so every output
    value is the sum of the input values whose kernel copy covers it).

    Returns "input" (2, 2), "full" the uncropped output ((H - 1) s + k), "no_output_padding" (padding cropped from
    every side) and "output_padding_1" (the same with ``output_padding=1``: one row and column fewer cropped at the
    bottom and right), as numpy arrays.
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    require_tensor("x", x, ndim=2)
    k, s, p = kernel_size, stride, padding
    kernel = torch.ones(1, 1, k, k, dtype=torch.float64)
    full = F.conv_transpose2d(x[None, None], kernel, stride=s)[0, 0]
    no_op = F.conv_transpose2d(x[None, None], kernel, stride=s, padding=p)[0, 0]
    op1 = F.conv_transpose2d(x[None, None], kernel, stride=s, padding=p, output_padding=1)[0, 0]
    return {"input": x.numpy(), "kernel_size": k, "stride": s, "padding": p, "full": full.numpy(),
            "no_output_padding": no_op.numpy(), "output_padding_1": op1.numpy()}


@display_only
def plot_transposed_conv_example(example: dict, fig=None):
    """Draw :func:`transposed_conv_example`: the input, each input pixel's kernel copy on the full output
    (stride apart, summed where they overlap), and what padding 1 and output_padding 1 keep of it."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if fig is None:
        fig = plt.figure(figsize=(12, 3.9))
    fig.clear()
    axes = fig.subplots(1, 3)
    x, full, k, s, p = (example[key] for key in ("input", "full", "kernel_size", "stride", "padding"))
    colours = plt.get_cmap("tab10")

    def numbers(ax, values):
        for (r, c), v in np.ndenumerate(values):
            ax.text(c, r, f"{v:g}", ha="center", va="center", fontsize=10)

    axes[0].imshow(x, cmap="Blues", vmin=0, vmax=x.max() * 1.6)
    numbers(axes[0], x)
    for number, (i, j) in enumerate(np.ndindex(*x.shape)):
        axes[0].add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=colours(number), lw=2.5))
    axes[0].set_title(f"input {x.shape[0]} x {x.shape[1]}", fontsize=9)
    axes[1].imshow(full, cmap="Oranges", vmin=0, vmax=full.max() * 1.4)
    numbers(axes[1], full)
    for number, (i, j) in enumerate(np.ndindex(*x.shape)):
        off = 0.06 * (number + 1)
        axes[1].add_patch(Rectangle((j * s - 0.5 + off, i * s - 0.5 + off), k - 2 * off, k - 2 * off, fill=False,
                                    edgecolor=colours(number), lw=2))
    axes[1].set_title(f"full output {full.shape[0]} x {full.shape[1]}: input value x ones({k} x {k}) placed\n"
                      f"{s} apart, summed where copies overlap", fontsize=9)
    kept = example["output_padding_1"]
    axes[2].imshow(full, cmap="Oranges", vmin=0, vmax=full.max() * 1.4, alpha=0.35)
    numbers(axes[2], full)
    h0 = example["no_output_padding"].shape[0]
    axes[2].add_patch(Rectangle((p - 0.5, p - 0.5), h0, h0, fill=False, edgecolor="black", lw=2, linestyle="--"))
    axes[2].add_patch(Rectangle((p - 0.5, p - 0.5), kept.shape[1], kept.shape[0], fill=False, edgecolor="crimson",
                                lw=2.5))
    axes[2].set_title(f"padding {p} crops {p} from every side: {h0} x {h0} (dashed);\n"
                      f"output_padding 1 keeps one more row and column: {kept.shape[0]} x {kept.shape[1]} (red)",
                      fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.set_layout_engine("tight")
    return fig


# ------------------------------------------------------------------------------------------------
# Convolution as a matrix, transposed convolution as its transpose
# ------------------------------------------------------------------------------------------------
def conv2d_as_matrix(weight: torch.Tensor, input_size: tuple[int, int], stride: int = 1,
                     padding: int = 0) -> torch.Tensor:
    """The matrix C of ``conv2d`` for one input and one output channel: conv2d(x) = C @ x.flatten().

    weight: (kH, kW); returns (H_out * W_out, H * W). Column k of C is conv2d of the k-th one-hot image.
    """
    weight = require_tensor("weight", weight, ndim=2, floating=True)
    h, w = require_pair("input_size", input_size, minimum=1)
    basis = torch.eye(h * w, dtype=weight.dtype).reshape(h * w, 1, h, w)
    columns = F.conv2d(basis, weight[None, None], stride=stride, padding=padding)
    return columns.reshape(h * w, -1).T


# ------------------------------------------------------------------------------------------------
# The transposed-convolution explorer
# ------------------------------------------------------------------------------------------------
def conv_transpose_footprint(conv_transpose2d: Callable | None = None, *, input_size: int = 3,
                             kernel_size: int = 3, stride: int = 2, padding: int = 0,
                             pixel: tuple[int, int] = (0, 0)) -> dict:
    """Where one input pixel's kernel lands, and how many kernel copies overlap at each output pixel.

    Runs ``conv_transpose2d`` (yours; left out: the reference where it ships) twice with an all-ones kernel:
    on a one-hot input at ``pixel`` (its footprint) and on an all-ones input (the overlap count).
    Returns a dict with ``footprint`` and ``overlap`` (H_out, W_out) arrays, or ``error`` if your
    function raised.
    """
    fn = function_or_reference(conv_transpose2d, "conv_transpose2d", "segmentation")
    n = require_int("input_size", input_size, minimum=1)
    k = require_int("kernel_size", kernel_size, minimum=1)
    s = require_int("stride", stride, minimum=1)
    p = require_int("padding", padding, minimum=0)
    i, j = require_pair("pixel", pixel, minimum=0)
    if i >= n or j >= n:
        raise ValueError(f"pixel must lie inside the {n}x{n} input, got {(i, j)}")
    out_size = (n - 1) * s - 2 * p + k
    result = {"input_size": n, "kernel_size": k, "stride": s, "padding": p, "pixel": (i, j),
              "output_size": out_size}
    if out_size < 1:
        result["error"] = f"padding {p} crops the whole {out_size + 2 * p}-pixel output"
        return result
    kernel = torch.ones(1, 1, k, k, dtype=torch.float64)
    one_hot = torch.zeros(1, 1, n, n, dtype=torch.float64)
    one_hot[0, 0, i, j] = 1
    def run():
        footprint = fn(one_hot, kernel, None, stride=s, padding=p)
        overlap = fn(torch.ones_like(one_hot), kernel, None, stride=s, padding=p)
        return tuple(np.asarray(torch.as_tensor(out).detach())[0, 0] for out in (footprint, overlap))

    outputs, error = call_student(run, what="conv_transpose2d")
    if error:
        result["error"] = error
    else:
        result["footprint"], result["overlap"] = outputs
    return result


@display_only
def plot_conv_transpose(result: dict, fig=None):
    """Draw a :func:`conv_transpose_footprint` result: input, footprint, overlap counts."""
    import matplotlib.pyplot as plt

    if fig is None:
        fig = plt.figure(figsize=(11, 3.8))
    fig.clear()
    axes = fig.subplots(1, 3)
    n, (i, j) = result["input_size"], result["pixel"]
    image = np.zeros((n, n))
    image[i, j] = 1
    axes[0].imshow(image, cmap="Blues", vmin=0, vmax=1.5)
    axes[0].set_title(f"input {n}x{n}, pixel {(i, j)}")
    if "error" in result:
        for ax in axes[1:]:
            ax.axis("off")
        axes[1].text(0, 0.5, result["error"], wrap=True, fontsize=10, color="crimson",
                     transform=axes[1].transAxes)
    else:
        axes[1].imshow(result["footprint"], cmap="Oranges", vmin=0)
        axes[1].set_title(f"where its kernel lands ({result['output_size']}x{result['output_size']} output)")
        overlap = result["overlap"]
        im = axes[2].imshow(overlap, cmap="viridis", vmin=0)
        axes[2].set_title("kernel copies summed at each pixel")
        if overlap.shape[0] <= 16:
            for (r, c), v in np.ndenumerate(overlap):
                axes[2].text(c, r, f"{v:g}", ha="center", va="center", fontsize=8,
                             color="white" if v < overlap.max() / 2 else "black")
        fig.colorbar(im, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"kernel {result['kernel_size']}, stride {result['stride']}, padding {result['padding']}")
    fig.set_layout_engine("tight")
    return fig


@display_only
def conv_transpose_explorer(conv_transpose2d: Callable | None = None):
    """Sliders for input size, kernel size, stride, padding and the input pixel.

    Pass your own ``conv_transpose2d`` to see what it does; without one the explorer uses the
    reference (instructor copy only).
    Returns the ipywidgets box (display it as a cell's last expression).
    """
    import ipywidgets as widgets

    fn = function_or_reference(conv_transpose2d, "conv_transpose2d", "segmentation")
    sliders = {
        "input_size": widgets.IntSlider(3, 1, 6, description="input size"),
        "kernel_size": widgets.IntSlider(3, 1, 5, description="kernel"),
        "stride": widgets.IntSlider(2, 1, 4, description="stride"),
        "padding": widgets.IntSlider(0, 0, 2, description="padding"),
        "row": widgets.IntSlider(0, 0, 2, description="pixel row"),
        "col": widgets.IntSlider(0, 0, 2, description="pixel col"),
    }

    def follow_input_size(change):
        for name in ("row", "col"):
            sliders[name].max = change["new"] - 1

    sliders["input_size"].observe(follow_input_size, names="value")

    def view(input_size, kernel_size, stride, padding, row, col):
        return conv_transpose_footprint(fn, input_size=input_size, kernel_size=kernel_size, stride=stride,
                                        padding=padding, pixel=(min(row, input_size - 1), min(col, input_size - 1)))

    return explorer(sliders, view, plot_conv_transpose,
                    arrange=[["input_size", "kernel_size", "stride"], ["padding", "row", "col"]])
