"""Reference solutions of the DETR exercises: the Hungarian algorithm, GIoU, DETR's matching cost
and a batched matcher.

``trace_hungarian`` (not exported) records the steps of the same algorithm on a small matrix; the
notebook's step-by-step walk-through was generated from it (tests/test_detr.py keeps them in step).
"""
from __future__ import annotations

import numpy as np
import torch

from .._validate import describe, require_array, require_tensor
from ..boxes import box_cxcywh_to_xyxy

__all__ = ["hungarian_match", "generalized_box_iou", "detr_matching_cost", "match_batch"]


# ------------------------------------------------------------------------------------------------
# The Hungarian algorithm (shortest augmenting paths with potentials)
# ------------------------------------------------------------------------------------------------
def _require_cost(cost) -> np.ndarray:
    """A float64 copy of a 2-D cost matrix (array-like or CPU torch tensor)."""
    if isinstance(cost, torch.Tensor):
        cost = cost.detach().cpu().numpy()
    array = require_array("cost", cost, ndim=2)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"cost must hold real numbers, got {describe(array)}")
    return np.array(array, dtype=np.float64)


def _initial_potentials(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The classic first step: reduce columns (square matrices only) and rows, match zeros greedily.

    v[j] = min_i cost[i, j] (square only: in a wide matrix an unmatched column must keep v[j] = 0),
    then u[i] = min_j (cost[i, j] - v[j]); every reduced cost cost - u - v is >= 0 and each row gets
    the first free column where its reduced cost is 0. Rows left without a zero are matched later
    by augmenting paths (stopping here is the classic mistake).
    """
    n, m = cost.shape
    v = cost.min(0) if n == m else np.zeros(m)
    if not np.isfinite(v).all():
        v = np.zeros(m)
    u = (cost - v).min(1)
    if not np.isfinite(u).all():
        u = np.zeros(n)
    row_of_col = np.full(m, -1, dtype=np.int64)
    col_of_row = np.full(n, -1, dtype=np.int64)
    zeros = (cost - u[:, None] - v[None, :]) == 0
    for i in range(n):
        free_zeros = np.flatnonzero(zeros[i] & (row_of_col < 0))
        if free_zeros.size:
            col_of_row[i] = free_zeros[0]
            row_of_col[free_zeros[0]] = i
    return u, v, row_of_col, col_of_row


def _solve_wide(cost: np.ndarray, trace: list | None = None) -> np.ndarray:
    """Column of each row in a minimum-cost assignment of an (n, m) matrix with n <= m.

    Potentials u (rows) and v (columns) keep every reduced cost c[i, j] - u[i] - v[j] >= 0 and every
    matched pair at reduced cost 0, so the matching is optimal once complete. After the initial
    reduction, each unmatched row runs Dijkstra's algorithm on the reduced costs to find the shortest
    alternating path to a free column; flipping the path adds the row to the matching, and updating
    the potentials by the path lengths keeps both invariants. Each search is O(n m) (vectorised over
    columns), so the whole is O(n^2 m).
    """
    n, m = cost.shape
    u, v, row_of_col, col_of_row = _initial_potentials(cost)
    if trace is not None:
        trace.append({"row": None, "path": [], "length": 0.0, "u": u.copy(), "v": v.copy(),
                      "col_of_row": col_of_row.copy()})
    inf = np.inf
    reduced = np.empty(m)
    better = np.empty(m, dtype=bool)
    for start in range(n):
        if col_of_row[start] >= 0:
            continue
        open_dist = np.full(m, inf)                # tentative path lengths (+inf once final)
        dist = np.zeros(m)                         # final path lengths
        prev_row = np.full(m, -1, dtype=np.int64)  # the row the shortest path reaches each column from
        v_open = v.copy()                          # -inf at final columns: their reduced costs read +inf
        done = []                                  # columns whose shortest path is final, in order
        visited_rows = [start]
        row, reached = start, 0.0
        while True:
            np.subtract(cost[row], v_open, out=reduced)
            reduced += reached - u[row]
            np.less(reduced, open_dist, out=better)
            np.putmask(open_dist, better, reduced)
            np.putmask(prev_row, better, row)
            col = int(open_dist.argmin())
            reached = float(open_dist[col])
            if reached == inf:
                raise ValueError("cost matrix is infeasible: no assignment of every row avoids the forbidden "
                                 "(+inf) entries")
            owner = int(row_of_col[col])
            if owner >= 0 and np.count_nonzero(open_dist == reached) > 1:
                free = np.flatnonzero((open_dist == reached) & (row_of_col < 0))
                if free.size:  # among equally short paths prefer one that ends at a free column
                    col, owner = int(free[0]), -1
            dist[col] = reached
            open_dist[col] = inf
            v_open[col] = -inf
            done.append(col)
            if owner < 0:
                break
            row = owner
            visited_rows.append(row)
        path = _path_to(col, prev_row, col_of_row, start)
        # Potentials: every reduced cost stays >= 0 and the pairs on the new path become tight.
        u[start] += reached
        for r in visited_rows[1:]:
            u[r] += reached - dist[col_of_row[r]]
        done = np.array(done)
        v[done] -= reached - dist[done]
        for r, c in path:
            row_of_col[c] = r
            col_of_row[r] = c
        if trace is not None:
            trace.append({"row": start, "path": path, "length": reached, "u": u.copy(), "v": v.copy(),
                          "col_of_row": col_of_row.copy()})
    return col_of_row


def _path_to(sink: int, prev_row: np.ndarray, col_of_row: np.ndarray, start: int) -> list[tuple[int, int]]:
    """The (row, column) pairs of the augmenting path ending at ``sink``, from ``start``."""
    pairs, col = [], sink
    while True:
        row = int(prev_row[col])
        pairs.append((row, col))
        if row == start:
            return pairs[::-1]
        col = int(col_of_row[row])


def hungarian_match(cost) -> tuple[np.ndarray, np.ndarray]:
    """A minimum-cost assignment, like ``scipy.optimize.linear_sum_assignment``.

    cost: (n, m) array-like (numpy array, nested list or CPU torch tensor), rectangular in either
    direction; ``+inf`` marks a forbidden pair. Returns ``(rows, cols)``, two int64 arrays of length
    min(n, m), rows sorted ascending, such that ``cost[rows, cols].sum()`` is minimal.
    Raises ValueError for NaN or -inf entries and when no complete assignment avoids the +inf entries.
    """
    cost = _require_cost(cost)
    n, m = cost.shape
    if n == 0 or m == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if np.isnan(cost).any() or np.isneginf(cost).any():
        raise ValueError("cost matrix contains invalid numeric entries (NaN or -inf); use +inf for a "
                         "forbidden pair")
    if n <= m:
        return np.arange(n, dtype=np.int64), _solve_wide(cost)
    cols_of_transposed = _solve_wide(np.ascontiguousarray(cost.T))
    rows = cols_of_transposed
    order = np.argsort(rows)
    return rows[order].astype(np.int64), np.arange(m, dtype=np.int64)[order]


def trace_hungarian(cost) -> list[dict]:
    """The steps of :func:`hungarian_match` on a wide or square matrix.

    The first step is the initial reduction (``row`` None); then one step per row that needed an
    augmenting path: ``row`` (the row added), ``path`` (the (row, column) pairs of its augmenting
    path), ``length`` (the path's reduced length), ``u``, ``v`` (the potentials after the step) and
    ``col_of_row`` (the matching after the step, -1 for unmatched rows).
    """
    cost = _require_cost(cost)
    if cost.shape[0] > cost.shape[1]:
        raise ValueError(f"trace a wide or square matrix (transpose tall ones), got shape {cost.shape}")
    trace: list[dict] = []
    _solve_wide(cost, trace)
    return trace


def _pairs(matched, row_names, col_names) -> str:
    return ", ".join(f"{row_names[r]}–{col_names[c]}" for r, c in enumerate(matched) if c >= 0)


def render_trace_markdown(cost, row_names=None, col_names=None) -> str:
    """The traced steps of :func:`trace_hungarian` as Markdown tables (the notebook's walk-through).

    Each table shows the reduced costs cost - u - v after the step, the matched pairs in brackets.
    """
    cost = _require_cost(cost)
    n, m = cost.shape
    row_names = row_names or [f"r{i}" for i in range(n)]
    col_names = col_names or [f"c{j}" for j in range(m)]
    lines = []
    for step_no, step in enumerate(trace_hungarian(cost)):
        u, v, matched = step["u"], step["v"], step["col_of_row"]
        if step["row"] is None:
            unmatched = [row_names[i] for i in range(n) if matched[i] < 0]
            lines.append("**Step 0: reduce, then match zeros.** Subtract each column's minimum (v), then each "
                         "row's minimum (u); every reduced cost is now >= 0. Greedily matching zeros gives "
                         + _pairs(matched, row_names, col_names)
                         + (f"; {', '.join(unmatched)} found no free zero." if unmatched else "."))
        else:
            path = " → ".join(f"{row_names[r]}–{col_names[c]}" for r, c in step["path"])
            if step["length"] > 0:
                how = (f"its reduced length is {step['length']:g}, so the potentials change by the path lengths "
                       "until every pair on it is a zero")
            else:
                how = "it runs along zeros only, so the potentials stay as they are"
            lines.append(f"**Step {step_no}: augment from {row_names[step['row']]}.** The shortest alternating "
                         f"path to a free column is {path}: {how}. Flipping it (each row on the path moves to the "
                         "next column) gives " + _pairs(matched, row_names, col_names) + ".")
        lines.append("")
        lines.append("| reduced cost | " + " | ".join(col_names) + " | u |")
        lines.append("|---|" + "---|" * m + "---|")
        for i in range(n):
            cells = []
            for j in range(m):
                value = f"{cost[i, j] - u[i] - v[j] + 0.0:g}"
                cells.append(f"**[{value}]**" if matched[i] == j else value)
            lines.append(f"| {row_names[i]} | " + " | ".join(cells) + f" | {u[i] + 0.0:g} |")
        lines.append("| **v** | " + " | ".join(f"{x + 0.0:g}" for x in v) + " | |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------------------------
# Boxes and DETR's matching cost
# ------------------------------------------------------------------------------------------------
def _require_xyxy(name: str, boxes) -> torch.Tensor:
    boxes = require_tensor(name, boxes, shape=(None, 4), floating=True)
    if boxes.numel() and bool(((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any()):
        raise ValueError(f"{name} must be xyxy boxes with x2 >= x1 and y2 >= y1")
    return boxes


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of every pair: (N, 4) xyxy and (M, 4) xyxy -> (N, M), values in [-1, 1].

    GIoU = IoU - |C \\ (A ∪ B)| / |C| with C the smallest box enclosing A and B. Divisions by a zero
    area are guarded: IoU is 0 when the union is empty, the penalty is 0 when C is empty (so two
    identical points give 0, two distinct points -1), and neither values nor gradients become NaN.
    """
    a = _require_xyxy("boxes1", boxes1)
    b = _require_xyxy("boxes2", boxes2)
    if a.dtype != b.dtype:
        raise TypeError(f"boxes1 and boxes2 must have the same dtype, got {a.dtype} and {b.dtype}")
    tiny = torch.finfo(a.dtype).tiny
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    inter = (torch.minimum(a[:, None, 2:], b[None, :, 2:])
             - torch.maximum(a[:, None, :2], b[None, :, :2])).clamp_min(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    enclosing = (torch.maximum(a[:, None, 2:], b[None, :, 2:])
                 - torch.minimum(a[:, None, :2], b[None, :, :2])).prod(-1)
    iou = torch.where(union > 0, inter / union.clamp_min(tiny), torch.zeros_like(inter))
    penalty = torch.where(enclosing > 0, (enclosing - union) / enclosing.clamp_min(tiny), torch.zeros_like(inter))
    return iou - penalty


def detr_matching_cost(pred_logits: torch.Tensor, pred_boxes: torch.Tensor, tgt_labels: torch.Tensor,
                       tgt_boxes: torch.Tensor, w_class: float = 1.0, w_l1: float = 5.0, w_giou: float = 2.0,
                       giou_fn=None) -> torch.Tensor:
    """DETR's matching cost between Q predictions and K targets: (Q, K).

    pred_logits: (Q, C) class scores (softmax over the last axis gives probabilities);
    pred_boxes, tgt_boxes: (Q, 4), (K, 4) normalised (cx, cy, w, h); tgt_labels: (K,) ids in [0, C).
    cost[q, k] = -w_class * p_q(label_k) + w_l1 * ||box_q - box_k||_1 - w_giou * GIoU(box_q, box_k),
    the GIoU computed by ``giou_fn`` (default :func:`generalized_box_iou`) on xyxy corners.
    """
    pred_logits = require_tensor("pred_logits", pred_logits, ndim=2, floating=True)
    q, c = pred_logits.shape
    pred_boxes = require_tensor("pred_boxes", pred_boxes, shape=(q, 4), floating=True)
    tgt_labels = require_tensor("tgt_labels", tgt_labels, ndim=1, integer=True)
    tgt_boxes = require_tensor("tgt_boxes", tgt_boxes, shape=(len(tgt_labels), 4), floating=True)
    if tgt_labels.numel() and (int(tgt_labels.min()) < 0 or int(tgt_labels.max()) >= c):
        raise ValueError(f"tgt_labels must be class ids in [0, {c}), got {tgt_labels.tolist()}")
    giou_fn = generalized_box_iou if giou_fn is None else giou_fn
    prob = pred_logits.softmax(-1)
    cost_class = -prob[:, tgt_labels.long()]
    cost_l1 = (pred_boxes[:, None, :] - tgt_boxes[None, :, :]).abs().sum(-1)
    giou = giou_fn(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(tgt_boxes))
    return w_class * cost_class + w_l1 * cost_l1 - w_giou * giou


def match_batch(pred_logits: torch.Tensor, pred_boxes: torch.Tensor, targets, cost_fn, assign_fn) -> list:
    """Match each image's predictions to its targets on their own (DETR's HungarianMatcher).

    pred_logits: (B, Q, C); pred_boxes: (B, Q, 4); targets: list of B dicts with "labels" (K_i,) and
    "boxes" (K_i, 4). ``cost_fn(logits (Q, C), boxes (Q, 4), labels (K,), boxes (K, 4))`` gives a
    (Q, K) cost tensor, ``assign_fn(cost as a numpy array)`` a pair (rows, cols).
    Returns B pairs (pred_idx, tgt_idx) of int64 tensors, indices local to each image; an image without
    targets gets two empty tensors.
    """
    pred_logits = require_tensor("pred_logits", pred_logits, ndim=3, floating=True)
    b, q, _ = pred_logits.shape
    pred_boxes = require_tensor("pred_boxes", pred_boxes, shape=(b, q, 4), floating=True)
    if not isinstance(targets, (list, tuple)) or len(targets) != b:
        raise ValueError(f"targets must be a list of {b} dicts (one per image), got {describe(targets)}")
    matches = []
    with torch.no_grad():
        for i, target in enumerate(targets):
            labels, boxes = target["labels"], target["boxes"]
            if len(labels) == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                matches.append((empty, empty.clone()))
                continue
            cost = cost_fn(pred_logits[i], pred_boxes[i], labels, boxes)
            rows, cols = assign_fn(cost.detach().cpu().numpy())
            matches.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
    return matches
