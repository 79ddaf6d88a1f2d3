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
from .plot import explorer
from .segmentation_models import (FCN, PRETRAINED, UNet, confusion_matrix, load_pretrained,  # noqa: F401
                                  predict_masks, train_segmenter)

__all__ = [
    "FCN", "UNet", "train_segmenter", "predict_masks", "confusion_matrix", "load_pretrained",
    "sliding_window_cost", "conv2d_as_matrix", "conv_transpose_footprint", "plot_conv_transpose",
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
    fig.tight_layout()
    return fig


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
