"""What an honest student's editor does to a notebook must not cost points: repairs before nbgrader reads it.

nbgrader 0.9.6 loses a whole notebook to two editor actions: a solution cell copied in JupyterLab (both copies
carry the same grade id: ``DeduplicateIds`` blanks the earlier copy's metadata to ``{}``, and
``OverwriteCells.add_missing_task_cells`` then raises ``KeyError: 'grade_id'``), and metadata that no longer
reads (points "four"). :class:`RepairSubmission` runs first in the sanitize pass and grades what can be graded:
the last copy of a solution cell keeps its role (it is the one that ran last) and earlier copies become plain
cells that still run; copies of test and read-only cells are dropped, and cells whose metadata does not read lose
it, so nbgrader restores them from the source by grade id. Each repair is noted in the notebook's metadata
(``lecturelib.repairs``), where ``IsolatedExecute`` puts it into the report.

:func:`harden_nbgrader` (called by nbgrader_config.py, so plain ``nbgrader autograde`` gets it too) changes three
things nbgrader 0.9.6 does with what students hand in:

* a ``timestamp.txt`` that does not parse counts as missing (nbgrader calls a ``self.fail`` that does not exist
  there and loses the submission to an ``AttributeError``);
* symbolic links, FIFOs and devices in a submission are neither graded nor copied (``shutil.copy`` follows a link
  to the instructor's notebook or the gradebook, and blocks forever on a FIFO);
* a student id is a name, not a pattern: ``victi[m]`` would otherwise be expanded by ``glob`` and grade ``victim``.
"""
from __future__ import annotations

import glob
import numbers
import os
import stat

from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool

_FLAGS = ("grade", "solution", "locked", "task")


def _readable(meta) -> bool:
    """nbgrader metadata that nbgrader's own steps can read without failing."""
    if not isinstance(meta, dict) or not isinstance(meta.get("grade_id"), str) or not meta["grade_id"]:
        return False
    if any(not isinstance(meta.get(flag, False), bool) for flag in _FLAGS):
        return False
    points = meta.get("points", 0)
    return not meta.get("grade") or (isinstance(points, numbers.Real) and not isinstance(points, bool)
                                      and points >= 0)


class RepairSubmission(NbGraderPreprocessor):
    """Sanitize step before ``DeduplicateIds``: unreadable metadata and duplicated grade ids (see module doc)."""

    enabled = Bool(True).tag(config=True)

    def preprocess(self, nb, resources):
        repairs = []
        keep, seen = [], set()
        for index in range(len(nb.cells) - 1, -1, -1):        # from the end: the last copy wins
            cell = nb.cells[index]
            meta = cell.metadata.get("nbgrader")
            if meta is None:
                keep.append(cell)
                continue
            if not _readable(meta):
                del cell.metadata["nbgrader"]
                repairs.append(f"cell {index}: its nbgrader metadata did not read; restored from the source")
                keep.append(cell)
                continue
            grade_id = meta["grade_id"]
            if grade_id not in seen:
                seen.add(grade_id)
                keep.append(cell)
            elif meta.get("solution"):
                del cell.metadata["nbgrader"]
                repairs.append(f"cell {index}: an earlier copy of solution cell '{grade_id}'; the last copy is graded")
                keep.append(cell)
            else:
                repairs.append(f"cell {index}: a copy of read-only cell '{grade_id}' was dropped")
        nb.cells = keep[::-1]
        if repairs:
            nb.metadata.setdefault("lecturelib", {})["repairs"] = repairs
            for line in repairs:
                self.log.warning("repaired: %s", line)
        return nb, resources


def _regular(path: str) -> bool:
    """A regular file or folder reached without following a link."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)


def _patch(cls, name: str, make):
    original = getattr(cls, name)
    if not getattr(original, "hardened", False):
        patched = make(original)
        patched.hardened = True
        setattr(cls, name, patched)


def harden_nbgrader() -> None:
    """Apply the three changes of the module docstring to nbgrader's classes (idempotent)."""
    from nbgrader.converters.base import BaseConverter
    from nbgrader.coursedir import CourseDirectory

    def timestamps(original):
        def get_existing_timestamp(self, dest_path):
            try:
                return original(self, dest_path)
            except Exception as exc:  # noqa: BLE001 - nbgrader 0.9.6 fails with AttributeError (self.fail)
                self.log.warning("timestamp.txt in %s does not read (%s): treated as missing", dest_path,
                                 type(exc).__name__)
                return None
        return get_existing_timestamp

    def notebooks(original):
        def init_notebooks(self):
            student = self.coursedir.student_id
            if student != "*" and glob.escape(student) != student:
                self.coursedir.student_id = glob.escape(student)
            try:
                original(self)
            finally:
                self.coursedir.student_id = student
            for assignment, found in list(self.assignments.items()):
                kept = [path for path in found if _regular(path)]
                for path in set(found) - set(kept):
                    self.log.warning("not graded: %s is a link or not a regular file", path)
                self.assignments[assignment] = kept
        return init_notebooks

    def other_files(original):
        def init_assignment(self, assignment_id, student_id):
            import nbgrader.converters.base as base
            find_all_files = base.find_all_files

            def regular_files(path, exclude=None):
                found = find_all_files(path, exclude)
                for name in [f for f in found if not _regular(f)]:
                    self.log.warning("not copied: %s is a link or not a regular file", name)
                return [f for f in found if _regular(f)]
            base.find_all_files = regular_files
            try:
                return original(self, assignment_id, student_id)
            finally:
                base.find_all_files = find_all_files
        return init_assignment

    _patch(CourseDirectory, "get_existing_timestamp", timestamps)
    _patch(BaseConverter, "init_notebooks", notebooks)
    _patch(BaseConverter, "init_assignment", other_files)
