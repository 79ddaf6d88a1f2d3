"""The attack suite: each submission tries to get more than its code earns (or is an honest one that an editor
action or a browser download changed), and gets its honest score with a status that says what happened.

All submissions are autograded in one parallel run (the real `make autograde` path: intake, nbgrader with the
sandboxed IsolatedExecute and FlagDisagreements, the GradesCsv export), then each test asserts one submission.
An attack is one entry of ATTACKS: its submission, the score of every test cell, and the exact status set.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import time
from pathlib import Path
from typing import Callable

import nbformat
import pytest

from notebook_tools import REPO, answers, replace_solution, strip_markers

pytestmark = pytest.mark.slow

ASSIGNMENT = "02_segmentation"
NOTEBOOK = "segmentation"
SOURCE = REPO / "notebooks" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
POINTS = {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"]["points"]
          for c in nbformat.read(SOURCE, as_version=4).cells
          if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata["nbgrader"].get("solution")}
# The written questions' points (graded by hand) are in max_score but never in an autograded score.
WRITTEN = sum(c.metadata["nbgrader"]["points"] for c in nbformat.read(SOURCE, as_version=4).cells
              if c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("grade"))
FULL = dict(POINTS)
NO_CT = {**POINTS, "test_conv_transpose2d": 0}
ZERO = {k: 0 for k in POINTS}
WRONG_CT = '''
def conv_transpose2d(x, weight, bias=None, stride=1, padding=0):
    return torch.zeros(1)
'''
BUDGET_SECONDS = 45       # the notebook time budget of this run (LECTURELIB_SUBMISSION_SECONDS)


@dataclasses.dataclass
class Attack:
    name: str
    build: Callable       # (submission, correct answers, course) -> notebook, or None when `files` writes the folder
    scores: dict
    status: set[str]
    files: Callable | None = None      # (folder, course) -> None: extra files in the submission folder
    student: str = ""

    def __post_init__(self):
        self.student = self.student or f"attack_{self.name}"


ATTACKS: list[Attack] = []


def attack(name: str, scores: dict, status: set[str], **kwargs):
    def add(build):
        ATTACKS.append(Attack(name, build, scores, status, **kwargs))
        return build
    return add


def _cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


# ------------------------------------------------------------------------------------------------
# Tampering with the checks in the student's own process
# ------------------------------------------------------------------------------------------------
@attack("rebind_check", NO_CT, {"flagged"})
def _(submission, correct, course):
    return submission(conv_transpose2d=WRONG_CT + '''
def check(name, fn, suite="visible", **kwargs):
    print(f"PASSED {name} ({suite})")
''')


@attack("equals_anything", NO_CT, {"graded"})
def _(submission, correct, course):
    return submission(conv_transpose2d='''
class Anything(torch.Tensor):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def allclose(self, *a, **k): return True
def conv_transpose2d(x, weight, bias=None, stride=1, padding=0):
    return torch.zeros(1).as_subclass(Anything)
''')


@attack("input_transformer", {**ZERO, "test_nearest_unpool": 1, "test_bed_of_nails_unpool": 1}, {"flagged"})
def _(submission, correct, course):
    """An IPython input transformer that blanks every later cell (registered in the first solution cell)."""
    return submission(unpool=correct["unpool"] + '\nget_ipython().input_transformers_post.append(lambda l: ["pass\\n"])\n')


@attack("grading_time_patch", NO_CT, {"flagged"})
def _(submission, correct, course):
    """Behaving differently when NBGRADER_EXECUTION is set: patch the checks only while graded."""
    return submission(conv_transpose2d=WRONG_CT + '''
if os.environ.get("NBGRADER_EXECUTION"):
    import lecturelib.checks, lecturelib.checks.core
    _ok = lambda *a, **k: print("PASSED")
    lecturelib.checks.check = lecturelib.checks.core.check = _ok
    check = _ok
''')


@attack("replace_collector", NO_CT, {"flagged"})
def _(submission, correct, course):
    """Replace the grader's collector and runner in the kernel, to report library results for a wrong function."""
    return submission(conv_transpose2d=WRONG_CT + '''
import lecturelib.checks.runner as _runner
import torch.nn.functional as _F
_real = _runner.run_calls
def _fake(fn, calls, forbidden=()):
    return _real(lambda *a, **k: _F.conv_transpose2d(a[0], a[1], a[2] if len(a) > 2 else k.get("bias"),
                 stride=k.get("stride", 1), padding=k.get("padding", 0)), calls, ())
_runner.run_calls = _fake
try:
    import lecturelib.grading.collect as _collect
    _collect.run = lambda *a, **k: "ok"
except ImportError:
    pass
''')


@attack("disable_dispatch", FULL, {"flagged"})
def _(submission, correct, course):
    """The library op the exercise asks to implement, hidden from the forbidden-op watch by switching off the
    dispatch modes inside the function: values are right, so only a TA can decide (flagged)."""
    return submission(conv_transpose2d='''
from torch.utils._python_dispatch import _disable_current_modes
def conv_transpose2d(x, weight, bias=None, stride=1, padding=0):
    with _disable_current_modes():
        return F.conv_transpose2d(x, weight, bias, stride=stride, padding=padding)
''')


@attack("library_op", NO_CT, {"graded"})
def _(submission, correct, course):
    return submission(conv_transpose2d='''
def conv_transpose2d(x, weight, bias=None, stride=1, padding=0):
    return F.conv_transpose2d(x, weight, bias, stride=stride, padding=padding)
''')


@attack("zip_bomb", ZERO, {"flagged"})
def _(submission, correct, course):
    """Replace numpy.savez so that every graded reply carries a small archive that would expand to 600 MB."""
    return submission(mean_iou=correct["mean_iou"] + '''
import numpy as np, zipfile
def _bomb(file, **arrays):
    with zipfile.ZipFile(file, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("a0.npy", "w", force_zip64=True) as member:
            member.write(np.lib.format.magic(1, 0) + b"\\x46\\x00{'descr': '<f8', 'fortran_order': False, 'shape': (75000000,), }" + b" " * 10 + b"\\n")
            chunk = bytes(1 << 20)
            for _ in range(600):
                member.write(chunk)
np.savez = _bomb
''')


# ------------------------------------------------------------------------------------------------
# Reading what the grader knows
# ------------------------------------------------------------------------------------------------
@attack("read_source", NO_CT, {"flagged"})
def _(submission, correct, course):
    """Read the instructor's source notebook and run its solution cells."""
    return submission(conv_transpose2d=f'''
import json, glob
_found = False
_candidates = [{str(SOURCE)!r}]
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
''')


@attack("read_inputs", NO_CT, {"graded"})
def _(submission, correct, course):
    """Look for the graded inputs in every file the kernel can read, to answer them from a lookup table."""
    return submission(conv_transpose2d='''
import glob, pathlib
_found = []
for _path in glob.glob(str(pathlib.Path.cwd().parent.parent) + "/**/*", recursive=True):
    try:
        torch.load(_path, weights_only=False)
        _found.append(_path)
    except Exception:
        pass
print("readable data:", sorted(_found))
def conv_transpose2d(x, weight, bias=None, stride=1, padding=0):
    return torch.zeros(1)
''')


@attack("symlink_data", NO_CT, {"refused files", "flagged"},
        files=lambda folder, course: (folder / "answers.ipynb").symlink_to(SOURCE))
def _(submission, correct, course):
    """A link in the submission folder to the instructor's notebook, read by the solution cell."""
    return submission(conv_transpose2d=WRONG_CT + '''
import json
try:
    for _c in json.load(open("answers.ipynb"))["cells"]:
        if _c["metadata"].get("nbgrader", {}).get("grade_id") == "conv_transpose2d":
            exec("".join(_c["source"]).replace("### BEGIN SOLUTION", "").replace("### END SOLUTION", ""))
except OSError:
    pass
''')


def _notebook_link(folder: Path, course: Path) -> None:
    (folder / f"{NOTEBOOK}.ipynb").symlink_to(SOURCE)


@attack("symlink_notebook", ZERO, {"refused files", "error"}, files=_notebook_link)
def _(submission, correct, course):
    """The submitted notebook is a link to the instructor's notebook (solutions inside)."""
    return None


# ------------------------------------------------------------------------------------------------
# Outliving the cell, touching the host
# ------------------------------------------------------------------------------------------------
@attack("rewrite_gradebook", NO_CT, {"flagged"})
def _(submission, correct, course):
    """A detached process that rewrites the gradebook after grading."""
    return submission(conv_transpose2d=WRONG_CT + f'''
import subprocess, sys
subprocess.Popen([sys.executable, "-c", """
import sqlite3, time
time.sleep(4)
con = sqlite3.connect({str(course / "gradebook.db")!r})
con.execute("update grade set auto_score = 100")
con.commit()
"""], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
''')


@attack("rewrite_outcomes", NO_CT, {"flagged"})
def _(submission, correct, course):
    """A thread that keeps rewriting whatever looks like an outcome file, truncated to one case."""
    return submission(conv_transpose2d=WRONG_CT + '''
import threading, glob, json, pathlib
def _rewrite():
    while True:
        for _p in glob.glob(str(pathlib.Path.cwd().parent.parent) + "/**/*.json", recursive=True):
            try:
                pathlib.Path(_p).write_text(json.dumps({"cases": [[{"value": 1}]], "forbidden": [[]]}))
            except OSError:
                pass
threading.Thread(target=_rewrite, daemon=True).start()
''')


def _canary(course: Path) -> Path:
    return course.parent / "attack_canary.txt"


@attack("plant_links", {**POINTS, "test_mean_iou": 0}, {"crashed", "flagged"})
def _(submission, correct, course):
    """Links to a host file planted in every folder the kernel can write, then a crash to make the grader restart
    (and clean up): the host file must survive."""
    return submission(mean_iou=f'''
import os, pathlib
for _d in {{os.environ.get("TMPDIR", "/tmp"), os.environ.get("HOME", "/tmp"), os.getcwd(), "/tmp"}} | {{str(p) for p in pathlib.Path.cwd().parent.parent.glob("*")}}:
    for _name in ("connection.json", "kernel", "kernel-1", "kernel-2", "kernel-3", "kernel-4", "kernel-5"):
        try:
            os.symlink({str(_canary(course))!r}, os.path.join(_d, _name))
        except OSError:
            pass
os._exit(1)
''' + correct["mean_iou"])


@attack("lingering_writer", FULL, {"flagged"})
def _(submission, correct, course):
    """Correct answers, plus a process that keeps writing files after its cell ended."""
    return submission(mean_iou=correct["mean_iou"] + '''
import subprocess
subprocess.Popen(["sh", "-c", "while true; do touch \\"$TMPDIR/f$RANDOM\\" ../f$RANDOM; sleep 0.01; done"])
''')


# ------------------------------------------------------------------------------------------------
# Exhausting the grader
# ------------------------------------------------------------------------------------------------
@attack("os_exit", {**POINTS, "test_mean_iou": 0}, {"crashed", "flagged"})
def _(submission, correct, course):
    return submission(mean_iou="import os\nos._exit(1)\n" + correct["mean_iou"])


@attack("infinite_loop", {**POINTS, "test_max_unpool": 0}, {"timed out"})
def _(submission, correct, course):
    return submission(max_unpool="while True:\n    pass\n" + correct["max_unpool"])


@attack("memory_hog", {**POINTS, "test_conv_transpose_output_size": 0}, {"memory limit"})
def _(submission, correct, course):
    return submission(output_size="import torch\n_hog = torch.ones(4_000_000_000)\n" + correct["output_size"])


@attack("million_lines", FULL, {"graded"})
def _(submission, correct, course):
    return submission(unpool="for _i in range(1_000_000):\n    print(_i)\n" + correct["unpool"])


@attack("time_budget", {**POINTS, "test_conv_transpose2d": 0, "test_mean_iou": 0}, {"timed out"})
def _(submission, correct, course):
    """Every solution cell sleeps 19 s (under the cell limit): the notebook's time budget (45 s) runs out before the
    fourth one starts."""
    sleepy = {gid: "import time\ntime.sleep(19)\n" + answer for gid, answer in correct.items()}
    return submission(**sleepy)


@attack("fd_exhaustion", FULL, {"graded"})
def _(submission, correct, course):
    """Correct answers, then every file descriptor used up and kept: grading must still be exact and repeatable."""
    return submission(mean_iou=correct["mean_iou"] + '''
_held = []
while True:
    try:
        _held.append(open("/dev/null"))
    except OSError:
        break
''')


# ------------------------------------------------------------------------------------------------
# Locked cells and metadata
# ------------------------------------------------------------------------------------------------
@attack("edit_test_cell", NO_CT, {"graded"})
def _(submission, correct, course):
    nb = submission(conv_transpose2d=WRONG_CT)
    cell = _cell(nb, "test_conv_transpose2d")
    cell.source = 'print("PASSED conv_transpose2d")'
    cell.metadata["nbgrader"]["points"] = 100
    return nb


@attack("strip_metadata", NO_CT, {"graded"})
def _(submission, correct, course):
    nb = submission(conv_transpose2d=WRONG_CT)
    cell = _cell(nb, "test_conv_transpose2d")
    del cell.metadata["nbgrader"]
    cell.source = "pass"
    return nb


@attack("torch_warnings", FULL, {"graded"})
def _(submission, correct, course):
    """A correct solution that prints torch warnings (stderr): full marks."""
    return submission(conv_transpose2d="import warnings, torch\ntorch.tensor(torch.ones(2))\n"
                      + correct["conv_transpose2d"] + '''
_inner = conv_transpose2d
def conv_transpose2d(*args, **kwargs):
    warnings.warn("something is deprecated", UserWarning)
    torch.tensor(torch.ones(1))
    return _inner(*args, **kwargs)
''')


# ------------------------------------------------------------------------------------------------
# Honest students whose editor or browser changed the submission
# ------------------------------------------------------------------------------------------------
@attack("copied_solution_cell", FULL, {"graded"})
def _(submission, correct, course):
    """JupyterLab's copy and paste of a solution cell: two cells with one grade id (the last one counts)."""
    nb = submission()
    index = nb.cells.index(_cell(nb, "mean_iou"))
    first = nbformat.from_dict(json.loads(json.dumps(nb.cells[index])))
    first.source = "def mean_iou(pred, target, num_classes):\n    raise NotImplementedError()\n"
    nb.cells.insert(index, first)
    return nb


@attack("malformed_points", FULL, {"graded"})
def _(submission, correct, course):
    nb = submission()
    _cell(nb, "test_mean_iou").metadata["nbgrader"]["points"] = "four"
    return nb


@attack("garbage_timestamp", FULL, {"graded"},
        files=lambda folder, course: (folder / "timestamp.txt").write_text("yesterday, around noon"))
def _(submission, correct, course):
    return submission()


def _renamed(folder: Path, course: Path) -> None:
    (folder / f"{NOTEBOOK}.ipynb").rename(folder / f"{NOTEBOOK} (1).ipynb")


@attack("renamed_notebook", FULL, {"graded"}, files=_renamed)
def _(submission, correct, course):
    return submission()


@attack("glob", FULL, {"graded"})
def _(submission, correct, course):
    """An honest student whose id a pattern (the next entry) would match."""
    return submission()


@attack("glob_pattern", ZERO, {"refused: unsafe student id"}, student="attack_glo[b]")
def _(submission, correct, course):
    return submission(conv_transpose2d=WRONG_CT)


@attack("formula_id", ZERO, {"refused: unsafe student id"}, student="=HYPERLINK(\"x\")")
def _(submission, correct, course):
    return submission()


# ------------------------------------------------------------------------------------------------
# One run for the whole suite
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def attacked(course):
    from lecturelib import course as tool
    released = course / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    correct = {k: strip_markers(v) for k, v in answers(nbformat.read(SOURCE, as_version=4)).items()}

    def submission(**overrides):
        nb = nbformat.read(released, as_version=4)
        for gid, answer in {**correct, **overrides}.items():
            replace_solution(nb, gid, answer)
        return nb

    _canary(course).write_text("host file")
    for entry in ATTACKS:
        folder = course / "submitted" / entry.student / ASSIGNMENT
        folder.mkdir(parents=True)
        nb = entry.build(submission, correct, course)
        if nb is not None:
            nbformat.write(nb, folder / f"{NOTEBOOK}.ipynb")
        if entry.files:
            entry.files(folder, course)
    broken = course / "submitted" / "attack_not_a_notebook" / ASSIGNMENT
    broken.mkdir(parents=True)
    (broken / f"{NOTEBOOK}.ipynb").write_text("{ this is not json")
    students = [a.student for a in ATTACKS] + ["attack_not_a_notebook"]
    started = time.monotonic()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LECTURELIB_SUBMISSION_SECONDS", str(BUDGET_SECONDS))
        results = {student: ok for (student, _), ok in
                   tool.autograde(ASSIGNMENT, workers=2, students=students).items()}
    seconds = time.monotonic() - started
    time.sleep(6)  # let a detached process (if any) do its worst
    csv_path = tool.grades(course / "grades_attacks.csv")
    (course / "attack_suite_seconds.txt").write_text(f"{seconds:.1f}\n")
    return results, csv_path


def _grades(course: Path, student: str) -> dict:
    from nbgrader.api import Gradebook, MissingEntry
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        try:
            notebook = gb.find_submission_notebook(NOTEBOOK, ASSIGNMENT, student)
        except MissingEntry:
            return {}
        return {g.name: (g.score, g.needs_manual_grade) for g in notebook.grades}


def _scores(course: Path, student: str) -> dict[str, float]:
    return {name: score for name, (score, _) in _grades(course, student).items() if name in POINTS}


def _rows(csv_path: Path) -> dict[str, dict]:
    return {r["student"]: r for r in csv.DictReader(csv_path.open())}


@pytest.mark.parametrize("entry", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_gets_its_honest_score_and_status(attacked, course, entry):
    _, csv_path = attacked
    row = next(r for r in csv.DictReader(csv_path.open()) if r["student"].lstrip("'") == entry.student)
    assert set(row["status"].split(";")) == entry.status, (row["status"], row["notes"])
    assert float(row["score"]) == sum(entry.scores.values()), row
    assert float(row["max_score"]) == sum(POINTS.values()) + WRITTEN
    if _grades(course, entry.student):
        assert _scores(course, entry.student) == {k: float(v) for k, v in entry.scores.items()}


def test_flagged_submissions_need_manual_grading(attacked, course):
    """A disagreement flags its cell; tampering flags every cell; plain honest submissions flag nothing."""
    grades = _grades(course, "attack_rebind_check")
    assert grades["test_conv_transpose2d"] == (0.0, True) and grades["test_mean_iou"] == (2.0, False)
    assert all(flag for _, flag in _grades(course, "attack_disable_dispatch").values())
    assert not any(flag for name, (_, flag) in _grades(course, "attack_copied_solution_cell").items()
                   if name in POINTS)       # the written answers wait for a TA in every honest submission


def test_reports_say_what_was_repaired_refused_or_flagged(attacked, course):
    rows = _rows(attacked[1])
    assert "last copy is graded" in rows["attack_copied_solution_cell"]["notes"]
    assert "did not read" in rows["attack_malformed_points"]["notes"]
    assert "graded segmentation (1).ipynb as segmentation.ipynb" in rows["attack_renamed_notebook"]["notes"]
    assert "answers.ipynb" in rows["attack_symlink_data"]["notes"]
    assert "_disable_current_modes" in rows["attack_disable_dispatch"]["notes"]
    assert "imports threading" in rows["attack_rewrite_outcomes"]["notes"]


def test_spreadsheet_cells_cannot_hold_formulas(attacked):
    text = attacked[1].read_text()
    assert "'=HYPERLINK" in text and ",=HYPERLINK" not in text and "\n=HYPERLINK" not in text


def test_host_files_survive_and_nothing_outlives_grading(attacked, course):
    assert _canary(course).read_text() == "host file"
    assert not list(course.glob("*/f[0-9]*")) and not list(Path("/tmp").glob("f[0-9]*"))
    lingering = subprocess.run(["pgrep", "-f", "while true; do touch"], capture_output=True, text=True).stdout
    assert not lingering.strip(), lingering


def test_attacks_are_isolated_by_bubblewrap(attacked, course):
    from lecturelib.grading.sandbox import bubblewrap
    if bubblewrap() is None:
        pytest.skip("bubblewrap is not available: process isolation only")
    report = json.loads((course / "grading_reports" / ASSIGNMENT / "attack_read_source" / f"{NOTEBOOK}.json")
                        .read_text())
    assert report["isolation"] == "bubblewrap"


def test_broken_submission_still_has_a_row(attacked):
    results, csv_path = attacked
    assert results["attack_not_a_notebook"] is False
    row = _rows(csv_path)["attack_not_a_notebook"]
    assert row["status"] == "error" and float(row["score"]) == 0.0


def test_hidden_inputs_never_reach_the_kernel_before_the_call(attacked, course):
    """All the data a solution cell can read in the sandbox is the visible cases (what students get anyway)."""
    import ast
    nb = nbformat.read(course / "autograded" / "attack_read_inputs" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    line = next(line for line in printed.splitlines() if line.startswith("readable data:"))
    found = ast.literal_eval(line.removeprefix("readable data:").strip())
    assert all(path.endswith(f"/visible/{NOTEBOOK}.pt") for path in found), found


def test_regrading_gives_identical_scores(attacked, course):
    from lecturelib import course as tool
    students = ("attack_os_exit", "attack_library_op", "attack_fd_exhaustion", "attack_disable_dispatch")
    before = {s: _grades(course, s) for s in students}
    for student in students:
        assert tool._autograde_one(student, ASSIGNMENT)[0]
    assert {s: _grades(course, s) for s in students} == before


def test_plain_nbgrader_autograde_gives_the_same_scores_and_flags(attacked, course):
    """The grader is nbgrader steps: `nbgrader autograde` with the project's config, without the launcher, gives
    every cell the same score and flag as `make autograde` (a disagreement and a tampering submission)."""
    import shutil

    from lecturelib import course as tool
    for name in ("rebind_check", "disable_dispatch"):
        shutil.copytree(course / "submitted" / f"attack_{name}", course / "submitted" / f"plain_{name}")
        tool.nbgrader("autograde", ASSIGNMENT, f"--student=plain_{name}", "--force")
        assert _grades(course, f"plain_{name}") == _grades(course, f"attack_{name}")
