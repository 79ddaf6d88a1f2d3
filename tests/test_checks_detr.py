"""The checkers of the DETR exercises: what the mutant library (lecturelib/hidden/mutants/detr.py, run by
tests/test_audit.py) does not measure: messages' format, what hidden failures reveal, refusing library solvers."""
import itertools

import numpy as np
import pytest
import scipy.optimize
from scipy.optimize import linear_sum_assignment as aliased_lsa

from check_tools import fails
from lecturelib import reference as ref
from lecturelib.boxes import box_iou
from lecturelib.checks import EXERCISES, run_suite
from lecturelib.checks import detr as detr_checks
from lecturelib.checks import runner
from lecturelib.checks.core import build_cases
from lecturelib.hidden import detr as detr_hidden
from lecturelib.hidden.mutants.detr import giou_broadcast, hm_greedy_cheapest_pair as greedy_cheapest_pair

DETR = [name for name, ex in EXERCISES.items() if ex.topic == "detr"]


def test_the_four_exercises_are_registered():
    assert set(DETR) == {"hungarian_match", "generalized_box_iou", "detr_matching_cost", "match_batch"}


# ---------------------------------------------------------------------------------------------
# hungarian_match (the realistic wrong implementations and the alternatives are in the mutant library,
# lecturelib/hidden/mutants/detr.py, which tests/test_audit.py runs)
# ---------------------------------------------------------------------------------------------
def test_greedy_fails_on_the_greedy_trap_with_totals_shown():
    result = run_suite("hungarian_match", greedy_cheapest_pair, "visible")
    trap = [c for c in result.cases if c.name == "3x3 matrix where greedy matching is not optimal"]
    assert len(trap) == 1 and not trap[0].passed
    assert "total 11, the minimum is 8" in trap[0].message and "that is the greedy assignment" in trap[0].message


def test_hidden_failure_reveals_no_values():
    message = fails("hungarian_match", greedy_cheapest_pair, "hidden")
    assert "hidden case" in message
    assert "cost =" not in message and "your rows" not in message and "the minimum is" not in message


def test_unsorted_rows_are_named():
    def unsorted(cost):
        rows, cols = ref.hungarian_match(cost)
        return rows[::-1].copy(), cols[::-1].copy()
    assert "rows must be sorted ascending" in fails("hungarian_match", unsorted)


def test_wrong_return_types_are_named():
    assert "is a list; expected an np.ndarray" in fails(
        "hungarian_match", lambda c: tuple(a.tolist() for a in ref.hungarian_match(c)))
    assert "expected an integer dtype" in fails(
        "hungarian_match", lambda c: tuple(a.astype(float) for a in ref.hungarian_match(c)))
    assert "not one 2-D array" in fails("hungarian_match", lambda c: np.stack(ref.hungarian_match(c)))


def test_missing_validation_is_reported():
    def no_checks(cost):
        cost = np.nan_to_num(np.asarray(cost, dtype=float), nan=0.0, neginf=-1e9, posinf=1e9)
        return ref.hungarian_match(cost)
    message = fails("hungarian_match", no_checks)
    assert "expected ValueError, but the function returned normally" in message


def test_scipy_is_refused_by_every_route():
    def via_module(cost):
        return scipy.optimize.linear_sum_assignment(cost)

    def via_alias(cost):                    # imported before the check started
        return aliased_lsa(cost)

    def via_csgraph(cost):
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import min_weight_full_bipartite_matching
        cost = np.asarray(cost, dtype=float)
        if np.isnan(cost).any() or np.isneginf(cost).any():
            raise ValueError("invalid")
        if cost.size == 0:
            return np.zeros(0, int), np.zeros(0, int)
        return min_weight_full_bipartite_matching(csr_matrix(cost + 1.0))

    for fn, what in ((via_module, "scipy.optimize.linear_sum_assignment"),
                     (via_alias, "scipy.optimize.linear_sum_assignment"),
                     (via_csgraph, "min_weight_full_bipartite_matching")):
        message = fails("hungarian_match", fn)
        assert what in message and "implement it yourself" in message, message
    # Everything is restored afterwards.
    assert scipy.optimize.linear_sum_assignment is aliased_lsa
    import sys
    assert sys.getprofile() is None


def test_the_checkers_own_oracle_is_refused():
    """The oracle lives grader-side only; plugged in, it is refused like the library solver it wraps."""
    assert not hasattr(detr_checks, "_scipy_assignment")
    message = fails("hungarian_match", detr_hidden._scipy_assignment)
    assert "scipy.optimize.linear_sum_assignment" in message and "implement it yourself" in message, message


def test_exponential_method_hits_the_time_limit(monkeypatch):
    monkeypatch.setattr(runner, "TIME_LIMIT", 1.0)

    def brute_force(cost):
        cost = np.asarray(cost, dtype=float)
        if np.isnan(cost).any() or np.isneginf(cost).any():
            raise ValueError("invalid")
        n, m = cost.shape
        if n > m:
            cols, rows = brute_force(cost.T)
            order = np.argsort(rows)
            return rows[order], cols[order]
        best, best_cols = np.inf, None
        for cols in itertools.permutations(range(m), n):
            total = cost[np.arange(n), list(cols)].sum()
            if total < best:
                best, best_cols = total, cols
        if best_cols is None or best == np.inf:
            raise ValueError("infeasible")
        return np.arange(n), np.array(best_cols, dtype=int)

    message = fails("hungarian_match", brute_force)
    assert "200x200" in message and "ran for more than 1 s and was stopped" in message
    assert "1 of 15" not in message  # only the large case fails
    result = run_suite("hungarian_match", brute_force, "visible")
    assert [c.name for c in result.failures] == ["200x200 square matrix, uniform random"]


# ---------------------------------------------------------------------------------------------
# generalized_box_iou
# ---------------------------------------------------------------------------------------------
def test_giou_library_iou_and_oracle_are_refused():
    def with_box_iou(a, b):
        iou = box_iou(a, b)
        return giou_broadcast(a, b) + 0 * iou
    message = fails("generalized_box_iou", with_box_iou)
    assert "lecturelib.boxes.box_iou" in message and "implement it yourself" in message
    # The oracle is grader-side only; the giou_fn the cost's checks hand out only looks up its own case's boxes.
    assert not hasattr(detr_checks, "_giou_oracle") and not hasattr(detr_checks, "_giou_for_student")
    giou_fn = build_cases("detr_matching_cost")[1][0].calls[0].kwargs["giou_fn"]
    assert "giou_fn was given boxes that are not the boxes of this check" in fails("generalized_box_iou", giou_fn)


# ---------------------------------------------------------------------------------------------
# detr_matching_cost
# ---------------------------------------------------------------------------------------------
def test_cost_without_giou_fn_keyword_is_explained():
    def no_giou_fn(pred_logits, pred_boxes, tgt_labels, tgt_boxes, w_class=1.0, w_l1=5.0, w_giou=2.0):
        return ref.detr_matching_cost(pred_logits, pred_boxes, tgt_labels, tgt_boxes, w_class, w_l1, w_giou)
    message = fails("detr_matching_cost", no_giou_fn)
    assert "must accept the keyword arguments w_class, w_l1, w_giou and giou_fn" in message


# ---------------------------------------------------------------------------------------------
# Library solvers by private routes
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("route", ["csgraph_private", "linprog_private", "lsap_private"])
def test_private_scipy_solvers_are_refused(route):
    """Any function of scipy.optimize or scipy.sparse.csgraph counts, private modules included."""
    import numpy as np

    def solve(cost):
        cost = np.asarray(cost, dtype=np.float64)
        if route == "lsap_private":
            from scipy.optimize._lsap import linear_sum_assignment as lsa
            return lsa(cost)
        if route == "csgraph_private":
            from scipy.sparse import csr_matrix
            from scipy.sparse.csgraph._matching import min_weight_full_bipartite_matching
            n, m = cost.shape
            transposed = n > m
            c = cost.T if transposed else cost
            cols = min_weight_full_bipartite_matching(csr_matrix(c - c.min() + 1.0))
            rows = np.arange(len(cols))
            return (cols, rows) if transposed else (rows, cols)
        from scipy.optimize._linprog_highs import _linprog_highs  # noqa: F401 - the route counts when called
        from scipy.optimize import _linprog_highs as module
        n, m = cost.shape
        module._linprog_highs  # the import alone is not a call; call the solver through its module
        from scipy.optimize._linprog import linprog as lp
        k = min(n, m)
        res = lp(cost.ravel(), A_ub=np.vstack([np.kron(np.eye(n), np.ones(m)), np.kron(np.ones(n), np.eye(m))]),
                 b_ub=np.ones(n + m), A_eq=np.ones((1, n * m)), b_eq=[k], bounds=(0, 1), method="highs")
        x = res.x.reshape(n, m).round().astype(bool)
        return np.nonzero(x)

    def hungarian_match(cost):
        rows, cols = solve(cost)
        order = np.argsort(rows)
        return np.asarray(rows)[order].astype(np.int64), np.asarray(cols)[order].astype(np.int64)

    message = fails("hungarian_match", hungarian_match)
    assert "scipy" in message and "implement it yourself" in message
