"""The detection notebook through nbgrader: blank release runs clean, and exact per-cell scores after autograding."""
from __future__ import annotations

import nbformat
import pytest

from notebook_tools import REPO, answers as _answers, run_blank_release, solved_release, strip_markers, submit_and_autograde

pytestmark = pytest.mark.slow

ASSIGNMENT = "03_detection"
SOURCE = REPO / "notebooks" / ASSIGNMENT / "detection.ipynb"
POINTS = {"test_encode_boxes": 1, "test_decode_boxes": 2, "test_generate_anchors": 5, "test_label_anchors": 3,
          "test_nms": 3}

# Two realistic slips: NMS suppressing at IoU == threshold, and the zero-IoU trap of low-quality matching.
_NMS_FROM = "suppressed |= iou[i] > iou_threshold"
_NMS_TO = "suppressed |= iou[i] >= iou_threshold"
_LABEL_FROM = "ties = (iou == best_per_box) & (best_per_box > 0)"
_LABEL_TO = "ties = iou == best_per_box"


def _release(course):
    return course / "release" / ASSIGNMENT / "detection.ipynb"


def _variants(course) -> dict[str, nbformat.NotebookNode]:
    answers = {k: strip_markers(v) for k, v in _answers(nbformat.read(SOURCE, as_version=4)).items()}
    assert _NMS_FROM in answers["nms"] and _LABEL_FROM in answers["label_anchors"]
    slips = {"nms": answers["nms"].replace(_NMS_FROM, _NMS_TO),
             "label_anchors": answers["label_anchors"].replace(_LABEL_FROM, _LABEL_TO)}
    return {"detection_correct": solved_release(_release(course), SOURCE),
            "detection_blank": nbformat.read(_release(course), as_version=4),
            "detection_slips": solved_release(_release(course), SOURCE, slips)}


EXPECTED = {
    "detection_correct": POINTS,
    "detection_blank": {k: 0 for k in POINTS},
    "detection_slips": {**POINTS, "test_nms": 0, "test_label_anchors": 0},
}


def test_blank_release_runs_clean_with_the_student_package(course):
    """Only the five test cells fail ('not implemented yet'); demos and widgets say what to implement."""
    run_blank_release(_release(course), course)


@pytest.fixture(scope="module")
def graded(course):
    return submit_and_autograde(course, ASSIGNMENT, _variants(course), "detection")


def test_autograde_scores_every_cell_exactly(graded):
    for student, expected in EXPECTED.items():
        assert {k: v for k, v in graded[student].items() if k in POINTS} == expected, student
