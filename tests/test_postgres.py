"""Parallel autograding against a real PostgreSQL gradebook: no lost and no duplicated grades.

Starts a throwaway PostgreSQL server (Debian's postgresql package) on loopback for this module.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
from pathlib import Path

import nbformat
import pytest

from notebook_tools import REPO, answers, graded_cells, replace_solution, strip_markers

pytestmark = pytest.mark.slow

ASSIGNMENT = "02_segmentation"
POINTS = {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"]["points"]
          for c in graded_cells(nbformat.read(REPO / "notebooks" / ASSIGNMENT / "segmentation.ipynb", as_version=4))}


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A PostgreSQL server on 127.0.0.1 with an empty database; yields its SQLAlchemy URL."""
    pg_bin = _pg_bin()
    if pg_bin is None or shutil.which("runuser") is None or os.geteuid() != 0:
        pytest.skip("needs Debian's postgresql package and root (to run the server as the postgres user)")
    pytest.importorskip("psycopg2")
    data = Path(f"/var/tmp/lecturelib-pg-{os.getpid()}")
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    shutil.chown(data, "postgres", "postgres")
    port = _free_port()

    def as_postgres(*cmd):
        return subprocess.run(["runuser", "-u", "postgres", "--", *map(str, cmd)], check=True,
                              capture_output=True, text=True)

    as_postgres(pg_bin / "initdb", "-D", data / "db", "-A", "trust", "-U", "postgres")
    as_postgres(pg_bin / "pg_ctl", "-D", data / "db", "-l", data / "log", "-w", "start", "-o",
                f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=50")
    try:
        as_postgres(pg_bin / "createdb", "-h", "127.0.0.1", "-p", port, "gradebook")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/gradebook"
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(pg_bin / "pg_ctl"), "-D", str(data / "db"),
                        "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def test_parallel_autograde_with_postgres(postgres, tmp_path, monkeypatch):
    from nbgrader.api import Gradebook

    from lecturelib import course as tool

    monkeypatch.setenv("LECTURELIB_COURSE_ROOT", str(tmp_path))
    monkeypatch.setenv("LECTURELIB_DB_URL", postgres)
    monkeypatch.setenv("LECTURELIB_CELL_TIMEOUT", "30")
    tool.release()
    source = nbformat.read(REPO / "notebooks" / ASSIGNMENT / "segmentation.ipynb", as_version=4)
    correct = {k: strip_markers(v) for k, v in answers(source).items()}
    released = tmp_path / "release" / ASSIGNMENT / "segmentation.ipynb"
    expected = {}
    for i in range(6):
        nb = nbformat.read(released, as_version=4)
        if i % 2 == 0:
            for gid, answer in correct.items():
                replace_solution(nb, gid, answer)
        student = f"pg_student_{i}"
        folder = tmp_path / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / "segmentation.ipynb")
        expected[student] = float(sum(POINTS.values())) if i % 2 == 0 else 0.0

    results = tool.autograde(ASSIGNMENT, workers=2)
    assert all(results.values()) and len(results) == 6

    with Gradebook(postgres) as gb:
        assert sorted(s.id for s in gb.students) == sorted(expected)
        for student, score in expected.items():
            submission = gb.find_submission(ASSIGNMENT, student)
            assert submission.score == score, student
            grades = gb.find_submission_notebook("segmentation", ASSIGNMENT, student).grades
            names = [g.name for g in grades]
            assert len(names) == len(set(names))            # no duplicated grades
            assert set(POINTS) <= set(names)                 # no lost grades
        # one submission row per student, no more
        assert len(gb.find_assignment(ASSIGNMENT).submissions) == 6

    rows = tool.grades(tmp_path / "grades.csv").read_text().splitlines()
    assert len(rows) == 1 + 6
