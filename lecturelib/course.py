"""TA workflow around nbgrader: release, autograde, grades, feedback, and a one-command demo.

    python -m lecturelib.course release      # student notebooks, package, README.md and Makefile in release/
    python -m lecturelib.course autograde    # every submission in submitted/<student>/<assignment>/
    python -m lecturelib.course grades       # grades.csv: one row per student and assignment
    python -m lecturelib.course feedback     # feedback/<student>/<assignment>/*.html
    python -m lecturelib.course demo         # sample submissions through the whole pipeline
    (every command takes --assignment NAME; autograde and demo take --workers N)

The course root (where release/, submitted/, ... and the gradebook live) is the repository, or
``$LECTURELIB_COURSE_ROOT``. This module is grader tooling: the student package leaves it out.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .grading.paths import GRADER_ONLY, PACKAGE, REPO, course_root, source_root


def assignments() -> list[str]:
    """Assignment names: the folders of notebooks/ that hold a notebook, in lecture order."""
    return sorted(p.name for p in source_root().iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def _env() -> dict:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")  # nbgrader runs `alembic` from PATH
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


def nbgrader(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run an nbgrader command with this repository's nbgrader_config.py.

    nbgrader reads ``nbgrader_config.py`` from its working directory, the repository (it has no ``--config``
    option: passing one only printed "Unrecognized alias: 'config'"), then from the course root. Started through
    ``lecturelib.grading.nbgrader_cli``, which is nbgrader without an import that costs seconds.
    """
    cmd = [sys.executable, "-m", "lecturelib.grading.nbgrader_cli", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")
    return proc


# ------------------------------------------------------------------------------------------------
# release
# ------------------------------------------------------------------------------------------------
# What students install: `pip install "./student_package[lab]"` (the extra of pyproject.toml with JupyterLab,
# nbgrader's Validate button and Assignment List, ipywidgets). The instructor-only nbgrader extensions are switched
# off in the student's environment by two Jupyter config files that the student package installs.
STUDENT_EXTRA = "lab"
INSTRUCTOR_LAB_PLUGINS = ("@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment",
                          "@jupyter/nbgrader:course-list")
INSTRUCTOR_SERVER_EXTENSIONS = ("nbgrader.server_extensions.formgrader", "nbgrader.server_extensions.course_list")
# Jupyter reads the files of a config.d folder in name order, later ones win: this name sorts after nbgrader's own
# "nbgrader.json" (which enables every extension).
STUDENT_JUPYTER_CONFIG = "nbgrader_lecturelib_student.json"


def _toml_list(values) -> str:
    return "[\n" + "".join(f"    {json.dumps(v)},\n" for v in values) + "]"


def student_pyproject() -> str:
    """The student package's pyproject.toml: the repository's dependencies, only the ``lab`` extra, the visible
    cases and the weights as package data, and the Jupyter config that hides the instructor's extensions."""
    import tomllib
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    project, setuptools_cfg = meta["project"], meta["tool"]["setuptools"]
    package_data = list(setuptools_cfg["package-data"]["lecturelib"])
    if "checks/visible/*.pt" not in package_data:
        package_data.append("checks/visible/*.pt")
    return f"""\
# lecturelib, student edition (written by `make release`; see ../README.md).
# torch is pinned: an unpinned torch would pull a multi-GB CUDA build.
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "lecturelib"
version = {json.dumps(project["version"])}
description = "Helper package of the computer-vision lecture's notebooks (student edition)"
readme = "README.md"
requires-python = {json.dumps(project["requires-python"])}
dependencies = {_toml_list(project["dependencies"])}

[project.optional-dependencies]
{STUDENT_EXTRA} = {_toml_list(project["optional-dependencies"][STUDENT_EXTRA])}

[tool.setuptools.packages.find]
include = ["lecturelib*"]

[tool.setuptools.package-data]
lecturelib = {json.dumps(package_data)}

# Students get nbgrader's Validate button and Assignment List, not the instructor's formgrader, course list and
# create-assignment tools (installed into <env>/etc/jupyter, where `jupyter ... --sys-prefix` would write).
[tool.setuptools.data-files]
"etc/jupyter/jupyter_server_config.d" = ["jupyter-config/server/{STUDENT_JUPYTER_CONFIG}"]
"etc/jupyter/labconfig/page_config.d" = ["jupyter-config/lab/{STUDENT_JUPYTER_CONFIG}"]
"""


def build_student_package(dest: Path) -> Path:
    """The package without the grader-only parts (reference solutions, hidden cases, grading tools, this tool),
    with the visible cases as data (``checks/visible/<topic>.pt``, built by ``lecturelib.hidden.write_visible``),
    and a pyproject.toml whose ``lab`` extra sets up JupyterLab with nbgrader's student extensions."""
    from .hidden import write_visible

    if dest.exists():
        shutil.rmtree(dest)
    # checks/visible: a stale copy in the repository is never shipped; the cases are written fresh below.
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", *GRADER_ONLY, "visible")
    shutil.copytree(PACKAGE, dest / "lecturelib", ignore=ignore)
    write_visible(dest / "lecturelib" / "checks" / "visible")
    (dest / "pyproject.toml").write_text(student_pyproject())
    server = {"ServerApp": {"jpserver_extensions": {name: False for name in INSTRUCTOR_SERVER_EXTENSIONS}}}
    lab = {"disabledExtensions": {name: True for name in INSTRUCTOR_LAB_PLUGINS}}
    for sub, config in (("server", server), ("lab", lab)):
        (dest / "jupyter-config" / sub).mkdir(parents=True)
        (dest / "jupyter-config" / sub / STUDENT_JUPYTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    (dest / "README.md").write_text(
        "# lecturelib, student edition\n\n"
        "The helper package of the lecture's notebooks: procedural data, plots, widgets, tiny pretrained models,\n"
        "and the visible tests (`check`). No solutions and no hidden tests are inside.\n\n"
        f'Install it with `pip install "./student_package[{STUDENT_EXTRA}]"` from the folder above (JupyterLab,\n'
        "nbgrader's Validate button and Assignment List come with the extra); `../README.md` has the two commands.\n")
    return dest


RELEASE_MAKEFILE = """\
# Two commands (see README.md): `make setup` once, then `make lab`. Needs Python 3.11 or newer.
PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed
# JupyterLab refuses to start as root (Docker, some university machines) unless told --allow-root.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root)
# Optional: a package index for torch, e.g. PyTorch's CPU-only wheels (see README.md).
TORCH_INDEX ?=

.PHONY: setup lab validate clean

setup: $(STAMP)

# torch is pinned and installed first: an unpinned torch would pull a multi-GB CUDA build.
# A new student_package (a later release) is installed again.
$(STAMP): $(shell find student_package -type f 2>/dev/null)
\ttest -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
\t$(BIN)/python -m pip install --disable-pip-version-check "torch==__TORCH__" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
\t$(BIN)/python -m pip install --disable-pip-version-check "./student_package[__EXTRA__]"
\ttouch $(STAMP)

lab: setup
\t$(BIN)/jupyter lab $(ALLOW_ROOT)

# make validate NB=02_segmentation/segmentation.ipynb   (what the Validate button does)
validate: setup
\t$(BIN)/nbgrader validate $(NB)

clean:
\trm -rf $(VENV)
"""


def _torch_pin() -> str:
    import tomllib
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d for d in deps if d.replace(" ", "").startswith("torch==")).split("==")[1].strip()


def release_readme(release_dir: Path) -> str:
    """release/README.md: what students got, the two commands, validating and submitting."""
    notebooks = {p.name: sorted(q.name for q in p.glob("*.ipynb")) for p in sorted(release_dir.iterdir())
                 if p.is_dir() and any(p.glob("*.ipynb"))}
    rows = "\n".join(f"| `{name}/` | the assignment: {', '.join(f'`{nb}`' for nb in nbs)} |"
                     for name, nbs in notebooks.items())
    example = next((f"{name}/{nbs[0]}" for name, nbs in notebooks.items()), "ASSIGNMENT/NOTEBOOK.ipynb")
    return f"""\
# Computer vision lecture: the assignments

## What you got

| folder or file | what it is |
|---|---|
{rows}
| `student_package/` | the `lecturelib` package the notebooks import: data, plots, widgets, tiny pretrained models and the visible tests. Its `[{STUDENT_EXTRA}]` extra brings JupyterLab, nbgrader's *Validate* button and *Assignment List*, and ipywidgets |
| `Makefile` | the two commands below |

Nothing here contains a solution or the hidden tests.

## Set up and open the assignments: two commands

You need Python 3.11 or newer. In this folder:

```bash
make setup    # once: a virtual environment .venv/ here with the package, JupyterLab and nbgrader (a few minutes)
make lab      # opens JupyterLab on this folder (adds --allow-root when run as root, e.g. in Docker)
```

Without `make` (Windows, for example), the same by hand:

```bash
python -m venv .venv
.venv/bin/python -m pip install "torch=={_torch_pin()}"          # Windows: .venv\\Scripts\\python -m pip ...
.venv/bin/python -m pip install "./student_package[{STUDENT_EXTRA}]"
.venv/bin/jupyter lab                                       # Windows: .venv\\Scripts\\jupyter lab
```

torch is pinned and installed first. On Linux, torch from PyPI comes with its CUDA libraries (several GB); without an
NVIDIA GPU, PyTorch's CPU-only build is much smaller: `make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu`
(or add `--index-url https://download.pytorch.org/whl/cpu` to the torch line). Everything else runs offline: the
images are generated and the small models' weights come with the package.

## Work on an exercise

Open a notebook (for example `{example}`) and run it from the top. Each exercise is a *solution
cell*: replace `raise NotImplementedError()` with your code. The cell after it is a *test cell*:

```python
from lecturelib.checks import check
check("conv_transpose2d", conv_transpose2d)
```

It prints one `PASSED ...` line saying what it verified, or stops with `CheckFailed`: the case that failed, the
expected and actual shape or values at the first mismatch, and the likely cause when the mistake is a known one.
An exercise you have not started fails with "not implemented yet". Keep the notebook's name, do not delete or move
cells and do not edit the test cells (they are put back as they were when your work is graded).

A *written question* is answered in the text cell right under it, which says "YOUR ANSWER HERE": replace that with
your answer, in two to four sentences. A TA grades these by hand after the deadline.

## Validate

Press the **Validate** button in the notebook's toolbar: it saves the notebook, runs it from the top in a fresh
kernel and lists every test cell that fails, with its message, and every written question still unanswered ("You
did not provide a response"); "Success!" when nothing is left. The same from a terminal:

```bash
make validate NB={example}       # or: .venv/bin/nbgrader validate {example}
```

The grade is decided by hidden tests with other inputs (other shapes, strides, batches, ...): write general code;
passing the visible tests is necessary, not sufficient. Where an exercise asks you to implement an operation,
calling the library's version fails the check with a message saying so.

## Submit

- **By hand**: save the notebook and hand in the `.ipynb` file, under its original name, the way your course asks
  (upload, e-mail, ...). Your TA puts it in the course's `submitted/<your id>/<assignment>/` folder to grade it.
- **Through the Assignment List**, on the course's JupyterHub (it needs the course's exchange, which the hub sets
  up; on your own machine, submit by hand): menu *Nbgrader > Assignment List*. *Fetch* an assignment (it appears
  as a folder in your home), work on it there, *Validate*, then *Submit*. You may submit again: the TA collects
  your latest submission. After grading, *Fetch Feedback* puts the graded notebook as HTML into
  `<assignment>/feedback/`. From a terminal: `nbgrader fetch_assignment ASSIGNMENT`, `nbgrader submit ASSIGNMENT`,
  `nbgrader fetch_feedback ASSIGNMENT`.
"""


def release(names: list[str] | None = None) -> list[str]:
    """Generate the student version of the assignments (default: all), the student package, and the students'
    README.md and Makefile in ``release/``."""
    root = course_root()
    names = list(names or assignments())
    for name in names:
        nbgrader("generate_assignment", name, "--force")
    release_dir = root / "release"
    build_student_package(release_dir / "student_package")
    (release_dir / "README.md").write_text(release_readme(release_dir))
    (release_dir / "Makefile").write_text(RELEASE_MAKEFILE.replace("__TORCH__", _torch_pin())
                                          .replace("__EXTRA__", STUDENT_EXTRA))
    print(f"released {', '.join(names)} to {release_dir}; student package in {release_dir / 'student_package'}; "
          f"students start with {release_dir / 'README.md'}")
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


SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}")  # a name nbgrader passes on as it is (no glob)


def _report_folder(student: str, assignment: str) -> Path:
    return course_root() / "grading_reports" / assignment / student


def _launcher_report(student: str, assignment: str, status: list[str], notes: list[str], log: str = "") -> None:
    """The launcher's own report of a submission (``_submission.json``): what it refused or repaired."""
    folder = _report_folder(student, assignment)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "_submission.json").write_text(json.dumps(
        {"student": student, "assignment": assignment, "status": status, "notes": notes, "error": log[-4000:],
         "cells": {}}, indent=1))


def _grade_ids(path: Path) -> set[str]:
    try:
        cells = json.loads(path.read_text()).get("cells", [])
        return {c.get("metadata", {}).get("nbgrader", {}).get("grade_id") for c in cells} - {None}
    except (ValueError, OSError, AttributeError):
        return set()


def intake(student: str, assignment: str) -> tuple[list[str], list[str]]:
    """Look at a submission before nbgrader does: ``(statuses, notes)``.

    Links, FIFOs and devices are refused (nbgrader does not copy or grade them either: ``repair.harden_nbgrader``).
    A notebook saved under another name (``segmentation (1).ipynb``, what a browser download gives) is graded
    under its assignment's name when it is the only candidate and its cells carry the assignment's grade ids.
    """
    folder = course_root() / "submitted" / student / assignment
    statuses, notes = [], []
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            statuses = ["refused files"]
            notes.append(f"refused {path.relative_to(folder)} (a link, FIFO or device)")
    expected = sorted(p.name for p in (source_root() / assignment).glob("*.ipynb"))
    present = {p.name for p in folder.glob("*.ipynb") if p.is_file() and not p.is_symlink()}
    for name in expected:
        if name in present:
            continue
        wanted = _grade_ids(source_root() / assignment / name)
        candidates = [folder / n for n in sorted(present - set(expected)) if _grade_ids(folder / n) & wanted]
        if len(candidates) == 1:
            shutil.copyfile(candidates[0], folder / name)
            notes.append(f"graded {candidates[0].name} as {name} (renamed)")
        else:
            notes.append(f"no {name}: found {', '.join(sorted(present)) or 'no notebook'}"
                         + (" (several candidates)" if candidates else ""))
            statuses = statuses or ["missing notebook"]
    return statuses, notes


def _autograde_one(student: str, assignment: str) -> tuple[bool, str]:
    """Grade one submission: intake, then nbgrader (whose Execute step is the sandboxed ``IsolatedExecute``)."""
    shutil.rmtree(_report_folder(student, assignment), ignore_errors=True)   # regrading replaces the reports
    if not SAFE_ID.fullmatch(student):
        _launcher_report(student, assignment, ["refused: unsafe student id"],
                         ["student ids may hold letters, digits and _ . @ + - only (nbgrader expands patterns)"])
        return False, "unsafe student id"
    statuses, notes = intake(student, assignment)
    proc = nbgrader("autograde", assignment, f"--student={student}", "--force", check=False)
    tail = (proc.stdout + proc.stderr)[-4000:]
    graded = course_root() / "autograded" / student / assignment
    ok = proc.returncode == 0 and graded.is_dir() and any(graded.glob("*.ipynb"))
    if not ok:
        statuses = statuses + ["error"]
    if statuses or notes:
        _launcher_report(student, assignment, statuses or ["graded"], notes, "" if ok else tail)
    return ok, tail


def autograde(assignment: str | None = None, workers: int | None = None,
              students: list[str] | None = None) -> dict[tuple[str, str], bool]:
    """Autograde every submission with ``workers`` parallel nbgrader processes (default: core count).

    A failure of one submission never stops the others: it gets a report with status "error", so it still has a
    row in the grades. The flags for a TA (cells whose in-kernel verdict disagrees with the isolated one, or a
    submission that tampers with the grader) are set in the gradebook by nbgrader's own pipeline
    (``FlagDisagreements``), so plain ``nbgrader autograde`` sets them too.
    """
    from concurrent.futures import ThreadPoolExecutor

    todo = [(s, a) for s, a in submissions(assignment) if students is None or s in students]
    workers = max(1, workers or os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(lambda pair: _autograde_one(*pair), todo))
    done = {}
    for (student, name), (ok, _) in zip(todo, outcomes):
        done[(student, name)] = ok
        print(f"{student} / {name}: {status(student, name)}")
    return done


def status(student: str, assignment: str) -> str:
    """graded, or what went wrong: timed out, crashed, memory limit, flagged, refused files, error, not graded."""
    from .grading.export import reports, summary
    return summary(reports(course_root() / "grading_reports", student, assignment))[0]


def grades(path: Path | None = None) -> Path:
    """Write grades.csv with nbgrader's export and the project's exporter (``grading.export.GradesCsv``)."""
    path = Path(path or course_root() / "grades.csv").resolve()
    nbgrader("export", "--exporter=lecturelib.grading.export.GradesCsv", f"--to={path}")
    print(f"wrote {path}")
    return path


def feedback(assignment: str | None = None) -> list[Path]:
    """``feedback/<student>/<assignment>/<notebook>.html`` for every autograded submission (``nbgrader
    generate_feedback`` with ``grading.feedback``: outputs shown as text, formulas as MathML, nothing from the web).

    Returns the HTML files written. An assignment that could not be done is reported and the others go on.
    """
    root = course_root()
    written = []
    for name in ([assignment] if assignment else assignments()):
        if not any((root / "autograded").glob(f"*/{name}")):
            continue                                  # nothing autograded yet: nbgrader would only complain
        proc = nbgrader("generate_feedback", name, "--force", check=False)
        if proc.returncode != 0:
            print(f"feedback for {name} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-2000:]}",
                  file=sys.stderr)
        written += sorted((root / "feedback").glob(f"*/{name}/*.html"))
    print(f"feedback in {root / 'feedback'}: {len(written)} notebooks")
    return written


# ------------------------------------------------------------------------------------------------
# demo
# ------------------------------------------------------------------------------------------------
CRASH = "import os\nos._exit(1)   # demo: this solution cell kills the kernel\n"
DEMO_STUDENTS = ("demo_correct", "demo_blank", "demo_crash")


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



def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lecturelib.course", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["release", "autograde", "grades", "feedback", "demo", "list"])
    parser.add_argument("--assignment", default=None)
    parser.add_argument("--workers", type=int, default=None, help="parallel autograde workers (default: cores)")
    args = parser.parse_args(argv)
    if args.command == "release":
        release([args.assignment] if args.assignment else None)
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
