"""Checks of the DETR exercises (student side: verifiers, explainers and the fixtures the calls pass).

Each case's data (built grader-side in ``lecturelib.hidden.detr``) holds what the verifiers compare with: the
minimum total cost of each assignment problem, the expected GIoU and cost matrices and matchings, and the
outputs of known mistakes on the same inputs (greedy matchings, reduce-then-pick-zeros, plain IoU, a wrong
sign...). The verifiers check properties that need no answer (a valid assignment of min(n, m) pairs with rows
sorted, its total equal to the minimum, invariance to adding a constant to a row or a column, symmetry of
GIoU) and name the mistake a wrong answer matches.

Library solvers are refused while the student's function runs: scipy is not torch, so the dispatcher-level
``ForbiddenOp`` cannot see it. A :class:`CallableWatch` in ``Exercise.forbidden`` (entered around every call,
in the notebook and in the grader's sandbox alike) watches Python callables instead, and stops a call that
runs too long (``checks/runner.py``).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .core import (Exercise, Mismatch, Raised, compare, expect_array, expect_raises, expect_tensor, explainer,
                   known_mistake, register, verifier)
from .runner import CallableWatch, ForbiddenCallable

_SLOW_ASSIGNMENT = ("an O(n^3) algorithm needs well under a second here (an endless loop? trying every "
                    "assignment takes n! steps, and 200! is astronomically many)")

# Every function of scipy's optimisation and graph packages, private modules included (scipy.optimize._lsap,
# scipy.optimize._linprog_highs, scipy.sparse.csgraph._matching): a solver reached by any route is refused.
_SOLVER_MODULES = (("scipy.optimize", "a scipy.optimize solver"),
                   ("scipy.sparse.csgraph", "a scipy.sparse.csgraph graph algorithm (a matching solver)"))
_ASSIGNMENT_SOLVERS = (
    ForbiddenCallable("scipy.optimize", "linear_sum_assignment", "scipy.optimize.linear_sum_assignment"),
    ForbiddenCallable("scipy.optimize._lsap", "linear_sum_assignment", "scipy.optimize.linear_sum_assignment"),
    ForbiddenCallable("scipy.sparse.csgraph", "min_weight_full_bipartite_matching",
                      "scipy.sparse.csgraph.min_weight_full_bipartite_matching"),
    ForbiddenCallable("scipy.optimize", "linprog", "scipy.optimize.linprog (a linear-programming solver)"),
    ForbiddenCallable("scipy.optimize", "milp", "scipy.optimize.milp (an integer-programming solver)"),
)
_BOX_LIBRARY = (
    ForbiddenCallable("lecturelib.boxes", "box_iou", "lecturelib.boxes.box_iou (write the intersection and union "
                      "yourself)"),
    ForbiddenCallable("torchvision.ops", "generalized_box_iou", "torchvision.ops.generalized_box_iou"),
    ForbiddenCallable("torchvision.ops", "box_iou", "torchvision.ops.box_iou"),
)


# ------------------------------------------------------------------------------------------------
# hungarian_match
# ------------------------------------------------------------------------------------------------
_SWAPPED = ("rows and columns look swapped: for a tall matrix you probably solved the transpose; swap the two "
            "arrays back (rows index the cost's first axis) and sort the pairs by row")
_ONLY_ZEROS = ("only pairs at zeros of the reduced matrix were matched, and the zeros do not hold a complete "
               "assignment: when no free zero is left, change the potentials along an augmenting path "
               "(or cover the zeros with lines and shift) instead of stopping")
_GREEDY = ("that is the greedy assignment (the cheapest pair first, or each row its cheapest free column): an "
           "early cheap choice is never revised and can force expensive ones later; augmenting paths re-route "
           "earlier matches")
_MAXIMISES = "this assignment MAXIMISES the total cost; the exercise asks for the minimum"
_REDUCE = ("that is what reducing rows and columns and then picking zeros gives: when the zeros hold no "
           "complete assignment, picking zeros is not enough; change the potentials along a shortest "
           "augmenting path (or cover the zeros with lines and shift) instead of taking what is left")
_RECTANGULAR_REDUCTION = ("the rows and the columns were both reduced although the matrix is not square: along its "
                         "longer side some rows (or columns) stay unmatched, and subtracting their minimum changes "
                         "which assignment is cheapest; subtract minima only along the side that is fully matched "
                         "(the rows of a wide matrix; transpose a tall one first)")
_EMPTY = ("a matrix with no rows or no columns has nothing to match: return two empty integer arrays before "
          "anything else (a reduction such as cost.min() fails on an empty array)")
_INF_RAISES = ("a +inf entry only forbids its own pair: raise ValueError only when no complete assignment avoids "
               "the +inf entries (no augmenting path reaches a free column at a finite cost), not whenever an "
               "entry is infinite")
_INTEGERS = ("this matrix holds integers: if your code solves float matrices, convert the input first "
             "(cost = np.asarray(cost, dtype=float)); an integer array cannot hold np.inf or fractional potentials "
             "(np.full_like(cost[0], np.inf) gives a huge negative integer, u -= 0.5 truncates)")
_WHY_ERROR = {"nan": "a NaN entry makes every comparison False, so no answer can be trusted",
              "minus_inf": "a -inf entry makes the minimum unbounded",
              "infeasible": "no assignment of every row avoids the +inf (forbidden) entries"}


def _close(a, b) -> bool:
    return bool(np.isclose(a, b, rtol=1e-9, atol=1e-9))


def _show(cost: np.ndarray) -> str:
    if cost.size > 36:
        return f"a {cost.shape[0]}x{cost.shape[1]} matrix"
    return "cost =\n" + "\n".join("  " + " ".join(f"{x:7.3g}" for x in row) for row in np.asarray(cost, float))


def _unpack_assignment(out, reveal: bool) -> tuple[np.ndarray, np.ndarray]:
    """The (rows, cols) pair, as int64 arrays of the same length; Mismatch naming what is off."""
    if isinstance(out, np.ndarray) and out.ndim == 2 and 2 in out.shape:
        raise Mismatch("return a tuple (rows, cols) of two 1-D arrays, not one 2-D array "
                       "(e.g. `return rows, cols`)")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise Mismatch(f"return a tuple (rows, cols); got {type(out).__name__}"
                       + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
    rows = expect_array(out[0], kind="i", name="rows")
    cols = expect_array(out[1], kind="i", name="cols")
    if rows.ndim != 1 or cols.ndim != 1:
        raise Mismatch("rows and cols must be 1-D arrays" + (f", got shapes {rows.shape} and {cols.shape}"
                                                               if reveal else ""))
    if len(rows) != len(cols):
        raise Mismatch("rows and cols must have the same length" + (f", got {len(rows)} and {len(cols)}"
                                                                      if reveal else ""))
    return rows.astype(np.int64), cols.astype(np.int64)


def _is_valid(rows, cols, shape) -> bool:
    """min(n, m) pairs, in range, no row or column used twice."""
    n, m = shape
    return (len(rows) == min(n, m) and bool(np.all((0 <= rows) & (rows < n))) and bool(np.all((0 <= cols) & (cols < m)))
            and len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols))


def _on_reduced_zeros(pairs, masks) -> bool:
    """Do all but at most one pair lie on zeros of a reduced matrix? (``masks``: where the row-then-column and
    the column-then-row reduced matrices are zero; none for a matrix with infinite entries)."""
    if len(pairs) < 2:
        return False
    return any(all(0 <= i < mask.shape[0] and 0 <= j < mask.shape[1] for i, j in pairs)
               and sum(bool(mask[i, j]) for i, j in pairs) >= len(pairs) - 1 for mask in masks)


def _diagnose_assignment(rows, cols, data) -> str | None:
    """The likely cause of an invalid or suboptimal assignment, from the known mistakes' pair lists."""
    cost, optimum = data["cost"], data["optimum"]
    n, m = cost.shape
    pairs = sorted(set(zip(rows.tolist(), cols.tolist())))
    valid = _is_valid(rows, cols, (n, m))
    if _is_valid(cols, rows, (n, m)) and _close(cost[cols, rows].sum(), optimum) and (
            n != m or not valid or not np.isclose(cost[rows, cols].sum(), optimum)):
        return _SWAPPED
    if not valid:
        if pairs in data["reduce"] or (len(rows) < min(n, m) and _on_reduced_zeros(pairs, data["reduced_zeros"])):
            return _ONLY_ZEROS
        return None
    if pairs in data["greedy"]:
        return _GREEDY
    total = float(cost[rows, cols].sum())
    if data["maximum"] is not None and _close(total, data["maximum"]) and not _close(total, optimum):
        return _MAXIMISES
    if any(_close(reduced[rows, cols].sum(), best) for reduced, best in data.get("reduced_optima", ())):
        return _RECTANGULAR_REDUCTION
    if pairs in data["reduce"] or _on_reduced_zeros(pairs, data["reduced_zeros"]):
        return _REDUCE
    if cost.dtype.kind in "iu":
        return _INTEGERS
    return None


def _assignment_verdict(out, data, reveal: bool) -> None:
    """Raise Mismatch unless ``out`` is a valid assignment of ``data['cost']`` whose total is ``data['optimum']``,
    rows sorted."""
    cost, optimum = data["cost"], data["optimum"]
    rows, cols = _unpack_assignment(out, reveal)
    n, m = cost.shape

    def fail(message: str, hidden: str, show_matrix: bool = True):
        got = f"\nyour rows {rows.tolist()}, cols {cols.tolist()}" if reveal and len(rows) <= 12 else ""
        shown = f"\n{_show(cost)}" if reveal and show_matrix else ""
        cause = _diagnose_assignment(rows, cols, data)
        raise Mismatch((message if reveal else hidden) + got + shown + (f"\nlikely cause: {cause}" if cause else ""))

    if len(rows) != min(n, m):
        fail(f"the assignment has {len(rows)} pairs; a {n}x{m} matrix needs min(n, m) = {min(n, m)} "
             "(every row, or every column if there are fewer columns)",
             "the assignment has the wrong number of pairs; an n x m matrix needs min(n, m) (every row, or every "
             "column if there are fewer columns)")
    if not (np.all((0 <= rows) & (rows < n)) and np.all((0 <= cols) & (cols < m))):
        fail(f"indices out of range: rows must lie in [0, {n}) and cols in [0, {m})",
             "indices out of range: rows must lie in [0, n) and cols in [0, m)", show_matrix=False)
    if len(set(rows.tolist())) != len(rows) or len(set(cols.tolist())) != len(cols):
        message = "not a valid assignment: a row or a column is used twice"
        fail(message, message)
    total = float(cost[rows, cols].sum())
    if np.isinf(total):
        message = "your assignment uses a forbidden (+inf) pair although a finite assignment exists"
        fail(message, message)
    if not _close(total, optimum):
        fail(f"the assignment is valid but not of minimum total cost: total {total:.6g}, the minimum is {optimum:.6g}",
             "the assignment is valid but not of minimum total cost")
    if np.any(np.diff(rows) < 0):
        raise Mismatch("the pairs are right but rows must be sorted ascending, like scipy's result "
                       "(e.g. `order = np.argsort(rows); return rows[order], cols[order]`)")


@verifier("hungarian_match")
def _verify_assignment(outcomes, data, reveal):
    _assignment_verdict(outcomes[0], data, reveal)


@verifier("hungarian_match:empty")
def _verify_empty(outcomes, data, reveal):
    rows, _ = _unpack_assignment(outcomes[0], reveal)
    if len(rows):
        n, m = data["shape"]
        raise Mismatch((f"a {n}x{m} matrix" if reveal else "a matrix with no rows or no columns")
                       + " has nothing to match: return two empty integer arrays")


@verifier("hungarian_match:invariance")
def _verify_invariance(outcomes, data, reveal):
    _assignment_verdict(outcomes[0], data, reveal)
    rows, cols = _unpack_assignment(outcomes[1], reveal)
    cost = data["cost"]
    if not (_is_valid(rows, cols, cost.shape) and _close(cost[rows, cols].sum(), data["optimum"])):
        raise Mismatch("adding a constant to every entry of a row (or a column) changes every assignment's "
                       "total by that constant, so an optimal assignment must stay optimal; yours changed "
                       "into a worse one for the original costs")


@verifier("hungarian_match:error")
def _verify_error(outcomes, data, reveal):
    outcome = outcomes[0]
    if not isinstance(outcome, Raised):
        raise Mismatch(f"expected ValueError, but the function returned normally ({_WHY_ERROR[data['why']]})"
                       + (f"\n{_show(data['cost'])}" if reveal else ""))
    expect_raises(outcome, ("ValueError",))
    if not outcome.message.strip():
        raise Mismatch("the ValueError is right, but give it a message that says what is wrong")


@explainer("hungarian_match")
def _explain_hungarian_error(raised, data):
    text = raised.message.lower()
    if 0 in tuple(data.get("shape", (1,))):
        return _EMPTY
    cost = data.get("cost")
    if cost is not None and cost.dtype.kind in "iu" and (raised.type_name in ("UFuncTypeError", "OverflowError")
                                                         or "cast" in text or "integer" in text):
        return _INTEGERS
    if raised.type_name == "ValueError" and cost is not None and bool(np.isposinf(cost).any()) \
            and np.isfinite(data.get("optimum", np.inf)):
        return _INF_RAISES
    if raised.type_name in ("IndexError", "ValueError") and ("index" in text or "bounds" in text):
        return ("an index went out of range: with a rectangular matrix make sure you loop over the smaller "
                "dimension (transpose a tall matrix, solve, then swap the result back)")
    return None


register(Exercise(
    "hungarian_match", topic="detr",
    summary="minimum total cost equal to scipy's linear_sum_assignment and to brute force (square, tall, wide, "
            "ties, constant, 1x1, +inf pairs, 200x200); valid assignment of size min(n, m), rows sorted; invariant "
            "to adding constants to rows and columns; ValueError for NaN, -inf and infeasible matrices",
    forbidden=(CallableWatch(_ASSIGNMENT_SOLVERS, slow_hint=_SLOW_ASSIGNMENT, modules=_SOLVER_MODULES),),
))


# ------------------------------------------------------------------------------------------------
# generalized_box_iou
# ------------------------------------------------------------------------------------------------
_NAN_CAUSE = ("NaN where a box has zero area: 0 / 0 when the union (or the enclosing box) is empty; guard the "
              "divisions, e.g. with torch.where(union > 0, inter / union.clamp_min(tiny), 0)")


def _giou_tol(dtype: torch.dtype) -> dict:
    return {"atol": 1e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-7, "rtol": 1e-6}


def _giou_shape_hint(got: torch.Tensor, shape) -> str:
    """Why an (N, M) GIoU matrix came out with another shape."""
    n, m = shape
    if got.ndim == 1 and n == m and got.shape[0] == n:
        return ("\nlikely cause: that is the GIoU of matching pairs (boxes1[i], boxes2[i]); return the (N, M) "
                "matrix of every pair: broadcast boxes1[:, None] against boxes2[None, :]")
    if tuple(got.shape) == (m, n) and n != m:
        return "\nlikely cause: rows must follow boxes1 and columns boxes2"
    return ""


def _giou_cause(got: torch.Tensor, data) -> str | None:
    """The known mistake ``got`` matches: an epsilon first, to 1e-12 (float64 answers only: a small epsilon changes
    values by less than the 1e-4 that attributes the other mistakes), then the others, to 1e-4."""
    if got.dtype == torch.float64:
        cause = known_mistake(got, data.get("epsilon_mistakes", ()), tol=1e-12)
        if cause:
            return cause
    return known_mistake(got, data["mistakes"], tol=1e-4)


def _check_giou(got, data, reveal: bool) -> torch.Tensor:
    expected = data["expected"]
    if isinstance(got, torch.Tensor) and tuple(got.shape) != tuple(expected.shape):
        shown = (f"output has shape {tuple(got.shape)}; expected (N, M) = {tuple(expected.shape)}" if reveal
                 else "output has the wrong shape")
        raise Mismatch(shown + _giou_shape_hint(got, expected.shape))
    got = expect_tensor(got, shape=expected.shape, dtype=expected.dtype)
    if bool(torch.isnan(got).any()) and not bool(torch.isnan(expected).any()):
        raise Mismatch("your output contains NaN\nlikely cause: " + _NAN_CAUSE)
    compare(got, expected, **_giou_tol(expected.dtype), diagnose=lambda g: _giou_cause(g, data))
    return got


@verifier("generalized_box_iou")
def _verify_giou(outcomes, data, reveal):
    _check_giou(outcomes[0], data, reveal)


@verifier("generalized_box_iou:symmetry")
def _verify_giou_symmetry(outcomes, data, reveal):
    first = _check_giou(outcomes[0], data, reveal)
    expected = data["expected"]
    swapped = expect_tensor(outcomes[1], shape=expected.T.shape, dtype=expected.dtype, name="GIoU(boxes2, boxes1)")
    if not torch.allclose(swapped, first.T, **_giou_tol(expected.dtype)):
        raise Mismatch("GIoU is symmetric: generalized_box_iou(b, a) must equal generalized_box_iou(a, b).T")


@explainer("generalized_box_iou")
def _explain_giou_error(raised, data):
    if 0 in tuple(data["expected"].shape):
        return ("boxes1 or boxes2 may be empty (N = 0 or M = 0): the result is then an empty (N, M) tensor; "
                "broadcasting handles it, while torch.stack of an empty list or a reduction such as .max() fails")
    if "must match the size" in raised.message or "broadcast" in raised.message:
        return ("boxes1 and boxes2 may hold different numbers of boxes: compare every pair by broadcasting "
                "boxes1[:, None, :] against boxes2[None, :, :] (result (N, M))")
    return None


register(Exercise(
    "generalized_box_iou", topic="detr",
    summary="(N, M) GIoU of every pair equal to the closed form for identical, nested, touching, far, zero-area "
            "(no NaN) and random boxes, float32 and float64; symmetric; empty inputs",
    forbidden=(CallableWatch(_BOX_LIBRARY),),
))


# ------------------------------------------------------------------------------------------------
# detr_matching_cost
# ------------------------------------------------------------------------------------------------
_UNKNOWN_BOXES = "giou_fn was given boxes that are not the boxes of this check"
_NOT_BOXES = "giou_fn takes two (N, 4) tensors of xyxy boxes"


@dataclasses.dataclass
class GiouLookup:
    """The ``giou_fn`` that the checks of detr_matching_cost pass: it looks up the GIoU of the case's own boxes,
    computed grader-side, and computes nothing itself.

    ``boxes`` (B, 4) holds every box that a right or a known wrong cost passes (predictions and targets, as
    xyxy corners and as given); ``values`` (B, B) the GIoU of every pair of them, each box read as corners.
    """

    boxes: torch.Tensor
    values: torch.Tensor

    def __call__(self, boxes1, boxes2) -> torch.Tensor:
        """(N, 4), (M, 4) boxes of this case -> (N, M) GIoU, in the dtype of ``boxes1``."""
        rows, cols = self._positions(boxes1), self._positions(boxes2)
        return self.values[rows][:, cols].to(torch.as_tensor(boxes1).dtype)

    def _positions(self, boxes) -> torch.Tensor:
        """(N,) where each of the (N, 4) ``boxes`` is in ``self.boxes`` (float32 inputs: up to rounding)."""
        boxes = torch.as_tensor(boxes).detach().to(torch.float64)
        if boxes.ndim != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"{_NOT_BOXES}, got shape {tuple(boxes.shape)}")
        if len(boxes) == 0:
            return torch.zeros(0, dtype=torch.int64)
        distance = (boxes[:, None, :] - self.boxes[None, :, :]).abs().amax(-1)
        nearest = distance.min(1)
        if bool((nearest.values > 1e-5).any()):
            raise ValueError(f"{_UNKNOWN_BOXES}: pass it the predicted and target boxes converted to corners "
                             "(x1, y1, x2, y2) with box_cxcywh_to_xyxy")
        return nearest.indices


def _cost_shape_hint(got_shape, shape) -> str:
    q, k = shape
    return ("\nlikely cause: rows must be the predictions and columns the targets"
            if tuple(got_shape) == (k, q) else "")


@verifier("detr_matching_cost")
def _verify_cost(outcomes, data, reveal):
    got, expected = outcomes[0], data["expected"]
    if isinstance(got, torch.Tensor) and tuple(got.shape) != tuple(expected.shape):
        shown = (f"output has shape {tuple(got.shape)}; expected (Q, K) = {tuple(expected.shape)}" if reveal
                 else "output has the wrong shape")
        raise Mismatch(shown + _cost_shape_hint(got.shape, expected.shape))
    got = expect_tensor(got, shape=expected.shape, dtype=expected.dtype)
    tol = {"atol": 1e-4, "rtol": 1e-4} if expected.dtype == torch.float32 else {"atol": 1e-8, "rtol": 1e-6}
    compare(got, expected, **tol, diagnose=lambda g: known_mistake(g, data["mistakes"], tol=1e-4))


@explainer("detr_matching_cost")
def _explain_cost_error(raised, data):
    if data["expected"].shape[1] == 0:
        return ("K may be 0 (an image without objects): the cost is then an empty (Q, 0) tensor; broadcasting "
                "pred_boxes[:, None] against tgt_boxes[None] handles it, while torch.stack of an empty list fails")
    if _UNKNOWN_BOXES in raised.message or _NOT_BOXES in raised.message:
        return ("giou_fn takes the predicted and the target boxes as corners: "
                "giou_fn(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(tgt_boxes)) gives the (Q, K) GIoU")
    if "giou_fn" in raised.message or "unexpected keyword" in raised.message:
        return ("the function must accept the keyword arguments w_class, w_l1, w_giou and giou_fn (the checks "
                "pass a correct GIoU as giou_fn; use it for the GIoU term)")
    return None


register(Exercise(
    "detr_matching_cost", topic="detr",
    summary="(Q, K) cost -w_class p(label) + w_l1 L1(cxcywh) - w_giou GIoU(xyxy) equal to a float64 oracle, with "
            "default (1, 5, 2) and other weights, float32 and float64, no targets",
    forbidden=(CallableWatch(),),  # no library to refuse: the watch stops a call that runs too long
))


# ------------------------------------------------------------------------------------------------
# match_batch
# ------------------------------------------------------------------------------------------------
def _simple_cost(pred_logits: torch.Tensor, pred_boxes: torch.Tensor, tgt_labels: torch.Tensor,
                 tgt_boxes: torch.Tensor) -> torch.Tensor:
    """The cost function the checks give to match_batch: L1 between boxes minus the class probability."""
    for name, value in (("pred_logits", pred_logits), ("pred_boxes", pred_boxes), ("tgt_labels", tgt_labels),
                        ("tgt_boxes", tgt_boxes)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{_COST_EXPECTS} torch tensors; {name} is a {type(value).__name__}")
    if pred_logits.ndim != 2 or pred_boxes.ndim != 2 or tgt_boxes.ndim != 2 or tgt_labels.ndim != 1:
        raise ValueError(f"{_COST_EXPECTS} ONE image: pred_logits (Q, C), pred_boxes (Q, 4), tgt_labels (K,), "
                         f"tgt_boxes (K, 4); got shapes {tuple(pred_logits.shape)}, {tuple(pred_boxes.shape)}, "
                         f"{tuple(tgt_labels.shape)}, {tuple(tgt_boxes.shape)}")
    prob = pred_logits.softmax(-1)[:, tgt_labels.long()]
    return (pred_boxes[:, None, :] - tgt_boxes[None, :, :]).abs().sum(-1) - prob


def _assign_for_student(cost) -> tuple[np.ndarray, np.ndarray]:
    """The assign_fn the checks give to match_batch: scipy's solver, for a 2-D NumPy array only."""
    if not isinstance(cost, np.ndarray):
        raise TypeError(f"{_ASSIGN_TAKES} the cost as a 2-D NumPy array, got a {type(cost).__module__}."
                        f"{type(cost).__name__}: convert it with cost.detach().cpu().numpy()")
    if cost.ndim != 2:
        raise ValueError(f"{_ASSIGN_TAKES} one image's (Q, K) cost matrix, got shape {cost.shape}")
    from scipy.optimize import linear_sum_assignment  # imported when used: scipy takes a while to load
    return linear_sum_assignment(cost)


_JOINT = ("one assignment was solved for the whole batch, so predictions of one image can take the objects of "
          "another: build and solve each image's (Q, K_i) cost matrix on its own")


def _index_tensor(value, name: str) -> torch.Tensor:
    """An int64 tensor of indices; an empty one of another dtype is named (torch.tensor([]) is float32)."""
    try:
        return expect_tensor(value, dtype=torch.int64, name=name)
    except Mismatch as exc:
        if isinstance(value, torch.Tensor) and value.numel() == 0:
            raise Mismatch(f"{exc}\nlikely cause: an image without targets gets two EMPTY INT64 tensors, "
                           "torch.zeros(0, dtype=torch.int64); torch.tensor([]) is float32") from None
        raise


def _matched_pairs(out, data, reveal: bool) -> list[list]:
    """The sorted (pred, tgt) pairs of each image, after checking the structure of the result."""
    images = len(data["sizes"])
    if not isinstance(out, (list, tuple)) or len(out) != images:
        length = f" of length {len(out)}" if isinstance(out, (list, tuple)) and reveal else ""
        skipped = isinstance(out, (list, tuple)) and len(out) == sum(1 for k in data["sizes"] if k)
        raise Mismatch(f"return a list with one (pred_idx, tgt_idx) pair per image{f' ({images})' if reveal else ''}; "
                       f"got {type(out).__name__}{length}"
                       + ("\nlikely cause: an image without targets was skipped; it must still get its pair of two "
                          "empty int64 tensors, so that entry i belongs to image i" if skipped else ""))
    pairs = []
    for i, item in enumerate(out):
        where = f" of image {i}" if reveal else ""
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise Mismatch((f"entry {i}" if reveal else "each entry") + " must be a pair (pred_idx, tgt_idx), got "
                           f"{type(item).__name__}")
        pred_idx = _index_tensor(item[0], "pred_idx" + where)
        tgt_idx = _index_tensor(item[1], "tgt_idx" + where)
        if pred_idx.ndim != 1 or pred_idx.shape != tgt_idx.shape:
            raise Mismatch((f"image {i}: " if reveal else "") + "pred_idx and tgt_idx must be 1-D of the same length"
                           + (f", got shapes {tuple(pred_idx.shape)} and {tuple(tgt_idx.shape)}" if reveal else ""))
        pairs.append(sorted(set(zip(pred_idx.tolist(), tgt_idx.tolist()))))
    return pairs


def _batch_cause(got: list, i: int, data) -> str:
    """Why image ``i`` of ``got`` (sorted pair lists) differs from the expected matching."""
    want, q, size = data["expected"][i], data["q"], data["sizes"][i]
    if got == data["joint"] and data["joint"] != data["expected"]:
        return _JOINT
    if got[i] == sorted((t, p) for p, t in want):
        return "the pairs are swapped: return (pred_idx, tgt_idx), the rows and columns of each cost matrix"
    if any(not 0 <= p < q or not 0 <= t < size for p, t in got[i]):
        return ("indices must be local to each image: prediction indices in [0, Q) and target indices in "
                "[0, K_i), not offsets into the whole batch")
    if size == 0:
        return "an image without targets must get two empty int64 tensors"
    return ("each image must be matched with cost_fn(pred_logits[i], pred_boxes[i], labels_i, boxes_i) "
            "and assign_fn on that cost, as a NumPy array")


@verifier("match_batch")
def _verify_batch(outcomes, data, reveal):
    got = _matched_pairs(outcomes[0], data, reveal)
    for i, (mine, want) in enumerate(zip(got, data["expected"])):
        if mine != want:
            shown = f"image {i} is matched wrongly: expected pairs {want}, got {mine}" if reveal \
                else "an image is matched wrongly"
            raise Mismatch(f"{shown}\nlikely cause: {_batch_cause(got, i, data)}")


_ASSIGN_TAKES = "assign_fn takes"
_COST_EXPECTS = "cost_fn expects"


@explainer("match_batch")
def _explain_batch_error(raised, data):
    if _ASSIGN_TAKES in raised.message:
        return ("assign_fn takes the cost as a 2-D NumPy array: convert it with cost.detach().cpu().numpy() "
                "(the checks' assign_fn refuses a torch tensor)")
    if _COST_EXPECTS in raised.message:
        return ("cost_fn takes ONE image: cost_fn(pred_logits[i], pred_boxes[i], labels_i, boxes_i), with "
                "pred_logits[i] (Q, C) and pred_boxes[i] (Q, 4)")
    if 0 in data["sizes"]:
        return ("this batch has an image without targets: give it two empty int64 tensors "
                "(torch.zeros(0, dtype=torch.int64)) instead of building a cost matrix")
    return None


register(Exercise(
    "match_batch", topic="detr",
    summary="per-image optimal matchings (indices local to each image, int64 tensors, (pred_idx, tgt_idx)) for "
            "batches with different numbers of targets, including images without any",
    forbidden=(CallableWatch(),),  # no library to refuse: the watch stops a call that runs too long
))
