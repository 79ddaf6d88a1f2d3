"""Where the course lives: the repository, or ``$LECTURELIB_COURSE_ROOT``."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


def course_root() -> Path:
    return Path(os.environ.get("LECTURELIB_COURSE_ROOT", REPO)).resolve()


def source_root() -> Path:
    """The instructor notebooks (nbgrader's source directory)."""
    return Path(os.environ.get("LECTURELIB_SOURCE_ROOT", REPO / "notebooks")).resolve()


def db_url() -> str:
    """The gradebook (same rule as nbgrader_config.py): sqlite waits up to 60 s for a lock."""
    return os.environ.get("LECTURELIB_DB_URL", f"sqlite:///{course_root() / 'gradebook.db'}?timeout=60")


def report_path(assignment: str, student: str, notebook: str) -> Path:
    """The isolated grader's JSON report of one submitted notebook."""
    return course_root() / "grading_reports" / assignment / student / f"{notebook}.json"
