"""TA workflow around nbgrader: release, autograde, grades, feedback, and a one-command demo.

    python -m lecturelib.course release      # student notebooks in release/, student package in release/student_package
    python -m lecturelib.course autograde    # every submission in submitted/<student>/<assignment>/
    python -m lecturelib.course grades       # grades.csv: one row per student and assignment
    python -m lecturelib.course feedback     # feedback/<student>/<assignment>/*.html
    python -m lecturelib.course demo         # sample submissions through the whole pipeline
    (every command but release takes --assignment NAME; autograde and demo take --workers N)

The course root (where release/, submitted/, ... and the gradebook live) is the repository, or
``$LECTURELIB_COURSE_ROOT``. This module is grader tooling: the student package leaves it out.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = Path(__file__).resolve().parent
# Parts of the package that only instructors and graders get.
GRADER_ONLY = ("reference", "hidden", "course.py", "grading")


from .grading.paths import course_root  # noqa: E402


def assignments() -> list[str]:
    """Assignment names: the folders of notebooks/ that hold a notebook, in lecture order."""
    from .grading.paths import source_root
    return sorted(p.name for p in source_root().iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def _env() -> dict:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")  # nbgrader runs `alembic` from PATH
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


def nbgrader(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run an nbgrader command with this repository's nbgrader_config.py."""
    cmd = [sys.executable, "-m", "nbgrader", *args, f"--config={REPO / 'nbgrader_config.py'}"]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")
    return proc


# ------------------------------------------------------------------------------------------------
# release
# ------------------------------------------------------------------------------------------------
def build_student_package(dest: Path) -> Path:
    """Copy the package without the grader-only parts (reference solutions, hidden cases, this tool)."""
    if dest.exists():
        shutil.rmtree(dest)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", *GRADER_ONLY)
    shutil.copytree(PACKAGE, dest / "lecturelib", ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")
    (dest / "README.md").write_text("lecturelib, student edition: `pip install .` inside this folder.\n")
    return dest


def release() -> list[str]:
    """Generate the student version of every assignment, and the student package."""
    root = course_root()
    names = assignments()
    for name in names:
        nbgrader("generate_assignment", name, "--force")
    build_student_package(root / "release" / "student_package")
    print(f"released {', '.join(names)} to {root / 'release'}; student package in "
          f"{root / 'release' / 'student_package'}")
    return names


# ------------------------------------------------------------------------------------------------
# autograde, grades, feedback
# ------------------------------------------------------------------------------------------------
def submissions(assignment: str | None = None) -> list[tuple[str, str]]:
    """(student, assignment) pairs found in submitted/."""
    base = course_root() / "submitted"
    if not base.is_dir():
        return []
    found = []
    for student in sorted(p for p in base.iterdir() if p.is_dir()):
        for folder in sorted(p for p in student.iterdir() if p.is_dir()):
            if assignment in (None, folder.name):
                found.append((student.name, folder.name))
    return found


def _autograde_one(student: str, assignment: str) -> tuple[bool, str]:
    proc = nbgrader("autograde", assignment, f"--student={student}", "--force", check=False)
    tail = (proc.stdout + proc.stderr)[-4000:]
    return proc.returncode == 0, tail


def autograde(assignment: str | None = None, workers: int | None = None,
              students: list[str] | None = None) -> dict[tuple[str, str], bool]:
    """Autograde every submission with ``workers`` parallel nbgrader processes (default: core count).

    A failure of one submission never stops the others: it gets a report with status "error", so it
    still has a row in the grades. Cells whose in-kernel verdict disagrees with the isolated one are
    marked "needs manual grade" in the gradebook (formgrader shows them).
    """
    from concurrent.futures import ThreadPoolExecutor

    todo = [(s, a) for s, a in submissions(assignment) if students is None or s in students]
    workers = max(1, workers or os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(lambda pair: _autograde_one(*pair), todo))
    done = {}
    for (student, name), (ok, log) in zip(todo, outcomes):
        done[(student, name)] = ok
        if not ok:
            _write_error_report(student, name, log)
        print(f"{student} / {name}: {'graded' if ok else 'ERROR (see grading_reports)'}")
    _flag_in_gradebook(todo)
    return done


def _write_error_report(student: str, assignment: str, log: str) -> None:
    from .grading.paths import report_path
    path = report_path(assignment, student, "_submission")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"student": student, "assignment": assignment, "status": ["error"],
                                "error": log, "cells": {}}, indent=1))


def reports(student: str, assignment: str) -> list[dict]:
    """The isolated grader's reports of one submission (one per notebook, or one error report)."""
    folder = course_root() / "grading_reports" / assignment / student
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def _flag_in_gradebook(pairs) -> None:
    from nbgrader.api import Gradebook, MissingEntry

    from .grading.paths import db_url
    with Gradebook(db_url()) as gb:
        for student, assignment in pairs:
            for report in reports(student, assignment):
                for grade_id, cell in report.get("cells", {}).items():
                    if not cell.get("flagged"):
                        continue
                    try:
                        grade = gb.find_grade(grade_id, report["notebook"], assignment, student)
                    except MissingEntry:
                        continue
                    grade.needs_manual_grade = True
        gb.db.commit()


def status(student: str, assignment: str) -> str:
    """graded, or what went wrong: timed out, crashed, memory limit, flagged, error, not graded."""
    found = reports(student, assignment)
    if not found:
        return "not graded"
    return ";".join(sorted({s for r in found for s in r.get("status", ["error"])}))


def grades(path: Path | None = None) -> Path:
    """Write grades.csv: one row per submission (even one that failed), one column per graded cell,
    plus the isolated grader's status."""
    from nbgrader.api import Gradebook, MissingEntry

    from .grading.paths import db_url

    path = Path(path or course_root() / "grades.csv")
    rows, columns = [], {}
    with Gradebook(db_url()) as gb:
        for assignment in gb.assignments:
            columns[assignment.name] = [(nb.name, cell.name, cell.max_score)
                                        for nb in assignment.notebooks for cell in nb.grade_cells]
        pairs = set(submissions())
        for student in gb.students:
            for assignment in gb.assignments:
                try:
                    gb.find_submission(assignment.name, student.id)
                    pairs.add((student.id, assignment.name))
                except MissingEntry:
                    pass
        for student, assignment in sorted(pairs):
            cells = columns.get(assignment, [])
            row = {"student": student, "assignment": assignment, "status": status(student, assignment),
                   "max_score": sum(c[2] for c in cells)}
            try:
                submission = gb.find_submission(assignment, student)
                row["score"] = submission.score
                row["needs_manual_grade"] = submission.needs_manual_grade
                for nb_name, cell, _ in cells:
                    row[cell] = gb.find_grade(cell, nb_name, assignment, student).score
            except MissingEntry:
                row.update({"score": 0.0, "needs_manual_grade": True, **{cell: 0.0 for _, cell, _ in cells}})
            rows.append(row)
    fields = ["student", "assignment", "score", "max_score", "status", "needs_manual_grade"]
    for cells in columns.values():
        fields += [cell for _, cell, _ in cells if cell not in fields]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {path}")
    return path


def feedback(assignment: str | None = None) -> None:
    for name in ([assignment] if assignment else assignments()):
        nbgrader("generate_feedback", name, "--force", check=False)
    print(f"feedback in {course_root() / 'feedback'}")


# ------------------------------------------------------------------------------------------------
# demo
# ------------------------------------------------------------------------------------------------
CRASH = "import os\nos._exit(1)   # demo: this solution cell kills the kernel\n"


def _with_crashing_first_solution(nb):
    """A copy of ``nb`` whose first solution cell kills the kernel (a crash costs that exercise only)."""
    import copy
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = CRASH
            break
    return nb


def demo(assignment: str | None = None, workers: int | None = None) -> Path:
    """Sample submissions through release, autograde, grades and feedback; returns grades.csv.

    Per assignment: ``demo_correct`` (the instructor's solutions), ``demo_blank`` (the release as
    handed out) and ``demo_crash`` (correct, except that the first solution cell kills the kernel).
    """
    import nbformat

    from .grading.paths import source_root

    names = [n for n in release() if assignment in (None, n)]
    if not names:
        raise SystemExit(f"no assignment named {assignment!r}; assignments: {', '.join(assignments())}")
    root = course_root()
    for name in names:
        source = next((source_root() / name).glob("*.ipynb"))
        solved = nbformat.read(source, as_version=4)
        variants = {"demo_correct": solved,
                    "demo_blank": nbformat.read(root / "release" / name / source.name, as_version=4),
                    "demo_crash": _with_crashing_first_solution(solved)}
        for student, nb in variants.items():
            folder = root / "submitted" / student / name
            folder.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, folder / source.name)
            (folder / "timestamp.txt").write_text("2026-01-01 00:00:00.000000 UTC")
    for name in names:
        autograde(name, workers, students=list(DEMO_STUDENTS))
        feedback(name)
    csv_path = grades()
    print(csv_path.read_text())
    return csv_path


DEMO_STUDENTS = ("demo_correct", "demo_blank", "demo_crash")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lecturelib.course", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["release", "autograde", "grades", "feedback", "demo", "list"])
    parser.add_argument("--assignment", default=None)
    parser.add_argument("--workers", type=int, default=None, help="parallel autograde workers (default: cores)")
    args = parser.parse_args(argv)
    if args.command == "release":
        release()
    elif args.command == "autograde":
        results = autograde(args.assignment, args.workers)
        return 0 if all(results.values()) else 1
    elif args.command == "grades":
        grades()
    elif args.command == "feedback":
        feedback(args.assignment)
    elif args.command == "demo":
        demo(args.assignment, args.workers)
    else:
        print(json.dumps({"assignments": assignments(), "submissions": submissions()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
