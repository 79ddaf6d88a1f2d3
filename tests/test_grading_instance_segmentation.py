"""The instance-segmentation notebook through nbgrader: blank release runs clean, and exact per-cell scores
after autograding."""
from __future__ import annotations

import nbformat
import pytest

from notebook_tools import REPO, run_blank_release, solved_release, submit_and_autograde

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
    partial = solved_release(_release(course), SOURCE, {"mask_targets": _SNEAKY_TARGETS},
                             edits={"paste_masks": [(_ALIGN_CORNERS_FROM, _ALIGN_CORNERS_TO)]})
    return {"inst_correct": solved_release(_release(course), SOURCE),
            "inst_blank": nbformat.read(_release(course), as_version=4),
            "inst_partial": partial}


EXPECTED = {
    "inst_correct": POINTS,
    "inst_blank": {k: 0 for k in POINTS},
    "inst_partial": {**POINTS, "test_mask_targets": 0, "test_paste_masks": 0},
}


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
    run_blank_release(_release(course), course)


@pytest.fixture(scope="module")
def graded(course):
    return submit_and_autograde(course, ASSIGNMENT, _variants(course), NOTEBOOK)


def test_autograde_scores_every_cell_exactly(graded):
    for student, expected in EXPECTED.items():
        assert {k: v for k, v in graded[student].items() if k in POINTS} == expected, student
