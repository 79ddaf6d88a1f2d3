"""One-stage detectors (lecture topic 03): YOLO's grid target drawn from the student's ``yolo_target``, SSD's
anchor count per level, and RetinaNet's focal loss measured on the tiny detector's anchors.

Nothing here computes a graded answer: :func:`yolo_view` and :func:`yolo_explorer` call the function they are
given (the student's ``yolo_target``); :func:`anchor_imbalance` labels anchors with the ``label_fn`` and
scores them with the ``focal_fn`` it is given (the student's ``label_anchors`` and ``focal_loss``, or
``lecturelib.reference``'s in scripts and tests).

    from lecturelib import one_stage
    one_stage.yolo_explorer(yolo_target, shapes)                  # the grid, the owning cells, the target
    one_stage.ssd_anchor_counts()                                 # SSD300: 8,732 anchors over six levels
    one_stage.anchor_imbalance(detector, shapes, label_anchors, focal_loss)   # foreground:background, CE vs FL
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ._student import call_student, function_or_reference
from ._validate import require_callable, require_float, require_int
from .data import CLASSES, Shapes
from .plot import display_only, explorer
from .train import one_thread

__all__ = ["SSD300_LEVELS", "ssd_anchor_counts", "anchor_imbalance", "yolo_view", "plot_yolo",
           "yolo_explorer"]

# SSD300 (Liu et al., 2016, Table/Fig. 2): feature map side and default boxes per location of its six levels.
SSD300_LEVELS = ((38, 4), (19, 6), (10, 6), (5, 6), (3, 4), (1, 4))


def ssd_anchor_counts(levels=SSD300_LEVELS) -> list[dict]:
    """Per level {"side", "per_location", "anchors" = side^2 * per_location}; SSD300's sum to 8,732."""
    return [{"side": side, "per_location": k, "anchors": side * side * k} for side, k in levels]


def anchor_imbalance(detector, shapes: Shapes, label_fn: Callable, focal_fn: Callable, *, high: float = 0.5,
                     low: float = 0.3, easy: float = 0.1, gamma: float = 2.0, alpha: float = 0.25) -> dict:
    """Foreground/background counts of the detector's labelled anchors over ``shapes``, and which share of the
    objectness loss the EASY negatives (background anchors with sigmoid(objectness) < ``easy``) carry under
    binary cross-entropy and under the focal loss (``gamma``, ``alpha``), from the detector's own logits.

    label_fn(anchors, gt_boxes, high, low, allow_low_quality=True) -> (labels, matched): your label_anchors;
    focal_fn(logits, targets, alpha, gamma) -> per-anchor loss of the logits' shape: your focal_loss.
    Returns the numbers, or {"error": message} when one of the functions raises or returns a wrong shape."""
    require_callable("label_fn", label_fn)
    require_callable("focal_fn", focal_fn)
    easy = require_float("easy", easy, minimum=0.0, maximum=1.0)
    anchors = detector.anchors
    images = torch.from_numpy(np.asarray(shapes.images)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad(), one_thread():
        logits = detector(images)["objectness"]                                    # (N, A)
    labels = []
    for boxes in shapes.boxes:
        out, error = call_student(label_fn, anchors, torch.as_tensor(boxes, dtype=anchors.dtype), high, low,
                                  allow_low_quality=True, what="label_anchors")
        if error:
            return {"error": error}
        labels.append(torch.as_tensor(out[0], dtype=torch.int64))
    labels = torch.stack(labels)
    used = labels >= 0
    targets = (labels == 1).float()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    out, error = call_student(focal_fn, logits.clone(), targets.clone(), alpha, gamma, what="focal_loss")
    if error:
        return {"error": error}
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(logits.shape):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return {"error": f"focal_loss returned {shape}; expected one loss per anchor, shape {tuple(logits.shape)}"}
    fl = out.detach().to(ce.dtype)
    easy_negative = (labels == 0) & (torch.sigmoid(logits) < easy)
    positives, negatives = int((labels == 1).sum()), int((labels == 0).sum())
    return {"images": len(labels), "anchors": int(labels.numel()), "positives": positives, "negatives": negatives,
            "ignored": int((labels == -1).sum()), "ratio": negatives / max(positives, 1),
            "easy_negatives": int(easy_negative.sum()),
            "ce_share_easy": float(ce[easy_negative].sum() / ce[used].sum()),
            "focal_share_easy": float(fl[easy_negative].sum() / fl[used].sum()),
            "ce_share_positive": float(ce[labels == 1].sum() / ce[used].sum()),
            "focal_share_positive": float(fl[labels == 1].sum() / fl[used].sum())}


# ------------------------------------------------------------------------------------------------
# YOLO: the grid and the target tensor, drawn from YOUR yolo_target
# ------------------------------------------------------------------------------------------------
def yolo_view(yolo_fn: Callable, shapes: Shapes, index: int = 0, S: int = 4, B: int = 2) -> dict:
    """YOUR ``yolo_fn(boxes, labels, S, B, C, image_size)`` on image ``index`` of ``shapes`` (pure compute).

    Labels 1..4 of the data become classes 0..3 (C = 4). Returns {"target" (S, S, 5 B + 4), "owned" (S, S) bool,
    "boxes", "labels", "S", "B", "size", "index"} or {"error": message}."""
    index = min(require_int("index", index, minimum=0), len(shapes) - 1)
    S, B = require_int("S", S, minimum=1), require_int("B", B, minimum=1)
    size = shapes.images.shape[1:3]
    boxes = torch.as_tensor(shapes.boxes[index], dtype=torch.float32).reshape(-1, 4)
    labels = torch.as_tensor(shapes.labels[index], dtype=torch.int64) - 1
    C = len(CLASSES) - 1
    out, error = call_student(yolo_fn, boxes.clone(), labels.clone(), S, B, C, tuple(size), what="yolo_target")
    if error:
        return {"error": error}
    target = torch.as_tensor(out).detach().float()
    if tuple(target.shape) != (S, S, 5 * B + C):
        return {"error": f"yolo_target returned shape {tuple(target.shape)}; expected {(S, S, 5 * B + C)}"}
    return {"target": target, "owned": target[..., 4] > 0.5, "boxes": boxes, "labels": labels, "S": S, "B": B,
            "C": C, "size": tuple(size), "index": index}


@display_only
def plot_yolo(view: dict, image, axes=None):
    """Left: the image, the S x S grid, the owning cells (tinted) and each owner's box rebuilt from the target
    (centre offset + cell, size x image). Right: the target's confidence and class per cell, as text."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from .plot import class_color
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(8.4, 4.2))
    ax, table = axes
    height, width = np.asarray(image).shape[:2]
    ax.imshow(image, extent=(0, width, height, 0))
    table.axis("off")
    if "error" in view:
        ax.set_title(view["error"], fontsize=8, color="crimson", wrap=True)
        return axes
    S, B, target = view["S"], view["B"], view["target"]
    cw, ch = width / S, height / S
    for k in range(S + 1):
        ax.axhline(k * ch, color="white", lw=0.6, alpha=0.7)
        ax.axvline(k * cw, color="white", lw=0.6, alpha=0.7)
    for (x1, y1, x2, y2), label in zip(view["boxes"].tolist(), view["labels"].tolist()):
        ax.plot((x1 + x2) / 2, (y1 + y2) / 2, "x", color="white", ms=6, mew=1.5)
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white", lw=0.8, linestyle=":"))
    lines = []
    for i, j in view["owned"].nonzero().tolist():
        x, y, w, h = target[i, j, :4].tolist()
        cls = int(target[i, j, 5 * B:].argmax())
        colour = class_color(cls + 1)
        ax.add_patch(Rectangle((j * cw, i * ch), cw, ch, facecolor=colour, alpha=0.3, edgecolor=colour, lw=1.5))
        cx, cy, bw, bh = (j + x) * cw, (i + y) * ch, w * width, h * height
        ax.add_patch(Rectangle((cx - bw / 2, cy - bh / 2), bw, bh, fill=False, edgecolor=colour, lw=1.8))
        lines.append(f"cell ({i}, {j}): x={x:.2f} y={y:.2f} w={w:.2f} h={h:.2f}  {CLASSES[cls + 1]}")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_title(f"image {view['index']}: {len(view['boxes'])} objects, {int(view['owned'].sum())} owning cells of "
                 f"{S} x {S}", fontsize=8)
    dropped = len(view["boxes"]) - int(view["owned"].sum())
    table.text(0, 1, f"target {tuple(target.shape)} = S x S x (5 B + C)\n"
                     f"owning cells (slot 0, class):\n  " + "\n  ".join(lines)
               + (f"\n{dropped} object(s) lost: a cell holds one object" if dropped > 0 else ""),
               va="top", fontsize=8, family="monospace", transform=table.transAxes)
    return axes


@display_only
def yolo_explorer(yolo_fn: Callable | None = None, shapes: Shapes | None = None):
    """Sliders for the image, S and B; draws YOUR yolo_target (returns the ipywidgets box, None while grading)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    yolo_fn = function_or_reference(yolo_fn, "yolo_target", "detection")
    if shapes is None:
        from .data import make_shapes
        shapes = make_shapes(8, seed=1, occlusion=False)
    controls = {"index": widgets.IntSlider(0, min=0, max=len(shapes) - 1, description="image"),
                "S": widgets.IntSlider(4, min=1, max=8, description="S"),
                "B": widgets.IntSlider(2, min=1, max=3, description="B")}

    def view(index, S, B):
        return yolo_view(yolo_fn, shapes, index, S, B)

    def draw(v):
        fig, axes = plt.subplots(1, 2, figsize=(8.4, 4.2))
        plot_yolo(v, shapes.images[v.get("index", 0)], axes)
        return fig

    return explorer(controls, view, draw)
