"""The student release and nbgrader end to end: generate, submit, autograde, export, feedback."""
from __future__ import annotations

import csv
import re

import nbformat
import pytest

from notebook_tools import (NOTEBOOKS, REPO, answers as _answers, graded_cells, replace_solution as _replace_solution,
                            run_blank_release, solved_release, strip_markers as _strip_markers, submit_and_autograde,
                            text, written_points)

pytestmark = pytest.mark.slow

SEGMENTATION = REPO / "notebooks" / "02_segmentation" / "segmentation.ipynb"
POINTS = {"test_nearest_unpool": 1, "test_bed_of_nails_unpool": 1, "test_max_unpool": 2,
          "test_conv_transpose_output_size": 1, "test_conv_transpose2d": 4, "test_mean_iou": 2}
WRITTEN = written_points(nbformat.read(SEGMENTATION, as_version=4))     # graded by hand: not in the autograded score


def _solution_lines(nb) -> list[str]:
    lines = []
    for cell in nb.cells:
        inside = False
        for line in cell.source.splitlines():
            if "### BEGIN SOLUTION" in line:
                inside = True
            elif "### END SOLUTION" in line:
                inside = False
            elif inside and len(line.strip()) > 12:
                lines.append(line.strip())
    return lines


def test_source_notebooks_have_valid_nbgrader_metadata():
    from lecturelib.course import nbgrader
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        ids = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if "nbgrader" in c.metadata]
        assert len(ids) == len(set(ids)), path
        for cell in graded_cells(nb):
            hidden = re.search(r"### BEGIN HIDDEN TESTS\n(.*)\n### END HIDDEN TESTS", cell.source, re.S)
            assert hidden, cell.source
            # Hidden blocks are one-line calls: the feedback shows them verbatim.
            assert all(line.startswith("check(") for line in hidden.group(1).splitlines())
    assert nbgrader("db", "assignment", "list", check=False).returncode == 0


def test_release_has_no_solutions_hidden_tests_or_reference(course):
    for source in NOTEBOOKS:
        released = course / "release" / source.parent.name / source.name
        body = released.read_text()
        assert "BEGIN SOLUTION" not in body and "BEGIN HIDDEN TESTS" not in body
        assert 'suite=\\"hidden\\"' not in body and "suite='hidden'" not in body
        # Every solution cell of the source is a stub in the release, and nothing else.
        solutions = [c for c in nbformat.read(source, as_version=4).cells
                     if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")]
        stubs = [c for c in nbformat.reads(body, as_version=4).cells
                 if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")]
        assert len(stubs) == len(solutions) > 0, source.name
        assert all("raise NotImplementedError()" in c.source for c in stubs), source.name
        # Written answers (tests/test_written_questions.py has the rest): the model answer became the text stub.
        assert all(c.source == "YOUR ANSWER HERE" for c in nbformat.reads(body, as_version=4).cells
                   if c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("solution"))
        for line in _solution_lines(nbformat.read(source, as_version=4)):
            assert line not in body, line
        assert "lecturelib.reference" not in body
    package = course / "release" / "student_package" / "lecturelib"
    assert (package / "checks" / "core.py").exists()
    assert not (package / "reference").exists() and not (package / "hidden").exists()
    assert not (package / "course.py").exists() and not (package / "grading").exists()
    shipped = {p.name for p in (REPO / "lecturelib" / "weights").glob("*.pt")}
    assert shipped and {p.name for p in (package / "weights").glob("*.pt")} == shipped
    for path in package.rglob("*.py"):
        assert "BEGIN SOLUTION" not in path.read_text()


def test_blank_release_fails_cleanly_with_the_student_package(course):
    """Run the release notebook against the student package: only the test cells fail, each with
    'not implemented yet'; every other cell (demos, widgets, training skipped) runs."""
    released = course / "release" / "02_segmentation" / "segmentation.ipynb"
    probe = ("from lecturelib.checks import check, HiddenSuiteUnavailable\n"
             "try:\n    check('conv_transpose2d', conv_transpose2d, suite='hidden')\n"
             "except HiddenSuiteUnavailable as exc:\n    print('HIDDEN:', exc)")
    nb = run_blank_release(released, course, extra_cells=[probe])
    last = text(nb.cells[-1])
    assert "HIDDEN: the hidden tests are not part of the student package" in last


# ---------------------------------------------------------------------------------------------
# Submissions
# ---------------------------------------------------------------------------------------------
def _submission_variants(course) -> dict[str, nbformat.NotebookNode]:
    source = nbformat.read(SEGMENTATION, as_version=4)
    blank = nbformat.read(course / "release" / "02_segmentation" / "segmentation.ipynb", as_version=4)
    answers = {k: _strip_markers(v) for k, v in _answers(source).items()}

    def student_copy():
        return solved_release(course / "release" / "02_segmentation" / "segmentation.ipynb", SEGMENTATION)

    correct = student_copy()

    # Passes every visible case, fails hidden ones: square kernels assumed, pool size 2 assumed.
    sneaky = student_copy()
    _replace_solution(sneaky, "conv_transpose2d", answers["conv_transpose2d"].replace(
        "c_out, kh, kw = weight.shape[1:]", "c_out, kh = weight.shape[1:3]\n    kw = kh"))
    _replace_solution(sneaky, "max_unpool", '''
def max_unpool(x, indices, output_size):
    n, c, h, w = x.shape
    out = x.new_zeros(n, c, 4 * h * w)
    out.scatter_(2, indices.flatten(2), x.flatten(2))
    return out.view(n, c, 2 * h, 2 * w)''')

    noisy = student_copy()
    for gid in answers:
        _replace_solution(noisy, gid, "import sys, warnings, torch\n"
                          "warnings.warn('deprecated thing', UserWarning)\n"
                          "torch.tensor(torch.ones(2))  # torch's copy-construct UserWarning\n"
                          "print('debug output on stderr', file=sys.stderr)\n" + answers[gid])
    # Noise while the test cell runs, too: stderr output from inside the graded functions.
    for gid, fn in (("conv_transpose2d", "conv_transpose2d"), ("mean_iou", "mean_iou")):
        _replace_solution(noisy, gid, _answers(noisy)[gid] + f"""
_quiet_{fn} = {fn}
def {fn}(*args, **kwargs):
    print("about to compute", file=sys.stderr)
    torch.tensor(torch.ones(1))
    return _quiet_{fn}(*args, **kwargs)
""")

    looping = student_copy()
    _replace_solution(looping, "unpool", answers["unpool"].replace(
        '"""Nearest-neighbour unpooling. x: (N, C, H, W) -> (N, C, H * scale, W * scale)."""',
        '"""Nearest-neighbour unpooling."""\n    while True:\n        pass'))

    return {"correct": correct, "blank": blank, "sneaky": sneaky, "noisy": noisy, "looping": looping}


EXPECTED = {
    "correct": POINTS,
    "noisy": POINTS,
    "blank": {k: 0 for k in POINTS},
    "sneaky": {**POINTS, "test_conv_transpose2d": 0, "test_max_unpool": 0},
    "looping": {**POINTS, "test_nearest_unpool": 0},
}


@pytest.fixture(scope="module")
def graded(course):
    from lecturelib import course as tool
    scores = submit_and_autograde(course, "02_segmentation", _submission_variants(course), "segmentation")
    csv_path = tool.grades(course / "grades.csv")
    tool.feedback("02_segmentation")
    return scores, csv_path


def test_sneaky_submission_passes_visible_tests(course):
    """The 'wrong but passing the visible tests' fixture really passes them (else the e2e proves little)."""
    nb = _submission_variants(course)["sneaky"]
    namespace: dict = {}
    exec("import torch\nimport torch.nn.functional as F\n" + _answers(nb)["conv_transpose2d"]
         + "\n" + _answers(nb)["max_unpool"], namespace)
    from lecturelib.checks import run_suite
    for name in ("conv_transpose2d", "max_unpool"):
        assert run_suite(name, namespace[name], "visible").passed
        assert not run_suite(name, namespace[name], "hidden").passed


def test_autograde_scores_every_cell_exactly(graded):
    scores, _ = graded
    for student, expected in EXPECTED.items():
        assert {k: v for k, v in scores[student].items() if k in POINTS} == expected, student


def test_exported_csv(graded):
    _, csv_path = graded
    rows = {r["student"]: r for r in csv.DictReader(csv_path.open())}
    assert set(EXPECTED) <= set(rows)  # other tests' students share the course
    for student, expected in EXPECTED.items():
        assert float(rows[student]["score"]) == sum(expected.values()), student
        assert float(rows[student]["max_score"]) == sum(POINTS.values()) + sum(WRITTEN.values())
        for cell, points in expected.items():
            assert float(rows[student][cell]) == points, (student, cell)
    # Written answers: answered ones wait for a TA (not counted in the score yet), blank ones score 0 by themselves.
    assert WRITTEN
    for cell in WRITTEN:
        assert rows["correct"][cell] == "needs manual grade", cell
        assert float(rows["blank"][cell]) == 0.0, cell
    assert rows["correct"]["needs_manual_grade"] == "True" and rows["blank"]["needs_manual_grade"] == "False"
    assert f"written answers to grade in formgrader: {', '.join(WRITTEN)}" in rows["correct"]["notes"]
    assert rows["correct"]["status"] == "graded"


def test_feedback_files(graded, course):
    for student in EXPECTED:
        html = (course / "feedback" / student / "02_segmentation" / "segmentation.html").read_text()
        assert "Score" in html or "score" in html
    blank = (course / "feedback" / "blank" / "02_segmentation" / "segmentation.html").read_text()
    assert "not implemented yet" in blank
    sneaky = (course / "feedback" / "sneaky" / "02_segmentation" / "segmentation.html").read_text()
    assert "hidden case" in sneaky
    # Hidden failures show no values: no "first mismatch" line for the hidden suite.
    assert "first mismatch" not in sneaky.split("hidden case", 1)[1][:2000]
