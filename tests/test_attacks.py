"""The attack suite: each submission tries to get more than its code earns, and gets its honest score.

All submissions of this module are autograded in one parallel run (the real `make autograde` path:
nbgrader with the isolated executor), then each test asserts one submission's scores and status.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import nbformat
import pytest

from notebook_tools import REPO, answers, replace_solution, strip_markers

pytestmark = pytest.mark.slow

ASSIGNMENT = "02_segmentation"
NOTEBOOK = "segmentation"
POINTS = {"test_nearest_unpool": 1, "test_bed_of_nails_unpool": 1, "test_max_unpool": 2,
          "test_conv_transpose_output_size": 1, "test_conv_transpose2d": 4, "test_mean_iou": 2}
WRONG_CT = '''
def conv_transpose2d(x, weight, bias=None, stride=1, padding=0):
    return torch.zeros(1)
'''


def _correct_answers() -> dict[str, str]:
    source = nbformat.read(REPO / "notebooks" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    return {k: strip_markers(v) for k, v in answers(source).items()}


def _cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _attacks(course: Path) -> dict[str, tuple[nbformat.NotebookNode, dict, set]]:
    """name -> (submission, expected per-cell scores, statuses that must be reported)."""
    released = course / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    correct = _correct_answers()
    gradebook = course / "gradebook.db"
    source_nb = REPO / "notebooks" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"

    def submission(**overrides):
        nb = nbformat.read(released, as_version=4)
        for gid, answer in {**correct, **overrides}.items():
            replace_solution(nb, gid, answer)
        return nb

    full = dict(POINTS)
    no_ct = {**POINTS, "test_conv_transpose2d": 0}
    attacks = {}

    # (a) rebind the helper the test cells use
    attacks["rebind_check"] = (submission(conv_transpose2d=WRONG_CT + '''
def check(name, fn, suite="visible", **kwargs):
    print(f"PASSED {name} ({suite})")
'''), no_ct, {"flagged"})

    # (b) an object whose comparisons always succeed
    attacks["equals_anything"] = (submission(conv_transpose2d='''
class Anything(torch.Tensor):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def allclose(self, *a, **k): return True
    @property
    def shape(self): return _Shape()
class _Shape(tuple):
    def __eq__(self, other): return True
def conv_transpose2d(x, weight, bias=None, stride=1, padding=0):
    return torch.zeros(1).as_subclass(Anything)
'''), no_ct, set())

    # (c) an input transformer that blanks every later cell (registered in the first solution cell)
    attacks["input_transformer"] = (submission(unpool=correct["unpool"] + '''
get_ipython().input_transformers_post.append(lambda lines: ["pass\\n"])
'''), {**{k: 0 for k in POINTS}, "test_nearest_unpool": 1, "test_bed_of_nails_unpool": 1}, {"flagged"})

    # (d) read the instructor's source notebook and run its solution cells
    attacks["read_source"] = (submission(conv_transpose2d=f'''
import json, glob, os
_found = False
_candidates = [{str(source_nb)!r}]
for _root in ("/work", "/tmp", "/root", "/srv", "/home"):
    _candidates += glob.glob(_root + "/**/notebooks/{ASSIGNMENT}/*.ipynb", recursive=True)
for _path in _candidates:
    try:
        _nb = json.load(open(_path))
    except OSError:
        continue
    for _c in _nb["cells"]:
        if _c["metadata"].get("nbgrader", {{}}).get("grade_id") == "conv_transpose2d":
            exec("".join(_c["source"]))
            _found = True
    if _found:
        break
if not _found:
{WRONG_CT.replace(chr(10), chr(10) + "    ")}
'''), no_ct, set())

    # (e) a detached process that rewrites the gradebook after grading
    attacks["rewrite_gradebook"] = (submission(conv_transpose2d=WRONG_CT + f'''
import subprocess, sys
subprocess.Popen([sys.executable, "-c", """
import sqlite3, time
time.sleep(4)
con = sqlite3.connect({str(gradebook)!r})
con.execute("update grade set auto_score = 100")
con.commit()
"""], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
'''), no_ct, set())

    # os._exit in a solution cell: costs that cell only
    attacks["os_exit"] = (submission(mean_iou="import os\nos._exit(1)\n" + correct["mean_iou"]),
                          {**POINTS, "test_mean_iou": 0}, {"crashed"})

    # an infinite loop in a solution cell: costs that cell only
    attacks["infinite_loop"] = (submission(max_unpool="while True:\n    pass\n" + correct["max_unpool"]),
                                {**POINTS, "test_max_unpool": 0}, {"timed out"})

    # allocating far beyond the memory limit
    attacks["memory_hog"] = (submission(output_size="import torch\n_hog = torch.ones(4_000_000_000)\n"
                                        + correct["output_size"]),
                             {**POINTS, "test_conv_transpose_output_size": 0}, {"memory limit"})

    # printing a million lines (correct code): full marks, grading finishes
    attacks["million_lines"] = (submission(unpool="for _i in range(1_000_000):\n    print(_i)\n" + correct["unpool"]),
                                full, set())

    # behaving differently when NBGRADER_EXECUTION is set: patch the checks only while graded
    attacks["grading_time_patch"] = (submission(conv_transpose2d=WRONG_CT + '''
import os
if os.environ.get("NBGRADER_EXECUTION"):
    import lecturelib.checks, lecturelib.checks.core
    _ok = lambda *a, **k: print("PASSED")
    lecturelib.checks.check = lecturelib.checks.core.check = _ok
    check = _ok
'''), no_ct, {"flagged"})

    # editing a locked test cell and its points
    edited = submission(conv_transpose2d=WRONG_CT)
    cell = _cell(edited, "test_conv_transpose2d")
    cell.source = 'print("PASSED conv_transpose2d")'
    cell.metadata["nbgrader"]["points"] = 100
    attacks["edit_test_cell"] = (edited, no_ct, set())

    # stripping the nbgrader metadata from a test cell (and blanking it)
    stripped = submission(conv_transpose2d=WRONG_CT)
    cell = _cell(stripped, "test_conv_transpose2d")
    del cell.metadata["nbgrader"]
    cell.source = "pass"
    attacks["strip_metadata"] = (stripped, no_ct, set())

    # a correct solution that prints torch warnings: full marks
    attacks["torch_warnings"] = (submission(conv_transpose2d="import warnings, torch\n"
                                            "torch.tensor(torch.ones(2))\n" + correct["conv_transpose2d"] + '''
_inner = conv_transpose2d
def conv_transpose2d(*args, **kwargs):
    warnings.warn("something is deprecated", UserWarning)
    torch.tensor(torch.ones(1))
    return _inner(*args, **kwargs)
'''), full, set())

    # calling the library op that the exercise asks to implement
    attacks["library_op"] = (submission(conv_transpose2d='''
def conv_transpose2d(x, weight, bias=None, stride=1, padding=0):
    return F.conv_transpose2d(x, weight, bias, stride=stride, padding=padding)
'''), no_ct, set())
    return attacks


@pytest.fixture(scope="module")
def attacked(course):
    from lecturelib import course as tool
    attacks = _attacks(course)
    for name, (nb, _, _) in attacks.items():
        folder = course / "submitted" / f"attack_{name}" / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{NOTEBOOK}.ipynb")
    broken = course / "submitted" / "attack_not_a_notebook" / ASSIGNMENT
    broken.mkdir(parents=True)
    (broken / f"{NOTEBOOK}.ipynb").write_text("{ this is not json")
    started = time.monotonic()
    results = {}
    students = [f"attack_{name}" for name in attacks] + ["attack_not_a_notebook"]
    for (student, assignment), ok in tool.autograde(ASSIGNMENT, workers=2, students=students).items():
        results[student] = ok
    time.sleep(max(0.0, 6 - (time.monotonic() - started)))  # let a detached process (if any) do its worst
    csv_path = tool.grades(course / "grades_attacks.csv")
    return attacks, results, csv_path


def _grades(course: Path, student: str) -> dict:
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        notebook = gb.find_submission_notebook(NOTEBOOK, ASSIGNMENT, student)
        return {g.name: (g.score, g.needs_manual_grade) for g in notebook.grades}


def _scores(course: Path, student: str) -> dict[str, float]:
    return {name: score for name, (score, _) in _grades(course, student).items()}


ATTACKS = ["rebind_check", "equals_anything", "input_transformer", "read_source", "rewrite_gradebook",
           "os_exit", "infinite_loop", "memory_hog", "million_lines", "grading_time_patch", "edit_test_cell",
           "strip_metadata", "torch_warnings", "library_op"]


@pytest.mark.parametrize("attack", ATTACKS)
def test_attack_gets_its_honest_score(attacked, course, attack):
    attacks, _, csv_path = attacked
    _, expected, statuses = attacks[attack]
    student = f"attack_{attack}"
    scores = {k: v for k, v in _scores(course, student).items() if k in POINTS}
    assert scores == {k: float(v) for k, v in expected.items()}
    rows = {r["student"]: r for r in csv.DictReader(csv_path.open())}
    row = rows[student]
    assert float(row["score"]) == sum(expected.values())
    assert float(row["max_score"]) == sum(POINTS.values())
    reported = set(row["status"].split(";"))
    assert statuses <= reported, row["status"]
    if not statuses:
        assert reported == {"graded"}, row["status"]


def test_attacks_are_isolated_by_bubblewrap(attacked, course):
    from lecturelib.grading.sandbox import bubblewrap
    if bubblewrap() is None:
        pytest.skip("bubblewrap is not available: process isolation only")
    report = json.loads((course / "grading_reports" / ASSIGNMENT / "attack_read_source" / f"{NOTEBOOK}.json")
                        .read_text())
    assert report["isolation"] == "bubblewrap"


def test_flagged_cells_need_manual_grading(attacked, course):
    grades = _grades(course, "attack_rebind_check")
    assert grades["test_conv_transpose2d"] == (0.0, True)
    assert grades["test_mean_iou"] == (2.0, False)


def test_broken_submission_still_has_a_row(attacked):
    _, results, csv_path = attacked
    assert results["attack_not_a_notebook"] is False
    rows = {r["student"]: r for r in csv.DictReader(csv_path.open())}
    row = rows["attack_not_a_notebook"]
    assert row["status"] == "error" and float(row["score"]) == 0.0


def test_regrading_gives_identical_scores(attacked, course):
    from lecturelib import course as tool
    before = {s: _scores(course, s) for s in ("attack_os_exit", "attack_library_op")}
    for student in before:
        assert tool._autograde_one(student, ASSIGNMENT)[0]
    after = {s: _scores(course, s) for s in before}
    assert after == before
