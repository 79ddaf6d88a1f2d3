"""Written questions in every notebook: the convention, what the student release keeps of them, and their grading.

The convention (the same in every notebook): the question is a Markdown cell (locked, or plain) right above a
Markdown answer cell whose nbgrader metadata is

    {"grade": true, "solution": true, "locked": false, "task": false, "points": 1, "grade_id": "q_<name>",
     "schema_version": 3}

and whose whole instructor source is

    ### BEGIN SOLUTION
    **Model answer.** <two to four sentences>

    **Rubric (TA).** 1 point: <what must be there>; 0.5: <partial>; 0: <...>
    ### END SOLUTION

nbgrader's ClearSolutions replaces the whole region with "YOUR ANSWER HERE" in the release, so neither the answer
nor the rubric reaches students; nbgrader scores an answer left as handed out 0 by itself (its checksum has not
changed) and any other answer "needs manual grade" until a TA grades it in formgrader; grades.csv
(``lecturelib.grading.export.GradesCsv``) says so in the answer's column. The end-to-end path of a written answer
(submitted, exported as "needs manual grade", graded as formgrader does, exported and fed back with its points) is
tests/test_exchange.py; tests/test_grading.py checks the CSV of the segmentation notebook's answers.
"""
from __future__ import annotations

import copy
import csv
import json
import re

import nbformat
import pytest

from notebook_tools import NOTEBOOKS, written_cells, written_points

METADATA_KEYS = {"grade", "solution", "locked", "task", "points", "grade_id", "schema_version"}
CELL = re.compile(r"### BEGIN SOLUTION\n\*\*Model answer\.\*\* (?P<answer>\S.*?)\n\n"
                  r"\*\*Rubric \(TA\)\.\*\* (?P<rubric>\S.*?)\n### END SOLUTION", re.S)
TEXT_STUB = "YOUR ANSWER HERE"
# A sentence ends with . ? or ! followed by a space and a capital letter, a formula or a code span.
SENTENCE_END = re.compile(r"(?<=[.?!])\s+(?=[A-Z$`(])")


def _read(path):
    return nbformat.read(path, as_version=4)


def _with_questions() -> list:
    return [p for p in NOTEBOOKS if written_cells(_read(p))]


def sentences(text: str) -> int:
    return len([s for s in SENTENCE_END.split(" ".join(text.split())) if s.strip()])


def _private_lines(cell) -> list[str]:
    """Lines of a written answer cell that students must never see (model answer and rubric, markers aside)."""
    return [line.strip() for line in cell.source.splitlines()
            if "### " not in line and len(line.strip()) > 12]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_written_questions_follow_the_convention(path):
    nb = _read(path)
    cells = written_cells(nb)
    assert len(cells) in (0, 2, 3), "two or three written questions per notebook (issue 15)"
    ids = [c.metadata["nbgrader"]["grade_id"] for c in cells]
    assert len(set(ids)) == len(ids)
    for cell in cells:
        meta = cell.metadata["nbgrader"]
        gid = meta.get("grade_id", "")
        assert re.fullmatch(r"q_[a-z0-9_]+", gid), gid
        assert set(meta) == METADATA_KEYS, (gid, sorted(meta))
        assert (meta["grade"], meta["solution"], meta["locked"], meta["task"], meta["schema_version"]) == \
               (True, True, False, False, 3), gid
        assert isinstance(meta["points"], (int, float)) and meta["points"] > 0, gid
        found = CELL.fullmatch(cell.source)
        assert found, f"{gid}: the source must be exactly the solution region with a model answer and a rubric"
        assert 2 <= sentences(found["answer"]) <= 4, (gid, sentences(found["answer"]))
        rubric = found["rubric"]
        assert rubric.startswith(f"{meta['points']:g} point") and "0.5:" in rubric and "0:" in rubric, gid
        # The question: the cell right above, Markdown, not an answer, locked if it has nbgrader metadata.
        index = nb.cells.index(cell)
        question = nb.cells[index - 1]
        assert index > 0 and question.cell_type == "markdown" and question.source.strip(), gid
        above = question.metadata.get("nbgrader")
        if above is not None:
            assert above.get("locked") and not above.get("solution") and not above.get("grade"), gid
        assert "BEGIN SOLUTION" not in question.source and "Rubric" not in question.source, gid


def test_notebooks_01_and_02_ask_written_questions():
    assert {p.parent.name for p in _with_questions()} >= {"01_transformers", "02_segmentation"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_clear_solutions_leaves_only_the_stub(path):
    """nbgrader's ClearSolutions, as `make release` runs it, on each written answer: the stub and nothing else."""
    from nbgrader.preprocessors import ClearSolutions

    nb = _read(path)
    released, _ = ClearSolutions().preprocess(copy.deepcopy(nb), {})
    by_id = {c.get("id"): c for c in released.cells}
    for cell in written_cells(nb):
        assert by_id[cell.id].source == TEXT_STUB, cell.metadata["nbgrader"]["grade_id"]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_release_has_the_questions_and_no_model_answer_or_rubric(course, path):
    """The real release (`make release`, the session's course fixture): every written answer cell is there as an
    answer cell with its points and the text stub, the question above it unchanged, and no line of any model answer
    or rubric anywhere in the released notebook."""
    source = _read(path)
    released_path = course / "release" / path.parent.name / path.name
    body = released_path.read_text()
    released = nbformat.reads(body, as_version=4)
    by_id = {c.metadata.get("nbgrader", {}).get("grade_id"): (i, c) for i, c in enumerate(released.cells)}
    text = json.dumps([c.source for c in released.cells])
    for cell in written_cells(source):
        gid = cell.metadata["nbgrader"]["grade_id"]
        index, out = by_id[gid]
        assert out.cell_type == "markdown" and out.source == TEXT_STUB, gid
        meta = out.metadata["nbgrader"]
        assert (meta["grade"], meta["solution"], meta["points"]) == (True, True, cell.metadata["nbgrader"]["points"])
        assert released.cells[index - 1].source == source.cells[source.cells.index(cell) - 1].source, gid
        for line in _private_lines(cell):
            assert line not in body and json.dumps(line)[1:-1] not in text, (gid, line)
    if written_cells(source):
        assert "Model answer" not in body and "Rubric (TA)" not in body and "BEGIN SOLUTION" not in body
        assert sum(c.source == TEXT_STUB for c in released.cells) == len(written_cells(source))


# ------------------------------------------------------------------------------------------------
# Grading: grades.csv shows "needs manual grade" for an answered, ungraded written question
# ------------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Object of type")      # nbgrader's own add_submission, with SQLAlchemy 2
def test_grades_csv_marks_written_answers_until_a_ta_grades_them(tmp_path):
    from nbgrader.api import Gradebook

    from lecturelib.grading.export import NEEDS_MANUAL_GRADE, GradesCsv

    url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    with Gradebook(url) as gb:
        gb.add_assignment("01_topic")
        gb.add_notebook("topic", "01_topic")
        gb.add_grade_cell("test_f", "topic", "01_topic", max_score=2, cell_type="code")
        gb.add_grade_cell("q_why", "topic", "01_topic", max_score=1, cell_type="markdown")
        gb.add_grade_cell("q_how", "topic", "01_topic", max_score=1, cell_type="markdown")
        for student in ("answered", "blank", "graded"):
            gb.add_student(student)
            gb.add_submission("01_topic", student)

        def grade(student, cell, auto, manual=None):
            g = gb.find_grade(cell, "topic", "01_topic", student)
            g.auto_score, g.manual_score = auto, manual
            g.needs_manual_grade = auto is None and manual is None        # what SaveAutoGrades / formgrader set
            gb.db.commit()

        for student in ("answered", "blank", "graded"):
            grade(student, "test_f", 2.0)
        grade("answered", "q_why", None)              # answered: nbgrader cannot score it
        grade("answered", "q_how", 0.0)               # left as handed out: 0 by nbgrader's checksum
        grade("blank", "q_why", 0.0)
        grade("blank", "q_how", 0.0)
        grade("graded", "q_why", None, manual=0.5)    # graded by a TA in formgrader
        grade("graded", "q_how", 0.0)
        exporter = GradesCsv(to=str(tmp_path / "grades.csv"), report_root=str(tmp_path / "reports"))
        exporter.export(gb)
    rows = {r["student"]: r for r in csv.DictReader((tmp_path / "grades.csv").open())}
    answered, blank, graded = rows["answered"], rows["blank"], rows["graded"]
    assert answered["q_why"] == NEEDS_MANUAL_GRADE and float(answered["q_how"]) == 0.0
    assert float(answered["test_f"]) == 2.0 and float(answered["score"]) == 2.0       # autograded points unchanged
    assert answered["needs_manual_grade"] == "True"
    assert answered["notes"] == "written answers to grade in formgrader: q_why"
    assert (blank["q_why"], blank["q_how"], blank["needs_manual_grade"], blank["notes"]) == ("0.0", "0.0", "False", "")
    assert (float(graded["q_why"]), float(graded["score"]), graded["needs_manual_grade"]) == (0.5, 2.5, "False")
    assert all(float(r["max_score"]) == 4.0 for r in rows.values())


def test_written_points_are_counted_apart_from_the_autograded_ones():
    for path in _with_questions():
        nb = _read(path)
        assert all(gid.startswith("q_") for gid in written_points(nb))
        assert sum(written_points(nb).values()) == len(written_cells(nb))     # one point each in this course
