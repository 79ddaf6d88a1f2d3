"""TA workflow around nbgrader: release, autograde, grades, feedback, and a one-command demo.

    python -m lecturelib.course release      # student notebooks in release/, student package in release/student_package
    python -m lecturelib.course autograde    # every submission in submitted/<student>/<assignment>/
    python -m lecturelib.course grades       # grades.csv: one row per student and assignment
    python -m lecturelib.course feedback     # feedback/<student>/<assignment>/*.html
    python -m lecturelib.course demo         # sample submissions through the whole pipeline

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


def course_root() -> Path:
    return Path(os.environ.get("LECTURELIB_COURSE_ROOT", REPO)).resolve()


def assignments() -> list[str]:
    """Assignment names: the folders of notebooks/ that hold a notebook, in lecture order."""
    return sorted(p.name for p in (REPO / "notebooks").iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


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


def autograde(assignment: str | None = None) -> dict[tuple[str, str], bool]:
    """Autograde every submission; a failure of one never stops the others."""
    done = {}
    for student, name in submissions(assignment):
        proc = nbgrader("autograde", name, f"--student={student}", "--force", check=False)
        done[(student, name)] = proc.returncode == 0
        status = "graded" if proc.returncode == 0 else "FAILED (see nbgrader log)"
        print(f"{student} / {name}: {status}")
    return done


def grades(path: Path | None = None) -> Path:
    """Write grades.csv: one row per student and assignment, one column per graded cell."""
    from nbgrader.api import Gradebook, MissingEntry

    from nbgrader.apps import NbGraderAPI  # noqa: F401 - imported for its side effect of loading models

    path = Path(path or course_root() / "grades.csv")
    db_url = os.environ.get("LECTURELIB_DB_URL", f"sqlite:///{course_root() / 'gradebook.db'}")
    rows, columns = [], []
    with Gradebook(db_url) as gb:
        for assignment in gb.assignments:
            for notebook in assignment.notebooks:
                for cell in notebook.grade_cells:
                    columns.append((assignment.name, notebook.name, cell.name, cell.max_score))
        for student in gb.students:
            for assignment in gb.assignments:
                try:
                    submission = gb.find_submission(assignment.name, student.id)
                except MissingEntry:
                    continue
                row = {"student": student.id, "assignment": assignment.name,
                       "score": submission.score, "max_score": submission.max_score,
                       "needs_manual_grade": submission.needs_manual_grade}
                for a, nb, cell, _ in columns:
                    if a != assignment.name:
                        continue
                    grade = gb.find_grade(cell, nb, a, student.id)
                    row[cell] = grade.score
                rows.append(row)
    fields = ["student", "assignment", "score", "max_score", "needs_manual_grade"]
    fields += [cell for _, _, cell, _ in columns if cell not in fields]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
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
def demo() -> None:
    """Build sample submissions (correct, blank, a classic bug) and run the whole pipeline."""
    import nbformat

    names = release()
    root = course_root()
    for name in names:
        source = next((REPO / "notebooks" / name).glob("*.ipynb"))
        released = root / "release" / name / source.name
        variants = {"demo_correct": nbformat.read(source, as_version=4),
                    "demo_blank": nbformat.read(released, as_version=4)}
        for student, nb in variants.items():
            folder = root / "submitted" / student / name
            folder.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, folder / source.name)
            (folder / "timestamp.txt").write_text("2026-01-01 00:00:00.000000 UTC")
    autograde()
    csv_path = grades()
    feedback()
    print(csv_path.read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lecturelib.course", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["release", "autograde", "grades", "feedback", "demo", "list"])
    parser.add_argument("--assignment", default=None)
    args = parser.parse_args(argv)
    if args.command == "release":
        release()
    elif args.command == "autograde":
        results = autograde(args.assignment)
        return 0 if all(results.values()) else 1
    elif args.command == "grades":
        grades()
    elif args.command == "feedback":
        feedback(args.assignment)
    elif args.command == "demo":
        demo()
    else:
        print(json.dumps({"assignments": assignments(), "submissions": submissions()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
