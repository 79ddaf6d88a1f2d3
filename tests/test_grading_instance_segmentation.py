"""The instance-segmentation notebook through nbgrader: blank release runs clean, and exact per-cell scores
after autograding."""
from __future__ import annotations

import nbformat
import pytest

from notebook_tools import (REPO, answers as _answers, errors, execute, replace_solution as _replace_solution,
                            strip_markers as _strip_markers)

pytestmark = pytest.mark.slow

ASSIGNMENT = "05_instance_segmentation"
NOTEBOOK = "instance_segmentation"
SOURCE = REPO / "notebooks" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
POINTS = {"test_mask_targets": 3, "test_mask_loss": 2, "test_paste_masks": 3}

# Stacks one RoIAlign per RoI: right whenever there is a RoI (every visible case), a crash for R = 0 (hidden).
_SNEAKY_TARGETS = '''def mask_targets(gt_masks, boxes, matched_idx, M):
    crops = [roi_align(gt_masks[matched_idx[r]].float()[None, None], [boxes[r:r + 1].float()], (M, M),
                       1.0, 2, True)[0, 0] for r in range(len(boxes))]
    return (torch.stack(crops) >= 0.5).float()
'''
_ALIGN_CORNERS_FROM = 'align_corners=False)\n    return pasted[:, 0] >= threshold'
_ALIGN_CORNERS_TO = 'align_corners=True)\n    return pasted[:, 0] >= threshold'


def _release(course):
    return course / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"


def _variants(course) -> dict[str, nbformat.NotebookNode]:
    answers = {k: _strip_markers(v) for k, v in _answers(nbformat.read(SOURCE, as_version=4)).items()}

    def student_copy():
        nb = nbformat.read(_release(course), as_version=4)
        for gid, answer in answers.items():
            _replace_solution(nb, gid, answer)
        return nb

    correct = student_copy()
    partial = student_copy()
    assert _ALIGN_CORNERS_FROM in answers["paste_masks"]
    _replace_solution(partial, "mask_targets", _SNEAKY_TARGETS)
    _replace_solution(partial, "paste_masks", answers["paste_masks"].replace(_ALIGN_CORNERS_FROM, _ALIGN_CORNERS_TO))
    blank = nbformat.read(_release(course), as_version=4)
    return {"inst_correct": correct, "inst_blank": blank, "inst_partial": partial}


EXPECTED = {
    "inst_correct": POINTS,
    "inst_blank": {k: 0 for k in POINTS},
    "inst_partial": {**POINTS, "test_mask_targets": 0, "test_paste_masks": 0},
}


def test_release_strips_solutions_and_hidden_tests(course):
    body = _release(course).read_text()
    assert "BEGIN SOLUTION" not in body and "BEGIN HIDDEN TESTS" not in body
    stubs = [c for c in nbformat.reads(body, as_version=4).cells
             if c.cell_type == "code" and "raise NotImplementedError()" in c.source]
    assert len(stubs) == 3
    assert "suite=\\\"hidden\\\"" not in body and "lecturelib.reference" not in body


def test_sneaky_targets_pass_visible_but_not_hidden():
    import torch

    from lecturelib.checks import run_suite
    from lecturelib.detection import roi_align
    namespace = {"torch": torch, "roi_align": roi_align}
    exec(_SNEAKY_TARGETS, namespace)
    assert run_suite("mask_targets", namespace["mask_targets"], "visible").passed
    hidden = run_suite("mask_targets", namespace["mask_targets"], "hidden")
    assert [c.name for c in hidden.failures] == ["hidden case 6 (no RoIs)"]


def test_blank_release_runs_clean_with_the_student_package(course):
    """Only the three test cells fail ('not implemented yet'); demos, widgets and the model cells run."""
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
        nbformat.write(nb, folder / f"{NOTEBOOK}.ipynb")
        (folder / "timestamp.txt").write_text("2026-11-27 12:00:00.000000 UTC")
    return tool.autograde(ASSIGNMENT, students=list(EXPECTED))


def test_autograde_scores_every_cell_exactly(graded, course):
    assert all(graded.values()), graded
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for student, expected in EXPECTED.items():
            scores = {g.name: g.score for g in gb.find_submission_notebook(NOTEBOOK, ASSIGNMENT, student).grades
                      if g.cell_type == "code"}
            assert {k: v for k, v in scores.items() if k in POINTS} == expected, student
