"""Mean average precision (mAP) of detections against ground truth, shared by the detection topics.

For each class separately, every detection of that class (over all images) is taken in order of
decreasing score and matched to the ground-truth box of the same class and image with the highest
IoU among those not matched yet, if that IoU is at least the threshold (COCO's rule; ties in score
keep the order of the images). A matched detection is a true positive, any other a false positive,
and a ground-truth box is matched at most once. Precision and recall after each detection give the
precision-recall curve; the average precision (AP) is the area under its monotone envelope, using
every recall level (all-point interpolation, as in PASCAL VOC since 2010 and COCO's definition
without the 101-point sampling). mAP is the mean AP over the classes that have ground truth.

    from lecturelib.evaluation import evaluate_detections
    result = evaluate_detections(detections, targets, iou_threshold=0.5)
    result["map"], result["ap"]          # mAP@0.5 and {class id: AP}

``detections``: one dict per image with "boxes" (K, 4) xyxy, "scores" (K,) and "labels" (K,);
``targets``: one dict per image with "boxes" (G, 4) xyxy and "labels" (G,). Tensors or arrays.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ._validate import describe, require_float
from .boxes import box_iou

__all__ = ["average_precision", "match_detections", "evaluate_detections", "mean_average_precision"]


def _as_numpy(name: str, value, *, ndim: int, last: int | None = None) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, (list, tuple)):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a tensor or an array, got {describe(value)}")
    if value.size == 0 and last is not None:
        value = value.reshape(0, last)
    if value.ndim != ndim or (last is not None and value.shape[-1] != last):
        want = f"(K, {last})" if last else "(K, H, W)" if ndim == 3 else "(K,)"
        raise ValueError(f"{name} must have shape {want}, got {value.shape}")
    return value


def average_precision(recall, precision) -> float:
    """Area under the precision-recall curve with all-point interpolation.

    recall, precision: (K,) values after each of K ranked detections (recall non-decreasing).
    Precision is first replaced by its running maximum from the right (the monotone envelope);
    AP = sum over k of (recall[k] - recall[k - 1]) * envelope[k], with recall[-1] = 0.
    """
    recall = _as_numpy("recall", recall, ndim=1).astype(np.float64)
    precision = _as_numpy("precision", precision, ndim=1).astype(np.float64)
    if recall.shape != precision.shape:
        raise ValueError(f"recall and precision must have the same shape, got {recall.shape} and {precision.shape}")
    if recall.size == 0:
        return 0.0
    if np.any(np.diff(recall) < 0):
        raise ValueError("recall must be non-decreasing (detections in order of decreasing score)")
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(steps * envelope))


def match_detections(det_boxes, det_scores, gt_boxes, iou_threshold: float = 0.5, *, iou_fn=None) -> np.ndarray:
    """True-positive flags of one image's detections of one class, in the order given.

    Detections are processed by decreasing score (stable); each takes the unmatched ground-truth box
    with the highest IoU if that IoU is >= ``iou_threshold``. Returns (K,) bool, aligned with the input.
    ``iou_fn(det, gt) -> (K, G)`` replaces the box IoU, e.g. mask IoU with (K, H, W) masks for both.
    """
    if iou_fn is None:
        det_boxes = _as_numpy("det_boxes", det_boxes, ndim=2, last=4).astype(np.float64)
        gt_boxes = _as_numpy("gt_boxes", gt_boxes, ndim=2, last=4).astype(np.float64)
        iou_fn = box_iou
    det_scores = _as_numpy("det_scores", det_scores, ndim=1).astype(np.float64)
    iou_threshold = require_float("iou_threshold", iou_threshold, minimum=0, maximum=1)
    if len(det_scores) != len(det_boxes):
        raise ValueError(f"det_scores must have one entry per box ({len(det_boxes)}), got {len(det_scores)}")
    hits = np.zeros(len(det_boxes), dtype=bool)
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return hits
    ious = np.asarray(iou_fn(det_boxes, gt_boxes), dtype=np.float64)
    taken = np.zeros(len(gt_boxes), dtype=bool)
    for d in np.argsort(-det_scores, kind="stable"):
        candidates = np.where(taken, -1.0, ious[d])
        g = int(candidates.argmax())
        if candidates[g] >= iou_threshold:
            taken[g] = True
            hits[d] = True
    return hits


def _check_images(detections, targets, key: str = "boxes") -> tuple[list[dict], list[dict]]:
    if not isinstance(detections, Sequence) or not isinstance(targets, Sequence):
        raise TypeError(f"detections and targets must be lists with one dict per image, got "
                        f"{describe(detections)} and {describe(targets)}")
    if len(detections) != len(targets):
        raise ValueError(f"detections and targets must have one entry per image, got {len(detections)} and "
                         f"{len(targets)}")
    dets, gts = [], []
    for i, (det, gt) in enumerate(zip(detections, targets)):
        for name, item, keys in (("detections", det, (key, "scores", "labels")),
                                 ("targets", gt, (key, "labels"))):
            if not isinstance(item, dict) or any(k not in item for k in keys):
                raise ValueError(f"{name}[{i}] must be a dict with keys {keys}, got {describe(item)}")
        shape = {"ndim": 2, "last": 4} if key == "boxes" else {"ndim": 3}
        d = {key: _as_numpy(f"detections[{i}][{key!r}]", det[key], **shape),
             "scores": _as_numpy(f"detections[{i}]['scores']", det["scores"], ndim=1),
             "labels": _as_numpy(f"detections[{i}]['labels']", det["labels"], ndim=1)}
        g = {key: _as_numpy(f"targets[{i}][{key!r}]", gt[key], **shape),
             "labels": _as_numpy(f"targets[{i}]['labels']", gt["labels"], ndim=1)}
        if not len(d[key]) == len(d["scores"]) == len(d["labels"]):
            raise ValueError(f"detections[{i}] must have as many {key}, scores and labels")
        if len(g[key]) != len(g["labels"]):
            raise ValueError(f"targets[{i}] must have as many {key} as labels")
        dets.append(d)
        gts.append(g)
    return dets, gts


def evaluate_detections(detections, targets, *, iou_threshold: float = 0.5, classes=None, key: str = "boxes",
                        iou_fn=None) -> dict:
    """Per-class AP and their mean (mAP) at one IoU threshold.

    detections: one dict per image with ``key`` (K, 4) xyxy boxes, "scores" (K,), "labels" (K,); targets:
    one dict per image with ``key`` and "labels". classes: the class ids to evaluate (default: every label
    present in the targets); a class without any ground truth is left out of the mean.
    Masks instead of boxes: ``key="masks"`` ((K, H, W) each) and ``iou_fn`` a mask IoU.
    Returns {"map": float, "ap": {class: AP}, "num_gt": {class: count}, "precision": {class: (K,)},
    "recall": {class: (K,)}, "iou_threshold": float}. "map" is NaN when no class has ground truth.
    """
    iou_threshold = require_float("iou_threshold", iou_threshold, minimum=0, maximum=1)
    dets, gts = _check_images(detections, targets, key)
    if classes is None:
        classes = sorted({int(c) for g in gts for c in g["labels"]})
    classes = [int(c) for c in classes]
    result = {"ap": {}, "num_gt": {}, "precision": {}, "recall": {}, "iou_threshold": iou_threshold}
    for c in classes:
        scores, hits = [], []
        num_gt = 0
        for d, g in zip(dets, gts):
            mine = d["labels"] == c
            truth = g[key][g["labels"] == c]
            num_gt += len(truth)
            scores.append(d["scores"][mine].astype(np.float64))
            hits.append(match_detections(d[key][mine], d["scores"][mine], truth, iou_threshold, iou_fn=iou_fn))
        result["num_gt"][c] = num_gt
        if num_gt == 0:
            continue
        scores, hits = np.concatenate(scores), np.concatenate(hits)
        order = np.argsort(-scores, kind="stable")
        tp = np.cumsum(hits[order])
        fp = np.cumsum(~hits[order])
        recall = tp / num_gt
        precision = tp / np.maximum(tp + fp, 1)
        result["recall"][c], result["precision"][c] = recall, precision
        result["ap"][c] = average_precision(recall, precision)
    result["map"] = float(np.mean(list(result["ap"].values()))) if result["ap"] else float("nan")
    return result


def mean_average_precision(detections, targets, iou_threshold: float = 0.5, classes=None) -> float:
    """mAP at one IoU threshold (see :func:`evaluate_detections`)."""
    return evaluate_detections(detections, targets, iou_threshold=iou_threshold, classes=classes)["map"]
