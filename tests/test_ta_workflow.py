"""The TA's one-command demo and the student's Validate button, run as users run them."""
from __future__ import annotations

import ast
import csv
import os
import subprocess
import sys

import nbformat
import pytest

from notebook_tools import REPO, answers, replace_solution, written_cells

pytestmark = pytest.mark.slow

SEGMENTATION = REPO / "notebooks" / "02_segmentation" / "segmentation.ipynb"
LIMITS = {"LECTURELIB_CELL_TIMEOUT": "20", "LECTURELIB_COLLECT_TIMEOUT": "10", "LECTURELIB_MEMORY_MB": "6144"}


def _graded_points(nb) -> dict[str, float]:
    """grade_id -> points of the autograded test cells, in notebook order."""
    return {c.metadata["nbgrader"]["grade_id"]: float(c.metadata["nbgrader"]["points"]) for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata["nbgrader"].get("solution")}


def _first_solution_functions(path) -> set[str]:
    cell = next(c for c in nbformat.read(path, as_version=4).cells
                if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution"))
    return {node.name for node in ast.parse(cell.source).body if isinstance(node, ast.FunctionDef)}


def _cells_checking(nb, functions: set[str]) -> list[str]:
    """grade_ids of the test cells that check one of ``functions``."""
    from lecturelib.grading.execute import parse_checks
    return [gid for gid in _graded_points(nb) for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("grade_id") == gid
            and any(chk.expression in functions for chk in parse_checks(c.source) or [])]


def _run(args: list[str], env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=timeout)


def test_make_passes_the_assignment_to_the_course_tool():
    out = _run(["make", "-n", "grade-demo", "ASSIGNMENT=02_segmentation", "WORKERS=3"], {}).stdout
    assert "lecturelib.course demo --assignment 02_segmentation --workers 3" in out


def test_grade_demo_runs_the_whole_pipeline(tmp_path):
    env = {"LECTURELIB_COURSE_ROOT": str(tmp_path), **LIMITS}
    proc = _run([sys.executable, "-m", "lecturelib.course", "demo", "--assignment", "02_segmentation"], env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    points = _graded_points(nbformat.read(SEGMENTATION, as_version=4))
    rows = {r["student"]: r for r in csv.DictReader((tmp_path / "grades.csv").open())}
    assert set(rows) == {"demo_correct", "demo_blank", "demo_crash"}
    correct, blank, crash = rows["demo_correct"], rows["demo_blank"], rows["demo_crash"]
    assert (float(correct["score"]), correct["status"]) == (sum(points.values()), "graded")
    assert (float(blank["score"]), blank["status"]) == (0.0, "graded")
    # The crash costs the functions of the first solution cell only; every other cell keeps its points.
    lost = _cells_checking(nbformat.read(SEGMENTATION, as_version=4), _first_solution_functions(SEGMENTATION))
    assert lost and set(lost) < set(points)
    assert "crashed" in crash["status"]
    assert {cell: float(crash[cell]) for cell in points} == {c: 0.0 if c in lost else p for c, p in points.items()}
    for student in rows:
        html = tmp_path / "feedback" / student / "02_segmentation" / "segmentation.html"
        assert html.is_file(), student
    assert "not implemented yet" in (tmp_path / "feedback" / "demo_blank" / "02_segmentation"
                                     / "segmentation.html").read_text()


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    root = tmp_path_factory.mktemp("validate")
    env = {"LECTURELIB_COURSE_ROOT": str(root)}
    proc = _run([sys.executable, "-m", "nbgrader", "generate_assignment", "02_segmentation", "--force"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "release" / "02_segmentation" / "segmentation.ipynb"


def _validate(path) -> str:
    proc = _run([sys.executable, "-m", "nbgrader", "validate", str(path)], {}, timeout=300)
    return proc.stdout + proc.stderr


def test_validate_button_on_a_blank_release_names_each_unfinished_exercise(released):
    out = _validate(released)
    assert "Success" not in out
    failed = out.count("The following cell failed")
    nb = nbformat.read(released, as_version=4)
    written = len(written_cells(nb))        # written questions left as handed out are listed too
    assert written and out.count("You did not provide a response.") == written
    assert failed == len(_graded_points(nb)) + written
    assert out.count("not implemented yet") >= failed - written
    assert "core.py" not in out     # the check's own frames are hidden from the student's traceback


def test_validate_button_on_a_finished_release_succeeds(released, tmp_path):
    nb = nbformat.read(released, as_version=4)
    for grade_id, source in answers(nbformat.read(SEGMENTATION, as_version=4)).items():
        replace_solution(nb, grade_id, source)
    path = tmp_path / "segmentation.ipynb"
    nbformat.write(nb, path)
    assert "Success! Your notebook passes all the tests." in _validate(path)
