"""Instance segmentation with Mask R-CNN's mask branch (lecture topic 05).

Demos, training and inference of the tiny Mask R-CNN-style mask predictor (the model is
``lecturelib.instance_segmentation_models.TinyMaskRCNN``) and of its keypoint branch (``TinyKeypointRCNN``), mask IoU
and mask AP, keypoint PCK (``lecturelib.evaluation.pck``), and the widgets of the instance segmentation notebook.
The graded operations (``mask_targets``, ``mask_loss``, ``paste_masks``, ``keypoint_targets``, ``decode_keypoints``)
are NOT here: every function that needs one takes it as an argument, so the notebook runs them with the student's
code and scripts/tests with ``lecturelib.reference`` (see ``lecturelib._student``).

"Mask R-CNN adds a mask branch to any box detector": the model here crops RoIAlign features for boxes it
is given (ground-truth boxes with jitter while training, the shipped DETR's boxes at inference) and
predicts one M x M mask per class for each box.

Coordinates: pixel (i, j) covers [j, j + 1) x [i, i + 1), its centre is (j + 0.5, i + 0.5); boxes are
real-valued xyxy in those coordinates (``lecturelib.data``'s boxes: x2, y2 exclusive).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._student import call_student, function_or_reference
from ._validate import describe, require_callable, require_float, require_int, require_tensor
from .data import CLASSES, Shapes
from .evaluation import evaluate_coco, evaluate_detections, pck
from .instance_segmentation_models import TinyKeypointRCNN, TinyMaskRCNN
from .plot import display_only, explorer
from .rois import roi_align, roi_pool, roi_pool_cells
from .train import eval_mode, fit, load_pretrained_model, shuffled_loader

__all__ = [
    "roi_sampling_points", "touching_example",
    "show_semantic_vs_instance", "pool_vs_align", "show_pool_vs_align", "mask_iou",
    "evaluate_masks", "TinyMaskRCNN", "jitter_boxes", "train_mask_head", "detr_detections",
    "predict_masks", "evaluate", "load_pretrained", "show_instance_masks", "roi_target_explorer",
    "threshold_explorer", "show_keypoints", "synthetic_heatmap", "keypoint_explorer",
    "TinyKeypointRCNN", "keypoint_loss", "train_keypoint_head", "predict_keypoints", "evaluate_keypoints",
]


# ------------------------------------------------------------------------------------------------
# Where RoIAlign samples
# ------------------------------------------------------------------------------------------------
def roi_sampling_points(box, M: int, sampling_ratio: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Where RoIAlign (aligned=True) samples a box: x (M*s,) and y (M*s,) pixel coordinates, in the
    half-pixel model (pixel centres at j + 0.5), ``s = sampling_ratio`` samples per bin side."""
    x1, y1, x2, y2 = (float(v) for v in box)
    M = require_int("M", M, minimum=1)
    s = require_int("sampling_ratio", sampling_ratio, minimum=1)
    steps = (np.arange(M * s) + 0.5) / (M * s)
    return x1 + (x2 - x1) * steps, y1 + (y2 - y1) * steps


# ------------------------------------------------------------------------------------------------
# From semantic to instance segmentation
# ------------------------------------------------------------------------------------------------
def touching_example(shapes: Shapes) -> int:
    """Index of an image where objects of one class touch, so that the semantic mask of that class has fewer
    connected regions (4-connectivity) than there are objects of the class; of those, the one whose smallest
    such object is largest."""
    from scipy import ndimage
    if not isinstance(shapes, Shapes):
        raise TypeError(f"shapes must be a Shapes (from make_shapes), got {describe(shapes)}")
    best, best_area = None, 0
    for i in range(len(shapes)):
        for c in np.unique(shapes.labels[i]):
            if ndimage.label(shapes.semantic[i] == c)[1] < int((shapes.labels[i] == c).sum()):
                area = int(shapes.instance_masks[i][shapes.labels[i] == c].sum(axis=(1, 2)).min())
                if area > best_area:                # the clearest example: its smallest object is largest
                    best, best_area = i, area
    if best is not None:
        return best
    raise ValueError("no image has touching objects of one class; generate more images (occlusion=True)")


@display_only
def show_semantic_vs_instance(shapes: Shapes, index: int):
    """Image | semantic mask (class per pixel) | its connected regions | instance masks (one colour each)."""
    import matplotlib.pyplot as plt
    from scipy import ndimage

    from .plot import colorize_mask, draw_boxes
    sample = shapes[index]
    regions, n_regions = ndimage.label(sample.semantic > 0)
    instances = np.zeros(sample.semantic.shape, dtype=np.int64)
    for k, mask in enumerate(sample.instance_masks, 1):
        instances[mask] = k
    palette = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 4, figsize=(11, 3.1))
    axes[0].imshow(sample.image)
    draw_boxes(axes[0], sample.boxes, sample.labels)
    axes[0].set_title(f"image: {len(sample.labels)} objects")
    axes[1].imshow(colorize_mask(sample.semantic))
    axes[1].set_title("semantic: class per pixel")
    axes[2].imshow(np.where(regions[..., None] > 0, palette((regions - 1) % 10)[..., :3], 0.15))
    axes[2].set_title(f"connected regions: {n_regions}")
    axes[3].imshow(np.where(instances[..., None] > 0, palette((instances - 1) % 10)[..., :3], 0.15))
    axes[3].set_title(f"instances: {len(sample.labels)}")
    for ax in axes:
        ax.set_axis_off()
    fig.set_layout_engine("tight")
    return fig


# ------------------------------------------------------------------------------------------------
# RoIPool vs RoIAlign on a mask
# ------------------------------------------------------------------------------------------------
def pool_vs_align(mask, box, stride: int = 4, M: int = 14) -> dict:
    """Crop a mask's box from a stride-``stride`` feature map with RoIPool and RoIAlign.

    mask: (H, W) bool, box: (4,) xyxy pixels. The "feature map" is the mask averaged over stride x stride
    cells (what a backbone of that stride sees). Returns {"truth": (M, M) the crop at full resolution
    (RoIAlign on the mask itself), "pool", "align": (M, M) crops from the feature map, "iou_pool",
    "iou_align": IoU of each thresholded crop with the thresholded truth, "feature": (H/s, W/s)}.
    """
    mask = torch.as_tensor(np.asarray(mask), dtype=torch.float32)
    stride = require_int("stride", stride, minimum=1)
    M = require_int("M", M, minimum=1)
    rois = torch.tensor([[0.0, *[float(v) for v in box]]])
    feature = F.avg_pool2d(mask[None, None], stride, ceil_mode=True)
    truth = roi_align(mask[None, None], rois, (M, M), 1.0, 2, True)[0, 0]
    pooled = roi_pool(feature, rois, (M, M), 1.0 / stride)[0, 0]
    aligned = roi_align(feature, rois, (M, M), 1.0 / stride, 2, True)[0, 0]

    def iou(a, b):
        a, b = a >= 0.5, b >= 0.5
        return float((a & b).sum()) / max(float((a | b).sum()), 1.0)
    return {"truth": truth.numpy(), "pool": pooled.numpy(), "align": aligned.numpy(), "feature": feature[0, 0].numpy(),
            "iou_pool": iou(pooled, truth), "iou_align": iou(aligned, truth), "stride": stride, "box": list(box)}


@display_only
def show_pool_vs_align(view: dict, image=None):
    """The box on the image and on the coarse feature map, and the three M x M crops with their IoU."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    x1, y1, x2, y2 = view["box"]
    s = view["stride"]
    fig, axes = plt.subplots(1, 5, figsize=(13, 3.3))
    if image is not None:
        axes[0].imshow(image, extent=(0, image.shape[1], image.shape[0], 0))
    axes[0].add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white", lw=1.5))
    axes[0].set_title("box on the image")
    feat = view["feature"]
    axes[1].imshow(feat, cmap="gray", extent=(0, feat.shape[1] * s, feat.shape[0] * s, 0))
    axes[1].add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="tab:orange", lw=1.5))
    rx1, ry1, rx2, ry2 = (v * s for v in roi_pool_cells((x1, y1, x2, y2), 1 / s))
    axes[1].add_patch(Rectangle((rx1, ry1), rx2 - rx1 + s, ry2 - ry1 + s, fill=False, edgecolor="tab:red", lw=1.2,
                                linestyle="--"))
    axes[1].set_title(f"feature map (stride {s})\norange: box, red: RoIPool's cells", fontsize=9)
    for ax, key, title in ((axes[2], "truth", "full-resolution crop"),
                           (axes[3], "pool", f"RoIPool: IoU {view['iou_pool']:.2f}"),
                           (axes[4], "align", f"RoIAlign: IoU {view['iou_align']:.2f}")):
        ax.imshow(view[key], cmap="gray", vmin=0, vmax=1)
        if key != "truth":
            ax.contour(view["truth"] >= 0.5, levels=[0.5], colors="tab:orange", linewidths=1.2)
        ax.set_title(title, fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    fig.set_layout_engine("tight")
    return fig


# ------------------------------------------------------------------------------------------------
# Mask IoU and mask AP
# ------------------------------------------------------------------------------------------------
def _as_masks(name: str, masks) -> torch.Tensor:
    if isinstance(masks, np.ndarray):
        masks = torch.from_numpy(masks)
    masks = require_tensor(name, masks, ndim=3)
    return masks.bool()


def mask_iou(masks1, masks2) -> torch.Tensor:
    """IoU of every pair of binary masks: (N, H, W) and (M, H, W) -> (N, M) float64; 0 when both are empty."""
    a, b = _as_masks("masks1", masks1), _as_masks("masks2", masks2)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"masks1 and masks2 must have the same image size, got {tuple(a.shape[1:])} and "
                         f"{tuple(b.shape[1:])}")
    fa, fb = a.flatten(1).double(), b.flatten(1).double()
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def evaluate_masks(predictions: list, targets: list, iou_threshold: float = 0.5, classes=None) -> dict:
    """Mask AP: ``lecturelib.evaluation``'s protocol (per class, greedy matching by score, all-point AP)
    with mask IoU instead of box IoU.

    predictions: one dict per image with "masks" (K, H, W) bool, "scores" (K,), "labels" (K,);
    targets: one dict per image with "masks" (G, H, W) bool, "labels" (G,) and optionally "ignore" (G,) bool.
    Returns {"map", "ap": {class: AP}, "num_gt": {class: count}, ...} as ``evaluate_detections``.
    """
    return evaluate_detections(predictions, targets, iou_threshold=iou_threshold, classes=classes, key="masks",
                               iou_fn=mask_iou)


# ------------------------------------------------------------------------------------------------
# Training the tiny Mask R-CNN-style mask predictor (``instance_segmentation_models.TinyMaskRCNN``)
# ------------------------------------------------------------------------------------------------
def jitter_boxes(boxes: torch.Tensor, generator: torch.Generator, amount: float = 0.1,
                 image_size: int | None = None) -> torch.Tensor:
    """Perturb xyxy boxes like a detector's imprecise boxes: each side moves by N(0, amount * box size)."""
    boxes = require_tensor("boxes", boxes, shape=(None, 4), floating=True)
    size = torch.cat([boxes[:, 2:] - boxes[:, :2]] * 2, dim=1)
    moved = boxes + torch.randn(boxes.shape, generator=generator) * amount * size
    x1, y1 = torch.minimum(moved[:, 0], moved[:, 2] - 2), torch.minimum(moved[:, 1], moved[:, 3] - 2)
    moved = torch.stack([x1, y1, moved[:, 2], moved[:, 3]], dim=1)
    if image_size is not None:
        moved = moved.clamp(0, image_size)
        moved[:, 2:] = torch.maximum(moved[:, 2:], moved[:, :2] + 1)
    return moved


class _MaskDataset(torch.utils.data.Dataset):
    """(image, {"masks", "labels", "boxes", "ignore", "keypoints"}) for every image of a Shapes."""

    def __init__(self, shapes: Shapes):
        self.shapes = shapes

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i):
        s = self.shapes
        image = torch.from_numpy(s.images[i]).permute(2, 0, 1).float().div_(255)
        return image, {"masks": torch.from_numpy(s.instance_masks[i]), "labels": torch.from_numpy(s.labels[i]),
                       "boxes": torch.from_numpy(s.boxes[i]), "ignore": torch.from_numpy(s[i].ignore),
                       "keypoints": torch.from_numpy(s.keypoints[i])}


class _Jittered(nn.Module):
    """Wraps the model (mask or keypoint) for ``fit``: draws jittered copies of each ground-truth box as the boxes
    of a batch (objects flagged "ignore", the heavily occluded ones, give none)."""

    def __init__(self, model: nn.Module, copies: int, amount: float, seed: int):
        super().__init__()
        self.model, self.copies, self.amount = model, copies, amount
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, batch):
        images, targets = batch
        boxes, matched = [], []
        for t in targets:
            idx = torch.arange(len(t["boxes"]))
            if "ignore" in t:
                idx = idx[~t["ignore"]]
            idx = idx.repeat(self.copies)
            boxes.append(jitter_boxes(t["boxes"][idx], self.generator, self.amount, images.shape[-1]))
            matched.append(idx)
        return {"logits": self.model(images, boxes), "boxes": boxes, "matched": matched}


def _mask_collate(batch):
    images = torch.stack([image for image, _ in batch])
    targets = [t for _, t in batch]
    return (images, targets), targets


def train_mask_head(model: TinyMaskRCNN, train: Shapes, *, mask_targets_fn: Callable, mask_loss_fn: Callable,
                    epochs: int, lr: float = 3e-3, batch_size: int = 32, copies: int = 2, jitter: float = 0.08,
                    seed: int = 0, progress: bool = True) -> list[float]:
    """Train the model on jittered ground-truth boxes; returns the mean training loss of each epoch.

    Each ground-truth box (but those of ``train.ignore``) gives ``copies`` RoIs, each side moved by
    N(0, ``jitter`` * box size); each RoI's
    target is ``mask_targets_fn(gt_masks, rois, matched_idx, M)`` of its image and the loss is
    ``mask_loss_fn(logits, labels, targets)`` (yours or the reference). AdamW, one-cycle schedule.
    """
    if not isinstance(model, TinyMaskRCNN):
        raise TypeError(f"model must be a TinyMaskRCNN, got {describe(model)}")
    if not isinstance(train, Shapes):
        raise TypeError(f"train must be a Shapes (from make_shapes), got {describe(train)}")
    require_callable("mask_targets_fn", mask_targets_fn)
    require_callable("mask_loss_fn", mask_loss_fn)
    loader = shuffled_loader(_MaskDataset(train), batch_size, seed, _mask_collate)
    M = model.mask_size

    def loss_fn(out, targets):
        with torch.no_grad():
            goal = torch.cat([mask_targets_fn(t["masks"], b, m, M).float()
                              for t, b, m in zip(targets, out["boxes"], out["matched"])])
        labels = torch.cat([t["labels"][m] for t, m in zip(targets, out["matched"])])
        return mask_loss_fn(out["logits"], labels, goal)
    copies = require_int("copies", copies, minimum=1)
    wrapped = _Jittered(model, copies, require_float("jitter", jitter, minimum=0), seed)
    return fit(wrapped, loader, loss_fn, epochs=epochs, lr=lr, progress=progress)


# ------------------------------------------------------------------------------------------------
# Inference with the shipped DETR's boxes, evaluation
# ------------------------------------------------------------------------------------------------
def detr_detections(shapes: Shapes, detector=None) -> list[dict]:
    """Boxes, scores and labels of the shipped DETR (``lecturelib.detr``) for each image: all its queries,
    as DETR is evaluated (no threshold, no NMS). Each dict: "boxes" (Q, 4), "scores" (Q,), "labels" (Q,),
    "keep" (Q,) bool: the query's most likely class is an object."""
    from . import detr
    detector = detector if detector is not None else detr.load_pretrained()
    out = detr.predict(detector, shapes)
    for p in out:
        b = p["boxes"].clamp(0, shapes.size)
        b[:, 2:] = torch.maximum(b[:, 2:], b[:, :2] + 0.5)
        p["boxes"] = b
    return [{k: p[k] for k in ("boxes", "scores", "labels", "keep")} for p in out]


def _image_tensor(images) -> torch.Tensor:
    """images: a Shapes, or (N, 3, H, W) float -> (N, 3, H, W) float."""
    return images.image_tensor() if isinstance(images, Shapes) else require_tensor("images", images, ndim=4,
                                                                                    floating=True)


@torch.no_grad()
def predict_masks(model: TinyMaskRCNN, images, detections: list, paste_fn: Callable,
                  threshold: float = 0.5) -> list[dict]:
    """Masks for given detections: the mask head's channel of each detection's class, sigmoid, then
    ``paste_fn(probs, boxes, (H, W), threshold)`` (yours or the reference) into the full image.

    images: (N, 3, H, W) float or a Shapes; detections: one dict per image with "boxes", "scores", "labels".
    Returns one dict per image: the detection's keys plus "probs" (K, M, M) and "masks" (K, H, W) bool.
    """
    if not isinstance(model, TinyMaskRCNN):
        raise TypeError(f"model must be a TinyMaskRCNN, got {describe(model)}")
    require_callable("paste_fn", paste_fn)
    x = _image_tensor(images)
    if len(detections) != len(x):
        raise ValueError(f"detections must have one dict per image ({len(x)}), got {len(detections)}")
    with eval_mode(model):
        boxes = [d["boxes"].float() for d in detections]
        logits = model(x, boxes)
    labels = torch.cat([torch.as_tensor(d["labels"]).long() for d in detections])
    probs = logits[torch.arange(len(labels)), labels].sigmoid()
    out, start = [], 0
    for d, b in zip(detections, boxes):
        p = probs[start:start + len(b)]
        start += len(b)
        masks = paste_fn(p, b, tuple(x.shape[-2:]), threshold)
        out.append({**d, "probs": p, "masks": torch.as_tensor(masks).bool()})
    return out


def evaluate(model: TinyMaskRCNN, shapes: Shapes, paste_fn: Callable, detections: list | None = None,
             iou_threshold: float = 0.5, coco: bool = False) -> dict:
    """Mask AP and box AP at ``iou_threshold`` of the model with DETR's boxes on held-out shapes.

    AP is all-point (PASCAL VOC 2010+); heavily occluded objects (``Shapes.ignore``) are ignored as VOC's
    "difficult" ones. Returns {"mask_map", "box_map", "mask_ap" (per class), "images", "predictions"}; with
    ``coco=True`` also "mask_coco" and "box_coco": COCO's 101-point AP@[.5:.95].
    """
    if not isinstance(shapes, Shapes):
        raise TypeError(f"shapes must be a Shapes (from make_shapes), got {describe(shapes)}")
    detections = detections if detections is not None else detr_detections(shapes)
    predictions = predict_masks(model, shapes, detections, paste_fn)
    classes = range(1, len(CLASSES))
    targets = [shapes.targets(i) for i in range(len(shapes))]
    masks = evaluate_masks(predictions, targets, iou_threshold, classes=classes)
    boxes = evaluate_detections(predictions, targets, iou_threshold=iou_threshold, classes=classes)
    result = {"mask_map": masks["map"], "box_map": boxes["map"], "mask_ap": masks["ap"], "images": len(shapes),
              "predictions": predictions}
    if coco:
        result["mask_coco"] = evaluate_coco(predictions, targets, classes=classes, key="masks", iou_fn=mask_iou)["map"]
        result["box_coco"] = evaluate_coco(predictions, targets, classes=classes)["map"]
    return result


_PRETRAINED = {"maskrcnn_shapes": (TinyMaskRCNN, "python scripts/train_weights.py instance_segmentation"),
               "keypoints_shapes": (TinyKeypointRCNN, "python scripts/train_weights.py keypoints")}


def load_pretrained(name: str = "maskrcnn_shapes") -> TinyMaskRCNN | TinyKeypointRCNN:
    """A shipped model (eval mode, CPU): "maskrcnn_shapes", the TinyMaskRCNN trained by
    ``python scripts/train_weights.py instance_segmentation``, or "keypoints_shapes", the TinyKeypointRCNN trained
    by ``python scripts/train_weights.py keypoints``.

    ``model.metadata`` holds how it was made (command, seed, epochs, held-out mask AP@0.5 or PCK@0.1...).
    """
    architectures = {key: arch for key, (arch, _) in _PRETRAINED.items()}
    script = _PRETRAINED[name][1] if isinstance(name, str) and name in _PRETRAINED else ""
    return load_pretrained_model(name, architectures, script)


# ------------------------------------------------------------------------------------------------
# The keypoint head (``instance_segmentation_models.TinyKeypointRCNN``): loss, training, inference, PCK
# ------------------------------------------------------------------------------------------------
def keypoint_loss(heatmaps: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mask R-CNN's keypoint loss: for every valid keypoint, the softmax cross-entropy over the S * S cells of its
    heatmap against its one-hot target cell; the mean over the valid keypoints (0, still connected to the
    heatmaps, when none is valid).

    heatmaps: (R, P, S, S) logits; targets: (R, P) int64 flat cell index row * S + column; valid: (R, P) bool
    (``keypoint_targets``' two outputs).
    """
    heatmaps = require_tensor("heatmaps", heatmaps, ndim=4, floating=True)
    r, p = heatmaps.shape[:2]
    targets = require_tensor("targets", targets, shape=(r, p), integer=True)
    valid = require_tensor("valid", valid, shape=(r, p)).bool()
    if not bool(valid.any()):
        return heatmaps.sum() * 0.0
    return F.cross_entropy(heatmaps.flatten(2)[valid], targets[valid].long())


def train_keypoint_head(model: TinyKeypointRCNN, train: Shapes, *, keypoint_targets_fn: Callable, epochs: int,
                        lr: float = 1e-2, batch_size: int = 32, copies: int = 2, jitter: float = 0.08, seed: int = 0,
                        progress: bool = True) -> list[float]:
    """Train the keypoint head on jittered ground-truth boxes (as ``train_mask_head``); returns the mean training
    loss of each epoch.

    Each ground-truth box (but those of ``train.ignore``) gives ``copies`` boxes, each side moved by
    N(0, ``jitter`` * box size); the model crops each grown by its margin (``model.rois``). The targets are
    ``keypoint_targets_fn(keypoints, model.rois(boxes), S)`` (yours or the reference): every labelled keypoint
    (v > 0, occluded ones too, as COCO) inside its RoI; the loss is ``keypoint_loss``. AdamW, one-cycle schedule.
    """
    if not isinstance(model, TinyKeypointRCNN):
        raise TypeError(f"model must be a TinyKeypointRCNN, got {describe(model)}")
    if not isinstance(train, Shapes):
        raise TypeError(f"train must be a Shapes (from make_shapes), got {describe(train)}")
    require_callable("keypoint_targets_fn", keypoint_targets_fn)
    loader = shuffled_loader(_MaskDataset(train), batch_size, seed, _mask_collate)
    S = model.heatmap_size

    def loss_fn(out, targets):
        with torch.no_grad():
            goals = [keypoint_targets_fn(t["keypoints"][m], model.rois(b), S)
                     for t, b, m in zip(targets, out["boxes"], out["matched"])]
        return keypoint_loss(out["logits"], torch.cat([g[0] for g in goals]), torch.cat([g[1] for g in goals]))
    copies = require_int("copies", copies, minimum=1)
    wrapped = _Jittered(model, copies, require_float("jitter", jitter, minimum=0), seed)
    return fit(wrapped, loader, loss_fn, epochs=epochs, lr=lr, progress=progress)


@torch.no_grad()
def predict_keypoints(model: TinyKeypointRCNN, images, boxes: list, decode_fn: Callable) -> list[torch.Tensor]:
    """Keypoints for given boxes: the model's heatmaps decoded by ``decode_fn(heatmaps, rois)`` (yours or the
    reference) over the RoIs it cropped (``model.rois(boxes)``, the boxes grown by its margin).

    images: (N, 3, H, W) float or a Shapes; boxes: one (K_i, 4) xyxy tensor or array per image.
    Returns one (K_i, P, 3) tensor (x, y, score) per image.
    """
    if not isinstance(model, TinyKeypointRCNN):
        raise TypeError(f"model must be a TinyKeypointRCNN, got {describe(model)}")
    require_callable("decode_fn", decode_fn)
    x = _image_tensor(images)
    if len(boxes) != len(x):
        raise ValueError(f"boxes must have one entry per image ({len(x)}), got {len(boxes)}")
    boxes = [torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes]
    with eval_mode(model):
        heatmaps = model(x, boxes)
    decoded = torch.as_tensor(decode_fn(heatmaps, torch.cat(model.rois(boxes))))
    return list(decoded.split([len(b) for b in boxes]))


def _matched_detection(gt_boxes: torch.Tensor, det_boxes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """(G,) index of the detection matched one-to-one to each ground-truth box (highest total IoU,
    ``linear_sum_assignment``), -1 where none overlaps it at ``iou_threshold``."""
    from scipy.optimize import linear_sum_assignment

    from .boxes import box_iou
    match = torch.full((len(gt_boxes),), -1, dtype=torch.long)
    if len(gt_boxes) and len(det_boxes):
        iou = np.asarray(box_iou(gt_boxes.double(), det_boxes.double()))
        rows, cols = linear_sum_assignment(-iou)
        good = iou[rows, cols] >= iou_threshold
        match[torch.as_tensor(rows[good], dtype=torch.long)] = torch.as_tensor(cols[good], dtype=torch.long)
    return match


def evaluate_keypoints(model: TinyKeypointRCNN, shapes: Shapes, decode_fn: Callable, detections: list | None = None,
                       alpha: float = 0.1, iou_threshold: float = 0.5) -> dict:
    """PCK@alpha (``lecturelib.evaluation.pck``: correct within alpha x the longer side of the object's
    ground-truth box) of the keypoint head on ``shapes``, heatmaps decoded by ``decode_fn``.

    Boxes: the ground-truth boxes (``detections=None``), or a detector's (one dict per image with "boxes" and
    optionally "keep", e.g. ``detr_detections``): each ground-truth object takes the kept detection matched to it
    one-to-one by IoU >= ``iou_threshold`` (any class: the head is class-agnostic); the keypoints of an object no
    detection matches count as wrong. Heavily occluded objects (``shapes.ignore``) are left out, as in training
    and in mask AP. Returns {"pck": visible keypoints (v = 2), "pck_labelled": v > 0, "pck_any_order": visible,
    each object's slots permuted at best (what is lost to the slot order alone), "keypoints": the number of visible
    keypoints scored, "matched": share of the objects with a box, "predicted": one (K_i, P, 3) tensor per image,
    every object included, NaN for unmatched objects}.
    """
    if not isinstance(shapes, Shapes):
        raise TypeError(f"shapes must be a Shapes (from make_shapes), got {describe(shapes)}")
    truth = [torch.from_numpy(b) for b in shapes.boxes]
    if detections is None:
        boxes, matches = truth, [torch.arange(len(b)) for b in truth]
    else:
        if len(detections) != len(shapes):
            raise ValueError(f"detections must have one dict per image ({len(shapes)}), got {len(detections)}")
        boxes, matches = [], []
        for t, d in zip(truth, detections):
            det = torch.as_tensor(d["boxes"]).float().reshape(-1, 4)
            if "keep" in d:
                det = det[torch.as_tensor(d["keep"]).bool()]
            boxes.append(det)
            matches.append(_matched_detection(t, det, iou_threshold))
    decoded = predict_keypoints(model, shapes, boxes, decode_fn)
    predicted = []
    for out, match in zip(decoded, matches):
        rows = out[match.clamp(min=0)] if len(out) else out.new_zeros(len(match), model.config["num_keypoints"], 3)
        predicted.append(torch.where((match >= 0)[:, None, None], rows, float("nan")))
    keep = np.concatenate([~ig for ig in shapes.ignore]) if len(shapes) else np.zeros(0, bool)
    pred = torch.cat(predicted).numpy()[keep]
    kps = np.concatenate(shapes.keypoints)[keep]
    gt = np.concatenate(shapes.boxes)[keep]
    return {"pck": pck(pred, kps, gt, alpha=alpha), "pck_labelled": pck(pred, kps, gt, alpha=alpha, visible_only=False),
            "pck_any_order": pck(pred, kps, gt, alpha=alpha, any_order=True),
            "keypoints": int((kps[..., 2] == 2).sum()), "matched": float(torch.cat(matches)[torch.from_numpy(keep)]
                                                                         .ge(0).float().mean()),
            "alpha": alpha, "images": len(shapes), "predicted": predicted}


# ------------------------------------------------------------------------------------------------
# Drawing and widgets
# ------------------------------------------------------------------------------------------------
def _instance_overlay(image: np.ndarray, masks, labels) -> np.ndarray:
    from .plot import class_color
    shown = image.astype(np.float32) / 255
    for mask, label in zip(np.asarray(masks, dtype=bool), np.asarray(labels)):
        color = np.array(class_color(int(label)))
        shown[mask] = 0.45 * shown[mask] + 0.55 * color
    return shown


@display_only
def show_instance_masks(shapes: Shapes, predictions: list, max_images: int = 6, only_kept: bool = True):
    """Ground-truth instance masks (top row) and predicted ones (bottom row, with boxes and scores)."""
    import matplotlib.pyplot as plt

    from .plot import draw_boxes
    n = min(require_int("max_images", max_images, minimum=1), len(shapes))
    fig, axes = plt.subplots(2, n, figsize=(2.1 * n, 4.4), squeeze=False)
    for i in range(n):
        p = predictions[i]
        keep = p["keep"].numpy() if (only_kept and "keep" in p) else np.ones(len(p["labels"]), dtype=bool)
        axes[0, i].imshow(_instance_overlay(shapes.images[i], shapes.instance_masks[i], shapes.labels[i]))
        axes[1, i].imshow(_instance_overlay(shapes.images[i], p["masks"].numpy()[keep], p["labels"].numpy()[keep]))
        draw_boxes(axes[1, i], p["boxes"].numpy()[keep], p["labels"].numpy()[keep], p["scores"].numpy()[keep],
                   linewidth=1.0, fontsize=6)
        axes[0, i].set_title(f"{len(shapes.labels[i])} objects", fontsize=8)
        axes[1, i].set_title(f"{int(keep.sum())} masks", fontsize=8)
        for ax in axes[:, i]:
            ax.set_axis_off()
    fig.set_layout_engine("tight")
    return fig


@display_only
def roi_target_explorer(mask_targets_fn: Callable | None = None, shapes: Shapes | None = None, index: int = 0,
                        M: int = 14):
    """Move and resize a RoI over a shape with sliders: the image with the box and RoIAlign's sampling
    points (2 x 2 per bin), and ``mask_targets_fn``'s M x M target for it (yours; default: the reference
    where it ships). Returns the ipywidgets box; ``box.interactive.result`` is the last target."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from .data import make_shapes
    mask_targets_fn = function_or_reference(mask_targets_fn, "mask_targets", "instance_segmentation")
    shapes = shapes if shapes is not None else make_shapes(1, seed=7, min_objects=1, max_objects=1,
                                                           background="plain", occlusion=False)
    sample = shapes[index]
    x1, y1, x2, y2 = (float(v) for v in sample.boxes[0])
    size = shapes.size
    sliders = {"x1": widgets.FloatSlider(x1, min=0, max=size - 2, step=0.25, description="x1"),
               "y1": widgets.FloatSlider(y1, min=0, max=size - 2, step=0.25, description="y1"),
               "width": widgets.FloatSlider(x2 - x1, min=2, max=size, step=0.25, description="width"),
               "height": widgets.FloatSlider(y2 - y1, min=2, max=size, step=0.25, description="height"),
               "M": widgets.IntSlider(M, min=2, max=28, description="M")}

    def target_of(box, M):
        gt = torch.from_numpy(sample.instance_masks[:1])
        return torch.as_tensor(mask_targets_fn(gt, box, torch.zeros(1, dtype=torch.int64), M))[0].float().numpy()

    def view(x1, y1, width, height, M):
        box = torch.tensor([[x1, y1, x1 + width, y1 + height]], dtype=torch.float32)
        target, error = call_student(target_of, box, M, what="mask_targets")
        if error:
            return {"box": box[0].tolist(), "M": M, "target": np.zeros((M, M)), "error": error}
        return {"box": box[0].tolist(), "M": M, "target": target}

    def draw(view):
        (x1, y1, x2, y2), M = view["box"], view["M"]
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.8))
        axes[0].imshow(sample.image, extent=(0, size, size, 0))
        axes[0].add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white", lw=1.5))
        xs, ys = roi_sampling_points(view["box"], M)
        gx, gy = np.meshgrid(xs, ys)
        axes[0].plot(gx.ravel(), gy.ravel(), ".", ms=1.5, color="tab:orange")
        axes[0].set_title(f"RoI and its {2 * M} x {2 * M} RoIAlign samples", fontsize=9)
        axes[1].imshow(view["target"], cmap="gray", vmin=0, vmax=1)
        axes[1].set_title(view.get("error") or f"your mask_targets: {M} x {M}", fontsize=9)
        for ax in axes:
            ax.set_axis_off()
        fig.set_layout_engine("tight")
        return fig

    return explorer(sliders, view, draw, arrange=[["x1", "y1", "M"], ["width", "height"]])


@display_only
def threshold_explorer(shapes: Shapes, predictions: list, paste_fn: Callable | None = None, max_images: int = 4):
    """A slider for the mask threshold: re-pastes the model's mask probabilities with ``paste_fn`` (yours;
    default: the reference where it ships) and redraws the masks of the kept detections."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    paste_fn = function_or_reference(paste_fn, "paste_masks", "instance_segmentation")
    n = min(require_int("max_images", max_images, minimum=1), len(shapes))
    slider = widgets.FloatSlider(0.5, min=0.05, max=0.95, step=0.05, description="threshold")

    def view(threshold):
        pasted = []
        for p in predictions[:n]:
            keep = p["keep"]
            pasted.append(torch.as_tensor(paste_fn(p["probs"][keep], p["boxes"][keep], (shapes.size, shapes.size),
                                                   threshold)).bool())
        return pasted

    def draw(pasted):
        fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.6), squeeze=False)
        for i, masks in enumerate(pasted):
            keep = predictions[i]["keep"]
            axes[0, i].imshow(_instance_overlay(shapes.images[i], masks.numpy(), predictions[i]["labels"][keep].numpy()))
            axes[0, i].set_title("areas " + ", ".join(str(a) for a in masks.sum((1, 2)).tolist()), fontsize=7)
            axes[0, i].set_axis_off()
        fig.set_layout_engine("tight")
        return fig

    return explorer({"threshold": slider}, view, draw)


# ------------------------------------------------------------------------------------------------
# Keypoints (Mask R-CNN's pose head): the ground truth drawn, a heatmap decoded
# ------------------------------------------------------------------------------------------------
@display_only
def show_keypoints(shapes: Shapes, indices=(0, 1, 2, 3), predicted: list | None = None):
    """The images with each object's ground-truth keypoints (numbered in their order; white = visible, v = 2;
    red = occluded, v = 1) and, if given, ``predicted[i]`` ((K, P, 2+) x, y per object and keypoint) as crosses."""
    import matplotlib.pyplot as plt

    from .data import KEYPOINTS_PER_CLASS
    indices = list(indices)
    fig, axes = plt.subplots(1, len(indices), figsize=(2.6 * len(indices), 2.8), squeeze=False)
    for ax, i in zip(axes[0], indices):
        size = shapes.size
        ax.imshow(shapes.images[i], extent=(0, size, size, 0))
        for k, (points, label) in enumerate(zip(shapes.keypoints[i], shapes.labels[i])):
            for j, (x, y, v) in enumerate(points[:KEYPOINTS_PER_CLASS[label]]):
                if v > 0:
                    ax.plot(x, y, "o", ms=4, mec="black", mew=0.5, color="white" if v == 2 else "tab:red")
                    ax.text(x + 1, y - 1, str(j), color="yellow", fontsize=7)
                    if predicted is not None:
                        px, py = (float(t) for t in predicted[i][k][j][:2])
                        ax.plot(px, py, "x", ms=5, mew=1.5, color="tab:cyan")
        ax.set_xlim(0, size)
        ax.set_ylim(size, 0)
        ax.set_axis_off()
    fig.set_layout_engine("tight")
    return fig


def synthetic_heatmap(point, box, S: int, noise: float = 0.3, seed: int = 0) -> torch.Tensor:
    """(S, S) float32 logits of a "trained" keypoint head: a peak of height 4 at the keypoint's position in the
    RoI's S x S grid (cell centres at (c + 0.5) * size / S), Gaussian of width one cell, plus Gaussian noise."""
    x1, y1, x2, y2 = (float(v) for v in box)
    u = (float(point[0]) - x1) / (x2 - x1) * S - 0.5          # in cell units, cell centres at integers
    v = (float(point[1]) - y1) / (y2 - y1) * S - 0.5
    grid = torch.arange(S, dtype=torch.float32)
    peak = 4 * torch.exp(-((grid[None, :] - u) ** 2 + (grid[:, None] - v) ** 2) / 2)
    return peak + noise * torch.randn(S, S, generator=torch.Generator().manual_seed(seed))


@display_only
def keypoint_explorer(decode_fn: Callable | None = None, targets_fn: Callable | None = None,
                      shapes: Shapes | None = None, index: int = 0):
    """Sliders for a RoI over one shape, the heatmap size S and the head's noise: left, the image with the RoI,
    its S x S cells, the true keypoint (white) and where ``decode_fn`` puts it back (cyan cross); right, the
    heatmap with its argmax and ``targets_fn``'s target cell (both yours; default: the reference where it ships).
    Returns the ipywidgets box; ``box.interactive.result`` is the last view."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from .data import make_shapes
    decode_fn = function_or_reference(decode_fn, "decode_keypoints", "instance_segmentation")
    targets_fn = function_or_reference(targets_fn, "keypoint_targets", "instance_segmentation")
    shapes = shapes if shapes is not None else make_shapes(1, seed=0, min_objects=1, max_objects=1,
                                                           background="plain", occlusion=False)
    sample = shapes[index]
    size = shapes.size
    x1, y1, x2, y2 = (float(v) for v in sample.boxes[0])
    n_points = int(np.count_nonzero(sample.keypoints[0][:, 2]))
    sliders = {"keypoint": widgets.IntSlider(0, min=0, max=max(n_points - 1, 0), description="keypoint"),
               "x1": widgets.FloatSlider(x1 - 2, min=0, max=size - 4, step=0.25, description="x1"),
               "y1": widgets.FloatSlider(y1 - 2, min=0, max=size - 4, step=0.25, description="y1"),
               "width": widgets.FloatSlider(x2 - x1 + 4, min=4, max=size, step=0.25, description="width"),
               "height": widgets.FloatSlider(y2 - y1 + 4, min=4, max=size, step=0.25, description="height"),
               "S": widgets.IntSlider(8, min=2, max=28, description="S"),
               "noise": widgets.FloatSlider(0.3, min=0, max=2, step=0.1, description="noise")}

    def view(keypoint, x1, y1, width, height, S, noise):
        box = [x1, y1, x1 + width, y1 + height]
        point = sample.keypoints[0][keypoint]
        heat = synthetic_heatmap(point, box, S, noise)
        rois = torch.tensor([box], dtype=torch.float32)
        out = {"box": box, "S": S, "point": point[:2].tolist(), "heatmap": heat.numpy(), "errors": []}
        decoded, error = call_student(decode_fn, heat[None, None], rois, what="decode_keypoints")
        if error:
            out["errors"].append(error)
        else:
            out["decoded"] = [float(t) for t in torch.as_tensor(decoded)[0, 0, :2]]
        target, error = call_student(targets_fn, torch.from_numpy(point[None, None].copy()), rois, S,
                                     what="keypoint_targets")
        if error:
            out["errors"].append(error)
        else:
            index, valid = target
            out["target"] = int(torch.as_tensor(index).reshape(-1)[0]) if bool(torch.as_tensor(valid).reshape(-1)[0]) \
                else None
        return out

    def draw(view):
        (bx1, by1, bx2, by2), S = view["box"], view["S"]
        fig, axes = plt.subplots(1, 2, figsize=(8.5, 4))
        axes[0].imshow(sample.image, extent=(0, size, size, 0))
        for c in range(S + 1):
            axes[0].plot([bx1 + c * (bx2 - bx1) / S] * 2, [by1, by2], color="white", lw=0.3)
            axes[0].plot([bx1, bx2], [by1 + c * (by2 - by1) / S] * 2, color="white", lw=0.3)
        axes[0].add_patch(Rectangle((bx1, by1), bx2 - bx1, by2 - by1, fill=False, edgecolor="white", lw=1.5))
        axes[0].plot(*view["point"], "o", ms=6, mec="black", color="white")
        title = "RoI, its S x S cells; true keypoint (white)"
        if "decoded" in view:
            axes[0].plot(*view["decoded"], "x", ms=9, mew=2, color="tab:cyan")
            err = float(np.hypot(*(np.array(view["decoded"]) - view["point"])))
            title = f"decoded (cyan) {err:.2f} px from the truth"
        axes[0].set_title("; ".join(view["errors"]) or title, fontsize=8)
        axes[0].set_xlim(0, size)
        axes[0].set_ylim(size, 0)
        axes[1].imshow(view["heatmap"], cmap="magma")
        peak = int(np.argmax(view["heatmap"]))
        axes[1].add_patch(Rectangle((peak % S - 0.5, peak // S - 0.5), 1, 1, fill=False, edgecolor="tab:cyan", lw=2))
        label = "heatmap: argmax (cyan)"
        if view.get("target") is not None:
            t = view["target"]
            axes[1].add_patch(Rectangle((t % S - 0.5, t // S - 0.5), 1, 1, fill=False, edgecolor="white", lw=1.5,
                                        ls="--"))
            label += ", your target cell (white, dashed)"
        elif "target" in view:
            label += "; the keypoint is outside the RoI: no target"
        axes[1].set_title(label, fontsize=8)
        for ax in axes:
            ax.set_axis_off()
        fig.set_layout_engine("tight")
        return fig

    return explorer(sliders, view, draw, arrange=[["keypoint", "S", "noise"], ["x1", "y1"], ["width", "height"]])
