"""DETR: detection as set prediction, trained through a bipartite (Hungarian) matching.

Demos, the training and evaluation of the tiny set predictor (the model is
``lecturelib.detr_models.TinyDETR``) and the widgets of the DETR notebook. The graded operations (the
Hungarian algorithm, generalised IoU, DETR's matching cost, the batched matcher) are NOT here: every
function that needs one takes it as an argument, so the notebook runs them with the student's code
and scripts/tests with ``lecturelib.reference`` (see ``lecturelib._student``).

Conventions: class ids index ``lecturelib.data.CLASSES``; logit 0 of a query is "no object"
(the background class), logits 1..4 the shapes. Boxes predicted and matched are normalised
(cx, cy, w, h) in [0, 1]; boxes drawn and evaluated are pixel xyxy like ``lecturelib.data``.
"""
from __future__ import annotations

import itertools
import warnings
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._student import call_student, function_or_reference
from ._validate import describe, require_array, require_callable, require_float, require_int, require_module
from .boxes import box_cxcywh_to_xyxy, denormalize_boxes, normalize_boxes
from .data import CLASSES, NUM_CLASSES, Shapes, image_batch
from .detr_models import TinyDETR
from .plot import display_only, explorer
from .evaluation import evaluate_coco, evaluate_detections
from .train import eval_mode, fit, load_pretrained_model, one_thread, shuffled_loader

__all__ = [
    "NO_OBJECT", "DEFAULT_WEIGHTS", "TinyDETR", "detr_targets", "DetrDataset", "detr_collate",
    "make_matcher", "hungarian_loss", "train_detr", "predict", "evaluate", "load_pretrained",
    "greedy_match", "assignment_total", "all_assignments", "toy_cost_matrix",
    "toy_matching_problem",
    "matching_view", "plot_matching", "matching_explorer", "show_detections", "show_matches",
    "assignment_changes",
]

NO_OBJECT = 0                                          #: logit index of "no object" (= background)
_IGNORED = -100                                        # class target of a query matched to an ignored object
DEFAULT_WEIGHTS = {"w_class": 1.0, "w_l1": 5.0, "w_giou": 2.0}  #: DETR's matching-cost weights


# ------------------------------------------------------------------------------------------------
# Greedy matching, the baseline that the Hungarian algorithm beats
# ------------------------------------------------------------------------------------------------
def greedy_match(cost) -> tuple[np.ndarray, np.ndarray]:
    """Repeatedly take the cheapest remaining pair whose row and column are both still free.

    cost: (n, m) array-like. Returns (rows, cols) int64 arrays of length min(n, m), rows sorted.
    Fast and intuitive, but an early cheap choice can force expensive ones later: not optimal.
    """
    cost = np.array(require_array("cost", cost, ndim=2), dtype=np.float64)
    n, m = cost.shape
    rows, cols = [], []
    work = cost.copy()
    for _ in range(min(n, m)):
        i, j = np.unravel_index(int(np.argmin(work)), work.shape)
        rows.append(i)
        cols.append(j)
        work[i, :] = np.inf
        work[:, j] = np.inf
    order = np.argsort(rows)
    return np.asarray(rows, dtype=np.int64)[order], np.asarray(cols, dtype=np.int64)[order]


def assignment_total(cost, rows, cols) -> float:
    """The total cost sum(cost[rows, cols]) of an assignment."""
    cost = require_array("cost", cost, ndim=2)
    return float(np.asarray(cost, dtype=np.float64)[np.asarray(rows), np.asarray(cols)].sum())


def toy_cost_matrix() -> np.ndarray:
    """The 3 x 3 example of the notebook where greedy matching is not optimal (greedy 11, optimum 8).

    Rows are predictions, columns objects: prediction 0 grabs object 2, its cheapest, although
    prediction 2 fits nothing else; the optimum gives object 2 to prediction 2.
    """
    return np.array([[9.0, 4.0, 1.0], [2.0, 3.0, 7.0], [7.0, 8.0, 2.0]])


def all_assignments(cost) -> list[tuple[tuple[int, ...], float]]:
    """Every assignment of a small square matrix with its total, cheapest first (n! of them; n <= 7)."""
    cost = np.asarray(require_array("cost", cost, ndim=2), dtype=np.float64)
    n, m = cost.shape
    if n != m or n > 7:
        raise ValueError(f"cost must be square with at most 7 rows, got shape {cost.shape}")
    totals = [(perm, float(cost[np.arange(n), list(perm)].sum())) for perm in itertools.permutations(range(n))]
    return sorted(totals, key=lambda item: item[1])


# ------------------------------------------------------------------------------------------------
# Data: normalised cxcywh targets
# ------------------------------------------------------------------------------------------------
def detr_targets(shapes: Shapes, index: int) -> dict:
    """{"labels": (K,) int64, "boxes": (K, 4) float32 normalised cxcywh, "ignore": (K,) bool} of one image;
    "ignore" flags the heavily occluded objects (``Shapes.ignore``), matched like the others but left out of
    the loss (:func:`hungarian_loss`)."""
    boxes = torch.from_numpy(np.asarray(shapes.boxes[index], dtype=np.float32)).reshape(-1, 4)
    return {"labels": torch.from_numpy(np.asarray(shapes.labels[index], dtype=np.int64)),
            "boxes": normalize_boxes(boxes, shapes.size),
            "ignore": torch.from_numpy(shapes[index].ignore)}


class DetrDataset(torch.utils.data.Dataset):
    """(image (3, H, W) float in [0, 1], target dict of :func:`detr_targets`) pairs of a Shapes."""

    def __init__(self, shapes: Shapes):
        if not isinstance(shapes, Shapes):
            raise TypeError(f"shapes must be a Shapes (from make_shapes), got {describe(shapes)}")
        self.shapes = shapes
        self.targets = [detr_targets(shapes, i) for i in range(len(shapes))]

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, index):
        i = self.shapes._check_index(index)
        image = torch.from_numpy(self.shapes.images[i]).permute(2, 0, 1).float().div_(255)
        return image, self.targets[i]


def detr_collate(batch):
    """Images stacked to (B, 3, H, W); targets kept as a list of dicts."""
    return torch.stack([image for image, _ in batch]), [target for _, target in batch]


# ------------------------------------------------------------------------------------------------
# Matching and the set loss
# ------------------------------------------------------------------------------------------------
def make_matcher(match_batch: Callable, cost_fn: Callable, assign_fn: Callable) -> Callable:
    """``matcher(outputs, targets)`` -> list of (pred_idx, tgt_idx), built from the three functions.

    match_batch: the batched matcher (yours or the reference); cost_fn: per image (Q, K) costs, e.g.
    ``functools.partial(detr_matching_cost, w_class=1, w_l1=5, w_giou=2)``; assign_fn: e.g.
    ``hungarian_match``. Matching runs without gradients.
    """
    for name, fn in (("match_batch", match_batch), ("cost_fn", cost_fn), ("assign_fn", assign_fn)):
        require_callable(name, fn)

    def matcher(outputs: dict, targets: list) -> list:
        with torch.no_grad(), one_thread():
            return match_batch(outputs["pred_logits"].detach(), outputs["pred_boxes"].detach(), targets,
                               cost_fn, assign_fn)
    return matcher


def hungarian_loss(outputs: dict, targets: list, indices: list, giou_fn: Callable, *,
                   no_object_weight: float = 0.1, w_class: float = 1.0, w_l1: float = 5.0,
                   w_giou: float = 2.0) -> dict:
    """DETR's set loss, given the matching ``indices`` (one (pred_idx, tgt_idx) pair per image).

    * classification: cross-entropy over ALL queries; a matched query must predict its object's
      class, every other query "no object" (class 0), whose term is down-weighted by
      ``no_object_weight`` (most queries are empty; without it the model learns to predict nothing);
    * boxes: for matched queries only, L1 on normalised (cx, cy, w, h) plus 1 - GIoU (``giou_fn``,
      pairwise on xyxy corners), each divided by the number of objects in the batch.
    A target's optional "ignore" (K,) bool (heavily occluded objects): a query matched to an ignored object
    takes part in no term (neither its class nor its box, nor "no object"), as an ignored object costs
    nothing at evaluation whether it is found or not.
    Returns {"loss": weighted total, "class": ..., "l1": ..., "giou": ...} (scalar tensors).
    """
    logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
    b, q, c = logits.shape
    target_classes = torch.full((b, q), NO_OBJECT, dtype=torch.int64, device=logits.device)
    pred_boxes, true_boxes = [], []
    for i, ((pred_idx, tgt_idx), target) in enumerate(zip(indices, targets)):
        pred_idx, tgt_idx = torch.as_tensor(pred_idx, dtype=torch.int64), torch.as_tensor(tgt_idx, dtype=torch.int64)
        target_classes[i, pred_idx] = target["labels"][tgt_idx].to(logits.device)
        ignore = target.get("ignore")
        if ignore is not None:
            skip = torch.as_tensor(ignore, dtype=torch.bool)[tgt_idx]
            target_classes[i, pred_idx[skip]] = _IGNORED
            pred_idx, tgt_idx = pred_idx[~skip], tgt_idx[~skip]
        pred_boxes.append(boxes[i, pred_idx])
        true_boxes.append(target["boxes"][tgt_idx].to(boxes.device))
    class_weight = torch.ones(c, device=logits.device)
    class_weight[NO_OBJECT] = require_float("no_object_weight", no_object_weight, minimum=0)
    loss_class = F.cross_entropy(logits.reshape(b * q, c), target_classes.reshape(-1), weight=class_weight,
                                 ignore_index=_IGNORED)
    pred_boxes, true_boxes = torch.cat(pred_boxes), torch.cat(true_boxes)
    num_boxes = max(len(true_boxes), 1)
    if len(true_boxes):
        loss_l1 = (pred_boxes - true_boxes).abs().sum() / num_boxes
        giou = giou_fn(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(true_boxes)).diagonal()
        loss_giou = (1 - giou).sum() / num_boxes
    else:
        loss_l1 = loss_giou = boxes.sum() * 0.0
    total = w_class * loss_class + w_l1 * loss_l1 + w_giou * loss_giou
    return {"loss": total, "class": loss_class, "l1": loss_l1, "giou": loss_giou}


def _set_loss_fn(matcher: Callable, giou_fn: Callable, no_object_weight: float, aux: bool) -> Callable:
    def loss_fn(outputs: dict, targets: list) -> torch.Tensor:
        layers = [outputs] + (list(outputs.get("aux", [])) if aux else [])
        total = 0.0
        for layer_outputs in layers:
            indices = matcher(layer_outputs, targets)
            total = total + hungarian_loss(layer_outputs, targets, indices, giou_fn,
                                           no_object_weight=no_object_weight)["loss"]
        return total
    return loss_fn


class _AllLayers(nn.Module):
    """Wraps a TinyDETR so that ``fit`` gets the auxiliary (earlier decoder layer) outputs too."""

    def __init__(self, model: TinyDETR):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model(images, all_layers=True)


def train_detr(model: TinyDETR, train: Shapes, *, matcher: Callable, giou_fn: Callable, epochs: int,
               lr: float = 1e-3, batch_size: int = 64, no_object_weight: float = 0.1, aux_loss: bool = False,
               schedule: str = "onecycle", seed: int = 0, progress: bool = True) -> list[float]:
    """Train with the Hungarian set loss; returns the mean training loss of each epoch.

    matcher: from :func:`make_matcher` (your functions or the reference); giou_fn: the GIoU used by the
    loss. AdamW (weight decay 1e-4), gradient norm clipped to 1, ``schedule`` as in ``lecturelib.train.fit``;
    with ``aux_loss`` every decoder layer is matched and supervised (as in DETR).
    """
    if not isinstance(model, TinyDETR):
        raise TypeError(f"model must be a TinyDETR, got {describe(model)}")
    if not isinstance(train, Shapes):
        raise TypeError(f"train must be a Shapes (from make_shapes), got {describe(train)}")
    require_callable("matcher", matcher)
    require_callable("giou_fn", giou_fn)
    loader = shuffled_loader(DetrDataset(train), batch_size, seed, detr_collate)
    loss_fn = _set_loss_fn(matcher, giou_fn, no_object_weight, aux_loss)
    wrapped = _AllLayers(model)
    return fit(wrapped, loader, loss_fn, epochs=epochs, lr=lr, schedule=schedule, grad_clip=1.0,
               progress=progress)


# ------------------------------------------------------------------------------------------------
# Prediction and evaluation
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def predict(model: nn.Module, images, batch_size: int = 256) -> list[dict]:
    """Every query's prediction for each image, as one dict per image.

    images: (N, 3, 64, 64) float tensor, uint8 (N, 64, 64, 3) array or a Shapes.
    Each dict: "boxes" (Q, 4) pixel xyxy, "scores" (Q,) the probability of the best object class,
    "labels" (Q,) that class (1..4), "keep" (Q,) bool, True where the most likely class is an object
    (not "no object"), "probs" (Q, C) all class probabilities, "cxcywh" (Q, 4) normalised boxes.
    """
    require_module("model", model)
    x = image_batch(images)
    size = x.shape[-1]
    results = []
    with eval_mode(model):
        for start in range(0, len(x), require_int("batch_size", batch_size, minimum=1)):
            out = model(x[start:start + batch_size])
            probs = out["pred_logits"].softmax(-1)
            scores, labels = probs[..., 1:].max(-1)
            keep = probs.argmax(-1) != NO_OBJECT
            for i in range(len(probs)):
                results.append({"boxes": denormalize_boxes(out["pred_boxes"][i], size), "scores": scores[i],
                                "labels": labels[i] + 1, "keep": keep[i], "probs": probs[i],
                                "cxcywh": out["pred_boxes"][i]})
    return results


def evaluate(model: nn.Module, shapes: Shapes, iou_threshold: float = 0.5, coco: bool = False) -> dict:
    """mAP of the model's queries on held-out shapes, and how often it counts the objects right.

    Every query is a detection scored by its best object-class probability (DETR's protocol: no
    threshold, no NMS); AP is all-point (PASCAL VOC 2010+), heavily occluded objects (``Shapes.ignore``) are
    ignored as VOC's "difficult" ones. Count accuracy: the share of images whose number of "kept" queries
    (most likely class is an object) equals the number of objects (any number between the regular objects
    and all objects, ignored ones included).
    Returns {"map", "ap" (per class), "count_accuracy", "images"}; with ``coco=True`` also "coco": COCO's
    101-point AP@[.5:.95].
    """
    if not isinstance(shapes, Shapes):
        raise TypeError(f"shapes must be a Shapes (from make_shapes), got {describe(shapes)}")
    predictions = predict(model, shapes)
    targets = [shapes.targets(i) for i in range(len(shapes))]
    result = evaluate_detections(predictions, targets, iou_threshold=iou_threshold,
                                 classes=range(1, len(CLASSES)))
    counts = np.array([int(p["keep"].sum()) for p in predictions])
    ignored = np.array([int(flags.sum()) for flags in shapes.ignore])
    regular = shapes.object_counts() - ignored
    scores = {"map": result["map"], "ap": result["ap"],
              "count_accuracy": float(np.mean((counts >= regular) & (counts <= regular + ignored))),
              "images": len(shapes)}
    if coco:
        scores["coco"] = evaluate_coco(predictions, targets, classes=range(1, len(CLASSES)))["map"]
    return scores


def assignment_changes(previous: list, current: list) -> float:
    """Share of images whose matching differs between two calls of a matcher (same images)."""
    if len(previous) != len(current):
        raise ValueError(f"previous and current must have one entry per image, got {len(previous)} and {len(current)}")
    if not previous:
        return 0.0

    def as_set(pair):
        return set(zip(torch.as_tensor(pair[0]).tolist(), torch.as_tensor(pair[1]).tolist()))
    return float(np.mean([as_set(a) != as_set(b) for a, b in zip(previous, current)]))


# ------------------------------------------------------------------------------------------------
# Pretrained weights
# ------------------------------------------------------------------------------------------------
def load_pretrained(name: str = "detr_shapes") -> TinyDETR:
    """The shipped TinyDETR (eval mode, CPU), trained by ``python scripts/train_weights.py detr``.

    ``model.metadata`` holds how it was made (command, seed, epochs, held-out mAP@0.5...).
    """
    return load_pretrained_model(name, {"detr_shapes": TinyDETR}, "python scripts/train_weights.py detr")

# ------------------------------------------------------------------------------------------------
# The matching explorer: how the cost weights decide who is matched to whom
# ------------------------------------------------------------------------------------------------
def _logits_from_probs(probs: dict, num_classes: int = NUM_CLASSES, rest: float = 0.02) -> np.ndarray:
    p = np.full(num_classes, rest)
    for label, value in probs.items():
        p[label] = value
    return np.log(p / p.sum())


def toy_matching_problem() -> dict:
    """Two objects (a square and a triangle) and four predictions built so that the weights matter.

    p0 sits exactly on the square but believes "triangle"; p1 is sure it sees a square but its box is
    off; p2 sits on the triangle, unsure of its class; p3 is an empty slot. With DETR's weights (1, 5, 2)
    geometry wins (p0-square, p2-triangle); with the class term alone p1 takes the square and p0 the
    triangle; with (2, 1, 1) p1-square, p2-triangle.
    Returns a dict: "image" (64, 64, 3) uint8, "pred_logits" (4, 5), "pred_boxes" (4, 4) cxcywh,
    "tgt_labels" (2,), "tgt_boxes" (2, 4) cxcywh (float64 tensors), "pred_names", "tgt_names".
    """
    from .data import make_shapes
    shapes = make_shapes(1, seed=1, min_objects=2, max_objects=2, occlusion=False, background="noise")
    square, triangle = shapes.boxes[0].astype(np.float64)
    pred_xyxy = np.array([square + [1, -1, 1, 0], square + [7, 6, 5, 6], triangle + [-1, 1, 0, 1], [4, 4, 14, 12]])
    logits = np.stack([_logits_from_probs({3: 0.6, 2: 0.25}), _logits_from_probs({2: 0.85}),
                       _logits_from_probs({3: 0.45, 2: 0.3}), _logits_from_probs({NO_OBJECT: 0.85})])
    labels = shapes.labels[0]
    return {"image": shapes.images[0], "pred_logits": torch.from_numpy(logits),
            "pred_boxes": normalize_boxes(torch.from_numpy(pred_xyxy), shapes.size),
            "tgt_labels": torch.from_numpy(labels),
            "tgt_boxes": normalize_boxes(torch.from_numpy(shapes.boxes[0].astype(np.float64)), shapes.size),
            "pred_names": [f"p{i}" for i in range(len(logits))],
            "tgt_names": [f"{CLASSES[int(c)]}" for c in labels]}


def matching_view(problem: dict, cost_fn: Callable, assign_fn: Callable, w_class: float = 1.0,
                  w_l1: float = 5.0, w_giou: float = 2.0) -> dict:
    """The cost matrix, its three terms and the matching for one setting of the weights (pure compute).

    cost_fn(pred_logits, pred_boxes, tgt_labels, tgt_boxes, w_class=, w_l1=, w_giou=) -> (Q, K) tensor
    (your ``detr_matching_cost``); assign_fn(cost as numpy) -> (rows, cols) (your ``hungarian_match``).
    Returns {"cost" (Q, K), "terms" {"class", "l1", "giou"}: (Q, K) each unweighted, "rows", "cols",
    "total", "weights"}, or {"error": message, "weights"} if one of the functions failed.
    """
    weights = {"w_class": float(w_class), "w_l1": float(w_l1), "w_giou": float(w_giou)}
    args = (problem["pred_logits"], problem["pred_boxes"], problem["tgt_labels"], problem["tgt_boxes"])

    def match():
        cost = torch.as_tensor(cost_fn(*args, **weights)).detach().cpu().numpy().astype(np.float64)
        terms = {name: torch.as_tensor(cost_fn(*args, **one_hot)).detach().cpu().numpy().astype(np.float64)
                 for name, one_hot in (("class", {"w_class": 1.0, "w_l1": 0.0, "w_giou": 0.0}),
                                       ("l1", {"w_class": 0.0, "w_l1": 1.0, "w_giou": 0.0}),
                                       ("giou", {"w_class": 0.0, "w_l1": 0.0, "w_giou": 1.0}))}
        rows, cols = assign_fn(cost)
        return cost, terms, np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)

    matched, error = call_student(match, what="detr_matching_cost and hungarian_match")
    if error:
        return {"weights": weights, "error": error}
    cost, terms, rows, cols = matched
    return {"weights": weights, "cost": cost, "terms": terms, "rows": rows, "cols": cols,
            "total": float(cost[rows, cols].sum()) if len(rows) else 0.0}


def _draw_problem(ax, problem: dict, view: dict) -> None:
    from matplotlib.patches import Rectangle

    from .plot import class_color
    size = problem["image"].shape[0]
    ax.imshow(problem["image"])
    probs = problem["pred_logits"].softmax(-1).numpy()
    pred_xyxy = denormalize_boxes(problem["pred_boxes"], size).numpy()
    tgt_xyxy = denormalize_boxes(problem["tgt_boxes"], size).numpy()
    for k, (x1, y1, x2, y2) in enumerate(tgt_xyxy):
        color = class_color(int(problem["tgt_labels"][k]))
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=2.5))
        ax.text(x1 - 0.5, y2 + 0.5, problem["tgt_names"][k], color="black", fontsize=7, va="top",
                bbox=dict(facecolor=color, alpha=0.8, pad=1, edgecolor="none"))
    for q, (x1, y1, x2, y2) in enumerate(pred_xyxy):
        best = int(probs[q].argmax())
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor="white",
                               linewidth=1.2, linestyle="--"))
        name = "no object" if best == NO_OBJECT else CLASSES[best]
        ax.text(x2, y1 - 0.5, f"{problem['pred_names'][q]}: {name} {probs[q, best]:.2f}", color="white",
                fontsize=6.5, va="bottom", ha="right", bbox=dict(facecolor="black", alpha=0.6, pad=1, edgecolor="none"))
    if "rows" in view:
        for q, k in zip(view["rows"], view["cols"]):
            (px, py), (tx, ty) = pred_xyxy[q].reshape(2, 2).mean(0), tgt_xyxy[k].reshape(2, 2).mean(0)
            ax.annotate("", xy=(tx, ty), xytext=(px, py), arrowprops=dict(arrowstyle="->", color="yellow", lw=2))
    ax.set_xlim(-0.5, size - 0.5)
    ax.set_ylim(size - 0.5, -0.5)
    ax.set_axis_off()
    ax.set_title("objects (solid), predictions (dashed), matches (arrows)", fontsize=8)


def _draw_cost(ax, matrix: np.ndarray, view: dict, problem: dict, title: str) -> None:
    from matplotlib.patches import Rectangle
    im = ax.imshow(matrix, cmap="viridis_r", aspect="auto")
    for (q, k), value in np.ndenumerate(matrix):
        ax.text(k, q, f"{value:.2f}", ha="center", va="center", fontsize=8,
                color="white" if value > (matrix.min() + matrix.max()) / 2 else "black")
    if "rows" in view:
        for q, k in zip(view["rows"], view["cols"]):
            ax.add_patch(Rectangle((k - 0.5, q - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
    ax.set_xticks(range(matrix.shape[1]), problem["tgt_names"], fontsize=8)
    ax.set_yticks(range(matrix.shape[0]), problem["pred_names"], fontsize=8)
    ax.set_title(title, fontsize=9)
    return im


@display_only
def plot_matching(view: dict, problem: dict, fig=None):
    """Draw a :func:`matching_view`: the image with boxes and matches, the cost heat map with the
    matched cells outlined, and the three unweighted terms."""
    import matplotlib.pyplot as plt
    if fig is None:
        fig = plt.figure(figsize=(12, 3.6))
    fig.clear()
    axes = fig.subplots(1, 5, gridspec_kw={"width_ratios": [1.3, 1.1, 0.8, 0.8, 0.8]})
    _draw_problem(axes[0], problem, view)
    w = view["weights"]
    if "error" in view:
        for ax in axes[1:]:
            ax.axis("off")
        axes[1].text(0, 0.5, view["error"], wrap=True, fontsize=10, color="crimson", transform=axes[1].transAxes)
    else:
        _draw_cost(axes[1], view["cost"], view, problem,
                   f"cost ({w['w_class']:g}, {w['w_l1']:g}, {w['w_giou']:g}), total {view['total']:.2f}")
        for ax, (name, title) in zip(axes[2:], (("class", "-p(class)"), ("l1", "L1 (cx, cy, w, h)"),
                                                ("giou", "-GIoU"))):
            _draw_cost(ax, view["terms"][name], view, problem, title)
    with warnings.catch_warnings():  # the error text may not fit: no "tight layout not applied" on stderr
        warnings.simplefilter("ignore")
        fig.set_layout_engine("tight")
    return fig


@display_only
def matching_explorer(cost_fn: Callable | None = None, assign_fn: Callable | None = None,
                      problem: dict | None = None):
    """Sliders for the three cost weights over the toy problem; redraws the cost and the matching.

    Pass your ``detr_matching_cost`` and ``hungarian_match``; without them the reference is used where
    it ships (instructor copy). Returns the ipywidgets box; ``box.interactive.result`` is the last view.
    """
    import ipywidgets as widgets

    cost_fn = function_or_reference(cost_fn, "detr_matching_cost", "detr")
    assign_fn = function_or_reference(assign_fn, "hungarian_match", "detr")
    problem = problem or toy_matching_problem()
    sliders = {"w_class": widgets.FloatSlider(1.0, min=0, max=5, step=0.25, description="w_class"),
               "w_l1": widgets.FloatSlider(5.0, min=0, max=10, step=0.5, description="w_l1"),
               "w_giou": widgets.FloatSlider(2.0, min=0, max=5, step=0.25, description="w_giou")}

    def view(w_class, w_l1, w_giou):
        return matching_view(problem, cost_fn, assign_fn, w_class, w_l1, w_giou)

    return explorer(sliders, view, lambda v: plot_matching(v, problem))


# ------------------------------------------------------------------------------------------------
# Drawing predictions and matches on images
# ------------------------------------------------------------------------------------------------
@display_only
def show_detections(shapes: Shapes, predictions: list, max_images: int = 6, show_empty: bool = True):
    """Held-out images with their objects (top row) and the model's kept queries (bottom row).

    predictions: from :func:`predict` on ``shapes``. Queries whose most likely class is "no object" are
    drawn faint (``show_empty``), to show that the model always outputs all its queries.
    """
    from .plot import draw_boxes, truth_over_predictions
    fig, axes = truth_over_predictions(shapes, max_images)
    for i in range(axes.shape[1]):
        p = predictions[i]
        keep = p["keep"].numpy()
        boxes, labels, scores = p["boxes"].numpy(), p["labels"].numpy(), p["scores"].numpy()
        if show_empty and (~keep).any():
            draw_boxes(axes[1, i], boxes[~keep], color=(1, 1, 1, 0.35), linewidth=0.8)
        draw_boxes(axes[1, i], boxes[keep], labels[keep], scores[keep])
        axes[0, i].set_title(f"{len(shapes.labels[i])} objects", fontsize=8)
        axes[1, i].set_title(f"{int(keep.sum())} kept of {len(keep)} queries", fontsize=8)
    fig.set_layout_engine("tight")
    return fig


@display_only
def show_matches(shapes: Shapes, predictions: list, matches: list, max_images: int = 6):
    """Each image with its objects (solid) and the queries matched to them (dashed, same colour), as
    chosen by a matcher (``matches[i] = (pred_idx, tgt_idx)``); unmatched queries are not drawn."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from .plot import class_color
    n = min(require_int("max_images", max_images, minimum=1), len(shapes))
    fig, axes = plt.subplots(1, n, figsize=(2.1 * n, 2.4), squeeze=False)
    for i in range(n):
        ax = axes[0, i]
        ax.imshow(shapes.images[i])
        ax.set_axis_off()
        pred_idx, tgt_idx = (torch.as_tensor(x).tolist() for x in matches[i])
        for q, k in zip(pred_idx, tgt_idx):
            color = class_color(int(shapes.labels[i][k]))
            for (x1, y1, x2, y2), style in ((shapes.boxes[i][k], "-"), (predictions[i]["boxes"][q].tolist(), "--")):
                ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=color,
                                       linewidth=1.6, linestyle=style))
            ax.text(predictions[i]["boxes"][q][0].item(), predictions[i]["boxes"][q][1].item(), f"q{q}",
                    fontsize=6.5, color="black", va="bottom", bbox=dict(facecolor=color, alpha=0.8, pad=0.5,
                                                                        edgecolor="none"))
        ax.set_title(f"{len(pred_idx)} matched of {len(predictions[i]['scores'])} queries", fontsize=8)
    fig.set_layout_engine("tight")
    return fig
