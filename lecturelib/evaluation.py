"""Mean average precision (mAP) of detections against ground truth, shared by the detection topics.

For each class separately, every detection of that class (over all images) is taken in order of
decreasing score and matched to the ground-truth box of the same class and image with the highest
IoU among those not matched yet, if that IoU is at least the threshold (COCO's rule; ties in score
keep the order of the images). A matched detection is a true positive, any other a false positive,
and a ground-truth box is matched at most once. Precision and recall after each detection give the
precision-recall curve; the average precision (AP) is the area under its monotone envelope, using
every recall level (all-point interpolation, as in PASCAL VOC since 2010 and COCO's definition
without the 101-point sampling). mAP is the mean AP over the classes that have ground truth.

COCO's headline number is computed too (:func:`evaluate_coco`): the same matching, but AP sampled at
the 101 recall levels 0, 0.01, ..., 1 (the envelope's precision at the first detection reaching each
level, 0 beyond the last recall) and averaged over the IoU thresholds 0.5, 0.55, ..., 0.95 ("AP@[.5:.95]").
On a near-perfect detector its 101-point AP@0.5 is a little below the all-point value.

Ignored ground truth (PASCAL VOC's "difficult", COCO's "iscrowd"; here heavily occluded objects, see
``lecturelib.data.Shapes.ignore``): a target may carry "ignore" (G,) bool. Detections are matched to
regular objects first; one that matches none of them but overlaps an ignored object of its class at the
threshold is dropped from the ranking (neither a true nor a false positive; an ignored object may absorb
several detections, as VOC's difficult objects do), and ignored objects do not count in the recall.

    from lecturelib.evaluation import evaluate_detections, evaluate_coco
    result = evaluate_detections(detections, targets, iou_threshold=0.5)
    result["map"], result["ap"]          # mAP@0.5 and {class id: AP}
    evaluate_coco(detections, targets)["map"]   # COCO's 101-point AP@[.5:.95]

``detections``: one dict per image with "boxes" (K, 4) xyxy, "scores" (K,) and "labels" (K,);
``targets``: one dict per image with "boxes" (G, 4) xyxy, "labels" (G,) and optionally "ignore" (G,).
Tensors or arrays.

Keypoints are scored by :func:`pck`, the percentage of correct keypoints (a predicted keypoint is correct within
``alpha`` times the longer side of its object's box).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ._validate import describe, require_float
from .boxes import box_iou

__all__ = ["average_precision", "match_detections", "evaluate_detections", "mean_average_precision",
           "evaluate_coco", "COCO_IOU_THRESHOLDS", "COCO_RECALL_LEVELS", "pck"]

#: COCO's IoU thresholds 0.5, 0.55, ..., 0.95 (pycocotools: np.linspace(.5, .95, 10)).
COCO_IOU_THRESHOLDS = tuple(np.round(np.linspace(0.5, 0.95, 10), 2).tolist())
#: COCO's 101 recall levels 0, 0.01, ..., 1 (pycocotools: np.linspace(0, 1, 101)).
COCO_RECALL_LEVELS = np.linspace(0.0, 1.0, 101)
INTERPOLATIONS = ("all-point", "101-point")


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


def average_precision(recall, precision, interpolation: str = "all-point") -> float:
    """Area under the precision-recall curve.

    recall, precision: (K,) values after each of K ranked detections (recall non-decreasing).
    Precision is first replaced by its running maximum from the right (the monotone envelope).
    interpolation "all-point" (PASCAL VOC 2010+): AP = sum over k of (recall[k] - recall[k - 1]) *
    envelope[k], with recall[-1] = 0. "101-point" (COCO, pycocotools): the mean over the recall levels
    r = 0, 0.01, ..., 1 of the envelope at the first detection whose recall is >= r (0 if none reaches r).
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    recall = _as_numpy("recall", recall, ndim=1).astype(np.float64)
    precision = _as_numpy("precision", precision, ndim=1).astype(np.float64)
    if recall.shape != precision.shape:
        raise ValueError(f"recall and precision must have the same shape, got {recall.shape} and {precision.shape}")
    if recall.size == 0:
        return 0.0
    if np.any(np.diff(recall) < 0):
        raise ValueError("recall must be non-decreasing (detections in order of decreasing score)")
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    if interpolation == "101-point":
        first = np.searchsorted(recall, COCO_RECALL_LEVELS, side="left")
        sampled = np.where(first < len(recall), envelope[np.minimum(first, len(recall) - 1)], 0.0)
        return float(np.mean(sampled))
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(steps * envelope))


def match_detections(det_boxes, det_scores, gt_boxes, iou_threshold: float = 0.5, *, iou_fn=None,
                     gt_ignore=None, return_ignored: bool = False):
    """True-positive flags of one image's detections of one class, in the order given.

    Detections are processed by decreasing score (stable); each takes the unmatched regular ground-truth
    box with the highest IoU if that IoU is >= ``iou_threshold``. Returns (K,) bool, aligned with the input.
    ``iou_fn(det, gt) -> (K, G)`` replaces the box IoU, e.g. mask IoU with (K, H, W) masks for both.
    gt_ignore: (G,) bool, ignored objects: a detection matching no regular object but an ignored one at the
    threshold is "ignored" (not a hit); ``return_ignored=True`` returns (hits, ignored) for that.
    """
    ious = None
    if iou_fn is None:
        det_boxes = _as_numpy("det_boxes", det_boxes, ndim=2, last=4).astype(np.float64)
        gt_boxes = _as_numpy("gt_boxes", gt_boxes, ndim=2, last=4).astype(np.float64)
        iou_fn = box_iou
    det_scores = _as_numpy("det_scores", det_scores, ndim=1).astype(np.float64)
    iou_threshold = require_float("iou_threshold", iou_threshold, minimum=0, maximum=1)
    if len(det_scores) != len(det_boxes):
        raise ValueError(f"det_scores must have one entry per box ({len(det_boxes)}), got {len(det_scores)}")
    if len(det_boxes) and len(gt_boxes):
        ious = np.asarray(iou_fn(det_boxes, gt_boxes), dtype=np.float64)
    hits, ignored = _match(ious, det_scores, len(det_boxes), len(gt_boxes), gt_ignore, iou_threshold)
    return (hits, ignored) if return_ignored else hits


def _match(ious, det_scores, num_det: int, num_gt: int, gt_ignore, iou_threshold: float):
    """(hits, ignored) flags from the (K, G) IoU matrix (None when K or G is 0); see :func:`match_detections`."""
    hits = np.zeros(num_det, dtype=bool)
    ignored = np.zeros(num_det, dtype=bool)
    if gt_ignore is None:
        gt_ignore = np.zeros(num_gt, dtype=bool)
    gt_ignore = _as_numpy("gt_ignore", gt_ignore, ndim=1).astype(bool)
    if len(gt_ignore) != num_gt:
        raise ValueError(f"gt_ignore must have one entry per ground-truth object ({num_gt}), got {len(gt_ignore)}")
    if num_det == 0 or num_gt == 0:
        return hits, ignored
    taken = np.zeros(num_gt, dtype=bool)
    for d in np.argsort(-det_scores, kind="stable"):
        candidates = np.where(taken | gt_ignore, -1.0, ious[d])
        g = int(candidates.argmax())
        if candidates[g] >= iou_threshold:
            taken[g] = True
            hits[d] = True
        elif gt_ignore.any() and ious[d][gt_ignore].max() >= iou_threshold:
            ignored[d] = True
    return hits, ignored


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
        ignore = gt.get("ignore")
        g["ignore"] = (np.zeros(len(g["labels"]), dtype=bool) if ignore is None
                       else _as_numpy(f"targets[{i}]['ignore']", ignore, ndim=1).astype(bool))
        if not len(d[key]) == len(d["scores"]) == len(d["labels"]):
            raise ValueError(f"detections[{i}] must have as many {key}, scores and labels")
        if not len(g[key]) == len(g["labels"]) == len(g["ignore"]):
            raise ValueError(f"targets[{i}] must have as many {key} as labels (and ignore flags)")
        dets.append(d)
        gts.append(g)
    return dets, gts


def _class_ious(dets, gts, key: str, classes: list, iou_fn) -> dict:
    """{(image, class): (K, G) IoU of the image's detections and objects of that class, or None}."""
    iou_fn = box_iou if iou_fn is None else iou_fn
    ious = {}
    for i, (d, g) in enumerate(zip(dets, gts)):
        for c in classes:
            mine, truth = d["labels"] == c, g["labels"] == c
            if mine.any() and truth.any():
                det, gt = d[key][mine], g[key][truth]
                if key == "boxes":
                    det, gt = det.astype(np.float64), gt.astype(np.float64)
                ious[i, c] = np.asarray(iou_fn(det, gt), dtype=np.float64)
            else:
                ious[i, c] = None
    return ious


def _evaluate(dets, gts, ious, classes: list, iou_threshold: float, interpolation: str) -> dict:
    result = {"ap": {}, "num_gt": {}, "precision": {}, "recall": {}, "iou_threshold": iou_threshold,
              "interpolation": interpolation}
    for c in classes:
        scores, hits, kept = [], [], []
        num_gt = 0
        for i, (d, g) in enumerate(zip(dets, gts)):
            mine, truth = d["labels"] == c, g["labels"] == c
            ignore = g["ignore"][truth]
            num_gt += int((~ignore).sum())
            det_scores = d["scores"][mine].astype(np.float64)
            hit, skip = _match(ious[i, c], det_scores, int(mine.sum()), int(truth.sum()), ignore, iou_threshold)
            scores.append(det_scores)
            hits.append(hit)
            kept.append(~skip)
        result["num_gt"][c] = num_gt
        if num_gt == 0:
            continue
        kept = np.concatenate(kept)
        scores, hits = np.concatenate(scores)[kept], np.concatenate(hits)[kept]
        order = np.argsort(-scores, kind="stable")
        tp = np.cumsum(hits[order])
        fp = np.cumsum(~hits[order])
        recall = tp / num_gt
        precision = tp / np.maximum(tp + fp, 1)
        result["recall"][c], result["precision"][c] = recall, precision
        result["ap"][c] = average_precision(recall, precision, interpolation)
    result["map"] = float(np.mean(list(result["ap"].values()))) if result["ap"] else float("nan")
    return result


def evaluate_detections(detections, targets, *, iou_threshold: float = 0.5, classes=None, key: str = "boxes",
                        iou_fn=None, interpolation: str = "all-point") -> dict:
    """Per-class AP and their mean (mAP) at one IoU threshold.

    detections: one dict per image with ``key`` (K, 4) xyxy boxes, "scores" (K,), "labels" (K,); targets:
    one dict per image with ``key``, "labels" and optionally "ignore" (G,) bool (see the module docstring).
    classes: the class ids to evaluate (default: every label present in the targets); a class without any
    (regular) ground truth is left out of the mean.
    Masks instead of boxes: ``key="masks"`` ((K, H, W) each) and ``iou_fn`` a mask IoU.
    interpolation: "all-point" (PASCAL VOC 2010+, the default) or "101-point" (COCO).
    Returns {"map": float, "ap": {class: AP}, "num_gt": {class: count of regular objects}, "precision":
    {class: (K,)}, "recall": {class: (K,)}, "iou_threshold": float, "interpolation": str}; precision and
    recall leave out the ignored detections. "map" is NaN when no class has ground truth.
    """
    iou_threshold = require_float("iou_threshold", iou_threshold, minimum=0, maximum=1)
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    dets, gts = _check_images(detections, targets, key)
    if classes is None:
        classes = sorted({int(c) for g in gts for c in g["labels"]})
    classes = [int(c) for c in classes]
    return _evaluate(dets, gts, _class_ious(dets, gts, key, classes, iou_fn), classes, iou_threshold, interpolation)


def evaluate_coco(detections, targets, *, classes=None, key: str = "boxes", iou_fn=None,
                  iou_thresholds=COCO_IOU_THRESHOLDS) -> dict:
    """COCO's AP@[.5:.95]: 101-point AP per class and IoU threshold, averaged over both.

    Same inputs and matching as :func:`evaluate_detections` (ignored objects included); the IoU of every
    pair is computed once for all thresholds. Returns {"map": AP@[.5:.95] (mean over thresholds of the mean
    over classes), "map_per_threshold": {threshold: mAP}, "ap": {class: AP averaged over the thresholds}}.
    pycocotools also caps detections at 100 per image and splits by object area; the models here give at
    most 20 per image and every object is "small" or "medium", so neither changes the number.
    """
    dets, gts = _check_images(detections, targets, key)
    if classes is None:
        classes = sorted({int(c) for g in gts for c in g["labels"]})
    classes = [int(c) for c in classes]
    thresholds = [require_float("iou_thresholds", t, minimum=0, maximum=1) for t in iou_thresholds]
    if not thresholds:
        raise ValueError("iou_thresholds must not be empty")
    ious = _class_ious(dets, gts, key, classes, iou_fn)
    per = {t: _evaluate(dets, gts, ious, classes, t, "101-point") for t in thresholds}
    ap = {c: float(np.mean([per[t]["ap"][c] for t in thresholds])) for c in per[thresholds[0]]["ap"]}
    maps = {t: per[t]["map"] for t in thresholds}
    return {"map": float(np.mean(list(maps.values()))), "map_per_threshold": maps, "ap": ap}


def mean_average_precision(detections, targets, iou_threshold: float = 0.5, classes=None) -> float:
    """mAP at one IoU threshold (see :func:`evaluate_detections`)."""
    return evaluate_detections(detections, targets, iou_threshold=iou_threshold, classes=classes)["map"]


def _stack(name: str, value) -> np.ndarray:
    """A float64 array from an array or tensor, or from a list of them (one per image) concatenated along axis 0."""
    def plain(item):
        if isinstance(item, torch.Tensor):
            return item.detach().cpu().numpy()
        if isinstance(item, np.ndarray):
            return item
        raise TypeError(f"{name} must be a tensor, an array or a list of them (one per image), got {describe(item)}")
    if isinstance(value, (list, tuple)):
        parts = [plain(item) for item in value]
        if not parts or any(part.ndim == 0 for part in parts):
            raise ValueError(f"{name} as a list must hold one array per image (at least one), got {len(parts)} items")
        value = np.concatenate(parts)
    return plain(value).astype(np.float64)


def pck(predicted, keypoints, boxes, *, alpha: float = 0.1, visible_only: bool = True,
        any_order: bool = False) -> float:
    """PCK@alpha, the Percentage of Correct Keypoints: the share of the ground-truth keypoints whose prediction
    lies within ``alpha`` times the longer side of the object's box, max(x2 - x1, y2 - y1) (Yang & Ramanan's
    PCK with the bounding box as the scale; PCK@0.1 by default).

    predicted: (K, P, 2 or more) x, y per object and keypoint slot (a third column, a score, is ignored);
    keypoints: (K, P, 3) the ground truth (x, y, v), v as COCO (2 visible, 1 occluded, 0 not labelled);
    boxes: (K, 4) xyxy, each object's ground-truth box (the scale). Each may also be a list with one array per
    image (concatenated). Counted: the keypoints with v = 2 (``visible_only``) or v > 0; a keypoint is correct
    when the Euclidean distance <= alpha * the box's longer side. ``any_order=True`` lets each object's predicted
    slots be permuted among its labelled slots (v > 0) to get as many correct as possible (an order-free PCK:
    how much is lost to the slot order alone). Returns the share in [0, 1]; NaN if no keypoint is counted.
    """
    alpha = require_float("alpha", alpha, minimum=0)
    pred = _stack("predicted", predicted)
    truth = _stack("keypoints", keypoints)
    box = _stack("boxes", boxes)
    if box.size == 0:
        box = box.reshape(0, 4)
    if truth.ndim != 3 or truth.shape[2] != 3:
        raise ValueError(f"keypoints must have shape (K, P, 3), got {truth.shape}")
    if pred.ndim != 3 or pred.shape[:2] != truth.shape[:2] or pred.shape[2] < 2:
        raise ValueError(f"predicted must have shape ({truth.shape[0]}, {truth.shape[1]}, 2 or more) like "
                         f"keypoints, got {pred.shape}")
    if box.shape != (len(truth), 4):
        raise ValueError(f"boxes must have shape ({len(truth)}, 4), one per object, got {box.shape}")
    v = truth[..., 2]
    counted = v == 2 if visible_only else v > 0
    if not counted.any():
        return float("nan")
    scale = alpha * np.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])            # (K,)
    if not any_order:
        distance = np.linalg.norm(pred[..., :2] - truth[..., :2], axis=-1)              # (K, P)
        return float((distance <= scale[:, None])[counted].mean())
    from scipy.optimize import linear_sum_assignment
    correct = 0
    for k in np.flatnonzero(counted.any(1)):
        slots = np.flatnonzero(v[k] > 0)                                                # the labelled slots
        rows = np.flatnonzero(counted[k])
        distance = np.linalg.norm(pred[k][slots][:, None, :2] - truth[k][rows][None, :, :2], axis=-1)  # (slots, rows)
        hit = distance <= scale[k]                                                      # NaN: never a hit
        i, j = linear_sum_assignment(-hit.astype(np.float64))                          # as many hits as possible
        correct += int(hit[i, j].sum())
    return float(correct / counted.sum())
