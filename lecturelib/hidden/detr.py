"""Grader side of the DETR checks: oracles, known mistakes, case builders, visible and hidden specs (grader copy
only).

Oracles: ``scipy.optimize.linear_sum_assignment`` and brute force over all assignments (both, on small
matrices, and they must agree), closed-form box geometry in float64 NumPy, and constructions whose answer is
known (identical, nested, touching and degenerate boxes). Each known mistake (greedy matching,
reduce-then-pick-zeros, maximising, plain IoU, a wrong sign in the cost, one assignment for a whole batch...)
is run here on the case's inputs; its output goes into the case's data, so the student package can name the
cause without holding the code that made the mistake.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

from ..boxes import box_cxcywh_to_xyxy
from ..checks.core import Call, Case
from ..checks.detr import GiouLookup, _assign_for_student, _simple_cost
from . import mistake_outputs


def _scipy_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy.optimize import linear_sum_assignment  # imported when used: scipy takes a while to load
    return linear_sum_assignment(cost)


# ------------------------------------------------------------------------------------------------
# hungarian_match
# ------------------------------------------------------------------------------------------------
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


_NAMED_MATRICES = {
    # Greedy takes the 1, then the 2, then is left with the 8 (total 11); the optimum is 4 + 2 + 2 = 8.
    "greedy_trap": [[9, 4, 1], [2, 3, 7], [7, 8, 2]],
    # After reducing, rows 1 and 2 have their only zero in column 0; the optimum (9) moves every row.
    "reduce_trap": [[8, 4, 2, 5], [1, 5, 7, 5], [1, 7, 9, 5], [3, 4, 2, 1]],
    "one_by_one": [[7.5]],
    # Found by search: both greedy rules (11, 13), reduce-then-pick-zeros (11) and zeros only (4 pairs) all miss the
    # optimum 9, with different pairs; a constructed case, so every student's hidden suite starts with it.
    "trap_5x5": [[8, 0, 9, 5, 3], [6, 5, 2, 3, 7], [5, 5, 3, 7, 3], [3, 8, 2, 2, 7], [6, 0, 0, 3, 8]],
    "forbidden_pairs": [[np.inf, 2, 5, np.inf], [1, np.inf, np.inf, 4], [np.inf, 3, 1, np.inf],
                        [2, np.inf, 6, np.inf]],
    "nan": [[1, 2, 3], [4, np.nan, 6], [7, 8, 9]],
    "minus_inf": [[1, 2, 3], [4, 5, -np.inf], [7, 8, 9]],
    "infeasible_row": [[1, 2, 3], [np.inf, np.inf, np.inf], [4, 5, 6]],
    "infeasible_block": [[1, np.inf, np.inf], [2, np.inf, np.inf], [3, 4, 5]],
}


def _feasible_with_inf(rng, shape, fraction) -> np.ndarray:
    """Uniform random costs with about ``fraction`` of the entries +inf, drawn until a complete assignment exists."""
    for _ in range(100):
        cost = rng.random(shape)
        cost[rng.random(shape) < fraction] = np.inf
        try:
            _scipy_assignment(cost)
            return cost
        except ValueError:
            continue
    raise RuntimeError(f"no feasible {shape} matrix with a fraction {fraction} of +inf")


_RANDOM_MATRICES = {
    "uniform": lambda rng, shape, spec: rng.random(shape),
    "normal": lambda rng, shape, spec: rng.normal(size=shape) * 10,
    "int": lambda rng, shape, spec: rng.integers(0, spec.get("high", 3), size=shape).astype(np.int64),
    "const": lambda rng, shape, spec: np.full(shape, 3.0),
    "inf": lambda rng, shape, spec: _feasible_with_inf(rng, shape, spec.get("fraction", 0.4)),
}


def _matrix(spec) -> np.ndarray:
    """The cost matrix of a spec: a named matrix, or random values of a kind, shape and seed."""
    if "matrix" in spec:
        return np.array(_NAMED_MATRICES[spec["matrix"]], dtype=np.float64)
    make = _RANDOM_MATRICES[spec.get("values", "uniform")]
    return make(np.random.default_rng(spec["seed"]), tuple(spec["shape"]), spec)


def _describe_matrix(spec, cost) -> str:
    n, m = cost.shape
    if "matrix" in spec:
        return {"greedy_trap": "3x3 matrix where greedy matching is not optimal",
                "reduce_trap": "4x4 matrix whose reduced zeros hold no complete assignment",
                "one_by_one": "1x1 matrix",
                "trap_5x5": "5x5 matrix where greedy matching and picking reduced zeros are not optimal",
                "forbidden_pairs": "4x4 matrix with +inf (forbidden) pairs",
                "nan": "3x3 matrix with a NaN entry", "minus_inf": "3x3 matrix with a -inf entry",
                "infeasible_row": "3x3 matrix with a row of +inf (no complete assignment)",
                "infeasible_block": "3x3 matrix where two rows can only use one column"}[spec["matrix"]]
    shape = "square" if n == m else ("wide" if n < m else "tall")
    kind = {"uniform": "uniform random", "normal": "random normal (negative too)",
            "int": f"integers 0..{spec.get('high', 3) - 1} (many ties)", "const": "constant",
            "inf": "random with +inf (forbidden) entries"}[spec.get("values", "uniform")]
    return f"{n}x{m} {shape} matrix, {kind}"


def _greedy_global(cost) -> list:
    """The cheapest remaining pair first: sorted (row, col) pairs."""
    work = np.array(cost, dtype=np.float64)
    pairs = set()
    for _ in range(min(work.shape)):
        i, j = np.unravel_index(int(np.argmin(work)), work.shape)
        pairs.add((int(i), int(j)))
        work[i, :] = np.inf
        work[:, j] = np.inf
    return sorted(pairs)


def _greedy_by_row(cost) -> list:
    """Each row (of the smaller side) its cheapest free column: sorted (row, col) pairs."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.shape[0] > cost.shape[1]:
        return sorted((i, j) for j, i in _greedy_by_row(cost.T))
    free = np.ones(cost.shape[1], dtype=bool)
    pairs = []
    for i in range(cost.shape[0]):
        j = int(np.argmin(np.where(free, cost[i], np.inf)))
        free[j] = False
        pairs.append((i, j))
    return pairs


def _reduced(cost: np.ndarray, first: int) -> np.ndarray:
    """``cost`` minus its row minima then its column minima (``first`` = 1), or columns first (``first`` = 0)."""
    reduced = cost - cost.min(first, keepdims=True)
    return reduced - reduced.min(1 - first, keepdims=True)


def _pick_zeros(reduced: np.ndarray, cost: np.ndarray, fallback: str) -> list:
    """Each row takes its first free zero; a row without one is skipped, or takes its cheapest free column by
    reduced or by original cost."""
    free = np.ones(cost.shape[1], dtype=bool)
    pairs = []
    for i in range(cost.shape[0]):
        zeros = np.flatnonzero((np.abs(reduced[i]) < 1e-12) & free)
        if zeros.size:
            j = int(zeros[0])
        elif fallback == "skip" or not free.any():
            continue
        else:
            j = int(np.argmin(np.where(free, reduced[i] if fallback == "reduced" else cost[i], np.inf)))
        free[j] = False
        pairs.append((i, j))
    return pairs


def _reduce_then_pick_zeros(cost: np.ndarray) -> list[list]:
    """Pair lists of the classic mistake: reduce rows and columns, then pick zeros without augmenting."""
    if not np.isfinite(cost).all() or cost.size == 0:
        return []
    return [_pick_zeros(_reduced(cost, first), cost, fallback)
            for first in (1, 0) for fallback in ("skip", "reduced", "cost")]


def _reduced_optima(cost: np.ndarray) -> list:
    """``[(reduced, its minimum total)]`` for both reduction orders of a finite rectangular matrix: an assignment
    optimal for one of them but not for ``cost`` reduced the side that is not fully matched."""
    if cost.shape[0] == cost.shape[1] or not np.isfinite(cost).all() or cost.size == 0:
        return []
    optima = []
    for first in (1, 0):
        reduced = _reduced(cost, first)
        optima.append((reduced, float(reduced[_scipy_assignment(reduced)].sum())))
    return optima


def _assignment_data(cost: np.ndarray) -> dict:
    """The minimum total, and what the verifier needs to name a wrong assignment: the known mistakes' pairs,
    the total of a maximising assignment, where the reduced matrices are zero, the optima of the reduced
    matrices of a rectangular one."""
    finite = bool(np.isfinite(cost).all())
    maximum = float(cost[_scipy_assignment(-cost)].sum()) if finite else None
    zeros = [np.abs(_reduced(cost, first)) < 1e-12 for first in (1, 0)] if finite else []
    return {"cost": cost, "optimum": _optimal_total(cost), "greedy": [_greedy_global(cost), _greedy_by_row(cost)],
            "maximum": maximum, "reduce": _reduce_then_pick_zeros(cost), "reduced_zeros": zeros,
            "reduced_optima": _reduced_optima(cost)}


def _hungarian_value(spec):
    cost = _matrix(spec)
    return Case(_describe_matrix(spec, cost), [Call(cost)], "hungarian_match", _assignment_data(cost),
                explain="hungarian_match", about=spec.get("about", ""))


def _hungarian_empty(spec):
    cost = np.zeros(tuple(spec["shape"]))
    n, m = cost.shape
    return Case(f"{n}x{m} matrix (nothing to match)", [Call(cost)], "hungarian_match:empty", {"shape": (n, m)},
                explain="hungarian_match", about=spec.get("about", ""))


def _hungarian_invariance(spec):
    """The same matrix plus a constant per row and per column (per row or per column only if it is not square:
    only the smaller dimension's shifts keep every optimum)."""
    cost = _matrix(spec)
    rng = np.random.default_rng(spec["seed"] + 1)
    n, m = cost.shape
    shifted = cost + rng.normal(size=(n, 1)) * 5 + rng.normal(size=(1, m)) * 5
    if n != m:
        shifted = cost + (rng.normal(size=(n, 1)) * 5 if n < m else rng.normal(size=(1, m)) * 5)
    return Case(f"invariance: {_describe_matrix(spec, cost)}, plus a constant per row and per column",
                [Call(cost), Call(shifted)], "hungarian_match:invariance", _assignment_data(cost),
                explain="hungarian_match", about=spec.get("about", ""))


def _hungarian_error(spec):
    cost = _matrix(spec)
    return Case(_describe_matrix(spec, cost) + " raises ValueError", [Call(cost)], "hungarian_match:error",
                {"why": spec["why"], "cost": cost}, expects_error=True, about=spec.get("about", ""))


_HUNGARIAN_KINDS = {"value": _hungarian_value, "empty": _hungarian_empty, "invariance": _hungarian_invariance,
                    "error": _hungarian_error}


def _hungarian_cases(specs, reveal):
    for spec in specs:
        yield _HUNGARIAN_KINDS[spec.get("kind", "value")](spec)


# ------------------------------------------------------------------------------------------------
# generalized_box_iou
# ------------------------------------------------------------------------------------------------
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


def _cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    cx, cy, w, h = np.moveaxis(np.asarray(boxes, np.float64), -1, 0)
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


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
    "none_right": ([[0, 0, 1, 1], [1, 1, 2, 3], [2, 0, 5, 1]], []),
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


def _overlaps(a: np.ndarray, b: np.ndarray) -> dict:
    """(N, M) areas of every pair of xyxy boxes, float64: the parts the GIoU mistakes combine wrongly."""
    area_sum = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None] + ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None]
    raw = np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2])
    inter = np.clip(raw, 0, None).prod(-1)
    hull = np.maximum(a[:, None, 2:], b[None, :, 2:]) - np.minimum(a[:, None, :2], b[None, :, :2])
    union = area_sum - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return {"area_sum": area_sum, "raw_inter": raw[..., 0] * raw[..., 1], "inter": inter, "iou": iou,
            "enclosing": hull[..., 0] * hull[..., 1]}


def _plain_iou(a, b):
    return _overlaps(a, b)["iou"]


def _unclamped(a, b):
    """The overlap width and height not clamped at 0: disjoint boxes can give any sign."""
    o = _overlaps(a, b)
    raw, area_sum, enclosing = o["raw_inter"], o["area_sum"], o["enclosing"]
    return raw / (area_sum - raw) - (enclosing - area_sum + raw) / enclosing


def _unclamped_guarded(a, b):
    """The overlap not clamped, the divisions guarded: a 'union' <= 0 (far-apart boxes) gives IoU 0."""
    o = _overlaps(a, b)
    raw, enclosing = o["raw_inter"], o["enclosing"]
    union = o["area_sum"] - raw
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, raw / np.where(union > 0, union, 1), 0.0)
        penalty = np.where(enclosing > 0, (enclosing - union) / np.where(enclosing > 0, enclosing, 1), 0.0)
    return iou - penalty


def _penalty_with(covered: str):
    def giou(a, b):
        o = _overlaps(a, b)
        return o["iou"] - (o["enclosing"] - o[covered]) / o["enclosing"]
    return giou


def _empty_union_as_one(a, b):
    """IoU 1 where the union is empty (identical points), the penalty guarded as it should be."""
    o = _overlaps(a, b)
    union = o["area_sum"] - o["inter"]
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, o["inter"] / np.where(union > 0, union, 1), 1.0)
        penalty = np.where(o["enclosing"] > 0, (o["enclosing"] - union) / np.where(o["enclosing"] > 0,
                                                                                     o["enclosing"], 1), 0.0)
    return iou - penalty


def _read_as_cxcywh(a, b):
    return _giou_oracle(_cxcywh_to_xyxy(a), _cxcywh_to_xyxy(b))


_UNCLAMPED = ("the intersection is not clamped at 0: for disjoint boxes the overlap width or height is negative; "
              "clamp them with .clamp(min=0) before multiplying")
_GIOU_MISTAKES = (
    (_plain_iou, "that is the plain IoU: subtract the penalty (|C| - |A ∪ B|) / |C|, C the smallest box "
                 "enclosing both"),
    (_unclamped, _UNCLAMPED),
    (_unclamped_guarded, _UNCLAMPED),
    (_penalty_with("inter"), "the penalty uses the intersection; it is (|C| - |A ∪ B|) / |C| with the UNION"),
    (_penalty_with("area_sum"), "the penalty uses |A| + |B|; it is (|C| - |A ∪ B|) / |C| with the union "
                                "|A| + |B| - |A ∩ B|"),
    (_empty_union_as_one, "the IoU of two boxes with an empty union is 0 by definition (two identical points give "
                          "GIoU 0), not 1: torch.where(union > 0, inter / union.clamp(min=tiny), 0)"),
)
_CXCYWH = "the boxes were read as (cx, cy, w, h); this function takes corners (x1, y1, x2, y2)"


_EPSILON = ("an epsilon was added to a denominator (or a denominator was clamped at an epsilon): that changes every "
            "value a little, small boxes a lot; guard the divisions instead: torch.where(union > 0, "
            "inter / union.clamp(min=tiny), 0) with tiny = torch.finfo(dtype).tiny")


def _with_epsilon(eps: float, how: str, both: bool):
    """GIoU whose divisions by the union (and, if ``both``, the enclosing area) add ``eps`` or clamp at it."""
    def giou(a, b):
        o = _overlaps(a, b)
        fix = (lambda d: d + eps) if how == "add" else (lambda d: np.maximum(d, eps))
        enclosing = fix(o["enclosing"]) if both else np.where(o["enclosing"] > 0, o["enclosing"], np.inf)
        union = o["area_sum"] - o["inter"]
        return o["inter"] / fix(union) - (o["enclosing"] - union) / enclosing
    return giou


_EPSILON_MISTAKES = tuple((_with_epsilon(eps, how, both), _EPSILON) for eps in (1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10)
                          for how in ("add", "clamp") for both in (True, False))


def _giou_mistakes(a: np.ndarray, b: np.ndarray) -> list:
    """(output, cause) of the usual GIoU mistakes on these boxes, as float64 tensors; a mistake that gives the
    right answer here is left out (it must not be blamed), and so is an epsilon too small to tell from a
    rounding error at the verifier's 1e-4 (named only where it changes a value by more than 1e-3; the smaller
    ones are in :func:`_epsilon_mistakes`)."""
    expected = _giou_oracle(a, b)
    mistakes = [(torch.from_numpy(output), cause) for output, cause in mistake_outputs(_GIOU_MISTAKES, a, b)
                if not np.allclose(output, expected, equal_nan=True)]
    mistakes += [(output, cause) for output, cause in _epsilon_mistakes(a, b) if (output - expected).abs().max() > 1e-3]
    return mistakes + [(torch.from_numpy(_read_as_cxcywh(a, b)), _CXCYWH)]


def _epsilon_mistakes(a: np.ndarray, b: np.ndarray) -> list:
    """(output, cause) of GIoU with an epsilon, float64: on boxes of normalised size an epsilon of 1e-7 changes the
    values by about 1e-5, which only a float64 answer compared at 1e-12 can attribute (measured: on 5 x 6 boxes of
    scale 1, eps 1e-7 moved values by 2e-6 to 4e-5)."""
    expected = _giou_oracle(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return [(torch.from_numpy(output), cause) for output, cause in mistake_outputs(_EPSILON_MISTAKES, a, b)
                if output.size and np.isfinite(output).all() and np.abs(output - expected).max() > 1e-9]


def _giou_cases(specs, reveal):
    for spec in specs:
        a, b = _giou_inputs(spec)
        a64, b64 = a.numpy().astype(np.float64), b.numpy().astype(np.float64)
        data = {"expected": torch.from_numpy(_giou_oracle(a64, b64)).to(a.dtype), "mistakes": _giou_mistakes(a64, b64),
                "epsilon_mistakes": _epsilon_mistakes(a64, b64) if a.dtype == torch.float64 else []}
        units = ("pixel" if spec.get("scale", 64) > 1 else "normalised" if spec.get("scale", 64) == 1
                 else "tiny normalised")
        label = (f"{spec['boxes'].replace('_', ' ')} boxes" if spec.get("boxes")
                 else f"{len(a)} x {len(b)} random boxes, {units} coordinates")
        label += f", {spec.get('dtype', 'float64')}"
        if spec.get("kind") == "symmetry":
            yield Case("symmetry: " + label, [Call(a, b), Call(b, a)], "generalized_box_iou:symmetry", data,
                       explain="generalized_box_iou", about=spec.get("about", "symmetry"))
        else:
            yield Case(label, [Call(a, b)], "generalized_box_iou", data, explain="generalized_box_iou",
                       about=spec.get("about", ""))


# ------------------------------------------------------------------------------------------------
# detr_matching_cost
# ------------------------------------------------------------------------------------------------
def _softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def _cost_oracle(logits, pred_boxes, labels, tgt_boxes, w_class, w_l1, w_giou, variant: str = "") -> np.ndarray:
    """DETR's matching cost in float64 NumPy; ``variant`` names a known mistake to reproduce it."""
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


_COST_MISTAKES = (
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
_DEFAULT_WEIGHTS = (1.0, 5.0, 2.0)


def _cost_mistakes(arrays, weights, reveal) -> list:
    """(output, cause) of the known cost mistakes, then of mixed-up or ignored weights; float64 tensors."""
    labels = arrays[2]
    variants = [(v, cause) for v, cause in _COST_MISTAKES if v != "labels_minus_one" or labels.min(initial=1) >= 1]
    mistakes = [(lambda v=v: torch.from_numpy(_cost_oracle(*arrays, *weights, variant=v)), cause)
                for v, cause in variants]
    for other in sorted(set(itertools.permutations(weights)) | {_DEFAULT_WEIGHTS}):
        if other != weights:
            shown = f": got the cost for w_class, w_l1, w_giou = {other}, expected {weights}" if reveal else ""
            mistakes.append((lambda other=other: torch.from_numpy(_cost_oracle(*arrays, *other)),
                             "the weights look mixed up or ignored" + shown))
    return mistake_outputs(mistakes)


def _giou_lookup(pred_boxes: torch.Tensor, tgt_boxes: torch.Tensor) -> GiouLookup:
    """The giou_fn of a case: the GIoU of every pair of its boxes, as xyxy corners and as given (the known
    mistake of passing (cx, cy, w, h) as corners), converted the way the notebook does."""
    boxes = torch.cat([box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(tgt_boxes), pred_boxes, tgt_boxes])
    boxes = boxes.to(torch.float64)
    return GiouLookup(boxes, torch.from_numpy(_giou_oracle(boxes.numpy(), boxes.numpy())))


def _cost_cases(specs, reveal):
    for spec in specs:
        logits, pred_boxes, labels, tgt_boxes = _cost_inputs(spec)
        arrays = [x.numpy() for x in (logits, pred_boxes, labels, tgt_boxes)]
        weights = tuple(float(w) for w in spec.get("weights", _DEFAULT_WEIGHTS))
        data = {"expected": torch.from_numpy(_cost_oracle(*arrays, *weights)).to(logits.dtype),
                "mistakes": _cost_mistakes(arrays, weights, reveal)}
        giou_fn = _giou_lookup(pred_boxes, tgt_boxes)
        if "weights" in spec:
            call = Call(logits, pred_boxes, labels, tgt_boxes, w_class=weights[0], w_l1=weights[1],
                        w_giou=weights[2], giou_fn=giou_fn)
            wtext = f"weights {weights}"
        else:
            call = Call(logits, pred_boxes, labels, tgt_boxes, giou_fn=giou_fn)
            wtext = "default weights (1, 5, 2)"
        name = (f"{len(logits)} predictions, {len(labels)} targets, {logits.shape[1]} classes, {wtext}, "
                f"{spec.get('dtype', 'float64')}")
        yield Case(name, [call], "detr_matching_cost", data, explain="detr_matching_cost", about=spec.get("about", ""))


# ------------------------------------------------------------------------------------------------
# match_batch
# ------------------------------------------------------------------------------------------------
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


def _expected_batch(logits, boxes, targets) -> list[list]:
    """Each image's optimal (pred, tgt) pairs, sorted."""
    pairs = []
    for i, target in enumerate(targets):
        if len(target["labels"]) == 0:
            pairs.append([])
            continue
        cost = _simple_cost(logits[i], boxes[i], target["labels"], target["boxes"]).numpy()
        rows, cols = _scipy_assignment(cost)
        pairs.append(sorted(zip(rows.tolist(), cols.tolist())))
    return pairs


def _joint_batch(logits, boxes, targets) -> list[list]:
    """The known mistake: one assignment over the whole batch, then split back into images."""
    b, q = logits.shape[:2]
    sizes = [len(t["labels"]) for t in targets]
    if sum(sizes) == 0:
        return [[] for _ in targets]
    labels = torch.cat([t["labels"] for t in targets])
    tboxes = torch.cat([t["boxes"] for t in targets])
    cost = _simple_cost(logits.reshape(b * q, -1), boxes.reshape(b * q, 4), labels, tboxes).numpy()
    rows, cols = _scipy_assignment(cost)
    offsets = np.cumsum([0] + sizes)
    pairs = [set() for _ in targets]
    for r, c in zip(rows, cols):
        image = int(r) // q
        pairs[image].add((int(r) % q, int(c) - int(offsets[image])))
    return [sorted(p) for p in pairs]


def _batch_cases(specs, reveal):
    for spec in specs:
        logits, boxes, targets = _batch_inputs(spec)
        q, sizes = logits.shape[1], [len(t["labels"]) for t in targets]
        data = {"expected": _expected_batch(logits, boxes, targets), "joint": _joint_batch(logits, boxes, targets),
                "q": q, "sizes": sizes}
        yield Case(f"batch of {len(targets)} images, {q} queries, targets per image {sizes}",
                   [Call(logits, boxes, targets, _simple_cost, _assign_for_student)], "match_batch", data,
                   explain="match_batch", about=spec.get("about", ""))


BUILDERS = {
    "hungarian_match": _hungarian_cases,
    "generalized_box_iou": _giou_cases,
    "detr_matching_cost": _cost_cases,
    "match_batch": _batch_cases,
}

VISIBLE = {
    "hungarian_match": [
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
    "generalized_box_iou": [
        {"boxes": "identical"},
        {"boxes": "nested"},
        {"boxes": "touching_and_far"},
        {"boxes": "degenerate"},
        {"boxes": "empty"},
        {"n": 4, "m": 5, "seed": 11},
        {"n": 3, "m": 3, "seed": 12, "scale": 1, "dtype": "float32"},
        {"kind": "symmetry", "n": 3, "m": 2, "seed": 13},
        {"n": 3, "m": 2, "seed": 14, "scale": 0.001},
    ],
    "detr_matching_cost": [
        {"q": 4, "k": 3, "seed": 21},
        {"q": 5, "k": 2, "seed": 22, "weights": (2.0, 1.0, 3.0)},
        {"q": 3, "k": 4, "c": 6, "seed": 23, "weights": (1.0, 0.0, 0.0)},
        {"q": 6, "k": 3, "seed": 24, "dtype": "float32"},
        {"q": 4, "k": 0, "seed": 25},
    ],
    "match_batch": [
        {"targets": [2], "q": 4, "seed": 31},
        {"targets": [3, 1, 2], "q": 4, "seed": 32},
        {"targets": [2, 0, 3], "q": 5, "seed": 33},
    ],
}

SPECS = {
    "hungarian_match": [
        {"matrix": "trap_5x5", "about": "greedy and reduced-zeros traps"},
        {"shape": (5, 5), "values": "uniform", "seed": 101, "about": "square matrix"},
        {"shape": (2, 6), "values": "normal", "seed": 102, "about": "wide matrix, negative costs"},
        {"shape": (7, 4), "values": "uniform", "seed": 103, "about": "tall matrix"},
        {"shape": (6, 6), "values": "int", "high": 2, "seed": 104, "about": "integer ties"},
        {"shape": (5, 3), "values": "int", "high": 4, "seed": 105, "about": "tall matrix with ties"},
        {"shape": (1, 5), "values": "normal", "seed": 106, "about": "a single row"},
        {"shape": (4, 1), "values": "uniform", "seed": 107, "about": "a single column"},
        {"shape": (6, 4), "values": "const", "seed": 108, "about": "constant matrix"},
        {"shape": (6, 6), "values": "inf", "fraction": 0.5, "seed": 109, "about": "forbidden (+inf) pairs"},
        {"shape": (4, 7), "values": "inf", "fraction": 0.4, "seed": 110, "about": "wide, forbidden pairs"},
        {"kind": "empty", "shape": (0, 3), "about": "no rows"},
        {"kind": "invariance", "shape": (4, 6), "values": "normal", "seed": 111, "about": "row constants"},
        {"kind": "invariance", "shape": (6, 3), "values": "uniform", "seed": 112, "about": "column constants"},
        {"kind": "error", "matrix": "infeasible_block", "why": "infeasible",
         "about": "no complete assignment: must raise ValueError"},
        {"kind": "error", "matrix": "nan", "why": "nan", "about": "NaN entry: must raise ValueError"},
        {"kind": "error", "matrix": "minus_inf", "why": "minus_inf", "about": "-inf entry: must raise ValueError"},
        {"shape": (150, 220), "values": "normal", "seed": 113, "about": "large wide matrix"},
        {"shape": (200, 120), "values": "int", "high": 20, "seed": 114, "about": "large tall matrix with ties"},
    ],
    "generalized_box_iou": [
        {"n": 7, "m": 3, "seed": 201, "about": "random boxes"},
        {"n": 5, "m": 6, "seed": 202, "scale": 1, "about": "normalised coordinates"},
        {"n": 6, "m": 4, "seed": 203, "dtype": "float32", "about": "float32"},
        {"boxes": "degenerate", "dtype": "float32", "about": "zero-area boxes, float32"},
        {"boxes": "touching_and_far", "dtype": "float32", "about": "touching and far boxes"},
        {"n": 1, "m": 1, "seed": 204, "about": "one box each"},
        # Boxes a few thousandths of a unit wide (areas 1e-9 to 1e-7): an epsilon added to a denominator shows.
        {"n": 5, "m": 4, "seed": 206, "scale": 0.001, "about": "tiny boxes (an epsilon would show)"},
        {"boxes": "empty", "dtype": "float32", "about": "no boxes in boxes1"},
        {"boxes": "none_right", "about": "no boxes in boxes2"},
        {"kind": "symmetry", "n": 4, "m": 5, "seed": 205, "scale": 1, "about": "symmetry"},
    ],
    "detr_matching_cost": [
        {"q": 7, "k": 4, "seed": 301, "about": "default weights"},
        {"q": 3, "k": 5, "c": 4, "seed": 302, "weights": (0.5, 2.0, 1.0),
         "about": "more targets than predictions, other weights"},
        {"q": 5, "k": 2, "seed": 303, "weights": (0.0, 0.0, 1.0), "about": "GIoU term only"},
        {"q": 8, "k": 3, "c": 7, "seed": 304, "dtype": "float32", "weights": (3.0, 1.5, 0.5),
         "about": "float32, other weights"},
        {"q": 2, "k": 0, "seed": 305, "dtype": "float32", "about": "no targets"},
    ],
    "match_batch": [
        {"targets": [0], "q": 3, "seed": 401, "about": "one image without targets"},
        {"targets": [1, 4, 0, 2], "q": 5, "seed": 402, "about": "four images, one without targets"},
        {"targets": [5, 2], "q": 3, "seed": 403, "about": "more targets than queries"},
        {"targets": [0, 0, 3], "q": 4, "c": 3, "seed": 404, "about": "two images without targets"},
    ],
}
