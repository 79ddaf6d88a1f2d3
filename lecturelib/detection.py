"""Object detection (lecture topic 03): regions of interest, anchors, box deltas, NMS, R-CNN family.

This module holds what the detection notebook calls and students do not implement. Graded exercises
(``encode_boxes``, ``decode_boxes``, ``generate_anchors``, ``label_anchors``, ``nms``) have no implementation
here: every function that needs one takes it as an argument, so the notebook runs them with the student's code
and scripts/tests with ``lecturelib.reference`` (instructor copy only; see ``lecturelib._student``).

Contents: the tiny anchor-based detector's data, loss, training, inference (:func:`raw_detections` decodes
every anchor with the given ``decode_fn``, :func:`postprocess` applies a score threshold and the given
``nms_fn``), evaluation (mAP through ``lecturelib.evaluation``) and shipped weights (:func:`load_pretrained`);
the notebook's widgets (:func:`anchor_explorer`, :func:`nms_explorer`, :func:`roi_explorer`) and demos
(:func:`roi_shift_curve`, :func:`family_costs`). The model itself is
``lecturelib.detection_models.TinyDetector``; RoIPool and RoIAlign are in ``lecturelib.rois``.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._student import call_student, function_or_reference
from ._validate import (describe, require_callable, require_float, require_int, require_module,
                        require_tensor)
from .data import CLASSES, Shapes, detection_collate, image_batch
from .plot import display_only, explorer
from .detection_models import TinyDetector
from .evaluation import evaluate_coco, evaluate_detections
from .rois import roi_align, roi_pool, roi_pool_cells, rois_from_boxes
from .timing import timed
from .train import eval_mode, fit, load_pretrained_model, one_thread, shuffled_loader

__all__ = ["DETECTOR_ANCHORS", "BOX_WEIGHTS", "NMS_IOU", "TinyDetector",
           "DetectorDataset", "detection_loss", "train_detector", "raw_detections", "postprocess", "predict",
           "evaluate", "load_pretrained", "anchor_view", "plot_anchors", "anchor_explorer", "nms_view", "plot_nms",
           "nms_explorer", "show_detections", "ramp_features", "roi_shift_curve", "plot_roi_grid", "roi_explorer",
           "family_costs"]


# ------------------------------------------------------------------------------------------------
# The shipped detector's settings
# ------------------------------------------------------------------------------------------------
DETECTOR_ANCHORS = {"feature_size": (8, 8), "stride": 8, "sizes": (12, 18, 26), "ratios": (0.5, 1.0, 2.0)}
"""The anchors of the shipped detector: ``generate_anchors(**DETECTOR_ANCHORS)`` (8 x 8 x 9 = 576 anchors)."""
BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)  #: delta weights of the shipped detector (an RPN's)
NMS_IOU = 0.5  #: the shipped detector's NMS threshold (per class: occluding shapes of two classes overlap)


# ------------------------------------------------------------------------------------------------
# Training the tiny detector
# ------------------------------------------------------------------------------------------------
class DetectorDataset(torch.utils.data.Dataset):
    """(image (3, H, W) float in [0, 1], {"boxes": (K, 4) float32 xyxy, "labels": (K,) int64, "ignore": (K,)
    bool}) of a Shapes; "ignore" flags the heavily occluded objects (``Shapes.ignore``)."""

    def __init__(self, shapes: Shapes):
        if not isinstance(shapes, Shapes):
            raise TypeError(f"shapes must be a Shapes (from make_shapes), got {describe(shapes)}")
        self.shapes = shapes

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, index):
        i = self.shapes._check_index(index)
        image = torch.from_numpy(self.shapes.images[i]).permute(2, 0, 1).float().div_(255)
        return image, {"boxes": torch.from_numpy(np.asarray(self.shapes.boxes[i], np.float32)).reshape(-1, 4),
                       "labels": torch.from_numpy(np.asarray(self.shapes.labels[i], np.int64)),
                       "ignore": torch.from_numpy(self.shapes[i].ignore)}


def detection_loss(outputs: dict, targets: list, anchors: torch.Tensor, *, label_fn: Callable,
                   encode_fn: Callable, weights=BOX_WEIGHTS, high: float = 0.5, low: float = 0.3) -> dict:
    """The RPN-style loss of the tiny detector, summed over the batch.

    Per image, ``label_fn(anchors, gt_boxes, high, low, allow_low_quality=True)`` labels every anchor;
    objectness: binary cross-entropy averaged over positives and negatives (ignored anchors left out);
    boxes: smooth-L1 (beta 1/9) between predicted deltas and ``encode_fn(anchor, matched gt, weights)``
    on positives; classes: cross-entropy on positives (class id - 1). Box and class terms are divided by
    the number of positives. A target's optional "ignore" (K,) bool marks objects not to be learnt (heavily
    occluded, ``Shapes.ignore``): anchors labelled positive for them are ignored instead, as detectron2 and
    mmdetection treat crowd boxes. Returns {"loss", "objectness", "boxes", "classes"}.
    """
    anchors = require_tensor("anchors", anchors, shape=(None, 4), floating=True)
    require_callable("label_fn", label_fn)
    require_callable("encode_fn", encode_fn)
    if not isinstance(targets, (list, tuple)) or len(targets) != len(outputs["objectness"]):
        raise ValueError(f"targets must be a list with one dict per image ({len(outputs['objectness'])}), got "
                         f"{describe(targets)}")
    # Labels and regression targets per image (no gradient), then one loss over the whole batch.
    all_labels, wanted, classes_wanted = [], [], []
    with torch.no_grad(), one_thread():
        for target in targets:
            labels, matched = label_fn(anchors, target["boxes"].to(anchors.dtype), high=high, low=low,
                                       allow_low_quality=True)
            labels, matched = torch.as_tensor(labels, dtype=torch.int64), torch.as_tensor(matched, dtype=torch.int64)
            ignore = target.get("ignore")
            if ignore is not None and bool(ignore.any()):
                labels = torch.where((labels == 1) & ignore.to(labels.device)[matched.clamp(min=0)], -1, labels)
            positive = labels == 1
            deltas = torch.zeros(len(anchors), 4, dtype=anchors.dtype, device=anchors.device)
            classes = torch.zeros(len(anchors), dtype=torch.int64, device=anchors.device)
            if positive.any():
                gt = target["boxes"].to(anchors.dtype)[matched[positive]]
                deltas[positive] = torch.as_tensor(encode_fn(anchors[positive], gt, weights)).to(anchors.dtype)
                classes[positive] = target["labels"][matched[positive]] - 1
            all_labels.append(labels)
            wanted.append(deltas)
            classes_wanted.append(classes)
    labels, wanted, classes_wanted = torch.stack(all_labels), torch.stack(wanted), torch.stack(classes_wanted)
    used, positive = labels >= 0, labels == 1
    num_used, num_pos = max(int(used.sum()), 1), max(int(positive.sum()), 1)
    objectness = F.binary_cross_entropy_with_logits(outputs["objectness"][used], labels[used].to(anchors.dtype),
                                                    reduction="sum") / num_used
    boxes = F.smooth_l1_loss(outputs["deltas"][positive], wanted[positive], beta=1 / 9, reduction="sum") / num_pos
    classes = F.cross_entropy(outputs["class_logits"][positive], classes_wanted[positive], reduction="sum") / num_pos
    return {"loss": objectness + boxes + classes, "objectness": objectness, "boxes": boxes, "classes": classes}


def train_detector(model: TinyDetector, train: Shapes, *, label_fn: Callable, encode_fn: Callable, epochs: int,
                   lr: float = 3e-3, batch_size: int = 64, seed: int = 0, progress: bool = True) -> list[float]:
    """Train with :func:`detection_loss` (AdamW, one-cycle schedule); returns the mean loss of each epoch.

    The model's ``anchors`` buffer must hold the anchors to train with (``model.anchors.copy_(...)``).
    """
    if not isinstance(model, TinyDetector):
        raise TypeError(f"model must be a TinyDetector, got {describe(model)}")
    if not isinstance(train, Shapes):
        raise TypeError(f"train must be a Shapes (from make_shapes), got {describe(train)}")
    require_callable("label_fn", label_fn)
    require_callable("encode_fn", encode_fn)
    batch_size = require_int("batch_size", batch_size, minimum=1)
    loader = shuffled_loader(DetectorDataset(train), batch_size, seed, detection_collate)

    def loss_fn(outputs, targets):
        return detection_loss(outputs, targets, model.anchors, label_fn=label_fn, encode_fn=encode_fn)["loss"]
    return fit(model, loader, loss_fn, epochs=epochs, lr=lr, progress=progress)


# ------------------------------------------------------------------------------------------------
# Inference: decode + score + NMS, with the functions passed in
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def raw_detections(model: nn.Module, images, decode_fn: Callable, *, anchors: torch.Tensor | None = None,
                   weights=BOX_WEIGHTS, batch_size: int = 256) -> list[dict]:
    """Every anchor's decoded box and score, before any threshold or NMS: one dict per image.

    decode_fn(anchors, deltas, weights) -> (N, 4) xyxy (your ``decode_boxes``); anchors default to the
    model's own. Each dict: "boxes" (N, 4) clipped to the image, "scores" (N,) = sigmoid(objectness) x
    the best class probability, "labels" (N,) that class (1..4).
    """
    require_module("model", model)
    require_callable("decode_fn", decode_fn)
    anchors = model.anchors if anchors is None else require_tensor("anchors", anchors, shape=(None, 4), floating=True)
    x = image_batch(images)
    size = x.shape[-1]
    results = []
    with eval_mode(model):
        for start in range(0, len(x), require_int("batch_size", batch_size, minimum=1)):
            out = model(x[start:start + batch_size])
            objectness = out["objectness"].sigmoid()
            class_prob, labels = out["class_logits"].softmax(-1).max(-1)
            for i in range(len(objectness)):
                boxes = torch.as_tensor(decode_fn(anchors, out["deltas"][i], weights))
                results.append({"boxes": boxes.clamp(0, size), "scores": objectness[i] * class_prob[i],
                                "labels": labels[i] + 1})
    return results


def postprocess(raw: dict, nms_fn: Callable, *, score_threshold: float = 0.05, iou_threshold: float = NMS_IOU,
                max_detections: int = 20, per_class: bool = True) -> dict:
    """One image's detections from :func:`raw_detections`: score threshold, then ``nms_fn``, then the
    ``max_detections`` best (by decreasing score). Same keys, kept boxes only.

    per_class: NMS separately within each class (torchvision's ``batched_nms``, what detectors use): a shape
    partly hidden behind a shape of another class keeps its box even when the two boxes overlap a lot.
    ``per_class=False`` runs one class-agnostic NMS over all candidates.
    """
    require_callable("nms_fn", nms_fn)
    score_threshold = require_float("score_threshold", score_threshold, minimum=0, maximum=1)
    iou_threshold = require_float("iou_threshold", iou_threshold, minimum=0, maximum=1)
    max_detections = require_int("max_detections", max_detections, minimum=1)
    candidates = torch.nonzero(raw["scores"] > score_threshold).flatten()
    groups = [candidates[raw["labels"][candidates] == c] for c in torch.unique(raw["labels"][candidates])] \
        if per_class else [candidates]
    kept = [group[torch.as_tensor(nms_fn(raw["boxes"][group], raw["scores"][group], iou_threshold),
                                  dtype=torch.int64)] for group in groups]
    keep = torch.cat(kept) if kept else candidates[:0]
    keep = keep[torch.sort(raw["scores"][keep], descending=True, stable=True).indices][:max_detections]
    return {key: value[keep] for key, value in raw.items()}


def predict(model: nn.Module, images, decode_fn: Callable, nms_fn: Callable, *, score_threshold: float = 0.05,
            iou_threshold: float = NMS_IOU, max_detections: int = 20, anchors: torch.Tensor | None = None,
            per_class: bool = True) -> list[dict]:
    """Detections per image: {"boxes" (K, 4) pixel xyxy, "scores" (K,), "labels" (K,)}, by decreasing score.

    decode_fn: your ``decode_boxes``; nms_fn: your ``nms`` (see :func:`raw_detections`, :func:`postprocess`).
    """
    return [postprocess(raw, nms_fn, score_threshold=score_threshold, iou_threshold=iou_threshold,
                        max_detections=max_detections, per_class=per_class)
            for raw in raw_detections(model, images, decode_fn, anchors=anchors)]


def evaluate(model: nn.Module, shapes: Shapes, decode_fn: Callable, nms_fn: Callable,
             iou_thresholds=(0.5, 0.75), coco: bool = False, **kwargs) -> dict:
    """mAP of the detector on held-out shapes at each IoU threshold (``lecturelib.evaluation``: all-point AP,
    PASCAL VOC 2010+; heavily occluded objects, ``Shapes.ignore``, are ignored as VOC's "difficult" ones).

    Returns {"map": {threshold: mAP}, "ap": {threshold: {class: AP}}, "images": n}; with ``coco=True`` also
    "coco": COCO's 101-point AP@[.5:.95].
    """
    if not isinstance(shapes, Shapes):
        raise TypeError(f"shapes must be a Shapes (from make_shapes), got {describe(shapes)}")
    detections = predict(model, shapes, decode_fn, nms_fn, **kwargs)
    targets = [shapes.targets(i) for i in range(len(shapes))]
    result = {"map": {}, "ap": {}, "images": len(shapes)}
    for t in iou_thresholds:
        scores = evaluate_detections(detections, targets, iou_threshold=t, classes=range(1, len(CLASSES)))
        result["map"][t], result["ap"][t] = scores["map"], scores["ap"]
    if coco:
        result["coco"] = evaluate_coco(detections, targets, classes=range(1, len(CLASSES)))["map"]
    return result


def load_pretrained(name: str = "detector_shapes") -> TinyDetector:
    """The shipped TinyDetector (eval mode, CPU), trained by ``python scripts/train_weights.py detection``.

    ``model.metadata`` holds how it was made (command, seed, epochs, held-out mAP...); ``model.anchors``
    the anchors it was trained with, ``generate_anchors(**DETECTOR_ANCHORS)``.
    """
    return load_pretrained_model(name, {"detector_shapes": TinyDetector},
                                 "python scripts/train_weights.py detection")


# ------------------------------------------------------------------------------------------------
# Anchors: a view and an explorer running your generate_anchors
# ------------------------------------------------------------------------------------------------
def _numbers(name: str, values) -> tuple[float, ...]:
    """A non-empty tuple of positive numbers (sizes, ratios)."""
    if not isinstance(values, (tuple, list)) or not values:
        raise TypeError(f"{name} must be a non-empty tuple of numbers, got {describe(values)}")
    return tuple(require_float(f"{name}[{i}]", v, minimum=1e-6) for i, v in enumerate(values))


def anchor_view(generate_fn: Callable, image_size: int = 64, stride: int = 16, sizes=(16, 32), ratios=(0.5, 1.0, 2.0),
                location=None) -> dict:
    """Anchors of a ``image_size``-pixel square image for one setting (pure compute).

    generate_fn(feature_size, stride, sizes, ratios) -> (H W A, 4) (your ``generate_anchors``), with
    H = W = ceil(image_size / stride). ``location`` (y, x) picks the cell whose A anchors are highlighted
    (default: the middle one). Returns {"anchors" (H W A, 4), "feature_size", "A", "location", "highlight"
    (A, 4), "centres" (H W, 2)} or {"error": message}.
    """
    image_size = require_int("image_size", image_size, minimum=1)
    stride = require_int("stride", stride, minimum=1)
    sizes = _numbers("sizes", sizes)
    ratios = _numbers("ratios", ratios)
    cells = math.ceil(image_size / stride)
    feature_size = (cells, cells)
    out, error = call_student(generate_fn, feature_size, stride, tuple(sizes), tuple(ratios), what="generate_anchors")
    if error:
        return {"error": error}
    anchors = torch.as_tensor(out).detach().to(torch.float64).reshape(-1, 4)
    a = len(sizes) * len(ratios)
    if len(anchors) != cells * cells * a:
        return {"error": f"generate_anchors returned {len(anchors)} anchors; expected {cells * cells * a}"}
    y, x = location if location is not None else (cells // 2, cells // 2)
    start = (y * cells + x) * a
    per_location = anchors.reshape(cells * cells, a, 4)
    return {"anchors": anchors, "feature_size": feature_size, "A": a, "location": (y, x), "stride": stride,
            "highlight": anchors[start:start + a], "sizes": tuple(sizes), "ratios": tuple(ratios),
            "centres": ((per_location[:, 0, :2] + per_location[:, 0, 2:]) / 2)}


@display_only
def plot_anchors(view: dict, image, ax=None):
    """Draw an :func:`anchor_view` on ``image`` (H, W, 3): every location's centre as a dot, the grid, and
    the A anchors of the highlighted location (one colour per ratio, line style per size)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.2))
    size = np.asarray(image).shape[0]
    ax.imshow(image, extent=(0, size, size, 0))
    if "error" in view:
        ax.set_title(view["error"], fontsize=8, color="crimson", wrap=True)
        return ax
    centres = view["centres"].numpy()
    ax.scatter(centres[:, 0], centres[:, 1], s=8, c="white", edgecolors="black", linewidths=0.4, zorder=3)
    for k in range(view["feature_size"][0] + 1):
        ax.axhline(k * view["stride"], color="white", lw=0.3, alpha=0.4)
        ax.axvline(k * view["stride"], color="white", lw=0.3, alpha=0.4)
    colors = plt.cm.tab10(np.arange(len(view["ratios"])) % 10)
    styles = ["-", "--", ":", "-."]
    for k, (x1, y1, x2, y2) in enumerate(view["highlight"].tolist()):
        r, s = divmod(k, len(view["sizes"]))
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colors[r], lw=1.8,
                               linestyle=styles[s % len(styles)]))
    margin = max(float(view["highlight"].abs().max()) - size, 0) + 4
    ax.set_xlim(-margin, size + margin)
    ax.set_ylim(size + margin, -margin)
    y, x = view["location"]
    ax.set_title(f"{len(view['anchors'])} anchors = {view['feature_size'][0]} x {view['feature_size'][1]} cells "
                 f"x {view['A']}; location (y={y}, x={x})", fontsize=8)
    return ax


@display_only
def anchor_explorer(generate_fn: Callable | None = None, image=None):
    """Sliders for stride, base size, number of sizes and the aspect ratios; draws YOUR anchors on an image.

    Sizes are ``base * 2 ** (k / 2)`` for k < number of sizes. Returns the ipywidgets box;
    ``box.interactive.result`` is the last view.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    generate_fn = function_or_reference(generate_fn, "generate_anchors", "detection")
    if image is None:
        from .data import make_shapes
        image = make_shapes(1, seed=3, occlusion=False).images[0]
    size = np.asarray(image).shape[0]
    sliders = {"stride": widgets.IntSlider(16, min=4, max=32, step=4, description="stride"),
               "base": widgets.IntSlider(16, min=4, max=48, step=2, description="base size"),
               "scales": widgets.IntSlider(2, min=1, max=3, description="sizes"),
               "ratios": widgets.SelectMultiple(options=[0.25, 0.5, 1.0, 2.0, 4.0], value=(0.5, 1.0, 2.0),
                                                description="ratios h/w", rows=5),
               "y": widgets.IntSlider(2, min=0, max=15, description="cell y"),
               "x": widgets.IntSlider(2, min=0, max=15, description="cell x")}

    def view(stride, base, scales, ratios, y, x):
        cells = math.ceil(size / stride)
        sizes = tuple(round(base * 2 ** (k / 2), 1) for k in range(scales))
        return anchor_view(generate_fn, size, stride, sizes, tuple(ratios) or (1.0,),
                           location=(min(y, cells - 1), min(x, cells - 1)))

    def draw(view):
        fig, ax = plt.subplots(figsize=(4.6, 4.6))
        plot_anchors(view, image, ax)
        return fig

    return explorer(sliders, view, draw, arrange="side")


# ------------------------------------------------------------------------------------------------
# NMS: thresholds on the detector's raw boxes, running your nms
# ------------------------------------------------------------------------------------------------
def nms_view(raw: dict, nms_fn: Callable, iou_threshold: float = NMS_IOU, score_threshold: float = 0.05) -> dict:
    """One image's raw boxes above the score threshold and those YOUR ``nms_fn`` keeps (pure compute).

    Returns {"candidates": {...}, "kept": {...}} (dicts like :func:`raw_detections`) or {"error": message}.
    """
    require_callable("nms_fn", nms_fn)
    if not isinstance(raw, dict) or not {"boxes", "scores", "labels"} <= set(raw):
        raise ValueError(f"raw must be one dict of raw_detections (boxes, scores, labels), got {describe(raw)}")
    candidates = {k: v[raw["scores"] > score_threshold] for k, v in raw.items()}
    kept, error = call_student(postprocess, raw, nms_fn, score_threshold=score_threshold,
                               iou_threshold=iou_threshold, max_detections=len(raw["scores"]) or 1, what="nms")
    if error:
        return {"candidates": candidates, "error": error}
    return {"candidates": candidates, "kept": kept}


@display_only
def plot_nms(views: list, images, fig=None):
    """Candidates (thin white) and kept boxes (class colours, scores) of several :func:`nms_view` results."""
    import matplotlib.pyplot as plt

    from .plot import draw_boxes
    if isinstance(views, dict):          # no views: the student's decode_boxes failed, say so
        fig = fig or plt.figure(figsize=(7, 1.0))
        fig.clear()
        fig.text(0.01, 0.5, views["error"], color="crimson", fontsize=10, wrap=True)
        return fig
    n = len(views)
    if fig is None:
        fig = plt.figure(figsize=(2.3 * n, 2.7))
    fig.clear()
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, view, image in zip(axes, views, images):
        ax.imshow(image)
        ax.set_axis_off()
        draw_boxes(ax, view["candidates"]["boxes"].numpy(), color=(1, 1, 1, 0.35), linewidth=0.6)
        if "error" in view:
            ax.set_title(view["error"][:60], fontsize=7, color="crimson")
            continue
        kept = view["kept"]
        draw_boxes(ax, kept["boxes"].numpy(), kept["labels"].numpy(), kept["scores"].numpy(), fontsize=6)
        ax.set_title(f"{len(view['candidates']['scores'])} candidates -> {len(kept['scores'])} kept", fontsize=8)
    fig.set_layout_engine("tight")
    return fig


@display_only
def nms_explorer(model: nn.Module, images, decode_fn: Callable, nms_fn: Callable):
    """Sliders for the NMS IoU threshold and the score threshold over the detector's raw boxes of a few images
    (uint8 (N, 64, 64, 3)); runs YOUR decode_fn and nms_fn. Returns the ipywidgets box."""
    import ipywidgets as widgets

    images = np.asarray(images)
    raws, error = call_student(raw_detections, model, images, decode_fn, what="decode_boxes")
    sliders = {"iou_threshold": widgets.FloatSlider(NMS_IOU, min=0.0, max=1.0, step=0.05, description="NMS IoU"),
               "score_threshold": widgets.FloatSlider(0.05, min=0.0, max=0.95, step=0.05, description="min score")}

    def view(iou_threshold, score_threshold):
        if error:
            return {"error": error}
        return [nms_view(raw, nms_fn, iou_threshold, score_threshold) for raw in raws]

    return explorer(sliders, view, lambda views: plot_nms(views, images))


@display_only
def show_detections(shapes: Shapes, detections: list, max_images: int = 6):
    """Held-out images with their objects (top row) and the detections (bottom row, class and score)."""
    from .plot import draw_boxes, truth_over_predictions
    fig, axes = truth_over_predictions(shapes, max_images)
    for i in range(axes.shape[1]):
        d = detections[i]
        draw_boxes(axes[1, i], d["boxes"].numpy(), d["labels"].numpy(), d["scores"].numpy(), fontsize=6)
        count, found = len(shapes.labels[i]), len(d["scores"])
        axes[0, i].set_title(f"{count} object{'s' * (count != 1)}", fontsize=8)
        axes[1, i].set_title(f"{found} detection{'s' * (found != 1)}", fontsize=8)
    fig.set_layout_engine("tight")
    return fig


# ------------------------------------------------------------------------------------------------
# RoI Pool vs RoI Align on a linear ramp
# ------------------------------------------------------------------------------------------------
def ramp_features(height: int = 16, width: int = 16, a: float = 1.0, b: float = 0.0, c: float = 0.0) -> torch.Tensor:
    """(1, 1, H, W) float64 feature map whose cell (i, j) holds a (j + 0.5) + b (i + 0.5) + c: the value of a
    linear ramp at the cell's centre (RoIAlign with aligned=True reproduces the ramp exactly)."""
    i, j = torch.meshgrid(torch.arange(require_int("height", height, minimum=1), dtype=torch.float64),
                          torch.arange(require_int("width", width, minimum=1), dtype=torch.float64), indexing="ij")
    return (a * (j + 0.5) + b * (i + 0.5) + c)[None, None]


def roi_shift_curve(shifts=None, box=(2.0, 2.0, 10.0, 10.0), output_size: int = 2, spatial_scale: float = 1.0,
                    size: int = 16) -> dict:
    """Slide a box by sub-pixel amounts over :func:`ramp_features` (value = x coordinate) and record the
    mean output of RoIPool, RoIAlign and the exact mean of the ramp over the box.

    Returns {"shifts" (S,), "pool" (S,), "align" (S,), "exact" (S,)} as NumPy arrays.
    """
    shifts = np.linspace(0, 2, 33) if shifts is None else np.asarray(shifts, dtype=np.float64).reshape(-1)
    if len(box) != 4:
        raise ValueError(f"box must be (x1, y1, x2, y2), got {box!r}")
    features = ramp_features(size, size)
    x1, y1, x2, y2 = box
    rois = torch.tensor([[0, x1 + s, y1, x2 + s, y2] for s in shifts], dtype=torch.float64)
    pool = roi_pool(features, rois, output_size, spatial_scale).mean(dim=(1, 2, 3)).numpy()
    align = roi_align(features, rois, output_size, spatial_scale, sampling_ratio=2, aligned=True).mean(dim=(1, 2, 3))
    exact = (x1 + x2) / 2 * spatial_scale + shifts * spatial_scale
    return {"shifts": shifts, "pool": pool, "align": align.numpy(), "exact": exact}


@display_only
def plot_roi_grid(box=(2.0, 2.0, 10.0, 10.0), shift: float = 0.0, output_size: int = 2, size: int = 16, fig=None):
    """The feature map with the box and its RoIPool cells (rounded) next to RoIAlign's sample points, and the
    two pooled outputs; values are the x coordinate of each cell centre (a ramp)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    features = ramp_features(size, size)
    x1, y1, x2, y2 = box[0] + shift, box[1], box[2] + shift, box[3]
    roi = torch.tensor([[0, x1, y1, x2, y2]], dtype=torch.float64)
    pooled = roi_pool(features, roi, output_size)[0, 0].numpy()
    aligned = roi_align(features, roi, output_size, sampling_ratio=2, aligned=True)[0, 0].numpy()
    if fig is None:
        fig = plt.figure(figsize=(10, 3.4))
    fig.clear()
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.6, 1, 1]})
    ax = axes[0]
    ax.imshow(features[0, 0].numpy(), cmap="viridis", extent=(0, size, size, 0))
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white", lw=2, label="box"))
    rx1, ry1, rx2, ry2 = roi_pool_cells((x1, y1, x2, y2))
    ax.add_patch(Rectangle((rx1, ry1), rx2 - rx1 + 1, ry2 - ry1 + 1, fill=False, edgecolor="red", lw=1.5,
                           linestyle="--", label="RoIPool: rounded cells"))
    bin_w, bin_h = (x2 - x1) / output_size, (y2 - y1) / output_size
    pts = [(x1 - 0.5 + (j + (s + 0.5) / 2) * bin_w + 0.5, y1 - 0.5 + (i + (t + 0.5) / 2) * bin_h + 0.5)
           for i in range(output_size) for j in range(output_size) for s in range(2) for t in range(2)]
    ax.scatter(*zip(*pts), s=10, c="white", edgecolors="black", linewidths=0.5, label="RoIAlign samples", zorder=3)
    ax.set_title(f"box x {x1:.2f}..{x2:.2f} (shift {shift:.2f} px)", fontsize=9)
    ax.legend(fontsize=6, loc="lower right")
    for ax, values, title in ((axes[1], pooled, "RoIPool"), (axes[2], aligned, "RoIAlign (aligned=True)")):
        ax.imshow(values, cmap="viridis", vmin=0, vmax=size)
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white", fontsize=10)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.set_layout_engine("tight")
    return fig


@display_only
def roi_explorer(box=(2.0, 2.0, 10.0, 10.0), output_size: int = 2):
    """A slider moving the box by sub-pixel amounts: RoIPool's outputs jump, RoIAlign's follow the box."""
    import ipywidgets as widgets

    slider = widgets.FloatSlider(0.0, min=0.0, max=2.0, step=0.125, description="shift (px)")
    return explorer({"shift": slider}, lambda shift: shift, lambda shift: plot_roi_grid(box, shift, output_size))


# ------------------------------------------------------------------------------------------------
# The R-CNN family and one-stage detectors: what runs once, what runs per region
# ------------------------------------------------------------------------------------------------
def family_costs(model: TinyDetector | None = None, regions: int = 300, repeat: int = 3) -> list[dict]:
    """Measured time per 64 x 64 image of the four designs, all built from the tiny detector's backbone.

    * R-CNN: every region is cropped from the image, resized to 64 x 64 and run through the whole backbone;
    * Fast R-CNN: the backbone runs once; each region is cut from the feature map by RoIAlign (7 x 7, one
      sample per bin) and goes through a small per-region head (two linear layers);
    * Faster R-CNN: as Fast R-CNN, plus the RPN head on the feature map proposes the regions;
    * one-stage (YOLO / SSD style): the backbone and a 1 x 1 head, nothing per region.
    Returns one dict per design: {"design", "shared", "per_region", "ms"} (``regions`` regions).
    """
    if model is not None and not isinstance(model, TinyDetector):
        raise TypeError(f"model must be a TinyDetector (or None for an untrained one), got {describe(model)}")
    model = model or TinyDetector()
    regions = require_int("regions", regions, minimum=1)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 64, 64, generator=g)
    xy = torch.rand(regions, 2, generator=g) * 40
    boxes = torch.cat([xy, xy + 8 + torch.rand(regions, 2, generator=g) * 16], 1)
    rois = rois_from_boxes([boxes])
    width = model.config["width"]
    region_head = nn.Sequential(nn.Flatten(), nn.Linear(width * 49, 128), nn.ReLU(), nn.Linear(128, 5 + 16)).eval()

    def rcnn():
        crops = [F.interpolate(image[:, :, int(y1):int(y2), int(x1):int(x2)], size=(64, 64), mode="bilinear",
                               align_corners=False) for x1, y1, x2, y2 in boxes.tolist()]
        return model.backbone(torch.cat(crops))

    def fast():
        features = model.backbone(image)
        return region_head(roi_align(features, rois, 7, 1 / 8, sampling_ratio=1))

    def faster():
        features = model.head(model.backbone(image))
        model.objectness(features), model.deltas(features)
        return region_head(roi_align(features, rois, 7, 1 / 8, sampling_ratio=1))

    def one_stage():
        return model(image)

    rows = [("R-CNN", "nothing", "crop + resize + whole CNN", rcnn),
            ("Fast R-CNN", "CNN on the image (regions from selective search)", "RoIAlign + head", fast),
            ("Faster R-CNN", "CNN + RPN head (proposes the regions)", "RoIAlign + head", faster),
            ("one-stage (YOLO/SSD)", "CNN + dense head on every anchor", "nothing (then NMS)", one_stage)]
    with torch.no_grad(), eval_mode(model):      # the caller's model keeps its mode
        return [{"design": design, "shared": shared, "per_region": per_region, "ms": 1000 * timed(fn, repeat)}
                for design, shared, per_region, fn in rows]
