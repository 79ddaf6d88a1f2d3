"""The DETR notebook through nbgrader: blank release runs clean, and exact per-cell scores after autograding."""
from __future__ import annotations

import nbformat
import pytest

from notebook_tools import (REPO, answers as _answers, errors, execute, replace_solution as _replace_solution,
                            strip_markers as _strip_markers)

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
    answers = {k: _strip_markers(v) for k, v in _answers(nbformat.read(SOURCE, as_version=4)).items()}

    def student_copy():
        nb = nbformat.read(_release(course), as_version=4)
        for gid, answer in answers.items():
            _replace_solution(nb, gid, answer)
        return nb

    correct = student_copy()
    sneaky = student_copy()
    hungarian = answers["hungarian_match"]
    assert _SNEAKY_FROM in hungarian
    hungarian = hungarian.replace(_SNEAKY_FROM, _SNEAKY_TO).replace(
        "    if cost.shape[0] > cost.shape[1]:", _SNEAKY_CHECK + "    if cost.shape[0] > cost.shape[1]:", 1)
    _replace_solution(sneaky, "hungarian_match", hungarian)
    blank = nbformat.read(_release(course), as_version=4)
    return {"detr_correct": correct, "detr_blank": blank, "detr_sneaky": sneaky}


EXPECTED = {
    "detr_correct": POINTS,
    "detr_blank": {k: 0 for k in POINTS},
    "detr_sneaky": {**POINTS, "test_hungarian_match": 0},
}


def test_release_strips_solutions_and_hidden_tests(course):
    body = _release(course).read_text()
    assert "BEGIN SOLUTION" not in body and "BEGIN HIDDEN TESTS" not in body
    stubs = [c for c in nbformat.reads(body, as_version=4).cells
             if c.cell_type == "code" and "raise NotImplementedError()" in c.source]
    assert len(stubs) == 4
    assert "suite=\\\"hidden\\\"" not in body and "lecturelib.reference" not in body


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
    student_pkg = course / "release" / "student_package"
    probe = "import lecturelib\nprint('PACKAGE', lecturelib.__file__, lecturelib.has_reference())"
    nb = execute(_release(course), extra_cells=[probe],
                 env={"PYTHONPATH": str(student_pkg), "NBGRADER_EXECUTION": "autograde"})
    graded = {i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade")}
    failures = errors(nb)
    assert {i for i, _, _ in failures} == graded, failures
    for _, ename, evalue in failures:
        assert ename == "CheckFailed" and "not implemented yet" in evalue
    last = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert f"PACKAGE {student_pkg}" in last and "False" in last


@pytest.fixture(scope="module")
def graded(course):
    from lecturelib import course as tool
    for student, nb in _variants(course).items():
        folder = course / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / "detr.ipynb")
        (folder / "timestamp.txt").write_text("2026-11-27 12:00:00.000000 UTC")
    return tool.autograde(ASSIGNMENT, students=list(EXPECTED))


def test_autograde_scores_every_cell_exactly(graded, course):
    assert all(graded.values()), graded
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for student, expected in EXPECTED.items():
            scores = {g.name: g.score for g in gb.find_submission_notebook("detr", ASSIGNMENT, student).grades
                      if g.cell_type == "code"}
            assert {k: v for k, v in scores.items() if k in POINTS} == expected, student
