"""Mutant library of the DETR exercises (format: ``mutants/__init__``).

Each mutant is a whole function the way a student would write it, with one realistic bug; its ``cause`` is
the text the hidden suite's report must contain. The alternatives are correct implementations written
differently from the reference (``lecturelib.reference.detr``).
"""
from __future__ import annotations

import numpy as np
import torch

from ...boxes import box_cxcywh_to_xyxy
from . import Alternative, Mutant


# ------------------------------------------------------------------------------------------------
# hungarian_match: cost (n, m) -> (rows, cols) int arrays of length min(n, m), rows sorted
# ------------------------------------------------------------------------------------------------
def _augment(cost: np.ndarray, *, like_cost: bool = False) -> np.ndarray:
    """A student's O(n^2 m) shortest-augmenting-path solver (e-maxx style, 1-based, vectorised over the
    columns) for n <= m: the column of each row. Raises ValueError when the +inf entries leave no
    complete assignment. ``like_cost``: the distances are allocated with the dtype of ``cost`` (the bug of
    :func:`hm_int_infinity`)."""
    n, m = cost.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    p, way = np.zeros(m + 1, dtype=np.int64), np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        p[0], j0 = i, 0
        minv = np.full_like(cost[0], np.inf, shape=(m + 1,)) if like_cost else np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            free = ~used[1:]
            current = cost[i0 - 1] - u[i0] - v[1:]
            better = free & (current < minv[1:])
            minv[1:][better] = current[better]
            way[1:][better] = j0
            candidates = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            if delta == np.inf:
                raise ValueError("cost matrix is infeasible")
            u[p[used]] += delta
            v[used] -= delta
            minv[~used] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    col_of_row = np.zeros(n, dtype=np.int64)
    for j in range(1, m + 1):
        if p[j]:
            col_of_row[p[j] - 1] = j - 1
    return col_of_row


def _empty():
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)


def _validate(cost: np.ndarray) -> None:
    if np.isnan(cost).any() or np.isneginf(cost).any():
        raise ValueError("cost matrix contains NaN or -inf")


def _solve(cost: np.ndarray):
    """Wide or square as it is; a tall matrix transposed, solved, swapped back and sorted by row."""
    n, m = cost.shape
    if n <= m:
        return np.arange(n), _augment(cost)
    rows = _augment(cost.T)
    order = np.argsort(rows)
    return rows[order], np.arange(m)[order]


def hm_greedy_cheapest_pair(cost):
    """Takes the cheapest remaining pair again and again (greedy), never revising a choice."""
    work = np.array(cost, dtype=float)
    rows, cols = [], []
    for _ in range(min(work.shape)):
        i, j = np.unravel_index(np.argmin(work), work.shape)
        rows.append(i)
        cols.append(j)
        work[i, :] = np.inf
        work[:, j] = np.inf
    order = np.argsort(rows)
    return np.array(rows, dtype=np.int64)[order], np.array(cols, dtype=np.int64)[order]


def hm_greedy_by_row(cost):
    """Gives each row its cheapest free column, in row order (greedy)."""
    cost = np.asarray(cost, dtype=float)
    if cost.shape[0] > cost.shape[1]:
        cols, rows = hm_greedy_by_row(cost.T)
        order = np.argsort(rows)
        return rows[order], cols[order]
    free = np.ones(cost.shape[1], bool)
    cols = []
    for row in cost:
        j = int(np.argmin(np.where(free, row, np.inf)))
        free[j] = False
        cols.append(j)
    return np.arange(cost.shape[0]), np.array(cols, dtype=np.int64)


def hm_reduce_then_pick_zeros(cost):
    """Reduces rows and columns, then each row takes a free zero, else its cheapest free reduced cost."""
    cost = np.asarray(cost, dtype=float)
    reduced = cost - cost.min(1, keepdims=True)
    reduced = reduced - reduced.min(0, keepdims=True)
    free = np.ones(cost.shape[1], bool)
    cols = []
    for row in reduced:
        zeros = np.flatnonzero((row == 0) & free)
        j = int(zeros[0]) if zeros.size else int(np.argmin(np.where(free, row, np.inf)))
        free[j] = False
        cols.append(j)
    return np.arange(cost.shape[0]), np.array(cols, dtype=np.int64)


def hm_reduce_only_zeros(cost):
    """Reduces rows and columns, then keeps only pairs on zeros (rows without a free zero are dropped)."""
    cost = np.asarray(cost, dtype=float)
    reduced = cost - cost.min(1, keepdims=True)
    reduced = reduced - reduced.min(0, keepdims=True)
    free = np.ones(cost.shape[1], bool)
    rows, cols = [], []
    for i, row in enumerate(reduced):
        zeros = np.flatnonzero((row == 0) & free)
        if zeros.size:
            free[zeros[0]] = False
            rows.append(i)
            cols.append(int(zeros[0]))
    return np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64)


def hm_tall_not_swapped_back(cost):
    """Solves the transpose of a tall matrix and returns its (rows, cols) without swapping them back."""
    cost = np.asarray(cost, dtype=float)
    if 0 in cost.shape:
        return _empty()
    _validate(cost)
    if cost.shape[0] > cost.shape[1]:
        return np.arange(cost.shape[1]), _augment(cost.T)
    return np.arange(cost.shape[0]), _augment(cost)


def hm_tall_unsorted(cost):
    """Swaps a tall matrix's result back but leaves the pairs in column order (rows not sorted)."""
    cost = np.asarray(cost, dtype=float)
    if 0 in cost.shape:
        return _empty()
    _validate(cost)
    if cost.shape[0] > cost.shape[1]:
        return _augment(cost.T), np.arange(cost.shape[1])
    return np.arange(cost.shape[0]), _augment(cost)


def hm_profit_matrix(cost):
    """Turns the costs into 'profits' (max - cost), as the maximising textbook version does, then minimises."""
    cost = np.asarray(cost, dtype=float)
    if 0 in cost.shape:
        return _empty()
    _validate(cost)
    return _solve(np.nanmax(cost[np.isfinite(cost)]) - cost)


def hm_no_validation(cost):
    """Never checks for NaN or -inf entries."""
    cost = np.asarray(cost, dtype=float)
    if 0 in cost.shape:
        return _empty()
    return _solve(cost)


def hm_nan_check_only(cost):
    """Checks for NaN entries but not for -inf."""
    cost = np.asarray(cost, dtype=float)
    if 0 in cost.shape:
        return _empty()
    if np.isnan(cost).any():
        raise ValueError("cost matrix contains NaN")
    return _solve(cost)


def hm_inf_as_large_number(cost):
    """Replaces +inf by 1e9 before solving, so an infeasible matrix returns a 'solution' instead of raising."""
    cost = np.asarray(cost, dtype=float)
    if 0 in cost.shape:
        return _empty()
    _validate(cost)
    return _solve(np.where(np.isposinf(cost), 1e9, cost))


def hm_any_inf_raises(cost):
    """Raises ValueError for any non-finite entry, although +inf only forbids one pair."""
    cost = np.asarray(cost, dtype=float)
    if 0 in cost.shape:
        return _empty()
    if not np.isfinite(cost).all():
        raise ValueError("cost matrix must be finite")
    return _solve(cost)


def hm_no_empty_case(cost):
    """Checks for -inf with cost.min(), which fails on a matrix without rows or columns."""
    cost = np.asarray(cost, dtype=float)
    if np.isnan(cost).any() or cost.min() == -np.inf:
        raise ValueError("cost matrix contains NaN or -inf")
    return _solve(cost)


def hm_reduce_rectangular(cost):
    """Subtracts the column minima, then the row minima (the classic first step) whatever the shape, then solves."""
    cost = np.asarray(cost, dtype=float)
    if 0 in cost.shape:
        return _empty()
    _validate(cost)
    finite = np.where(np.isfinite(cost), cost, np.nan)
    reduced = cost - np.nan_to_num(np.nanmin(finite, 0, keepdims=True))
    finite = np.where(np.isfinite(reduced), reduced, np.nan)
    return _solve(reduced - np.nan_to_num(np.nanmin(finite, 1, keepdims=True)))


def hm_int_infinity(cost):
    """Keeps an integer matrix as it is: np.full_like(cost[0], np.inf) then holds no infinity."""
    cost = np.asarray(cost)
    if 0 in cost.shape:
        return _empty()
    _validate(cost)
    if cost.shape[0] > cost.shape[1]:
        rows = _augment(cost.T, like_cost=True)
        order = np.argsort(rows)
        return rows[order], np.arange(cost.shape[1])[order]
    return np.arange(cost.shape[0]), _augment(cost, like_cost=True)


def hm_float_columns(cost):
    """Collects the matched columns in np.zeros(n) (float64) instead of an integer array."""
    cost = np.asarray(cost, dtype=float)
    if 0 in cost.shape:
        return _empty()
    _validate(cost)
    rows, cols = _solve(cost)
    out = np.zeros(len(rows))
    out[:] = cols
    return rows, out


def hm_reduce_in_place(cost):
    """Reduces the rows of the caller's array in place (cost -= row minima) before solving."""
    cost = np.asarray(cost, dtype=float)   # no copy when the caller's array is float already
    if 0 in cost.shape:
        return _empty()
    _validate(cost)
    finite_min = np.where(np.isfinite(cost), cost, np.inf).min(1, keepdims=True)
    cost -= np.where(np.isfinite(finite_min), finite_min, 0)
    return _solve(cost)


def hm_by_padding(cost):
    """Correct: pad a rectangular matrix with zero rows or columns to a square one, solve, drop the padding."""
    cost = np.asarray(cost, dtype=float)
    n, m = cost.shape
    if n == 0 or m == 0:
        return _empty()
    _validate(cost)
    size = max(n, m)
    square = np.zeros((size, size))
    square[:n, :m] = cost
    cols = _augment(square)
    keep = (np.arange(size) < n) & (cols < m)
    return np.flatnonzero(keep).astype(np.int64), cols[keep].astype(np.int64)


def hm_python_loops(cost):
    """Correct: the textbook O(n^2 m) potentials method with plain Python loops (e-maxx style), 1-based."""
    cost = np.asarray(cost, dtype=float)
    n, m = cost.shape
    if n == 0 or m == 0:
        return _empty()
    _validate(cost)
    if n > m:
        cols, rows = hm_python_loops(cost.T)
        order = np.argsort(rows)
        return rows[order], cols[order]
    inf = float("inf")
    u, v, p, way = [0.0] * (n + 1), [0.0] * (m + 1), [0] * (m + 1), [0] * (m + 1)
    a = cost.tolist()
    for i in range(1, n + 1):
        p[0], j0 = i, 0
        minv, used = [inf] * (m + 1), [False] * (m + 1)
        while True:
            used[j0] = True
            i0, delta, j1 = p[j0], inf, -1
            for j in range(1, m + 1):
                if not used[j]:
                    cur = a[i0 - 1][j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            if j1 < 0 or delta == inf:
                raise ValueError("cost matrix is infeasible")
            for j in range(m + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    col_of_row = np.zeros(n, dtype=np.int64)
    for j in range(1, m + 1):
        if p[j]:
            col_of_row[p[j] - 1] = j - 1
    return np.arange(n, dtype=np.int64), col_of_row


# ------------------------------------------------------------------------------------------------
# generalized_box_iou: (N, 4), (M, 4) xyxy -> (N, M), dtype of the input
# ------------------------------------------------------------------------------------------------
def _giou(boxes1, boxes2, **bug):
    """A student's broadcast GIoU of every pair: (N, 4), (M, 4) -> (N, M)."""
    return _giou_of(boxes1[:, None, :], boxes2[None, :, :], **bug)


def _giou_of(a, b, *, covered="union", clamp=True, guard="where", eps=0.0, empty_iou=0.0):
    """GIoU of broadcastable (..., 4) boxes; ``covered`` is what the penalty subtracts from the enclosing area."""
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    wh = torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])
    if clamp:
        wh = wh.clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a + area_b - inter
    ewh = torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])
    enclosing = ewh[..., 0] * ewh[..., 1]
    if guard == "where":
        iou = torch.where(union > 0, inter / union.clamp_min(1e-30), torch.full_like(union, empty_iou))
    else:
        iou = inter / (union + eps)
    if covered is None:
        return iou
    area = {"union": union, "inter": inter, "sum": area_a + area_b}[covered]
    if guard == "where":
        return iou - torch.where(enclosing > 0, (enclosing - area) / enclosing.clamp_min(1e-30),
                                 torch.zeros_like(enclosing))
    return iou - (enclosing - area) / (enclosing + eps)


def giou_plain_iou(boxes1, boxes2):
    """Returns the plain IoU: the enclosing-box penalty is never subtracted."""
    return _giou(boxes1, boxes2, covered=None)


def giou_unclamped(boxes1, boxes2):
    """Multiplies the overlap width and height without clamping them at 0."""
    return _giou(boxes1, boxes2, clamp=False)


def giou_penalty_inter(boxes1, boxes2):
    """The penalty subtracts the intersection from the enclosing area instead of the union."""
    return _giou(boxes1, boxes2, covered="inter")


def giou_penalty_area_sum(boxes1, boxes2):
    """The penalty subtracts |A| + |B| (the intersection counted twice) instead of the union."""
    return _giou(boxes1, boxes2, covered="sum")


def giou_unguarded(boxes1, boxes2):
    """Divides by the union and the enclosing area without a guard: 0 / 0 = NaN for zero-area boxes."""
    return _giou(boxes1, boxes2, guard="none")


def giou_empty_union_as_one(boxes1, boxes2):
    """Gives IoU 1 where the union is empty (two identical points "overlap perfectly")."""
    return _giou(boxes1, boxes2, empty_iou=1.0)


def giou_epsilon(boxes1, boxes2):
    """Adds an epsilon (1e-7) to both denominators instead of guarding them with torch.where."""
    return _giou(boxes1, boxes2, guard="eps", eps=1e-7)


def giou_epsilon_small(boxes1, boxes2):
    """Adds a tiny epsilon (1e-9) to both denominators instead of guarding them with torch.where."""
    return _giou(boxes1, boxes2, guard="eps", eps=1e-9)


def giou_paired(boxes1, boxes2):
    """Computes the GIoU of matching pairs (boxes1[i], boxes2[i]) instead of every pair."""
    return _giou_of(boxes1, boxes2)


def giou_as_cxcywh(boxes1, boxes2):
    """Converts the boxes from (cx, cy, w, h) to corners first, although they are corners already."""
    return _giou(box_cxcywh_to_xyxy(boxes1), box_cxcywh_to_xyxy(boxes2))


def giou_transposed(boxes1, boxes2):
    """Broadcasts boxes2 along the rows: the result is (M, N)."""
    return _giou(boxes2, boxes1)


def giou_float32_loops(boxes1, boxes2):
    """Fills torch.zeros(N, M) (float32, whatever the dtype of the boxes) pair by pair."""
    out = torch.zeros(len(boxes1), len(boxes2))
    for i in range(len(boxes1)):
        out[i] = _giou(boxes1[i:i + 1], boxes2)[0]
    return out


def giou_stack_rows(boxes1, boxes2):
    """Builds the matrix with torch.stack over the rows of boxes1, which fails when boxes1 is empty."""
    return torch.stack([_giou(box[None], boxes2)[0] for box in boxes1])


def giou_loops(boxes1, boxes2):
    """Correct: two loops over the pairs with Python max/min, into a tensor of the input's dtype."""
    out = torch.zeros(len(boxes1), len(boxes2), dtype=boxes1.dtype)
    for i, (ax1, ay1, ax2, ay2) in enumerate(boxes1.tolist()):
        for j, (bx1, by1, bx2, by2) in enumerate(boxes2.tolist()):
            inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
            union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
            hull = (max(ax2, bx2) - min(ax1, bx1)) * (max(ay2, by2) - min(ay1, by1))
            iou = inter / union if union > 0 else 0.0
            out[i, j] = iou - ((hull - union) / hull if hull > 0 else 0.0)
    return out


def giou_broadcast(boxes1, boxes2):
    """Correct: the broadcast formulas with torch.where guards."""
    return _giou(boxes1, boxes2)


# ------------------------------------------------------------------------------------------------
# detr_matching_cost: (Q, C), (Q, 4), (K,), (K, 4) -> (Q, K), dtype of the logits
# ------------------------------------------------------------------------------------------------
def _cost(pred_logits, pred_boxes, tgt_labels, tgt_boxes, w_class=1.0, w_l1=5.0, w_giou=2.0, giou_fn=None, *,
          bug=""):
    """A student's cost with a switch for each classic bug."""
    prob = pred_logits.softmax(0 if bug == "softmax_dim0" else -1)
    if bug == "logits":
        prob = pred_logits
    if bug == "log_prob":
        prob = pred_logits.log_softmax(-1)
    cls = prob[:, tgt_labels - 1] if bug == "labels_minus_one" else prob[:, tgt_labels]
    if bug == "l2":
        l1 = torch.cdist(pred_boxes, tgt_boxes, p=2)
    elif bug == "l1_xyxy":
        l1 = torch.cdist(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(tgt_boxes), p=1)
    else:
        l1 = torch.cdist(pred_boxes, tgt_boxes, p=1)
    if bug == "giou_cxcywh":
        giou = giou_fn(pred_boxes, tgt_boxes)
    else:
        giou = giou_fn(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(tgt_boxes))
    if bug == "ignore_weights":
        w_class, w_l1, w_giou = 1.0, 5.0, 2.0
    if bug == "swap_weights":
        w_class, w_l1 = w_l1, w_class
    sign = {"plus_class": (1, 1, -1), "plus_giou": (-1, 1, 1), "minus_l1": (-1, -1, -1)}.get(bug, (-1, 1, -1))
    out = sign[0] * w_class * cls + sign[1] * w_l1 * l1 + sign[2] * w_giou * giou
    return out.T if bug == "transposed" else out


def _cost_with(bug: str, doc: str):
    def cost(pred_logits, pred_boxes, tgt_labels, tgt_boxes, w_class=1.0, w_l1=5.0, w_giou=2.0, giou_fn=None):
        return _cost(pred_logits, pred_boxes, tgt_labels, tgt_boxes, w_class, w_l1, w_giou, giou_fn, bug=bug)
    cost.__doc__ = doc
    cost.__name__ = cost.__qualname__ = f"cost_{bug}"
    return cost


def cost_float32_loops(pred_logits, pred_boxes, tgt_labels, tgt_boxes, w_class=1.0, w_l1=5.0, w_giou=2.0,
                       giou_fn=None):
    """Fills torch.empty(Q, K) (float32, whatever the dtype of the logits) one target at a time."""
    prob = pred_logits.softmax(-1)
    giou = giou_fn(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(tgt_boxes))
    out = torch.empty(len(pred_logits), len(tgt_labels))
    for k in range(len(tgt_labels)):
        l1 = (pred_boxes - tgt_boxes[k]).abs().sum(-1)
        out[:, k] = -w_class * prob[:, tgt_labels[k]] + w_l1 * l1 - w_giou * giou[:, k]
    return out


def cost_stack_columns(pred_logits, pred_boxes, tgt_labels, tgt_boxes, w_class=1.0, w_l1=5.0, w_giou=2.0,
                       giou_fn=None):
    """Stacks one column per target with torch.stack, which fails when there are no targets (K = 0)."""
    prob = pred_logits.softmax(-1)
    giou = giou_fn(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(tgt_boxes))
    columns = [-w_class * prob[:, label] + w_l1 * (pred_boxes - box).abs().sum(-1) - w_giou * giou[:, k]
               for k, (label, box) in enumerate(zip(tgt_labels, tgt_boxes))]
    return torch.stack(columns, dim=1)


def cost_softmax_in_place(pred_logits, pred_boxes, tgt_labels, tgt_boxes, w_class=1.0, w_l1=5.0, w_giou=2.0,
                          giou_fn=None):
    """Computes the softmax in place on the caller's logits (exp_, then /=) to save memory."""
    prob = pred_logits.exp_()
    prob /= prob.sum(-1, keepdim=True)
    l1 = (pred_boxes[:, None, :] - tgt_boxes[None, :, :]).abs().sum(-1)
    giou = giou_fn(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(tgt_boxes))
    return -w_class * prob[:, tgt_labels] + w_l1 * l1 - w_giou * giou


def cost_one_hot(pred_logits, pred_boxes, tgt_labels, tgt_boxes, w_class=1.0, w_l1=5.0, w_giou=2.0, giou_fn=None):
    """Correct: the class term as probabilities times one-hot labels, the L1 term by broadcasting."""
    one_hot = torch.nn.functional.one_hot(tgt_labels, pred_logits.shape[1]).to(pred_logits.dtype)
    cls = pred_logits.softmax(-1) @ one_hot.T
    l1 = (pred_boxes[:, None, :] - tgt_boxes[None, :, :]).abs().sum(-1)
    giou = giou_fn(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(tgt_boxes))
    return -w_class * cls + w_l1 * l1 - w_giou * giou


def cost_cdist(pred_logits, pred_boxes, tgt_labels, tgt_boxes, w_class=1.0, w_l1=5.0, w_giou=2.0, giou_fn=None):
    """Correct: DETR's own formulation with torch.cdist(p=1)."""
    return _cost(pred_logits, pred_boxes, tgt_labels, tgt_boxes, w_class, w_l1, w_giou, giou_fn)


# ------------------------------------------------------------------------------------------------
# match_batch: (B, Q, C), (B, Q, 4), B targets, cost_fn, assign_fn -> B pairs of int64 tensors
# ------------------------------------------------------------------------------------------------
def _empty_pair():
    return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)


def batch_joint(pred_logits, pred_boxes, targets, cost_fn, assign_fn):
    """Solves one assignment over the whole batch (all queries against all targets), then splits it."""
    b, q = pred_logits.shape[:2]
    sizes = [len(t["labels"]) for t in targets]
    out = [_empty_pair() for _ in targets]
    if sum(sizes) == 0:
        return out
    cost = cost_fn(pred_logits.reshape(b * q, -1), pred_boxes.reshape(b * q, 4),
                   torch.cat([t["labels"] for t in targets]), torch.cat([t["boxes"] for t in targets]))
    rows, cols = assign_fn(cost.numpy())
    offsets = np.cumsum([0] + sizes)
    per_image = [([], []) for _ in targets]
    for r, c in zip(rows, cols):
        per_image[r // q][0].append(r % q)
        per_image[r // q][1].append(c - offsets[r // q])
    return [(torch.tensor(p, dtype=torch.int64), torch.tensor(t, dtype=torch.int64)) for p, t in per_image]


def _per_image(pred_logits, pred_boxes, targets, cost_fn, assign_fn, *, bug=""):
    """A student's loop over the images with a switch for each classic bug."""
    out, offset = [], 0
    for i, target in enumerate(targets):
        if len(target["labels"]) == 0:
            if bug == "skip_empty":
                continue
            out.append((torch.tensor([]), torch.tensor([])) if bug == "float_empty" else _empty_pair())
            continue
        image = 0 if bug == "first_image" else i
        cost = cost_fn(pred_logits[image], pred_boxes[image], target["labels"], target["boxes"])
        rows, cols = assign_fn(cost if bug == "torch_to_assign" else cost.numpy())
        rows, cols = torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)
        if bug == "swapped":
            rows, cols = cols, rows
        if bug == "global_offsets":
            rows, cols = rows + i * pred_logits.shape[1], cols + offset
        if bug == "int32":
            rows, cols = rows.int(), cols.int()
        if bug == "numpy":
            rows, cols = rows.numpy(), cols.numpy()
        offset += len(target["labels"])
        out.append((rows, cols))
    return out


def _batch_with(bug: str, doc: str):
    def match_batch(pred_logits, pred_boxes, targets, cost_fn, assign_fn):
        return _per_image(pred_logits, pred_boxes, targets, cost_fn, assign_fn, bug=bug)
    match_batch.__doc__ = doc
    match_batch.__name__ = match_batch.__qualname__ = f"batch_{bug}"
    return match_batch


def batch_comprehension(pred_logits, pred_boxes, targets, cost_fn, assign_fn):
    """Correct: a comprehension over zip(logits, boxes, targets), empty images through assign_fn itself."""
    def one(logits, boxes, target):
        cost = cost_fn(logits, boxes, target["labels"], target["boxes"]).detach().cpu().numpy()
        rows, cols = assign_fn(cost) if cost.shape[1] else (np.zeros(0, np.int64), np.zeros(0, np.int64))
        return torch.from_numpy(np.asarray(rows, np.int64)), torch.from_numpy(np.asarray(cols, np.int64))
    return [one(*item) for item in zip(pred_logits, pred_boxes, targets)]


# ------------------------------------------------------------------------------------------------
# The library
# ------------------------------------------------------------------------------------------------
_GREEDY = "that is the greedy assignment"
_RETURNED = "expected ValueError, but the function returned normally"

MUTANTS = {
    "hungarian_match": [
        Mutant("greedy: cheapest pair first", hm_greedy_cheapest_pair, _GREEDY),
        Mutant("greedy: each row its cheapest column", hm_greedy_by_row, _GREEDY),
        Mutant("reduce, then pick zeros", hm_reduce_then_pick_zeros, "picking zeros is not enough"),
        Mutant("reduce, then only zeros", hm_reduce_only_zeros, "only pairs at zeros of the reduced matrix",
               rule="two arrays of length min(n, m)"),
        Mutant("tall matrix not swapped back", hm_tall_not_swapped_back, "rows and columns look swapped",
               rule="rectangular in either direction"),
        Mutant("tall matrix left in column order", hm_tall_unsorted, "rows must be sorted ascending",
               rule="rows sorted ascending"),
        Mutant("profit matrix (maximises)", hm_profit_matrix, "MAXIMISES the total cost",
               rule="cost[rows, cols].sum() minimal"),
        Mutant("no NaN / -inf check", hm_no_validation, _RETURNED + " (a NaN entry",
               rule="raise ValueError for NaN entries"),
        Mutant("NaN checked, -inf not", hm_nan_check_only, _RETURNED + " (a -inf entry",
               rule="raise ValueError for -inf entries"),
        Mutant("+inf replaced by 1e9", hm_inf_as_large_number, _RETURNED + " (no assignment of every row",
               rule="raise ValueError when no complete assignment avoids the +inf entries"),
        Mutant("any +inf raises", hm_any_inf_raises, "a +inf entry only forbids its own pair",
               rule="+inf = forbidden pair"),
        Mutant("empty matrix not handled", hm_no_empty_case, "has nothing to match",
               rule="an empty matrix gives two empty arrays"),
        Mutant("rectangular matrix reduced", hm_reduce_rectangular, "reduced although the matrix is not square"),
        Mutant("integer matrix kept as integers", hm_int_infinity, "this matrix holds integers",
               rule="integers allowed"),
        Mutant("float64 columns", hm_float_columns, "expected an integer dtype",
               rule="two integer NumPy arrays"),
        Mutant("rows reduced in place", hm_reduce_in_place, "modified its argument `cost` in place"),
    ],
    "generalized_box_iou": [
        Mutant("plain IoU", giou_plain_iou, "that is the plain IoU"),
        Mutant("intersection not clamped", giou_unclamped, "intersection is not clamped at 0",
               rule="clamp the intersection's width and height at 0"),
        Mutant("penalty with the intersection", giou_penalty_inter, "the penalty uses the intersection"),
        Mutant("penalty with |A| + |B|", giou_penalty_area_sum, "the penalty uses |A| + |B|"),
        Mutant("no guard (NaN)", giou_unguarded, "0 / 0 when the union (or the enclosing box) is empty",
               rule="zero-area boxes must not give NaN"),
        Mutant("IoU 1 for an empty union", giou_empty_union_as_one, "IoU of two boxes with an empty union is 0",
               rule="when the union is empty IoU is 0"),
        Mutant("epsilon 1e-7", giou_epsilon, "an epsilon was added", rule="guard the divisions, no epsilon"),
        Mutant("epsilon 1e-9", giou_epsilon_small, "an epsilon was added", rule="guard the divisions, no epsilon"),
        Mutant("matching pairs only", giou_paired, "every pair", rule="the (N, M) GIoU of every pair"),
        Mutant("read as (cx, cy, w, h)", giou_as_cxcywh, "the boxes were read as (cx, cy, w, h)",
               rule="corners (x1, y1, x2, y2)"),
        Mutant("(M, N) result", giou_transposed, "rows must follow boxes1"),
        Mutant("float32 output", giou_float32_loops, "keep the dtype of the input", rule="dtype of the input"),
        Mutant("torch.stack over rows", giou_stack_rows, "boxes1 or boxes2 may be empty",
               rule="empty inputs give an empty (N, M) matrix"),
    ],
    "detr_matching_cost": [
        Mutant("class term +p", _cost_with("plus_class", "Adds the class probability instead of subtracting it."),
               "the class term has the wrong sign", rule="a likely class makes a pair cheaper"),
        Mutant("raw logits", _cost_with("logits", "Uses the raw logits as the class term."),
               "the class term uses raw logits"),
        Mutant("log-probabilities", _cost_with("log_prob", "Uses log_softmax as the class term."),
               "the class term uses log-probabilities", rule="the class term is the probability, not its log"),
        Mutant("softmax over predictions", _cost_with("softmax_dim0", "Takes the softmax over dim 0."),
               "the softmax runs over the predictions"),
        Mutant("labels - 1", _cost_with("labels_minus_one", "Indexes the columns with tgt_labels - 1."),
               "the class column is shifted by one", rule="tgt_labels index the columns directly"),
        Mutant("L2 distance", _cost_with("l2", "Uses the Euclidean distance between boxes."),
               "Euclidean (L2) distance"),
        Mutant("L1 on corners", _cost_with("l1_xyxy", "Computes the L1 term on xyxy corners."),
               "the L1 term was computed on corners"),
        Mutant("GIoU term +GIoU", _cost_with("plus_giou", "Adds the GIoU instead of subtracting it."),
               "the GIoU term has the wrong sign"),
        Mutant("GIoU on cxcywh", _cost_with("giou_cxcywh", "Passes (cx, cy, w, h) to giou_fn as corners."),
               "GIoU was computed on (cx, cy, w, h)", rule="GIoU on corners"),
        Mutant("L1 term -L1", _cost_with("minus_l1", "Subtracts the L1 term."), "the L1 term has the wrong sign"),
        Mutant("weights ignored", _cost_with("ignore_weights", "Always uses DETR's weights 1, 5, 2."),
               "the weights look mixed up or ignored"),
        Mutant("weights swapped", _cost_with("swap_weights", "Swaps w_class and w_l1."),
               "the weights look mixed up or ignored"),
        Mutant("(K, Q) result", _cost_with("transposed", "Returns the cost transposed."),
               "rows must be the predictions and columns the targets", rule="rows: predictions, columns: objects"),
        Mutant("float32 output", cost_float32_loops, "keep the dtype of the input", rule="dtype of the logits"),
        Mutant("torch.stack over targets", cost_stack_columns, "K may be 0", rule="K may be 0"),
        Mutant("softmax in place", cost_softmax_in_place, "modified its argument `pred_logits` in place"),
    ],
    "match_batch": [
        Mutant("one assignment for the batch", batch_joint, "one assignment was solved for the whole batch",
               rule="each image is matched separately"),
        Mutant("pairs swapped", _batch_with("swapped", "Returns (tgt_idx, pred_idx)."), "the pairs are swapped"),
        Mutant("batch-wide indices", _batch_with("global_offsets", "Offsets the indices into the whole batch."),
               "indices must be local to each image", rule="indices local to the image"),
        Mutant("first image's predictions", _batch_with("first_image", "Uses pred_logits[0] for every image."),
               "each image must be matched with cost_fn(pred_logits[i]"),
        Mutant("tensor to assign_fn", _batch_with("torch_to_assign", "Passes the torch cost to assign_fn."),
               "convert it with cost.detach().cpu().numpy()"),
        Mutant("int32 indices", _batch_with("int32", "Converts the indices with .int() (int32)."),
               "expected torch.int64", rule="int64 tensors"),
        Mutant("NumPy indices", _batch_with("numpy", "Returns scipy's NumPy arrays."),
               "is an np.ndarray; expected a torch.Tensor"),
        Mutant("empty image skipped", _batch_with("skip_empty", "Skips images without targets."),
               "an image without targets was skipped", rule="an image without objects gets two empty tensors"),
        Mutant("float empty tensors", _batch_with("float_empty", "Gives an empty image torch.tensor([]) (float32)."),
               "torch.tensor([]) is float32", rule="two empty int64 tensors"),
    ],
}

ALTERNATIVES = {
    "hungarian_match": [Alternative("Python loops (e-maxx)", hm_python_loops),
                        Alternative("padded to a square matrix", hm_by_padding)],
    "generalized_box_iou": [Alternative("loops over pairs", giou_loops), Alternative("broadcast", giou_broadcast)],
    "detr_matching_cost": [Alternative("one-hot class term", cost_one_hot), Alternative("cdist", cost_cdist)],
    "match_batch": [Alternative("comprehension over images", batch_comprehension)],
}
