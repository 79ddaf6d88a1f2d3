"""Helpers to execute notebooks in tests (nbclient with the project's kernel)."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*/*.ipynb"))


def execute(path: Path, *, cwd: Path | None = None, extra_cells: list[str] = (), env: dict | None = None,
            timeout: int = 300) -> nbformat.NotebookNode:
    """Execute a notebook (errors allowed) and return it with outputs."""
    nb = nbformat.read(path, as_version=4)
    for source in extra_cells:
        nb.cells.append(nbformat.v4.new_code_cell(source))
    client = NotebookClient(nb, timeout=timeout, kernel_name="lecturelib", allow_errors=True,
                            resources={"metadata": {"path": str(cwd or path.parent)}})
    old = dict(os.environ)
    try:
        if env:
            os.environ.update(env)
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return nb


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
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]


# Building submissions from the source and release notebooks
def replace_solution(nb, grade_id: str, source: str):
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            cell.source = source
            return nb
    raise KeyError(grade_id)


def answers(nb) -> dict[str, str]:
    return {c.metadata["nbgrader"]["grade_id"]: c.source for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("solution")}


def strip_markers(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if "### " not in line)
