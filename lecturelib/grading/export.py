"""``nbgrader export --exporter=lecturelib.grading.export.GradesCsv``: grades.csv with the isolated grader's status.

One row per submission (also one that could not be graded), one column per graded cell, plus ``status`` (graded,
timed out, crashed, memory limit, flagged, refused files, error, ...), ``needs_manual_grade`` and ``notes`` (what
was repaired or refused, and why a submission was flagged), from the JSON reports that ``IsolatedExecute`` and the
launcher (``lecturelib.course``) write. Every text field is escaped against formula injection: a spreadsheet
opening the file must not run ``=HYPERLINK(...)`` from a student id or a note.

Written questions (Markdown answer cells with points, graded by a TA in formgrader) read ``needs manual grade``
until the TA has given them a score; a written answer left as handed out ("YOUR ANSWER HERE") is scored 0 by
nbgrader itself. The notes then name the answers still to grade. Autograded cells keep their scores either way.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.plugins import ExportPlugin
from traitlets import Unicode

FIELDS = ["student", "assignment", "score", "max_score", "status", "needs_manual_grade", "notes"]
#: What a written answer's column holds until a TA has graded it in formgrader.
NEEDS_MANUAL_GRADE = "needs manual grade"


def spreadsheet_safe(value):
    """Text that a spreadsheet would read as a formula gets a leading apostrophe (OWASP's advice)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def reports(report_root: Path, student: str, assignment: str) -> list[dict]:
    """The reports of one submission: one per notebook, and the launcher's (``_submission.json``)."""
    folder = Path(report_root) / assignment / student
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            found.append(json.loads(path.read_text()))
        except ValueError:
            found.append({"status": ["error"], "notes": [f"unreadable report {path.name}"]})
    return found


def summary(found: list[dict]) -> tuple[str, str]:
    """(status, notes) of a submission from its reports."""
    if not found:
        return "not graded", ""
    statuses = sorted({s for r in found for s in r.get("status", ["error"])})
    if len(statuses) > 1 and "graded" in statuses:
        statuses.remove("graded")
    notes = []
    for report in found:
        notes += report.get("notes", []) + report.get("repairs", [])
        notes += [f"refused {e.removeprefix('refused: ')}" for e in report.get("events", [])
                  if e.startswith("refused: ")]
        notes += report.get("tampering", [])[:3]
    return ";".join(statuses), " | ".join(dict.fromkeys(notes))


class GradesCsv(ExportPlugin):
    """grades.csv (``--to`` names the file; default ``grades.csv`` in the working folder)."""

    report_root = Unicode("grading_reports", help="Folder of the isolated grader's JSON reports").tag(config=True)

    def export(self, gradebook: Gradebook) -> None:
        path = Path(self.to or "grades.csv")
        rows, columns = [], {}
        for assignment in gradebook.assignments:
            if self.assignment and assignment.name not in self.assignment:
                continue
            columns[assignment.name] = [(nb.name, cell.name, cell.max_score, cell.cell_type == "markdown")
                                        for nb in assignment.notebooks for cell in nb.grade_cells]
        pairs = {(s.id, a) for s in gradebook.students for a in columns}
        root = Path(self.report_root)
        if root.is_dir():  # submissions known only from a report (refused, or never reached the gradebook)
            pairs |= {(student.name, assignment.name) for assignment in root.iterdir() if assignment.is_dir()
                      and assignment.name in columns for student in assignment.iterdir() if student.is_dir()}
        for student, assignment in sorted(pairs):
            if self.student and student not in self.student:
                continue
            found = reports(root, student, assignment)
            try:
                submission = gradebook.find_submission(assignment, student)
            except MissingEntry:
                submission = None
            if submission is None and not found:
                continue  # a student of the gradebook who did not hand this assignment in
            rows.append(self._row(gradebook, student, assignment, columns[assignment], submission, found))
        fields = list(FIELDS)
        for cells in columns.values():
            fields += [cell for _, cell, _, _ in cells if cell not in fields]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, restval="")
            writer.writeheader()
            writer.writerows({k: spreadsheet_safe(v) for k, v in row.items()} for row in rows)
        self.log.info("wrote %d rows to %s", len(rows), path)

    @staticmethod
    def _row(gradebook, student, assignment, cells, submission, found) -> dict:
        status, notes = summary(found)
        row = {"student": student, "assignment": assignment, "status": status, "notes": notes,
               "max_score": sum(c[2] for c in cells)}
        if submission is None:
            return {**row, "score": 0.0, "needs_manual_grade": True, **{cell: 0.0 for _, cell, _, _ in cells}}
        row.update(score=submission.score, needs_manual_grade=submission.needs_manual_grade)
        to_grade = []
        for nb_name, cell, _, written in cells:
            try:
                grade = gradebook.find_grade(cell, nb_name, assignment, student)
            except MissingEntry:
                row[cell] = 0.0
                continue
            if written and grade.manual_score is None and grade.auto_score is None:
                row[cell] = NEEDS_MANUAL_GRADE       # answered, not graded yet (its points are not in the score)
                to_grade.append(cell)
            else:
                row[cell] = grade.score
        if to_grade:
            note = f"written answers to grade in formgrader: {', '.join(to_grade)}"
            row["notes"] = f"{row['notes']} | {note}" if row["notes"] else note
        return row
