"""Helpers to execute notebooks in tests (nbclient with the project's kernel)."""
from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*/*.ipynb"))


def execute(path: Path, *, cwd: Path | None = None, extra_cells: list[str] = (), env: dict | None = None,
            timeout: int = 300) -> nbformat.NotebookNode:
    """Execute a notebook (errors allowed) and return it with outputs."""
    nb = nbformat.read(path, as_version=4)
    for source in extra_cells:
        nb.cells.append(nbformat.v4.new_code_cell(source))
    # IPC sockets in a private folder, not TCP ports: kernels started at the same moment by other
    # processes (parallel test runs, a TA grading) cannot take each other's ports.
    sockets = Path(tempfile.mkdtemp(prefix="lecturelib-kernel-"))
    km = KernelManager(kernel_name="lecturelib", transport="ipc", ip=str(sockets / "kernel"),
                       connection_file=str(sockets / "connection.json"))
    client = NotebookClient(nb, km=km, timeout=timeout, allow_errors=True,
                            resources={"metadata": {"path": str(cwd or path.parent)}})
    try:
        with pytest.MonkeyPatch.context() as patch:     # the kernel inherits this process's environment
            for key, value in (env or {}).items():
                patch.setenv(key, value)
            client.execute()
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    return nb


@functools.lru_cache(maxsize=None)
def executed(path: Path) -> nbformat.NotebookNode:
    """``execute(path)`` once per test session: test_notebooks and test_notebook_claims read the same run
    (each instructor notebook takes 5-30 s). Read it, do not change it."""
    return execute(path)


def errors(nb) -> list[tuple[int, str, str]]:
    """(cell index, exception name, message) for every cell that raised."""
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append((i, out["ename"], out["evalue"]))
    return found


def text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif "data" in out and "text/plain" in out["data"]:
            parts.append(out["data"]["text/plain"])
    return "".join(parts)


def graded_cells(nb):
    """The autograded test cells: code cells with points that are not answers (``grade_id`` "test_<exercise>")."""
    return [c for c in nb.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")
            and not c.metadata["nbgrader"].get("solution")]


def written_cells(nb):
    """The written questions' answer cells: Markdown cells graded by hand (``grade_id`` "q_<name>"), see
    tests/test_written_questions.py for the convention."""
    return [c for c in nb.cells if c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("grade")
            and c.metadata["nbgrader"].get("solution")]


def written_points(nb) -> dict[str, float]:
    """{grade_id: points} of the written questions."""
    return {c.metadata["nbgrader"]["grade_id"]: float(c.metadata["nbgrader"]["points"]) for c in written_cells(nb)}


# Building submissions from the source and release notebooks
def replace_solution(nb, grade_id: str, source: str):
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            cell.source = source
            return nb
    raise KeyError(grade_id)


def answers(nb) -> dict[str, str]:
    """{grade_id: source} of every answer cell: the code solutions and the written answers (Markdown)."""
    return {c.metadata["nbgrader"]["grade_id"]: c.source for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("solution")}


def strip_markers(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if "### " not in line)


# End-to-end grading of one assignment (shared by the tests/test_grading_*.py files)
def solved_release(released: Path, source: Path, replace: dict[str, str] | None = None,
                   edits: dict[str, list[tuple[str, str]]] | None = None) -> nbformat.NotebookNode:
    """The released notebook with the instructor's answers filled in.

    ``replace`` swaps whole answers; ``edits`` applies (old, new) text replacements to some (a typical bug).
    """
    nb = nbformat.read(released, as_version=4)
    filled = {gid: strip_markers(src) for gid, src in answers(nbformat.read(source, as_version=4)).items()}
    for gid, answer in {**filled, **(replace or {})}.items():
        for old, new in (edits or {}).get(gid, ()):
            assert old in answer, (gid, old)
            answer = answer.replace(old, new)
        replace_solution(nb, gid, answer)
    return nb


def submit_and_autograde(course: Path, assignment: str, submissions: dict[str, nbformat.NotebookNode],
                         notebook: str) -> dict[str, dict[str, float]]:
    """Submit each notebook as its student, autograde them, return student -> {grade_id: score}."""
    from nbgrader.api import Gradebook

    from lecturelib import course as tool
    for student, nb in submissions.items():
        folder = course / "submitted" / student / assignment
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, folder / f"{notebook}.ipynb")
        (folder / "timestamp.txt").write_text("2026-11-20 12:00:00.000000 UTC")
    results = tool.autograde(assignment, students=list(submissions))
    assert all(results.values()), results
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        return {student: {g.name: g.score for g in gb.find_submission_notebook(notebook, assignment, student).grades
                          if g.cell_type == "code"} for student in submissions}


def run_blank_release(released: Path, course: Path, extra_cells: list[str] = ()) -> nbformat.NotebookNode:
    """Execute the released notebook as handed out, with the student package, as at grading time.

    Asserts that the notebook ran on the student package (no reference solutions), and that only the
    graded test cells fail, each with a clean "not implemented yet".
    """
    package = course / "release" / "student_package"
    probe = "import lecturelib\nprint('PACKAGE', lecturelib.__file__, lecturelib.has_reference())"
    nb = execute(released, extra_cells=[probe, *extra_cells],
                 env={"PYTHONPATH": str(package), "NBGRADER_EXECUTION": "autograde"})
    ran_on = text(nb.cells[len(nb.cells) - len(extra_cells) - 1])
    assert f"PACKAGE {package / 'lecturelib' / '__init__.py'} False" in ran_on, ran_on
    graded = {i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")
              and not c.metadata["nbgrader"].get("solution")}
    failures = errors(nb)
    assert {i for i, _, _ in failures} == graded, failures
    for _, ename, evalue in failures:
        assert ename == "CheckFailed" and "not implemented yet" in evalue, (ename, evalue)
    return nb
