"""The student's path, from what a TA hands out: `make release` builds release/, a student runs its two commands
(`make setup`: a fresh venv with the student package and its lab extra; `make lab`), and nbgrader's Validate, run
in that venv, tells a solved exercise from the unfinished ones.

The fresh venv is installed once per module (about 75 s here: pip takes torch from the local wheel and the rest
from its indexes); everything student-side runs with the student venv's own programs, outside the repository,
with Jupyter and IPython state in a temporary folder.
"""
from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from notebook_tools import REPO, graded_cells, replace_solution, written_cells

pytestmark = pytest.mark.slow

ASSIGNMENT, NOTEBOOK = "02_segmentation", "segmentation.ipynb"
SOLVED = "conv_transpose2d"          # the exercise the student has finished (the core one, 4 points)
INSTRUCTOR_PLUGINS = ("@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment",
                      "@jupyter/nbgrader:course-list")
# nbgrader validate prints at most 90 characters a line: 4 of indent, 83 of text, then "..." where it cuts.
VALIDATE_WIDTH = 90


def _student_env(state: Path) -> dict[str, str]:
    """A student's shell: no repository venv on PATH, no PYTHONPATH or course variables, Jupyter and IPython
    state in ``state``."""
    repo_bin = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LECTURELIB_", "JUPYTER", "IPYTHON", "NBGRADER", "VIRTUAL_ENV", "PYTHONPATH"))}
    env["PATH"] = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                  if p and Path(p).resolve() != repo_bin.resolve())
    for var, sub in [("IPYTHONDIR", "ipython"), ("JUPYTER_CONFIG_DIR", "jupyter-config"),
                     ("JUPYTER_DATA_DIR", "jupyter-data"), ("JUPYTER_RUNTIME_DIR", "jupyter-runtime")]:
        (state / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(state / sub)
    env["MPLBACKEND"] = "Agg"
    return env


def _run(args, cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """release/ built by the TA tool into a temporary course root, then `make setup` run in it as a student."""
    course = tmp_path_factory.mktemp("course")
    ta_env = {**os.environ, "LECTURELIB_COURSE_ROOT": str(course)}
    proc = _run([sys.executable, "-m", "lecturelib.course", "release", "--assignment", ASSIGNMENT], REPO, ta_env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    release = course / "release"
    env = _student_env(tmp_path_factory.mktemp("student-state"))
    start = time.perf_counter()
    proc = _run(["make", "setup"], release, env, timeout=900)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(f"\nmake setup (fresh venv, student package with its lab extra): {seconds:.0f} s")
    return {"release": release, "env": env, "bin": release / ".venv" / "bin", "setup_seconds": seconds}


def test_release_gives_students_a_readme_and_two_commands(student):
    release = student["release"]
    readme = (release / "README.md").read_text()
    for needed in ("make setup", "make lab", 'pip install "./student_package[lab]"', "python -m venv",
                   "jupyter lab", "Validate", "Assignment List", "nbgrader submit", f"`{ASSIGNMENT}/`",
                   "torch==2.13.0"):
        assert needed in readme, needed
    dry = _run(["make", "-n", "lab"], release, student["env"]).stdout
    assert f"{student['bin'] / 'jupyter'} lab" in dry
    assert ("--allow-root" in dry) == (os.geteuid() == 0)
    # A second `make setup` installs nothing: the stamp is newer than the package.
    assert "pip install" not in _run(["make", "-n", "setup"], release, student["env"]).stdout


def test_student_venv_has_the_package_without_grader_parts(student):
    probe = (
        "import importlib.util as u, json, pathlib, lecturelib, lecturelib.checks\n"
        "from lecturelib.checks import check, CheckFailed\n"
        "root = pathlib.Path(lecturelib.__file__).parent\n"
        "print(json.dumps({'file': lecturelib.__file__, 'checks': lecturelib.checks.__file__,\n"
        "    'missing': {m: u.find_spec('lecturelib.' + m) is None for m in ('reference', 'hidden', 'grading', 'course')},\n"
        "    'entries': sorted(p.name for p in root.iterdir()),\n"
        "    'visible': sorted(p.name for p in (root / 'checks' / 'visible').glob('*.pt')),\n"
        "    'weights': sorted(p.name for p in (root / 'weights').glob('*.pt'))}))\n")
    proc = _run([student["bin"] / "python", "-c", probe], student["release"].parent, student["env"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    site = student["release"] / ".venv" / "lib"
    assert Path(found["file"]).is_relative_to(site) and Path(found["checks"]).is_relative_to(site)
    assert found["missing"] == {"reference": True, "hidden": True, "grading": True, "course": True}
    assert not {"reference", "hidden", "grading", "course.py"} & set(found["entries"])
    from lecturelib import hidden
    assert found["visible"] == sorted(f"{t}.pt" for t in hidden.topics())
    assert found["weights"] == sorted(p.name for p in (REPO / "lecturelib" / "weights").glob("*.pt"))


def test_student_jupyter_has_validate_and_assignment_list_not_the_instructor_tools(student):
    env, bin_dir = student["env"], student["bin"]
    lab = _run([bin_dir / "jupyter", "labextension", "list"], student["release"], env)
    lab_text = re.sub(r"\x1b\[[0-9;]*m", "", lab.stdout + lab.stderr)
    assert re.search(r"@jupyter/nbgrader v0\.9\.6 enabled\s+OK", lab_text), lab_text
    disabled = lab_text.split("Disabled extensions:")[1].split()
    assert set(INSTRUCTOR_PLUGINS) <= set(disabled), lab_text
    assert not {"@jupyter/nbgrader:validate-assignment", "@jupyter/nbgrader:assignment-list"} & set(disabled)
    server = _run([bin_dir / "jupyter", "server", "extension", "list"], student["release"], env)
    states = dict(re.findall(r"(nbgrader\.server_extensions\.\w+) (enabled|disabled)",
                             re.sub(r"\x1b\[[0-9;]*m", "", server.stdout + server.stderr)))
    assert states == {"nbgrader.server_extensions.formgrader": "disabled",
                      "nbgrader.server_extensions.course_list": "disabled",
                      "nbgrader.server_extensions.validate_assignment": "enabled",
                      "nbgrader.server_extensions.assignment_list": "enabled"}, states
    # The notebooks' kernel (python3) is the student venv's own Python.
    specs = _run([bin_dir / "jupyter", "kernelspec", "list", "--json"], student["release"], env)
    import json
    python3 = json.loads(specs.stdout)["kernelspecs"]["python3"]
    assert Path(python3["resource_dir"]).is_relative_to(student["release"] / ".venv"), python3


def _failed_blocks(out: str) -> list[str]:
    """The sources and errors of the cells nbgrader validate lists as failed (or passed, with --invert)."""
    return re.split(r"\n={%d}\n" % VALIDATE_WIDTH, out)[1:]


def test_validate_in_the_student_venv_passes_the_solved_exercise_only(student):
    """The student pasted a correct conv_transpose2d (the reference's source) into its solution cell and left
    the other exercises as handed out."""
    from lecturelib.reference import segmentation as reference

    release, env = student["release"], student["env"]
    path = release / ASSIGNMENT / NOTEBOOK
    nb = nbformat.read(path, as_version=4)
    answer = ("import torch\nimport torch.nn.functional as F\n"
              "from lecturelib._validate import require_int, require_tensor\n\n\n"
              + inspect.getsource(reference.conv_transpose2d))
    replace_solution(nb, SOLVED, answer)
    nbformat.write(nb, path)
    tests = {c.metadata["nbgrader"]["grade_id"]: c.source.strip() for c in graded_cells(nb)}   # not written answers
    assert f"test_{SOLVED}" in tests and len(tests) > 2

    start = time.perf_counter()
    proc = _run([student["bin"] / "nbgrader", "validate", path], release, env)
    seconds = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    failed = [b for b in _failed_blocks(proc.stdout) if b.startswith("The following cell failed")]
    unanswered = [b for b in failed if "You did not provide a response." in b]     # the written questions
    assert len(unanswered) == len(written_cells(nb)) > 0
    failed = [b for b in failed if b not in unanswered]
    failed_ids = {gid for gid, src in tests.items() for b in failed if src.splitlines()[0] in b}
    assert failed_ids == set(tests) - {f"test_{SOLVED}"}, out[-4000:]
    assert len(failed) == len(tests) - 1
    for block in failed:
        assert "CheckFailed" in block and "not implemented yet" in block, block
    assert f"VALIDATION FAILED ON {len(tests) - 1 + len(unanswered)} CELL(S)" in out.replace("\n", " ")
    assert "cannot be converted to a float" not in out
    cut = [line for line in proc.stdout.splitlines() if len(line) == VALIDATE_WIDTH and line.endswith("...")]
    assert not cut, cut
    print(f"\nnbgrader validate in the student venv: {seconds:.1f} s")

    # --invert lists the cells that pass: exactly the solved exercise's test cell.
    proc = _run([student["bin"] / "nbgrader", "validate", "--invert", path], release, env)
    passed = [b for b in _failed_blocks(proc.stdout) if b.startswith("The following cell passed")]
    assert len(passed) == 1 and tests[f"test_{SOLVED}"].splitlines()[0] in passed[0], proc.stdout[-4000:]


def test_make_lab_is_the_instructors_command_and_allows_root():
    dry = _run(["make", "-n", "lab"], REPO, dict(os.environ)).stdout
    assert "instructor's notebooks (solutions and hidden tests inside)" in dry and "release/README.md" in dry
    lab = next(line for line in dry.splitlines() if "jupyter lab" in line and "echo" not in line)
    assert lab.endswith("notebooks/") and ("--allow-root" in lab) == (os.geteuid() == 0), lab
