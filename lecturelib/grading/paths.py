"""Where the course lives: the repository, or ``$LECTURELIB_COURSE_ROOT`` (nbgrader_config.py reads the same)."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent
REPO = PACKAGE.parent
# Parts of the package that only instructors and graders get: the student package and the sandbox leave them out.
GRADER_ONLY = ("reference", "hidden", "grading", "course.py")


def course_root() -> Path:
    return Path(os.environ.get("LECTURELIB_COURSE_ROOT", REPO)).resolve()


def source_root() -> Path:
    """The instructor notebooks (nbgrader's source directory)."""
    return Path(os.environ.get("LECTURELIB_SOURCE_ROOT", REPO / "notebooks")).resolve()
