"""Plotting helpers used by every notebook.

Each ``show_*`` function makes a new matplotlib figure and returns it; ``draw_boxes`` draws on an axes
you give it; ``colorize_mask``, ``overlay_mask`` and ``overlay_heatmap`` return images (numpy arrays)
that you can show or save yourself. In a notebook, end the line with ``;`` (or assign the figure) so
that the figure is shown once.

Images may be given in any of the forms used in the lecture:

* numpy uint8 (H, W, 3) as loaded from disk or made by ``lecturelib.data``,
* torch float (3, H, W) in [0, 1] as fed to a network,
* grey (H, W) arrays or tensors,
* batches (N, ...) or lists of any of these.

Every class of ``lecturelib.data.CLASSES`` has one fixed colour, ``CLASS_COLORS[class_id]``, used for
masks, boxes and legends throughout the notebooks.

The package's figures and widgets are for people: while autograding they are not built (``display_only``).
They are laid out when drawn (``fig.set_layout_engine("tight")``), not when made.
"""
from __future__ import annotations

import functools
import math
import os

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.patches import Patch, Rectangle

from ._validate import describe, require_array, require_float, require_int
from .data import CLASSES, NUM_CLASSES

__all__ = [
    "CLASS_COLORS",
    "class_color",
    "to_display",
    "show_images",
    "colorize_mask",
    "overlay_mask",
    "class_legend_handles",
    "show_segmentation",
    "draw_boxes",
    "overlay_heatmap",
    "show_heatmaps",
    "show_filters",
    "explorer",
]

#: (NUM_CLASSES, 3) uint8 RGB colour of each class: background, circle, square, triangle, star.
CLASS_COLORS = np.array([
    (40, 40, 40),     # background: dark grey
    (230, 25, 75),    # circle: red
    (60, 180, 75),    # square: green
    (0, 130, 200),    # triangle: blue
    (255, 200, 25),   # star: yellow
], dtype=np.uint8)
CLASS_COLORS.setflags(write=False)


def display_only(builder):
    """Decorator of what only people look at: every function of the package that builds a figure or a widget.

    While autograding (``lecturelib.grading_time()``) it builds nothing and returns None, unless the grader keeps
    figures (``IsolatedExecute.keep_figures``, which sets ``LECTURELIB_GRADING_FIGURES=1`` in the kernel): no
    verdict reads a figure or a widget. Measured on the segmentation notebook's grading: 0.13 s for its first
    figure's twelve axes, 0.05 s for its explorer's controls.
    """
    @functools.wraps(builder)
    def build(*args, **kwargs):
        from . import grading_time
        if grading_time() and os.environ.get("LECTURELIB_GRADING_FIGURES", "") in ("", "0"):
            return None
        return builder(*args, **kwargs)
    return build


def class_color(label) -> tuple[float, float, float]:
    """The colour of class ``label`` (an int id or a name from CLASSES) as RGB floats in [0, 1]."""
    if isinstance(label, str):
        if label not in CLASSES:
            raise ValueError(f"label must be a class id or one of {CLASSES}, got {label!r}")
        label = CLASSES.index(label)
    label = require_int("label", label, minimum=0)
    if label >= NUM_CLASSES:
        raise ValueError(f"label must be < {NUM_CLASSES} (number of classes), got {label}")
    return tuple(float(c) / 255 for c in CLASS_COLORS[label])


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------

def to_display(image, name: str = "image") -> np.ndarray:
    """One image as a numpy array matplotlib can show: (H, W, 3) or grey (H, W), float in [0, 1].

    Accepts (H, W, 3) / (H, W, 1) / (H, W) arrays and (3, H, W) / (1, H, W) tensors or arrays,
    uint8 (0..255), bool or float (clipped to [0, 1]).
    """
    is_tensor = isinstance(image, torch.Tensor)
    array = require_array(name, image)
    if array.ndim == 3:
        channels_first = array.shape[0] in (1, 3) and (is_tensor or array.shape[-1] not in (1, 3, 4))
        if channels_first:
            array = np.moveaxis(array, 0, -1)
        if array.shape[-1] == 4:
            array = array[..., :3]
        if array.shape[-1] == 1:
            array = array[..., 0]
        elif array.shape[-1] != 3:
            raise ValueError(f"{name} must have 1 or 3 channels (CHW or HWC), got shape {array.shape}")
    elif array.ndim != 2:
        raise ValueError(f"{name} must be (H, W), (H, W, 3) or (3, H, W), got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255
    if array.dtype == bool:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        return np.clip(array, 0, 255).astype(np.float32) / 255
    return np.clip(array.astype(np.float32), 0, 1)


def _as_image_list(images, name: str = "images") -> list:
    """Split a batch (N, ...) or a list into single images; a single image becomes a list of one."""
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError(f"{name} must not be empty")
        return list(images)
    if not isinstance(images, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name} must be an array, a tensor or a list of them, got {describe(images)}")
    if images.ndim == 4:
        if len(images) == 0:
            raise ValueError(f"{name} must not be empty")
        return list(images)
    if images.ndim == 3:
        looks_single = images.shape[0] in (1, 3) or images.shape[-1] in (1, 3, 4)
        return [images] if looks_single else list(images)  # else a batch of grey images
    if images.ndim == 2:
        return [images]
    raise ValueError(f"{name} must be an image, a batch (N, ...) or a list, got {describe(images)}")


def _grid(n: int, ncols, figsize, cell: float = 2.0, extra_height: float = 0.0):
    ncols = min(n, 8) if ncols is None else require_int("ncols", ncols, minimum=1)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    if figsize is None:
        figsize = (cell * ncols, (cell + extra_height) * nrows)
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
    axes = axes.ravel()
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, list(axes[:n])


@display_only
def show_images(images, titles=None, ncols=None, figsize=None):
    """Show images in a grid and return the Figure (one axes per image).

    images: a batch (N, H, W, 3) uint8 / (N, 3, H, W) float / (N, H, W) grey, a list of images,
            or a single image
    titles: optional list of N strings
    """
    items = _as_image_list(images)
    if titles is not None:
        titles = list(titles)
        if len(titles) != len(items):
            raise ValueError(f"titles must have one entry per image ({len(items)}), got {len(titles)}")
    fig, axes = _grid(len(items), ncols, figsize, extra_height=0.3 if titles else 0.0)
    for i, (ax, image) in enumerate(zip(axes, items)):
        shown = to_display(image, name=f"images[{i}]")
        ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=9)
    fig.set_layout_engine("tight")
    return fig


# --------------------------------------------------------------------------------------------
# Segmentation masks
# --------------------------------------------------------------------------------------------

def _check_mask(name: str, mask) -> np.ndarray:
    mask = require_array(name, mask)
    if mask.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dimensions (H, W), got shape {mask.shape}")
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == bool):
        raise TypeError(f"{name} must hold integer class ids, got dtype {mask.dtype}")
    mask = mask.astype(np.int64)
    if mask.size and (mask.min() < 0 or mask.max() >= NUM_CLASSES):
        raise ValueError(f"{name} must hold class ids in 0..{NUM_CLASSES - 1}, "
                         f"got values in {mask.min()}..{mask.max()}")
    return mask


def colorize_mask(mask) -> np.ndarray:
    """Class ids (H, W) -> (H, W, 3) uint8 image with CLASS_COLORS[id] at each pixel."""
    return CLASS_COLORS[_check_mask("mask", mask)]


def overlay_mask(image, mask, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8: the image with the class colours of ``mask`` blended over its objects.

    image: (H, W, 3) uint8 or (3, H, W) float; mask: (H, W) class ids (background pixels stay as is)
    alpha: weight of the class colour, 0 (image only) to 1 (colour only)
    """
    alpha = require_float("alpha", alpha, minimum=0, maximum=1)
    shown = to_display(image)
    if shown.ndim == 2:
        shown = np.repeat(shown[..., None], 3, axis=2)
    mask = _check_mask("mask", mask)
    if mask.shape != shown.shape[:2]:
        raise ValueError(f"mask must have the image's size {shown.shape[:2]}, got shape {mask.shape}")
    colors = CLASS_COLORS[mask].astype(np.float32) / 255
    weight = np.where(mask > 0, alpha, 0.0)[..., None]
    blended = (1 - weight) * shown + weight * colors
    return np.round(blended * 255).astype(np.uint8)


def class_legend_handles(classes=CLASSES) -> list:
    """Legend patches, one per class, in the class colours."""
    return [Patch(facecolor=class_color(i), edgecolor="black", label=name) for i, name in enumerate(classes)]


@display_only
def show_segmentation(images, masks_true, masks_pred=None, max_images: int = 8, figsize=None):
    """One row per image: image | ground truth | prediction (if given), with a class legend.

    images: batch or list of N images; masks_true, masks_pred: (N, H, W) class ids (arrays or tensors)
    Returns the Figure (N x 2 or N x 3 axes; at most ``max_images`` rows).
    """
    max_images = require_int("max_images", max_images, minimum=1)
    items = _as_image_list(images)
    truth = _check_mask("masks_true", masks_true)
    if truth.ndim == 2:
        truth = truth[None]
    if len(truth) != len(items):
        raise ValueError(f"masks_true must have one mask per image ({len(items)}), got {len(truth)}")
    columns = [("image", None), ("ground truth", truth)]
    if masks_pred is not None:
        pred = _check_mask("masks_pred", masks_pred)
        if pred.ndim == 2:
            pred = pred[None]
        if pred.shape != truth.shape:
            raise ValueError(f"masks_pred must have the shape of masks_true {truth.shape}, got {pred.shape}")
        columns.append(("prediction", pred))
    n = min(len(items), max_images)
    ncols = len(columns)
    if figsize is None:
        figsize = (2.0 * ncols + 1.2, 2.0 * n + 0.3)
    fig, axes = plt.subplots(n, ncols, figsize=figsize, squeeze=False)
    for row in range(n):
        for col, (title, masks) in enumerate(columns):
            ax = axes[row, col]
            if masks is None:
                ax.imshow(to_display(items[row], name=f"images[{row}]"), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(colorize_mask(masks[row]))
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=10)
    fig.set_layout_engine("tight", rect=(0, 0, 1 - 1.1 / figsize[0], 1))
    fig.legend(handles=class_legend_handles(), loc="center right", fontsize=8, frameon=False)
    return fig


# --------------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------------

def draw_boxes(ax, boxes, labels=None, scores=None, color=None, linewidth: float = 1.5,
               fontsize: float = 7):
    """Draw xyxy boxes on ``ax`` (an image shown with imshow) and return ``ax``.

    boxes:  (K, 4) x1, y1, x2, y2 in pixels, x2/y2 exclusive as in lecturelib.data
    labels: optional (K,) class ids: each box gets its class colour and name
    scores: optional (K,) confidences printed after the name
    color:  one colour for all boxes (overrides the class colours)
    Pixel j covers [j - 0.5, j + 0.5] in imshow coordinates, so boxes are shifted by -0.5 to hug the
    pixels they contain.
    """
    if not isinstance(ax, matplotlib.axes.Axes):
        raise TypeError(f"ax must be a matplotlib Axes, got {describe(ax)}")
    boxes = require_array("boxes", boxes)
    if boxes.ndim == 1 and boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (K, 4), got {boxes.shape}")
    k = len(boxes)
    if labels is not None:
        labels = require_array("labels", labels).reshape(-1)
        if len(labels) != k:
            raise ValueError(f"labels must have one entry per box ({k}), got {len(labels)}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"labels must hold integer class ids, got dtype {labels.dtype}")
        if k and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
            raise ValueError(f"labels must be class ids in 0..{NUM_CLASSES - 1}, got {labels.tolist()}")
    if scores is not None:
        scores = require_array("scores", scores).reshape(-1)
        if len(scores) != k:
            raise ValueError(f"scores must have one entry per box ({k}), got {len(scores)}")
    for i, (x1, y1, x2, y2) in enumerate(boxes.astype(float)):
        box_color = color if color is not None else (
            class_color(int(labels[i])) if labels is not None else "white")
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                               edgecolor=box_color, linewidth=linewidth))
        text = []
        if labels is not None:
            text.append(CLASSES[int(labels[i])])
        if scores is not None:
            text.append(f"{float(scores[i]):.2f}")
        if text:
            ax.text(x1 - 0.5, y1 - 0.5, " ".join(text), fontsize=fontsize, color="black",
                    va="bottom", ha="left", bbox=dict(facecolor=box_color, alpha=0.8, pad=1,
                                                      edgecolor="none"))
    return ax


# --------------------------------------------------------------------------------------------
# Heat maps and filters
# --------------------------------------------------------------------------------------------

def truth_over_predictions(shapes, max_images: int = 6):
    """Held-out images twice: the ground-truth boxes on the top row, the bottom row left for predictions.

    Returns ``(fig, axes)`` with ``axes`` of shape (2, n), n = min(max_images, len(shapes))."""
    n = min(require_int("max_images", max_images, minimum=1), len(shapes))
    fig, axes = plt.subplots(2, n, figsize=(2.1 * n, 4.4), squeeze=False)
    for i in range(n):
        for row in range(2):
            axes[row, i].imshow(shapes.images[i])
            axes[row, i].set_axis_off()
        draw_boxes(axes[0, i], shapes.boxes[i], shapes.labels[i])
    return fig, axes


def _resize_heatmap(heatmap, size: tuple[int, int]) -> np.ndarray:
    """(h, w) map -> (H, W) float32 by bilinear interpolation, min-max normalised to [0, 1]."""
    heat = torch.as_tensor(require_array("heatmap", heatmap), dtype=torch.float32)
    heat = heat.squeeze()
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be a 2-d map (h, w), got shape {tuple(heat.shape)}")
    heat = F.interpolate(heat[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    heat = heat - heat.min()
    top = heat.max()
    return (heat / top if top > 0 else heat).numpy()


def overlay_heatmap(image, heatmap, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]: the image with a coloured heat map blended over it.

    image:   (H, W, 3) uint8 or (3, H, W) float (grey also accepted)
    heatmap: (h, w) any size (e.g. an 8 x 8 CAM); resized bilinearly to (H, W) and min-max normalised
             for display, so only the relative values matter.
    """
    alpha = require_float("alpha", alpha, minimum=0, maximum=1)
    if cmap not in matplotlib.colormaps:
        raise ValueError(f"cmap must be a matplotlib colormap name, got {cmap!r}")
    shown = to_display(image)
    if shown.ndim == 2:
        shown = np.repeat(shown[..., None], 3, axis=2)
    heat = _resize_heatmap(heatmap, shown.shape[:2])
    colored = matplotlib.colormaps[cmap](heat)[..., :3].astype(np.float32)
    return ((1 - alpha) * shown + alpha * colored).astype(np.float32)


@display_only
def show_heatmaps(image, heatmaps, titles=None, alpha: float = 0.5, cmap: str = "jet",
                  show_image: bool = True, figsize=None):
    """The image, then each heat map overlaid on it, side by side; returns the Figure.

    heatmaps: a list of (h, w) maps, a (M, h, w) array/tensor, or a dict {title: map}
    titles:   optional list of M titles (taken from the dict keys if heatmaps is a dict)
    """
    if isinstance(heatmaps, dict):
        if titles is None:
            titles = list(heatmaps)
        heatmaps = list(heatmaps.values())
    elif isinstance(heatmaps, (np.ndarray, torch.Tensor)):
        if heatmaps.ndim == 2:
            heatmaps = [heatmaps]
        elif heatmaps.ndim == 3:
            heatmaps = list(heatmaps)
        else:
            raise ValueError(f"heatmaps must be (h, w), (M, h, w) or a list, got {describe(heatmaps)}")
    elif not isinstance(heatmaps, (list, tuple)):
        raise TypeError(f"heatmaps must be a list, dict, array or tensor, got {describe(heatmaps)}")
    if len(heatmaps) == 0:
        raise ValueError("heatmaps must not be empty")
    if titles is None:
        titles = [f"map {i}" for i in range(len(heatmaps))]
    titles = list(titles)
    if len(titles) != len(heatmaps):
        raise ValueError(f"titles must have one entry per heat map ({len(heatmaps)}), got {len(titles)}")
    panels = [overlay_heatmap(image, h, alpha=alpha, cmap=cmap) for h in heatmaps]
    if show_image:
        panels.insert(0, to_display(image))
        titles.insert(0, "image")
    return show_images(panels, titles=titles, ncols=len(panels), figsize=figsize)


@display_only
def show_filters(weight, ncols: int = 8, normalize: str = "each", figsize=None):
    """First-layer conv filters as an image grid; returns the Figure (one axes).

    weight:    (out, 3, k, k) or (out, 1, k, k) tensor/array, or an nn.Conv2d
    normalize: "each" scales every filter to [0, 1] on its own, "all" uses one range for all filters
               (shows which filters are strong)
    """
    if isinstance(weight, torch.nn.Conv2d):
        weight = weight.weight
    if isinstance(weight, torch.Tensor):
        weight = weight.detach().cpu()
    w = require_array("weight", weight).astype(np.float32)
    if w.ndim != 4 or w.shape[1] not in (1, 3):
        raise ValueError(f"weight must have shape (out, 3, k, k) or (out, 1, k, k), got {w.shape}")
    if normalize not in ("each", "all"):
        raise ValueError(f"normalize must be 'each' or 'all', got {normalize!r}")
    ncols = require_int("ncols", ncols, minimum=1)
    axes_to_reduce = (1, 2, 3) if normalize == "each" else (0, 1, 2, 3)
    low = w.min(axis=axes_to_reduce, keepdims=True)
    high = w.max(axis=axes_to_reduce, keepdims=True)
    w = (w - low) / np.maximum(high - low, 1e-12)

    out, channels, kh, kw = w.shape
    ncols = min(ncols, out)
    nrows = math.ceil(out / ncols)
    pad = 1
    grid = np.ones((nrows * (kh + pad) + pad, ncols * (kw + pad) + pad, 3), np.float32)
    for i in range(out):
        r, c = divmod(i, ncols)
        tile = np.moveaxis(w[i], 0, -1)
        grid[pad + r * (kh + pad): pad + r * (kh + pad) + kh,
             pad + c * (kw + pad): pad + c * (kw + pad) + kw] = tile  # grey tiles broadcast to RGB
    if figsize is None:
        figsize = (min(0.6 * ncols + 0.5, 12), min(0.6 * nrows + 0.5, 12))
    fig, ax = plt.subplots(figsize=figsize)
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"{out} filters of size {kh}x{kw}", fontsize=9)
    fig.set_layout_engine("tight")
    return fig


# ------------------------------------------------------------------------------------------------
# Widgets
# ------------------------------------------------------------------------------------------------
@display_only
def explorer(controls: dict, view, draw, *, arrange="row"):
    """Controls that recompute and redraw a figure whenever one of them moves (every topic's explorers).

    controls: name -> ipywidget; its value is passed to ``view`` under that name.
    view(**values) -> a view: plain data (what the widget shows, testable without drawing).
    draw(view) -> a matplotlib Figure, shown below (or beside) the controls and then closed.
    arrange: "row" (controls in a row above the figure), "side" (a column left of it), or a list of
    lists of control names (columns above the figure).
    Returns the ipywidgets box; ``box.interactive.result`` is the last view (None while autograding:
    ``display_only``).
    """
    import ipywidgets as widgets
    from IPython.display import display

    if not isinstance(controls, dict) or not controls:
        raise TypeError(f"controls must be a non-empty dict of name -> widget, got {describe(controls)}")
    output = widgets.Output()

    def update(**values):
        result = view(**values)
        with output:
            output.clear_output(wait=True)
            fig = draw(result)
            display(fig)
            plt.close(fig)
        return result

    interactive = widgets.interactive(update, **controls)
    if arrange == "row":
        box = widgets.VBox([widgets.HBox(list(controls.values())), output])
    elif arrange == "side":
        box = widgets.HBox([widgets.VBox(list(controls.values())), output])
    elif isinstance(arrange, (list, tuple)):
        columns = [widgets.VBox([controls[name] for name in column]) for column in arrange]
        box = widgets.VBox([widgets.HBox(columns), output])
    else:
        raise ValueError(f"arrange must be 'row', 'side' or a list of lists of control names, got {arrange!r}")
    box.interactive = interactive
    return box


# ------------------------------------------------------------------------------------------------
# Architecture diagrams (drawn with matplotlib: nothing is downloaded)
# ------------------------------------------------------------------------------------------------
def _feature_box(ax, x, y, width, height, color, label=None, fontsize=7):
    ax.add_patch(Rectangle((x, y), width, height, facecolor=color, edgecolor="black", linewidth=0.6))
    if label:
        ax.text(x + width / 2, y - 0.25, label, ha="center", va="top", fontsize=fontsize)


def _arrow(ax, start, end, color, style="-|>", linestyle="-", lw=1.2):
    ax.annotate("", end, start, arrowprops=dict(arrowstyle=style, color=color, lw=lw, linestyle=linestyle,
                                                shrinkA=1, shrinkB=1))


@display_only
def draw_unet(widths=(16, 32, 64, 128), image_size: int = 64, num_classes: int = NUM_CLASSES, ax=None):
    """The U-Net of ``lecturelib.segmentation_models.UNet`` drawn as in Ronneberger et al. (2015); returns the Figure.

    One box per feature map: its height grows with the spatial size, its width with the channels; the encoder
    (left) applies two 3x3 conv + BN + ReLU per level and 2x2 max-pooling between levels, the decoder (right) a
    2x2 stride-2 transposed convolution, concatenates the encoder's map of the same size (skip connection, copy),
    and two 3x3 convs; a 1x1 convolution gives the class scores.
    """
    if not isinstance(widths, (tuple, list)) or len(widths) < 2:
        raise ValueError(f"widths must be a tuple of at least 2 channel counts, got {widths!r}")
    widths = [require_int(f"widths[{i}]", w, minimum=1) for i, w in enumerate(widths)]
    size = require_int("image_size", image_size, minimum=2 ** (len(widths) - 1))
    num_classes = require_int("num_classes", num_classes, minimum=1)
    levels = len(widths)
    if ax is None:
        fig, ax = plt.subplots(figsize=(12, 5.6))
    fig = ax.figure

    def height(level):                      # the box height shrinks with the resolution, kept readable
        return 2.6 * 0.62 ** level

    def thick(channels):
        return 0.16 + 0.5 * math.log2(channels) / math.log2(max(widths) * 2)

    colours = {"conv": "#9ecae1", "pool": "crimson", "up": "seagreen", "skip": "0.45", "head": "darkorange"}
    gap = 0.35
    top = 0.0
    ys = [top - sum(height(l) * 0.55 + 0.9 for l in range(level)) for level in range(levels)]
    x = 0.0
    enc_right = []
    # encoder
    box = thick(3)
    _feature_box(ax, x, ys[0] - height(0), box, height(0), "white", f"image\n3 x {size}²")
    x += box + gap
    for level, w in enumerate(widths):
        s = size // 2 ** level
        y = ys[level] - height(level)
        if level > 0:                       # max-pool from the previous level's last map
            _arrow(ax, (x - gap - thick(widths[level - 1]) / 2, ys[level - 1] - height(level - 1)),
                   (x + thick(w) / 2, ys[level]), colours["pool"])
        for k in range(2):
            _feature_box(ax, x, y, thick(w), height(level), colours["conv"], f"{w}" if k else None)
            if k == 1 or level == 0:
                _arrow(ax, (x - gap, y + height(level) / 2), (x, y + height(level) / 2), colours["conv"])
            x += thick(w) + gap
        ax.text(x - gap - thick(w) - gap / 2, y + height(level) + 0.12, f"{s} x {s}", ha="center", fontsize=7,
                color="0.3")
        enc_right.append(x - gap)
    # decoder
    x += 0.4
    for level in range(levels - 2, -1, -1):
        w, s = widths[level], size // 2 ** level
        y = ys[level] - height(level)
        _arrow(ax, (x - gap, ys[level + 1]), (x + thick(w) / 2, y), colours["up"])
        _feature_box(ax, x, y, thick(w), height(level), "#c7e9c0", None)                      # upsampled
        _feature_box(ax, x + thick(w), y, thick(w), height(level), "#d9d9d9", f"{w} + {w}")  # copied skip
        _arrow(ax, (enc_right[level], y + height(level) * 0.8), (x + thick(w), y + height(level) * 0.8),
               colours["skip"], linestyle="--")
        x += 2 * thick(w) + gap
        for k in range(2):
            _feature_box(ax, x, y, thick(w), height(level), colours["conv"], f"{w}" if k else None)
            _arrow(ax, (x - gap, y + height(level) / 2), (x, y + height(level) / 2), colours["conv"])
            x += thick(w) + gap
    y = ys[0] - height(0)
    _feature_box(ax, x, y, thick(num_classes), height(0), colours["head"], f"{num_classes} classes\n{size}²")
    _arrow(ax, (x - gap, y + height(0) / 2), (x, y + height(0) / 2), colours["head"])
    x += thick(num_classes)
    handles = [matplotlib.lines.Line2D([], [], color=colours["conv"], lw=2, label="3x3 conv + BN + ReLU"),
               matplotlib.lines.Line2D([], [], color=colours["pool"], lw=2, label="2x2 max-pool (down)"),
               matplotlib.lines.Line2D([], [], color=colours["up"], lw=2,
                                       label="2x2 stride-2 transposed conv (up)"),
               matplotlib.lines.Line2D([], [], color=colours["skip"], lw=2, linestyle="--",
                                       label="skip: copy and concatenate"),
               matplotlib.lines.Line2D([], [], color=colours["head"], lw=2, label="1x1 conv: class scores")]
    ax.legend(handles=handles, loc="lower right", fontsize=8, frameon=False)
    ax.set_xlim(-0.3, x + 0.3)
    ax.set_ylim(ys[-1] - height(levels - 1) - 1.2, top + 0.6)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(f"U-Net, {levels} levels (channels {', '.join(map(str, widths))}): box height ~ resolution, "
                 "numbers = channels", fontsize=9)
    fig.set_layout_engine("tight")
    return fig


@display_only
def draw_fcn_variants(ax=None):
    """FCN-32s, FCN-16s and FCN-8s (Long et al., 2015) as data flow, one row each; returns the Figure.

    Class scores are predicted by 1x1 convolutions at three strides of the VGG backbone: conv7 (stride 32),
    pool4 (16) and pool3 (8). FCN-32s upsamples conv7's scores 32x in one step; FCN-16s adds pool4's scores to the
    2x-upsampled conv7 scores and upsamples the sum 16x; FCN-8s adds pool3's scores to the 2x-upsampled fused
    (conv7 + pool4) scores and upsamples 8x.
    """
    if ax is None:
        fig, ax = plt.subplots(figsize=(11, 4.6))
    fig = ax.figure
    columns = {32: 0.0, 16: 3.2, 8: 6.4, 1: 10.2}          # x position of each stride (1 = the output pixels)
    score = dict(facecolor="#fdd0a2", edgecolor="black", boxstyle="round,pad=0.3")
    pixels = dict(facecolor="#c7e9c0", edgecolor="black", boxstyle="round,pad=0.3")
    plus = dict(facecolor="white", edgecolor="seagreen", boxstyle="circle,pad=0.15")
    rows = {"FCN-32s": (3.9, []), "FCN-16s": (2.0, [(16, "pool4")]), "FCN-8s": (0.0, [(16, "pool4"), (8, "pool3")])}
    for variant, (y, skips) in rows.items():
        ax.text(-1.6, y, variant, fontsize=11, fontweight="bold", ha="right", va="center")
        ax.text(columns[32], y, "conv7 scores\n(stride 32)", ha="center", va="center", fontsize=8, bbox=score)
        x = columns[32]
        for stride, stage in skips:
            _arrow(ax, (x + 0.75, y), (columns[stride] - 0.25, y), "seagreen")
            ax.text((x + columns[stride]) / 2, y + 0.15, "2x up", ha="center", fontsize=7.5, color="seagreen")
            ax.text(columns[stride], y, "+", ha="center", va="center", fontsize=11, color="seagreen", bbox=plus)
            ax.text(columns[stride], y - 0.95, f"{stage} scores\n(1x1 conv, stride {stride})", ha="center",
                    va="center", fontsize=8, bbox=score)
            _arrow(ax, (columns[stride], y - 0.7), (columns[stride], y - 0.25), "0.3")
            x = columns[stride]
        last = skips[-1][0] if skips else 32
        _arrow(ax, (x + (0.25 if skips else 0.75), y), (columns[1] - 0.75, y), "darkorange", lw=1.6)
        ax.text((x + columns[1]) / 2, y + 0.15, f"upsample {last}x (bilinear init, learnable)", ha="center",
                fontsize=7.5, color="darkorange")
        ax.text(columns[1], y, "class scores\nper pixel", ha="center", va="center", fontsize=8, bbox=pixels)
    ax.set_xlim(-2.6, columns[1] + 1.2)
    ax.set_ylim(-1.5, 4.5)
    ax.set_axis_off()
    ax.set_title("FCN's skip connections (Long et al., 2015): finer stages add their class scores to the "
                 "2x-upsampled coarser scores", fontsize=9)
    fig.set_layout_engine("tight")
    return fig
