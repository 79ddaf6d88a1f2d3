"""One list of graded exercises per topic, kept in step: the reference module's ``__all__``, the registered checks,
the notebook's graded test cells (nbgrader metadata: the points) and the README's Topics table. Written questions
(manually graded Markdown answer cells, grade ids "q_<name>") count in the notebook's points and the README row too."""
from __future__ import annotations

import importlib
import re

import nbformat
import pytest

from notebook_tools import NOTEBOOKS, REPO, graded_cells, written_points


def readme_topics() -> dict[str, dict[str, float]]:
    """{assignment: {exercise: points}} from the README's Topics table ("`name` (2)", "**`name`** (5, core)")."""
    section = (REPO / "README.md").read_text().split("\n## Topics\n", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    header = next(line for line in lines if line.startswith("| notebook"))
    column = [c.strip() for c in header.strip("|").split("|")].index("graded exercises (points)")
    rows = {}
    for line in lines:
        found = re.match(r"\| \[`(\w+)`\]", line)
        if found:
            cell = line.strip("|").split("|")[column]
            rows[found.group(1)] = {name: float(p) for name, p in re.findall(r"`(\w+)`\**\s*\((\d+(?:\.\d+)?)", cell)}
    return rows


def notebook_points(path) -> dict[str, float]:
    """{exercise: points} of the notebook's graded test cells (grade_id "test_<exercise>") and {q_<name>: points} of
    its written questions."""
    nb = nbformat.read(path, as_version=4)
    cells = graded_cells(nb)
    assert all(c.metadata["nbgrader"]["grade_id"].startswith("test_") for c in cells), path
    points = {c.metadata["nbgrader"]["grade_id"].removeprefix("test_"): float(c.metadata["nbgrader"]["points"])
              for c in cells}
    written = written_points(nb)
    assert all(gid.startswith("q_") for gid in written), path
    return {**points, **written}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_graded_names_points_and_readme_row_agree(path):
    topic = path.stem
    graded = set(importlib.import_module(f"lecturelib.reference.{topic}").__all__)
    from lecturelib.checks import EXERCISES
    assert {name for name, e in EXERCISES.items() if e.topic == topic} == graded, "registered checks"
    points = notebook_points(path)
    assert {name for name in points if not name.startswith("q_")} == graded, "the notebook's graded test cells"
    assert readme_topics().get(path.parent.name) == points, "the README's Topics row"


def test_every_topic_has_a_notebook_and_a_readme_row():
    topics = {p.stem for p in (REPO / "lecturelib" / "reference").glob("[!_]*.py")}
    assert topics == {p.stem for p in NOTEBOOKS}
    assert set(readme_topics()) == {p.parent.name for p in NOTEBOOKS}
