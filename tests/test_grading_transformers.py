"""The transformers notebook through nbgrader: blank release runs clean, and exact per-cell scores after autograding."""
from __future__ import annotations

import nbformat
import pytest

from notebook_tools import REPO, answers as _answers, run_blank_release, solved_release, submit_and_autograde

pytestmark = pytest.mark.slow

ASSIGNMENT = "01_transformers"
SOURCE = REPO / "notebooks" / ASSIGNMENT / "transformers.ipynb"
POINTS = {"test_patchify": 2, "test_rms_norm": 2, "test_swiglu": 2, "test_top_k_routing": 3,
          "test_load_balancing_loss": 2}

# Checks only the height (the visible error case), not the width (a hidden case): with W not divisible the
# reshape below raises a RuntimeError instead of the ValueError the exercise asks for.
_SNEAKY_FROM = "    if h % p or w % p:\n"
_SNEAKY_TO = "    if h % p:\n"
# Softmax over all experts, then top-k, not renormalised (Switch's k = 1 choice applied to k > 1).
_SWITCH_FROM = """    values, indices = router_logits.topk(k, dim=-1)
    return indices, values.softmax(dim=-1)"""
_SWITCH_TO = """    values, indices = router_logits.softmax(dim=-1).topk(k, dim=-1)
    return indices, values"""


def _release(course):
    return course / "release" / ASSIGNMENT / "transformers.ipynb"


def _variants(course) -> dict[str, nbformat.NotebookNode]:
    return {"tf_correct": solved_release(_release(course), SOURCE),
            "tf_blank": nbformat.read(_release(course), as_version=4),
            "tf_two_bugs": solved_release(_release(course), SOURCE, edits={
                "patchify": [(_SNEAKY_FROM, _SNEAKY_TO)], "top_k_routing": [(_SWITCH_FROM, _SWITCH_TO)]})}


EXPECTED = {
    "tf_correct": POINTS,
    "tf_blank": {k: 0 for k in POINTS},
    # patchify loses its points on a hidden case only; the routing on visible ones.
    "tf_two_bugs": {**POINTS, "test_patchify": 0, "test_top_k_routing": 0},
}


def test_sneaky_submission_passes_visible_but_not_hidden(course):
    nb = _variants(course)["tf_two_bugs"]
    namespace: dict = {}
    exec("import torch\n" + _answers(nb)["patchify"], namespace)
    from lecturelib.checks import run_suite
    assert run_suite("patchify", namespace["patchify"], "visible").passed
    hidden = run_suite("patchify", namespace["patchify"], "hidden")
    assert [c.name for c in hidden.failures] == ["hidden case 7 (W not divisible: must raise ValueError)"]


def test_blank_release_runs_clean_with_the_student_package(course):
    """Only the five test cells fail ('not implemented yet'); the demos and both widgets run."""
    run_blank_release(_release(course), course)


@pytest.fixture(scope="module")
def graded(course):
    return submit_and_autograde(course, ASSIGNMENT, _variants(course), "transformers")


def test_autograde_scores_every_cell_exactly(graded):
    for student, expected in EXPECTED.items():
        assert {k: v for k, v in graded[student].items() if k in POINTS} == expected, student
