"""nbgrader's exchange end to end, as a course on JupyterHub uses it, with the real nbgrader commands.

The TA (the repository's nbgrader_config.py, with the course root and the exchange, ``c.Exchange.root`` from
``$LECTURELIB_EXCHANGE``, in a temporary folder) generates and releases an assignment; two students fetch
it and submit from their own folders; the TA collects, autogrades (nbgrader's Autograde with the sandboxed
``IsolatedExecute``), generates and releases the feedback; each student fetches it.

Who a student is: nbgrader 0.9.6 (``nbgrader.utils.get_username``) takes the OS account name, except for the
account ``jovyan`` (every user's server in the Jupyter Docker images that JupyterHub spawns), where it takes
``$JUPYTERHUB_USER``. ``$USER`` plays no part. The test runs as one OS account, so the students' processes see
their account as ``jovyan`` (a ``sitecustomize`` on their PYTHONPATH) and are told apart by ``JUPYTERHUB_USER``, as
on such a hub. Each student has an own home: the exchange settings in ``~/.jupyter/nbgrader_config.py`` (what a hub
admin puts in ``/etc/jupyter``), and nbgrader's submission cache (``$JUPYTER_DATA_DIR/nbgrader_cache``), which is
what ``fetch_feedback`` uses to find that student's feedback, and only theirs.

A written answer goes the whole way too: alice answers one written question; after autograding, grades.csv says it
"needs manual grade" (and counts none of its points); the TA grades it as formgrader does (its grade API), and the
next export and alice's feedback include the points.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import csv

import nbformat
import pytest

from notebook_tools import REPO, answers, graded_cells, replace_solution, strip_markers, written_points

pytestmark = pytest.mark.slow

ASSIGNMENT, NOTEBOOK = "01_transformers", "transformers"     # the quickest notebook to autograde
SOURCE = REPO / "notebooks" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
SOLVED = "patchify"              # alice solves this exercise; bob submits the release as handed out
WRITTEN = "q_position_embedding"  # alice answers this written question; the TA gives it MANUAL_SCORE
MANUAL_SCORE = 0.5
ALICE_ANSWER = "Written by alice: without positions the ViT sees a bag of patches."
STUDENTS = ("alice", "bob")
LIMITS = {"LECTURELIB_CELL_TIMEOUT": "20", "LECTURELIB_COLLECT_TIMEOUT": "10", "LECTURELIB_MEMORY_MB": "6144"}

JOVYAN = '''\
"""The OS account as the Jupyter Docker images have it: every student's server runs as "jovyan"."""
import pwd

_getpwuid = pwd.getpwuid


def _as_jovyan(uid):
    entry = _getpwuid(uid)
    return pwd.struct_passwd(("jovyan",) + tuple(entry)[1:])


pwd.getpwuid = _as_jovyan
'''


def _points(nb) -> dict[str, float]:
    """{grade_id: points} of the autograded test cells."""
    return {c.metadata["nbgrader"]["grade_id"]: float(c.metadata["nbgrader"]["points"]) for c in graded_cells(nb)}


def _total(nb) -> float:
    """The assignment's maximum: test cells and written questions."""
    return sum(_points(nb).values()) + sum(written_points(nb).values())


def _run(args: list, cwd: Path, env: dict) -> str:
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"nbgrader {' '.join(map(str, args))} failed:\n{out[-4000:]}"
    return out


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """The whole round trip; returns what each party ends up with."""
    base = tmp_path_factory.mktemp("exchange-course")
    root, exchange = base / "course", base / "exchange"
    root.mkdir()                          # nbgrader_config.py finds the notebooks relative to it
    exchange.mkdir()                      # nbgrader wants the exchange to exist (on a hub: a shared volume)
    ta = {**os.environ, **LIMITS, "LECTURELIB_COURSE_ROOT": str(root), "LECTURELIB_EXCHANGE": str(exchange)}
    config = [f"--config={REPO / 'nbgrader_config.py'}"]

    def as_ta(*args):
        return _run([*args, *config], REPO, ta)

    shim = base / "jovyan"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(JOVYAN)
    students = {}
    for name in STUDENTS:
        home = base / "home" / name
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LECTURELIB_", "JUPYTER", "IPYTHON"))}
        env.update({"HOME": str(home), "JUPYTERHUB_USER": name, "PYTHONPATH": str(shim),
                    "JUPYTER_CONFIG_DIR": str(home / ".jupyter"), "JUPYTER_DATA_DIR": str(home / ".local/share/jupyter"),
                    "JUPYTER_RUNTIME_DIR": str(home / ".local/share/jupyter/runtime"),
                    "IPYTHONDIR": str(home / ".ipython")})
        (home / ".jupyter").mkdir(parents=True)
        (home / ".jupyter" / "nbgrader_config.py").write_text(
            f'c = get_config()\nc.CourseDirectory.course_id = "lecturelib"\nc.Exchange.root = {str(exchange)!r}\n')
        students[name] = {"env": env, "work": home / "work", "home": home}
        students[name]["work"].mkdir()

    def as_student(name, *args):
        return _run(args, students[name]["work"], students[name]["env"])

    as_ta("generate_assignment", ASSIGNMENT, "--force")
    as_ta("release_assignment", ASSIGNMENT, "--force")
    for name in STUDENTS:
        as_student(name, "fetch_assignment", ASSIGNMENT)
    # alice: her marker and the instructor's answer for one exercise; bob: his marker, the rest as handed out.
    for name in STUDENTS:
        path = students[name]["work"] / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
        nb = nbformat.read(path, as_version=4)
        gid, stub = next((c.metadata["nbgrader"]["grade_id"], c.source) for c in nb.cells
                         if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution"))
        if name == "alice":
            answer = strip_markers(answers(nbformat.read(SOURCE, as_version=4))[SOLVED])
            replace_solution(nb, SOLVED, f"# written by {name}\n{answer}")
            replace_solution(nb, WRITTEN, ALICE_ANSWER)
        else:
            replace_solution(nb, gid, f"# written by {name}\n{stub}")
        nbformat.write(nb, path)
        as_student(name, "submit", ASSIGNMENT)
    inbound = sorted(p.name.split("+")[0] for p in (exchange / "lecturelib" / "inbound").iterdir())

    as_ta("collect", ASSIGNMENT)
    collected = sorted(p.name for p in (root / "submitted").iterdir())
    autograde = as_ta("autograde", ASSIGNMENT, "--force")
    exports = {}

    def export(label):
        path = base / f"grades_{label}.csv"
        as_ta("export", "--exporter=lecturelib.grading.export.GradesCsv", f"--to={path}")
        exports[label] = {row["student"]: row for row in csv.DictReader(path.open())}

    export("autograded")
    # The TA grades alice's written answer in formgrader: what its grade API (PUT /formgrader/api/grade/<id>,
    # nbgrader.server_extensions.formgrader.apihandlers.GradeHandler) does to the gradebook.
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        grade = gb.find_grade(WRITTEN, NOTEBOOK, ASSIGNMENT, "alice")
        assert grade.cell_type == "markdown" and grade.needs_manual_grade and grade.auto_score is None
        grade = gb.find_grade_by_id(grade.id)
        grade.manual_score = MANUAL_SCORE
        grade.needs_manual_grade = False
        gb.db.commit()
    export("manually_graded")
    as_ta("generate_feedback", ASSIGNMENT, "--force")
    as_ta("release_feedback", ASSIGNMENT)
    for name in STUDENTS:
        as_student(name, "fetch_feedback", ASSIGNMENT)
    return {"root": root, "exchange": exchange, "students": students, "inbound": inbound,
            "collected": collected, "autograde_log": autograde, "exports": exports}


def test_students_are_told_apart_by_jupyterhub_user(course):
    assert course["inbound"] == sorted(STUDENTS)       # submissions are named <student>+<assignment>+<time>+...
    assert course["collected"] == sorted(STUDENTS)     # submitted/<student>/<assignment>/
    for name in STUDENTS:
        assert (course["root"] / "submitted" / name / ASSIGNMENT / f"{NOTEBOOK}.ipynb").is_file()


def test_autograde_scores_the_solved_exercise_only(course):
    from nbgrader.api import Gradebook
    points = _points(nbformat.read(SOURCE, as_version=4))
    solved_cell = f"test_{SOLVED}"
    assert solved_cell in points and len(points) > 1
    with Gradebook(f"sqlite:///{course['root'] / 'gradebook.db'}") as gb:
        scores = {name: {g.name: g.score for g in gb.find_submission_notebook(NOTEBOOK, ASSIGNMENT, name).grades
                         if g.name in points} for name in STUDENTS}
        totals = {name: (gb.find_submission(ASSIGNMENT, name).score, gb.find_submission(ASSIGNMENT, name).max_score)
                  for name in STUDENTS}
    assert scores["alice"] == {gid: (p if gid == solved_cell else 0.0) for gid, p in points.items()}
    assert scores["bob"] == {gid: 0.0 for gid in points}
    total = _total(nbformat.read(SOURCE, as_version=4))
    assert totals == {"alice": (points[solved_cell] + MANUAL_SCORE, total), "bob": (0.0, total)}
    # The sandboxed grader ran (IsolatedExecute writes one report per graded notebook).
    for name in STUDENTS:
        assert (course["root"] / "grading_reports" / ASSIGNMENT / name / f"{NOTEBOOK}.json").is_file(), name


def test_written_answer_needs_manual_grade_until_the_ta_grades_it(course):
    """grades.csv after autograding: alice's answered question "needs manual grade" and none of its points count;
    bob's unanswered one is 0 by itself. After the TA's grade in formgrader, the points count."""
    source = nbformat.read(SOURCE, as_version=4)
    written, solved = written_points(source), _points(source)[f"test_{SOLVED}"]
    assert WRITTEN in written and len(written) > 1
    before, after = course["exports"]["autograded"], course["exports"]["manually_graded"]
    assert before["alice"][WRITTEN] == "needs manual grade"
    assert all(float(before["alice"][q]) == 0.0 for q in written if q != WRITTEN)      # left as handed out
    assert (float(before["alice"]["score"]), before["alice"]["needs_manual_grade"]) == (solved, "True")
    assert f"written answers to grade in formgrader: {WRITTEN}" in before["alice"]["notes"]
    assert before["alice"]["status"] == "graded" and before["alice"][f"test_{SOLVED}"] == str(solved)
    assert all(float(before["bob"][q]) == 0.0 for q in written) and before["bob"]["needs_manual_grade"] == "False"
    assert float(after["alice"][WRITTEN]) == MANUAL_SCORE
    assert (float(after["alice"]["score"]), after["alice"]["needs_manual_grade"]) == (solved + MANUAL_SCORE, "False")
    assert "written answers to grade" not in after["alice"]["notes"]
    assert float(after["alice"]["max_score"]) == _total(source)


def test_each_student_fetches_their_own_feedback_only(course):
    points = _points(nbformat.read(SOURCE, as_version=4))
    released = list((course["exchange"] / "lecturelib" / "feedback").glob("*.html"))
    assert len(released) == len(STUDENTS)                 # both are in the exchange, under opaque names
    expected = {"alice": points[f"test_{SOLVED}"] + MANUAL_SCORE, "bob": 0.0}
    for name, student in course["students"].items():
        fetched = list((student["work"] / ASSIGNMENT / "feedback").glob("*/*.html"))
        assert [p.name for p in fetched] == [f"{NOTEBOOK}.html"], fetched
        html = fetched[0].read_text()
        assert f"# written by {name}" in html
        assert not [other for other in STUDENTS if other != name and f"# written by {other}" in html]
        score = re.search(r"\(Score: ([\d.]+) / ([\d.]+)\)", html)
        total = _total(nbformat.read(SOURCE, as_version=4))
        assert score and (float(score.group(1)), float(score.group(2))) == (expected[name], total)
        assert len(list(student["home"].rglob("*.html"))) == 1     # no other feedback anywhere in their home
        if name == "bob":
            assert "not implemented yet" in html and ALICE_ANSWER not in html
        else:
            assert ALICE_ANSWER in html and "(written response)" in html      # her answer, with its score
