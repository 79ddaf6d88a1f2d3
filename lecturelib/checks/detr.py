"""Checks of the DETR exercises: the Hungarian algorithm, generalised IoU, DETR's matching cost and
the batched matcher.

Oracles: ``scipy.optimize.linear_sum_assignment`` and brute force over all assignments (both, on small
matrices, and they must agree), closed-form box geometry in float64 NumPy, and constructions whose
answer is known (identical, nested, touching and degenerate boxes). Properties give a second view:
a valid assignment (one pair per row or column, min(n, m) pairs, rows sorted), invariance to adding a
constant to a row or a column, symmetry of GIoU. Failures are compared with the outputs of known
bugs (greedy matching, reduce-then-pick-zeros, a transposed result, maximising, plain IoU...) to
name the likely cause.

Library solvers are refused while the student's function runs: scipy is not torch, so the
dispatcher-level ``ForbiddenOp`` cannot see it. A :class:`CallableWatch` in ``Exercise.forbidden``
(entered by ``core.forbidden_ops_used`` around every call, in the notebook and in the grader's sandbox
alike) watches Python callables instead: a profiler hook sees every call of a builtin or Python
function whatever name it is reached by, and module attributes are wrapped too, for Cython functions
that the profiler cannot see (``checks/watch.py``). It also stops a call that runs too long.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

from .core import (Call, Case, Exercise, Mismatch, Raised, compare, expect_array, expect_raises, expect_tensor,
                   matches, register)
from .watch import CallableWatch, ForbiddenCallable, oracles

_SLOW_ASSIGNMENT = ("an O(n^3) algorithm needs well under a second here (an endless loop? trying every "
                    "assignment takes n! steps, and 200! is astronomically many)")


# ------------------------------------------------------------------------------------------------
# Oracles (refused inside the student's functions, like the library solvers)
# ------------------------------------------------------------------------------------------------
def _scipy_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy.optimize import linear_sum_assignment
    return linear_sum_assignment(cost)


def _brute_force_total(cost: np.ndarray) -> float:
    """The minimum total over every assignment of size min(n, m) (small matrices only)."""
    n, m = cost.shape
    if n > m:
        cost, (n, m) = cost.T, (m, n)
    if n == 0:
        return 0.0
    best = np.inf
    rows = np.arange(n)
    for cols in itertools.permutations(range(m), n):
        best = min(best, float(cost[rows, list(cols)].sum()))
    return best


def _optimal_total(cost: np.ndarray) -> float:
    """scipy's optimum, cross-checked against brute force on small matrices."""
    rows, cols = _scipy_assignment(cost)
    total = float(cost[rows, cols].sum())
    n, m = cost.shape
    if min(n, m) <= 6 and max(n, m) <= 7:
        brute = _brute_force_total(cost)
        if not np.isclose(brute, total, rtol=1e-12, atol=1e-12):
            raise RuntimeError(f"oracles disagree: scipy {total}, brute force {brute}")
    return total


def _giou_oracle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Generalised IoU of every pair of xyxy boxes, float64, with 0 for 0/0 (see the notebook)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    wh = np.clip(np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]), 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    ewh = np.maximum(a[:, None, 2:], b[None, :, 2:]) - np.minimum(a[:, None, :2], b[None, :, :2])
    enclosing = ewh[..., 0] * ewh[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        penalty = np.where(enclosing > 0, (enclosing - union) / np.where(enclosing > 0, enclosing, 1), 0.0)
    return iou - penalty


def _giou_for_student(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """The correct GIoU that the checks of detr_matching_cost hand to the student's function as giou_fn."""
    return torch.from_numpy(_giou_oracle(boxes1.detach().cpu().numpy(), boxes2.detach().cpu().numpy())).to(boxes1.dtype)


def _cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    cx, cy, w, h = np.moveaxis(np.asarray(boxes, np.float64), -1, 0)
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def _softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def _cost_oracle(logits, pred_boxes, labels, tgt_boxes, w_class, w_l1, w_giou, variant: str = "") -> np.ndarray:
    """DETR's matching cost in float64 NumPy; ``variant`` names a known bug to reproduce it."""
    logits = np.asarray(logits, np.float64)
    p, t = np.asarray(pred_boxes, np.float64), np.asarray(tgt_boxes, np.float64)
    labels = np.asarray(labels, np.int64)
    prob = _softmax(logits, 0 if variant == "softmax_dim0" else -1)
    cls = {"logits": logits, "log_prob": np.log(prob)}.get(variant, prob)
    cls = cls[:, labels - 1] if variant == "labels_minus_one" else cls[:, labels]
    l1 = (np.abs(p[:, None, :] - t[None, :, :]).sum(-1) if variant != "l2"
          else np.sqrt(((p[:, None, :] - t[None, :, :]) ** 2).sum(-1)))
    if variant == "l1_xyxy":
        l1 = np.abs(_cxcywh_to_xyxy(p)[:, None, :] - _cxcywh_to_xyxy(t)[None, :, :]).sum(-1)
    giou = (_giou_oracle(p, t) if variant == "giou_cxcywh" else _giou_oracle(_cxcywh_to_xyxy(p), _cxcywh_to_xyxy(t)))
    signs = {"plus_class": (1, 1, -1), "plus_giou": (-1, 1, 1), "minus_l1": (-1, -1, -1)}.get(variant, (-1, 1, -1))
    return signs[0] * w_class * cls + signs[1] * w_l1 * l1 + signs[2] * w_giou * giou


def _oracles(*names: str) -> tuple[ForbiddenCallable, ...]:
    return oracles(__name__, *names)


_ASSIGNMENT_SOLVERS = (
    ForbiddenCallable("scipy.optimize", "linear_sum_assignment", "scipy.optimize.linear_sum_assignment"),
    ForbiddenCallable("scipy.optimize._lsap", "linear_sum_assignment", "scipy.optimize.linear_sum_assignment"),
    ForbiddenCallable("scipy.sparse.csgraph", "min_weight_full_bipartite_matching",
                      "scipy.sparse.csgraph.min_weight_full_bipartite_matching"),
    ForbiddenCallable("scipy.optimize", "linprog", "scipy.optimize.linprog (a linear-programming solver)"),
    ForbiddenCallable("scipy.optimize", "milp", "scipy.optimize.milp (an integer-programming solver)"),
) + _oracles("_scipy_assignment", "_brute_force_total", "_optimal_total", "_assign_for_student")
_BOX_LIBRARY = (
    ForbiddenCallable("lecturelib.boxes", "box_iou", "lecturelib.boxes.box_iou (write the intersection and union "
                      "yourself)"),
    ForbiddenCallable("torchvision.ops", "generalized_box_iou", "torchvision.ops.generalized_box_iou"),
    ForbiddenCallable("torchvision.ops", "box_iou", "torchvision.ops.box_iou"),
) + _oracles("_giou_oracle", "_giou_for_student", "_iou_variants", "_cost_oracle")
# The cost's checks hand the student a correct GIoU (giou_fn): only the cost oracle itself is refused.
_COST_ORACLES = _oracles("_cost_oracle")
_BATCH_ORACLES = _oracles("_expected_batch", "_joint_batch")


# ------------------------------------------------------------------------------------------------
# hungarian_match
# ------------------------------------------------------------------------------------------------
_NAMED_MATRICES = {
    # Greedy takes the 1, then the 2, then is left with the 8 (total 11); the optimum is 4 + 2 + 2 = 8.
    "greedy_trap": [[9, 4, 1], [2, 3, 7], [7, 8, 2]],
    # After reducing, rows 1 and 2 have their only zero in column 0; the optimum (9) moves every row.
    "reduce_trap": [[8, 4, 2, 5], [1, 5, 7, 5], [1, 7, 9, 5], [3, 4, 2, 1]],
    "one_by_one": [[7.5]],
    "forbidden_pairs": [[np.inf, 2, 5, np.inf], [1, np.inf, np.inf, 4], [np.inf, 3, 1, np.inf],
                        [2, np.inf, 6, np.inf]],
    "nan": [[1, 2, 3], [4, np.nan, 6], [7, 8, 9]],
    "minus_inf": [[1, 2, 3], [4, 5, -np.inf], [7, 8, 9]],
    "infeasible_row": [[1, 2, 3], [np.inf, np.inf, np.inf], [4, 5, 6]],
    "infeasible_block": [[1, np.inf, np.inf], [2, np.inf, np.inf], [3, 4, 5]],
}


def _matrix(spec) -> np.ndarray:
    """The cost matrix of a spec: a named matrix, or random values of a kind, shape and seed."""
    if "matrix" in spec:
        return np.array(_NAMED_MATRICES[spec["matrix"]], dtype=np.float64)
    rng = np.random.default_rng(spec["seed"])
    shape = tuple(spec["shape"])
    kind = spec.get("values", "uniform")
    if kind == "uniform":
        return rng.random(shape)
    if kind == "normal":
        return rng.normal(size=shape) * 10
    if kind == "int":
        return rng.integers(0, spec.get("high", 3), size=shape).astype(np.int64)
    if kind == "const":
        return np.full(shape, 3.0)
    if kind == "inf":
        for _ in range(100):
            cost = rng.random(shape)
            cost[rng.random(shape) < spec.get("fraction", 0.4)] = np.inf
            try:
                _scipy_assignment(cost)
                return cost
            except ValueError:
                continue
        raise RuntimeError(f"no feasible matrix for {spec}")
    raise ValueError(f"unknown matrix kind {kind!r}")


def _describe_matrix(spec, cost) -> str:
    n, m = cost.shape
    if "matrix" in spec:
        return {"greedy_trap": "3x3 matrix where greedy matching is not optimal",
                "reduce_trap": "4x4 matrix whose reduced zeros hold no complete assignment",
                "one_by_one": "1x1 matrix",
                "forbidden_pairs": "4x4 matrix with +inf (forbidden) pairs",
                "nan": "3x3 matrix with a NaN entry", "minus_inf": "3x3 matrix with a -inf entry",
                "infeasible_row": "3x3 matrix with a row of +inf (no complete assignment)",
                "infeasible_block": "3x3 matrix where two rows can only use one column"}[spec["matrix"]]
    shape = "square" if n == m else ("wide" if n < m else "tall")
    kind = {"uniform": "uniform random", "normal": "random normal (negative too)",
            "int": f"integers 0..{spec.get('high', 3) - 1} (many ties)", "const": "constant",
            "inf": "random with +inf (forbidden) entries"}[spec.get("values", "uniform")]
    return f"{n}x{m} {shape} matrix, {kind}"


def _show(cost: np.ndarray) -> str:
    if cost.size > 36:
        return f"a {cost.shape[0]}x{cost.shape[1]} matrix"
    return "cost =\n" + "\n".join("  " + " ".join(f"{x:7.3g}" for x in row) for row in np.asarray(cost, float))


def _unpack_assignment(out, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (rows, cols) pair, as integer arrays of the same length; Mismatch naming what is off."""
    if isinstance(out, np.ndarray) and out.ndim == 2 and 2 in out.shape:
        raise Mismatch("return a tuple (rows, cols) of two 1-D arrays, not one 2-D array "
                       "(e.g. `return rows, cols`)")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise Mismatch(f"return a tuple (rows, cols); got {type(out).__name__}"
                       + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
    rows = expect_array(out[0], kind="i", name="rows")
    cols = expect_array(out[1], kind="i", name="cols")
    if rows.ndim != 1 or cols.ndim != 1:
        raise Mismatch(f"rows and cols must be 1-D arrays, got shapes {rows.shape} and {cols.shape}")
    if len(rows) != len(cols):
        raise Mismatch(f"rows and cols must have the same length, got {len(rows)} and {len(cols)}")
    return rows.astype(np.int64), cols.astype(np.int64)


def _is_valid(rows, cols, shape) -> bool:
    n, m = shape
    return (len(rows) == min(n, m) and bool(np.all((0 <= rows) & (rows < n))) and bool(np.all((0 <= cols) & (cols < m)))
            and len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols))


def _greedy_global(cost):
    work = np.array(cost, dtype=np.float64)
    pairs = set()
    for _ in range(min(work.shape)):
        i, j = np.unravel_index(int(np.argmin(work)), work.shape)
        pairs.add((int(i), int(j)))
        work[i, :] = np.inf
        work[:, j] = np.inf
    return pairs


def _greedy_by_row(cost):
    cost = np.asarray(cost, dtype=np.float64)
    if cost.shape[0] > cost.shape[1]:
        return {(i, j) for j, i in _greedy_by_row(cost.T)}
    free = np.ones(cost.shape[1], dtype=bool)
    pairs = set()
    for i in range(cost.shape[0]):
        j = int(np.argmin(np.where(free, cost[i], np.inf)))
        free[j] = False
        pairs.add((i, j))
    return pairs


def _reduce_then_pick_zeros(cost) -> list[set]:
    """Pair sets of the classic mistake: reduce rows and columns, then pick zeros without augmenting.

    Variants: rows or columns reduced first; a row without a free zero is skipped, or takes its
    cheapest free column by reduced or by original cost.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if not np.isfinite(cost).all() or cost.size == 0:
        return []
    variants = []
    for first in (1, 0):
        reduced = cost - cost.min(first, keepdims=True)
        reduced = reduced - reduced.min(1 - first, keepdims=True)
        for fallback in ("skip", "reduced", "cost"):
            free = np.ones(cost.shape[1], dtype=bool)
            pairs = set()
            for i in range(cost.shape[0]):
                zeros = np.flatnonzero((np.abs(reduced[i]) < 1e-12) & free)
                if zeros.size:
                    j = int(zeros[0])
                elif fallback == "skip" or not free.any():
                    continue
                else:
                    j = int(np.argmin(np.where(free, reduced[i] if fallback == "reduced" else cost[i], np.inf)))
                free[j] = False
                pairs.add((i, j))
            variants.append(pairs)
    return variants


def _on_reduced_zeros(cost, pairs) -> bool:
    """Do all but at most one pair lie on zeros of the row-then-column (or column-then-row) reduced matrix?"""
    cost = np.asarray(cost, dtype=np.float64)
    if not np.isfinite(cost).all() or len(pairs) < 2:
        return False
    for first in (1, 0):
        reduced = cost - cost.min(first, keepdims=True)
        reduced = reduced - reduced.min(1 - first, keepdims=True)
        if sum(abs(reduced[i, j]) < 1e-12 for i, j in pairs) >= len(pairs) - 1:
            return True
    return False


_REDUCE_MESSAGE = ("that is what reducing rows and columns and then picking zeros gives: when the zeros hold no "
                   "complete assignment, picking zeros is not enough; change the potentials along a shortest "
                   "augmenting path (or cover the zeros with lines and shift) instead of taking what is left")


def _diagnose_assignment(rows, cols, cost: np.ndarray, optimum: float) -> str | None:
    """The likely cause of an invalid or suboptimal assignment."""
    n, m = cost.shape
    pairs = set(zip(rows.tolist(), cols.tolist()))
    if _is_valid(cols, rows, (n, m)) and np.isclose(cost[cols, rows].sum(), optimum, rtol=1e-9, atol=1e-9) and (
            n != m or not _is_valid(rows, cols, (n, m)) or not np.isclose(cost[rows, cols].sum(), optimum)):
        return ("rows and columns look swapped: for a tall matrix you probably solved the transpose; swap the two "
                "arrays back (rows index the cost's first axis) and sort the pairs by row")
    reduce_variants = _reduce_then_pick_zeros(cost)
    if not _is_valid(rows, cols, (n, m)):
        if pairs in reduce_variants or (len(rows) < min(n, m) and _on_reduced_zeros(cost, pairs)):
            return ("only pairs at zeros of the reduced matrix were matched, and the zeros do not hold a complete "
                    "assignment: when no free zero is left, change the potentials along an augmenting path "
                    "(or cover the zeros with lines and shift) instead of stopping")
        return None
    if pairs in (_greedy_global(cost), _greedy_by_row(cost)):
        return ("that is the greedy assignment (the cheapest pair first, or each row its cheapest free column): an "
                "early cheap choice is never revised and can force expensive ones later; augmenting paths re-route "
                "earlier matches")
    total = float(cost[rows, cols].sum())
    if np.isfinite(cost).all() and np.isclose(total, float(cost[_scipy_assignment(-cost)].sum()), rtol=1e-9,
                                              atol=1e-9) and not np.isclose(total, optimum, rtol=1e-9, atol=1e-9):
        return "this assignment MAXIMISES the total cost; the exercise asks for the minimum"
    if pairs in reduce_variants or _on_reduced_zeros(cost, pairs):
        return _REDUCE_MESSAGE
    return None


def _assignment_verdict(out, cost: np.ndarray, optimum: float, reveal: bool) -> None:
    """Raise Mismatch unless ``out`` is a valid minimum-cost assignment of ``cost`` with rows sorted."""
    rows, cols = _unpack_assignment(out, cost)
    n, m = cost.shape

    def fail(message: str, show_matrix: bool = True):
        got = f"\nyour rows {rows.tolist()}, cols {cols.tolist()}" if reveal and len(rows) <= 12 else ""
        shown = f"\n{_show(cost)}" if reveal and show_matrix else ""
        cause = _diagnose_assignment(rows, cols, cost, optimum)
        raise Mismatch(message + got + shown + (f"\nlikely cause: {cause}" if cause else ""))

    if len(rows) != min(n, m):
        fail(f"the assignment has {len(rows)} pairs; a {n}x{m} matrix needs min(n, m) = {min(n, m)} "
             "(every row, or every column if there are fewer columns)")
    if not (np.all((0 <= rows) & (rows < n)) and np.all((0 <= cols) & (cols < m))):
        fail(f"indices out of range: rows must lie in [0, {n}) and cols in [0, {m})", show_matrix=False)
    if len(set(rows.tolist())) != len(rows) or len(set(cols.tolist())) != len(cols):
        fail("not a valid assignment: a row or a column is used twice")
    total = float(cost[rows, cols].sum())
    if np.isinf(total):
        fail("your assignment uses a forbidden (+inf) pair although a finite assignment exists")
    if not np.isclose(total, optimum, rtol=1e-9, atol=1e-9):
        fail("the assignment is valid but not of minimum total cost"
             + (f": total {total:.6g}, the minimum is {optimum:.6g}" if reveal else ""))
    if np.any(np.diff(rows) < 0):
        raise Mismatch("the pairs are right but rows must be sorted ascending, like scipy's result "
                       "(e.g. `order = np.argsort(rows); return rows[order], cols[order]`)")


def _explain_hungarian_error(raised: Raised) -> str | None:
    text = raised.message.lower()
    if raised.type_name in ("IndexError", "ValueError") and ("index" in text or "bounds" in text):
        return ("an index went out of range: with a rectangular matrix make sure you loop over the smaller "
                "dimension (transpose a tall matrix, solve, then swap the result back)")
    return None


def _hungarian_case(spec, reveal) -> Case:
    kind = spec.get("kind", "value")
    cost = np.zeros(tuple(spec["shape"])) if kind == "empty" else _matrix(spec)
    name = _describe_matrix(spec, cost)
    about = spec.get("about", "")
    if kind == "error":
        def verify_error(outcomes, cost=cost):
            outcome = outcomes[0]
            if not isinstance(outcome, Raised):
                why = {"nan": "a NaN entry makes every comparison False, so no answer can be trusted",
                       "minus_inf": "a -inf entry makes the minimum unbounded",
                       "infeasible": "no assignment of every row avoids the +inf (forbidden) entries"}[spec["why"]]
                raise Mismatch(f"expected ValueError, but the function returned normally ({why})"
                               + (f"\n{_show(cost)}" if reveal else ""))
            expect_raises(outcome, ("ValueError",))
            if not outcome.message.strip():
                raise Mismatch("the ValueError is right, but give it a message that says what is wrong")
        return Case(name + " raises ValueError", [Call(cost)], verify_error, expects_error=True, about=about)
    optimum = _optimal_total(cost) if cost.size else 0.0
    if kind == "invariance":
        rng = np.random.default_rng(spec["seed"] + 1)
        shifted = cost + rng.normal(size=(cost.shape[0], 1)) * 5 + rng.normal(size=(1, cost.shape[1])) * 5
        if cost.shape[0] != cost.shape[1]:  # only the smaller dimension's shifts keep every optimum
            shifted = cost + (rng.normal(size=(cost.shape[0], 1)) * 5 if cost.shape[0] < cost.shape[1]
                              else rng.normal(size=(1, cost.shape[1])) * 5)

        def verify_invariance(outcomes, cost=cost, optimum=optimum):
            _assignment_verdict(outcomes[0], cost, optimum, reveal)
            rows, cols = _unpack_assignment(outcomes[1], cost)
            if not (_is_valid(rows, cols, cost.shape) and np.isclose(cost[rows, cols].sum(), optimum, rtol=1e-9,
                                                                     atol=1e-9)):
                raise Mismatch("adding a constant to every entry of a row (or a column) changes every assignment's "
                               "total by that constant, so an optimal assignment must stay optimal; yours changed "
                               "into a worse one for the original costs")

        return Case(f"invariance: {name}, plus a constant per row and per column", [Call(cost), Call(shifted)],
                    verify_invariance, explain_error=_explain_hungarian_error, about=about)

    def verify(outcomes, cost=cost, optimum=optimum):
        if cost.size == 0:
            rows, cols = _unpack_assignment(outcomes[0], cost)
            if len(rows):
                raise Mismatch(f"a {cost.shape[0]}x{cost.shape[1]} matrix has nothing to match: return two empty "
                               "integer arrays")
            return
        _assignment_verdict(outcomes[0], cost, optimum, reveal)

    if kind == "empty":
        name = f"{cost.shape[0]}x{cost.shape[1]} matrix (nothing to match)"
    return Case(name, [Call(cost)], verify, explain_error=_explain_hungarian_error, about=about)


def _hungarian_cases(specs, reveal):
    return [_hungarian_case(spec, reveal) for spec in specs]


register(Exercise(
    "hungarian_match", topic="detr",
    summary="minimum total cost equal to scipy's linear_sum_assignment and to brute force (square, tall, wide, "
            "ties, constant, 1x1, +inf pairs, 200x200); valid assignment of size min(n, m), rows sorted; invariant "
            "to adding constants to rows and columns; ValueError for NaN, -inf and infeasible matrices",
    cases=_hungarian_cases,
    visible=[
        {"matrix": "one_by_one"},
        {"matrix": "reduce_trap"},
        {"matrix": "greedy_trap"},
        {"shape": (4, 4), "values": "uniform", "seed": 1},
        {"shape": (3, 5), "values": "uniform", "seed": 2},
        {"shape": (6, 3), "values": "normal", "seed": 3},
        {"shape": (4, 5), "values": "int", "high": 3, "seed": 4},
        {"shape": (3, 4), "values": "const", "seed": 5},
        {"matrix": "forbidden_pairs"},
        {"kind": "empty", "shape": (5, 0)},
        {"kind": "invariance", "shape": (5, 5), "values": "uniform", "seed": 6},
        {"kind": "error", "matrix": "nan", "why": "nan"},
        {"kind": "error", "matrix": "minus_inf", "why": "minus_inf"},
        {"kind": "error", "matrix": "infeasible_row", "why": "infeasible"},
        {"shape": (200, 200), "values": "uniform", "seed": 7},
    ],
    forbidden=(CallableWatch(_ASSIGNMENT_SOLVERS, slow_hint=_SLOW_ASSIGNMENT),),
))


# ------------------------------------------------------------------------------------------------
# generalized_box_iou
# ------------------------------------------------------------------------------------------------
def _random_xyxy(rng, n, scale):
    xy = rng.uniform(0, 0.8, size=(n, 2))
    wh = rng.uniform(0.05, 0.5, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1) * scale


_FIXED_BOXES = {
    "identical": ([[2, 3, 10, 12], [0, 0, 4, 4], [5, 1, 9, 20]], [[2, 3, 10, 12], [0, 0, 4, 4], [5, 1, 9, 20]]),
    "nested": ([[0, 0, 10, 10], [2, 2, 6, 8]], [[1, 1, 3, 3], [0, 0, 10, 10], [2, 2, 6, 8]]),
    "touching_and_far": ([[0, 0, 4, 4], [0, 0, 1, 1]], [[4, 0, 8, 4], [4, 4, 6, 6], [30, 30, 31, 31]]),
    "degenerate": ([[3, 3, 3, 3], [0, 2, 5, 2], [1, 1, 4, 4], [7, 1, 7, 6]],
                   [[3, 3, 3, 3], [0, 2, 5, 2], [6, 6, 6, 6], [2, 2, 2, 2], [7, 1, 7, 6]]),
    "empty": ([], [[0, 0, 1, 1], [1, 1, 2, 3]]),
}


def _giou_inputs(spec):
    dtype = getattr(torch, spec.get("dtype", "float64"))
    if spec.get("boxes"):
        a, b = _FIXED_BOXES[spec["boxes"]]
        return (torch.tensor(a, dtype=dtype).reshape(-1, 4), torch.tensor(b, dtype=dtype).reshape(-1, 4))
    rng = np.random.default_rng(spec["seed"])
    scale = spec.get("scale", 64)
    return (torch.from_numpy(_random_xyxy(rng, spec["n"], scale)).to(dtype),
            torch.from_numpy(_random_xyxy(rng, spec["m"], scale)).to(dtype))


def _iou_variants(a, b) -> dict:
    """GIoU and the outputs of its usual bugs, every pair of xyxy boxes, float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    area_sum = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None] + ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None]
    raw = np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2])
    raw_inter = raw[..., 0] * raw[..., 1]             # not clamped: disjoint boxes can give any sign
    inter = np.clip(raw, 0, None).prod(-1)
    union = area_sum - inter
    hull = np.maximum(a[:, None, 2:], b[None, :, 2:]) - np.minimum(a[:, None, :2], b[None, :, :2])
    enclosing = hull[..., 0] * hull[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        return {"giou": _giou_oracle(a, b), "iou": iou,
                "unclamped": raw_inter / (area_sum - raw_inter) - (enclosing - area_sum + raw_inter) / enclosing,
                "penalty_inter": iou - (enclosing - inter) / enclosing,
                "penalty_sum": iou - (enclosing - area_sum) / enclosing}


def _diagnose_giou(got, a, b) -> str | None:
    variants = _iou_variants(a.numpy(), b.numpy())
    g = got.detach().to(torch.float64)
    expected = torch.from_numpy(variants["giou"])
    if bool(torch.isnan(g).any()) and not bool(torch.isnan(expected).any()):
        return ("NaN where a box has zero area: 0 / 0 when the union (or the enclosing box) is empty; guard the "
                "divisions, e.g. with torch.where(union > 0, inter / union.clamp_min(tiny), 0)")
    named = [("iou", "that is the plain IoU: subtract the penalty (|C| - |A ∪ B|) / |C|, C the smallest box "
                     "enclosing both"),
             ("unclamped", "the intersection is not clamped at 0: for disjoint boxes the overlap width or height "
                           "is negative; clamp them with .clamp(min=0) before multiplying"),
             ("penalty_inter", "the penalty uses the intersection; it is (|C| - |A ∪ B|) / |C| with the UNION"),
             ("penalty_sum", "the penalty uses |A| + |B|; it is (|C| - |A ∪ B|) / |C| with the union "
                             "|A| + |B| - |A ∩ B|")]
    for key, message in named:
        differs = not np.allclose(variants[key], variants["giou"], equal_nan=True)
        if differs and matches(g, torch.from_numpy(variants[key]), 1e-4):
            return message
    a_xyxy = _cxcywh_to_xyxy(a.numpy())
    b_xyxy = _cxcywh_to_xyxy(b.numpy())
    if matches(g, torch.from_numpy(_giou_oracle(a_xyxy, b_xyxy)), 1e-4):
        return "the boxes were read as (cx, cy, w, h); this function takes corners (x1, y1, x2, y2)"
    return None


def _giou_shape_hint(got, a, b) -> str:
    n, m = len(a), len(b)
    if isinstance(got, torch.Tensor) and got.ndim == 1 and n == m and got.shape[0] == n:
        return ("\nlikely cause: that is the GIoU of matching pairs (boxes1[i], boxes2[i]); return the (N, M) "
                "matrix of every pair: broadcast boxes1[:, None] against boxes2[None, :]")
    if isinstance(got, torch.Tensor) and tuple(got.shape) == (m, n) and n != m:
        return "\nlikely cause: rows must follow boxes1 and columns boxes2"
    return ""


def _giou_case(spec, reveal) -> Case:
    a, b = _giou_inputs(spec)
    expected = torch.from_numpy(_giou_oracle(a.numpy(), b.numpy())).to(a.dtype)
    kind = spec.get("kind", "value")
    units = "pixel" if spec.get("scale", 64) > 1 else "normalised"
    label = (f"{spec['boxes'].replace('_', ' ')} boxes" if spec.get("boxes")
             else f"{len(a)} x {len(b)} random boxes, {units} coordinates")
    label += f", {spec.get('dtype', 'float64')}"
    tol = {"atol": 1e-5, "rtol": 1e-4} if a.dtype == torch.float32 else {"atol": 1e-7, "rtol": 1e-6}

    def check_one(got):
        if isinstance(got, torch.Tensor) and tuple(got.shape) != tuple(expected.shape):
            raise Mismatch(f"output has shape {tuple(got.shape)}; expected (N, M) = {tuple(expected.shape)}"
                           + _giou_shape_hint(got, a, b))
        got = expect_tensor(got, shape=expected.shape, dtype=expected.dtype)
        if bool(torch.isnan(got).any()):
            raise Mismatch("your output contains NaN\nlikely cause: " + (_diagnose_giou(got, a, b) or
                           "a division by zero: guard the divisions where the union or the enclosing box is empty"))
        compare(got, expected, **tol, reveal=reveal, diagnose=lambda g: _diagnose_giou(g, a, b))

    if kind == "symmetry":
        def verify_symmetry(outcomes):
            check_one(outcomes[0])
            swapped = expect_tensor(outcomes[1], shape=expected.T.shape, dtype=expected.dtype,
                                    name="GIoU(boxes2, boxes1)")
            if not torch.allclose(swapped, outcomes[0].T, **tol):
                raise Mismatch("GIoU is symmetric: generalized_box_iou(b, a) must equal generalized_box_iou(a, b).T")
        return Case("symmetry: " + label, [Call(a, b), Call(b, a)], verify_symmetry,
                    explain_error=_explain_giou_error, about=spec.get("about", "symmetry"))
    return Case(label, [Call(a, b)], lambda outcomes: check_one(outcomes[0]), explain_error=_explain_giou_error,
                about=spec.get("about", ""))


def _explain_giou_error(raised: Raised) -> str | None:
    if "must match the size" in raised.message or "broadcast" in raised.message:
        return ("boxes1 and boxes2 may hold different numbers of boxes: compare every pair by broadcasting "
                "boxes1[:, None, :] against boxes2[None, :, :] (result (N, M))")
    return None


def _giou_cases(specs, reveal):
    return [_giou_case(spec, reveal) for spec in specs]


register(Exercise(
    "generalized_box_iou", topic="detr",
    summary="(N, M) GIoU of every pair equal to the closed form for identical, nested, touching, far, zero-area "
            "(no NaN) and random boxes, float32 and float64; symmetric; empty inputs",
    cases=_giou_cases,
    visible=[
        {"boxes": "identical"},
        {"boxes": "nested"},
        {"boxes": "touching_and_far"},
        {"boxes": "degenerate"},
        {"boxes": "empty"},
        {"n": 4, "m": 5, "seed": 11},
        {"n": 3, "m": 3, "seed": 12, "scale": 1, "dtype": "float32"},
        {"kind": "symmetry", "n": 3, "m": 2, "seed": 13},
    ],
    forbidden=(CallableWatch(_BOX_LIBRARY),),
))


# ------------------------------------------------------------------------------------------------
# detr_matching_cost
# ------------------------------------------------------------------------------------------------
def _random_cxcywh(rng, n):
    centre = rng.uniform(0.2, 0.8, size=(n, 2))
    size = rng.uniform(0.05, 0.4, size=(n, 2))
    return np.concatenate([centre, size], axis=1)


def _cost_inputs(spec):
    rng = np.random.default_rng(spec["seed"])
    dtype = getattr(torch, spec.get("dtype", "float64"))
    q, k, c = spec["q"], spec["k"], spec.get("c", 5)
    logits = torch.from_numpy(rng.normal(size=(q, c)) * 2).to(dtype)
    pred_boxes = torch.from_numpy(_random_cxcywh(rng, q)).to(dtype)
    labels = torch.from_numpy(rng.integers(1, c, size=k)).to(torch.int64)
    tgt_boxes = torch.from_numpy(_random_cxcywh(rng, k)).to(dtype)
    return logits, pred_boxes, labels, tgt_boxes


_COST_BUGS = (
    ("plus_class", "the class term has the wrong sign: a likely class must make the pair CHEAPER, "
                   "-w_class * p(label)"),
    ("logits", "the class term uses raw logits; DETR's matcher uses probabilities: softmax over the classes first"),
    ("log_prob", "the class term uses log-probabilities; DETR's matcher uses -w_class * p(label) (the probability "
                 "itself)"),
    ("softmax_dim0", "the softmax runs over the predictions; take it over the classes (the last axis)"),
    ("labels_minus_one", "the class column is shifted by one: tgt_labels index the logit columns directly "
                         "(p[:, tgt_labels]); column 0 is 'no object'"),
    ("l2", "the box term is the Euclidean (L2) distance; DETR uses L1: the sum of absolute differences"),
    ("l1_xyxy", "the L1 term was computed on corners; take it on the normalised (cx, cy, w, h) as given"),
    ("plus_giou", "the GIoU term has the wrong sign: more overlap must make the pair CHEAPER, -w_giou * GIoU"),
    ("giou_cxcywh", "GIoU was computed on (cx, cy, w, h) as if they were corners: convert to xyxy first "
                    "(lecturelib.boxes.box_cxcywh_to_xyxy)"),
    ("minus_l1", "the L1 term has the wrong sign: a distant box must make the pair MORE expensive, +w_l1 * L1"),
)


def _diagnose_cost(got, inputs, weights) -> str | None:
    logits, pred_boxes, labels, tgt_boxes = (x.numpy() for x in inputs)
    g = got.detach().to(torch.float64)
    for variant, message in _COST_BUGS:
        if variant == "labels_minus_one" and labels.min() < 1:
            continue
        candidate = _cost_oracle(logits, pred_boxes, labels, tgt_boxes, *weights, variant=variant)
        if matches(g, torch.from_numpy(candidate), 1e-4):
            return message
    for other in set(itertools.permutations(weights)) | {(1.0, 5.0, 2.0)}:
        if tuple(other) != tuple(weights) and matches(g, torch.from_numpy(_cost_oracle(
                logits, pred_boxes, labels, tgt_boxes, *other)), 1e-4):
            return (f"the weights look mixed up or ignored: got the cost for w_class, w_l1, w_giou = {other}, "
                    f"expected {tuple(weights)}")
    return None


def _cost_case(spec, reveal) -> Case:
    inputs = _cost_inputs(spec)
    logits, pred_boxes, labels, tgt_boxes = inputs
    weights = tuple(float(w) for w in spec.get("weights", (1.0, 5.0, 2.0)))
    expected = torch.from_numpy(_cost_oracle(*(x.numpy() for x in inputs), *weights)).to(logits.dtype)
    q, k = len(logits), len(labels)
    if "weights" in spec:
        call = Call(logits, pred_boxes, labels, tgt_boxes, w_class=weights[0], w_l1=weights[1], w_giou=weights[2],
                    giou_fn=_giou_for_student)
        wtext = f"weights {weights}"
    else:
        call = Call(logits, pred_boxes, labels, tgt_boxes, giou_fn=_giou_for_student)
        wtext = "default weights (1, 5, 2)"
    name = f"{q} predictions, {k} targets, {logits.shape[1]} classes, {wtext}, {spec.get('dtype', 'float64')}"

    def verify(outcomes):
        got = outcomes[0]
        if isinstance(got, torch.Tensor) and tuple(got.shape) != (q, k):
            hint = ("\nlikely cause: rows must be the predictions and columns the targets"
                    if tuple(got.shape) == (k, q) else "")
            raise Mismatch(f"output has shape {tuple(got.shape)}; expected (Q, K) = ({q}, {k}){hint}")
        got = expect_tensor(got, shape=(q, k), dtype=logits.dtype)
        tol = {"atol": 1e-4, "rtol": 1e-4} if logits.dtype == torch.float32 else {"atol": 1e-8, "rtol": 1e-6}
        compare(got, expected, **tol, reveal=reveal, diagnose=lambda g: _diagnose_cost(g, inputs, weights))

    def explain(raised):
        if "giou_fn" in raised.message or "unexpected keyword" in raised.message:
            return ("the function must accept the keyword arguments w_class, w_l1, w_giou and giou_fn (the checks "
                    "pass a correct GIoU as giou_fn; use it for the GIoU term)")
        return None

    return Case(name, [call], verify, explain_error=explain, about=spec.get("about", ""))


def _cost_cases(specs, reveal):
    return [_cost_case(spec, reveal) for spec in specs]


register(Exercise(
    "detr_matching_cost", topic="detr",
    summary="(Q, K) cost -w_class p(label) + w_l1 L1(cxcywh) - w_giou GIoU(xyxy) equal to a float64 oracle, with "
            "default (1, 5, 2) and other weights, float32 and float64, no targets",
    cases=_cost_cases,
    visible=[
        {"q": 4, "k": 3, "seed": 21},
        {"q": 5, "k": 2, "seed": 22, "weights": (2.0, 1.0, 3.0)},
        {"q": 3, "k": 4, "c": 6, "seed": 23, "weights": (1.0, 0.0, 0.0)},
        {"q": 6, "k": 3, "seed": 24, "dtype": "float32"},
        {"q": 4, "k": 0, "seed": 25},
    ],
    forbidden=(CallableWatch(_COST_ORACLES),),
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
            raise TypeError(f"cost_fn expects torch tensors; {name} is a {type(value).__name__}")
    if pred_logits.ndim != 2 or pred_boxes.ndim != 2 or tgt_boxes.ndim != 2 or tgt_labels.ndim != 1:
        raise ValueError(f"cost_fn expects ONE image: pred_logits (Q, C), pred_boxes (Q, 4), tgt_labels (K,), "
                         f"tgt_boxes (K, 4); got shapes {tuple(pred_logits.shape)}, {tuple(pred_boxes.shape)}, "
                         f"{tuple(tgt_labels.shape)}, {tuple(tgt_boxes.shape)}")
    prob = pred_logits.softmax(-1)[:, tgt_labels.long()]
    return (pred_boxes[:, None, :] - tgt_boxes[None, :, :]).abs().sum(-1) - prob


def _assign_for_student(cost) -> tuple[np.ndarray, np.ndarray]:
    """The assign_fn the checks give to match_batch: scipy's solver, for a 2-D NumPy array only."""
    if not isinstance(cost, np.ndarray):
        raise TypeError(f"assign_fn takes the cost as a 2-D NumPy array, got a {type(cost).__module__}."
                        f"{type(cost).__name__}: convert it with cost.detach().cpu().numpy()")
    if cost.ndim != 2:
        raise ValueError(f"assign_fn takes one image's (Q, K) cost matrix, got shape {cost.shape}")
    return _scipy_assignment(cost)


def _batch_inputs(spec):
    rng = np.random.default_rng(spec["seed"])
    b, q, c = len(spec["targets"]), spec["q"], spec.get("c", 5)
    logits = torch.from_numpy(rng.normal(size=(b, q, c)) * 2)
    boxes = torch.from_numpy(np.stack([_random_cxcywh(rng, q) for _ in range(b)]))
    targets = []
    for k in spec["targets"]:
        targets.append({"labels": torch.from_numpy(rng.integers(1, c, size=k)).to(torch.int64),
                        "boxes": torch.from_numpy(_random_cxcywh(rng, k))})
    return logits, boxes, targets


def _expected_batch(logits, boxes, targets):
    pairs = []
    for i, target in enumerate(targets):
        if len(target["labels"]) == 0:
            pairs.append(set())
            continue
        cost = _simple_cost(logits[i], boxes[i], target["labels"], target["boxes"]).numpy()
        rows, cols = _scipy_assignment(cost)
        pairs.append(set(zip(rows.tolist(), cols.tolist())))
    return pairs


def _joint_batch(logits, boxes, targets):
    """The known bug: one assignment over the whole batch, then split back into images."""
    b, q = logits.shape[:2]
    sizes = [len(t["labels"]) for t in targets]
    if sum(sizes) == 0:
        return [set() for _ in targets]
    labels = torch.cat([t["labels"] for t in targets])
    tboxes = torch.cat([t["boxes"] for t in targets])
    cost = _simple_cost(logits.reshape(b * q, -1), boxes.reshape(b * q, 4), labels, tboxes).numpy()
    rows, cols = _scipy_assignment(cost)
    offsets = np.cumsum([0] + sizes)
    pairs = [set() for _ in targets]
    for r, c in zip(rows, cols):
        image = int(r) // q
        pairs[image].add((int(r) % q, int(c) - int(offsets[image])))
    return pairs


def _batch_case(spec, reveal) -> Case:
    logits, boxes, targets = _batch_inputs(spec)
    q, sizes = logits.shape[1], [len(t["labels"]) for t in targets]
    expected = _expected_batch(logits, boxes, targets)
    joint = _joint_batch(logits, boxes, targets)
    name = f"batch of {len(targets)} images, {q} queries, targets per image {sizes}"

    def verify(outcomes):
        out = outcomes[0]
        if not isinstance(out, (list, tuple)) or len(out) != len(targets):
            length = f" of length {len(out)}" if isinstance(out, (list, tuple)) else ""
            raise Mismatch(f"return a list with one (pred_idx, tgt_idx) pair per image ({len(targets)}); got "
                           f"{type(out).__name__}{length}")
        got = []
        for i, item in enumerate(out):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise Mismatch(f"entry {i} must be a pair (pred_idx, tgt_idx), got {type(item).__name__}")
            pred_idx = expect_tensor(item[0], dtype=torch.int64, name=f"pred_idx of image {i}")
            tgt_idx = expect_tensor(item[1], dtype=torch.int64, name=f"tgt_idx of image {i}")
            if pred_idx.ndim != 1 or pred_idx.shape != tgt_idx.shape:
                raise Mismatch(f"image {i}: pred_idx and tgt_idx must be 1-D of the same length, got shapes "
                               f"{tuple(pred_idx.shape)} and {tuple(tgt_idx.shape)}")
            got.append(set(zip(pred_idx.tolist(), tgt_idx.tolist())))
        for i, (mine, want) in enumerate(zip(got, expected)):
            if mine == want:
                continue
            shown = f": expected pairs {sorted(want)}, got {sorted(mine)}" if reveal else ""
            if got == joint and joint != expected:
                cause = ("one assignment was solved for the whole batch, so predictions of one image can take the "
                         "objects of another: build and solve each image's (Q, K_i) cost matrix on its own")
            elif mine == {(t, p) for p, t in want}:
                cause = "the pairs are swapped: return (pred_idx, tgt_idx), the rows and columns of each cost matrix"
            elif any(p >= q or p < 0 for p, _ in mine) or any(t >= sizes[i] or t < 0 for _, t in mine):
                cause = ("indices must be local to each image: prediction indices in [0, Q) and target indices in "
                         "[0, K_i), not offsets into the whole batch")
            elif sizes[i] == 0:
                cause = "an image without targets must get two empty int64 tensors"
            else:
                cause = ("each image must be matched with cost_fn(pred_logits[i], pred_boxes[i], labels_i, boxes_i) "
                         "and assign_fn on that cost, as a NumPy array")
            raise Mismatch(f"image {i} is matched wrongly{shown}\nlikely cause: {cause}")

    def explain(raised):
        if 0 in sizes:
            return ("this batch has an image without targets: give it two empty int64 tensors "
                    "(torch.zeros(0, dtype=torch.int64)) instead of building a cost matrix")
        return None

    return Case(name, [Call(logits, boxes, targets, _simple_cost, _assign_for_student)], verify,
                explain_error=explain, about=spec.get("about", ""))


def _batch_cases(specs, reveal):
    return [_batch_case(spec, reveal) for spec in specs]


register(Exercise(
    "match_batch", topic="detr",
    summary="per-image optimal matchings (indices local to each image, int64 tensors, (pred_idx, tgt_idx)) for "
            "batches with different numbers of targets, including images without any",
    cases=_batch_cases,
    visible=[
        {"targets": [2], "q": 4, "seed": 31},
        {"targets": [3, 1, 2], "q": 4, "seed": 32},
        {"targets": [2, 0, 3], "q": 5, "seed": 33},
    ],
    forbidden=(CallableWatch(_BATCH_ORACLES),),
))
