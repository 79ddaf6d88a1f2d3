"""The DETR notebook through nbgrader: blank release runs clean, and exact per-cell scores after autograding."""
from __future__ import annotations

import nbformat
import pytest

from notebook_tools import (REPO, answers as _answers, run_blank_release, solved_release, strip_markers as _strip_markers,
                            submit_and_autograde)

pytestmark = pytest.mark.slow

ASSIGNMENT = "04_detr"
SOURCE = REPO / "notebooks" / ASSIGNMENT / "detr.ipynb"
POINTS = {"test_hungarian_match": 6, "test_generalized_box_iou": 2, "test_detr_matching_cost": 2,
          "test_match_batch": 2}

# Detects infeasibility only when a whole row is +inf (the visible case), not when two rows compete for one
# column (a hidden case): the search then runs out of finite paths and the assignment it returns is wrong.
_SNEAKY_FROM = '''            if reached == np.inf:
                raise ValueError("cost matrix is infeasible: no complete assignment avoids the +inf entries")
'''
_SNEAKY_TO = '''            if reached == np.inf:
                break
'''
_SNEAKY_CHECK = '''    if cost.size and np.isinf(cost).all(axis=1).any():
        raise ValueError("cost matrix is infeasible: a row has only forbidden entries")
'''


def _release(course):
    return course / "release" / ASSIGNMENT / "detr.ipynb"


def _variants(course) -> dict[str, nbformat.NotebookNode]:
    hungarian = _answers(nbformat.read(SOURCE, as_version=4))["hungarian_match"]
    assert _SNEAKY_FROM in hungarian
    hungarian = _strip_markers(hungarian).replace(_SNEAKY_FROM, _SNEAKY_TO).replace(
        "    if cost.shape[0] > cost.shape[1]:", _SNEAKY_CHECK + "    if cost.shape[0] > cost.shape[1]:", 1)
    return {"detr_correct": solved_release(_release(course), SOURCE),
            "detr_blank": nbformat.read(_release(course), as_version=4),
            "detr_sneaky": solved_release(_release(course), SOURCE, {"hungarian_match": hungarian})}


EXPECTED = {
    "detr_correct": POINTS,
    "detr_blank": {k: 0 for k in POINTS},
    "detr_sneaky": {**POINTS, "test_hungarian_match": 0},
}


def test_sneaky_submission_passes_visible_but_not_hidden(course):
    nb = _variants(course)["detr_sneaky"]
    namespace: dict = {}
    exec("import numpy as np\n" + _answers(nb)["hungarian_match"], namespace)
    from lecturelib.checks import run_suite
    assert run_suite("hungarian_match", namespace["hungarian_match"], "visible").passed
    hidden = run_suite("hungarian_match", namespace["hungarian_match"], "hidden")
    assert [c.name for c in hidden.failures] == [
        "hidden case 14 (no complete assignment: must raise ValueError)"]


def test_blank_release_runs_clean_with_the_student_package(course):
    """Only the four test cells fail ('not implemented yet'); demos, the explorer and the model cells run."""
    run_blank_release(_release(course), course)


@pytest.fixture(scope="module")
def graded(course):
    return submit_and_autograde(course, ASSIGNMENT, _variants(course), "detr")


def test_autograde_scores_every_cell_exactly(graded):
    for student, expected in EXPECTED.items():
        assert {k: v for k, v in graded[student].items() if k in POINTS} == expected, student
