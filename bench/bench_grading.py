"""Benchmarks of honest grading: autograde seconds per submission against the floor.

The floor is the same pipeline (nbgrader + the isolated executor) on a notebook that only imports torch
and lecturelib. Measured sequentially (1 worker) and in parallel (one worker per core); the projected
wall time of a 600-student class follows from the parallel rate. nbgrader's own in-kernel Execute
(not safe against tampering) is measured too, as the cost of isolation.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from common import REPO, emit

ORDER = 10
SUBMISSIONS = 8   # per measurement: the ratios sit near their targets, and 4 gave +-0.04


def _floor_notebook() -> nbformat.NotebookNode:
    return new_notebook(cells=[new_code_cell("import torch\nimport lecturelib\nimport lecturelib.checks")],
                        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})


def _autograde(root: Path, assignment: str, notebook: str, nb, workers: int, tag: str) -> float:
    """Submit SUBMISSIONS copies of ``nb``, autograde them; seconds per submission (wall / count)."""
    from lecturelib import course as tool
    students = [f"{tag}_{i}" for i in range(SUBMISSIONS)]
    for student in students:
        folder = root / "submitted" / student / assignment
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, folder / f"{notebook}.ipynb")
    start = time.perf_counter()
    pairs = [(s, assignment) for s in students]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=workers) as pool:
        ok = list(pool.map(lambda pair: tool._autograde_one(*pair)[0], pairs))
    seconds = (time.perf_counter() - start) / SUBMISSIONS
    if not all(ok):
        emit(f"    WARNING: {ok.count(False)} of {SUBMISSIONS} submissions failed to grade")
    return seconds


def run() -> None:
    from lecturelib import course as tool
    from lecturelib.grading.sandbox import isolation_level

    emit("== honest grading (autograde seconds per submission) ==")
    emit(f"  isolation: {isolation_level()}; {SUBMISSIONS} submissions per measurement; "
         f"{os.cpu_count()} cores")
    work = Path(tempfile.mkdtemp(prefix="lecturelib-bench-grading-"))
    source, root = work / "source", work / "course"
    (source / "00_floor").mkdir(parents=True)
    nbformat.write(_floor_notebook(), source / "00_floor" / "floor.ipynb")
    shutil.copytree(REPO / "notebooks" / "02_segmentation", source / "02_segmentation")
    root.mkdir()
    env = {"LECTURELIB_COURSE_ROOT": str(root), "LECTURELIB_SOURCE_ROOT": str(source)}
    saved = {k: os.environ.get(k) for k in [*env, "LECTURELIB_IN_KERNEL_GRADING"]}
    os.environ.update(env)
    try:
        tool.release()
        correct = nbformat.read(source / "02_segmentation" / "segmentation.ipynb", as_version=4)
        cores = os.cpu_count() or 1
        rows = {}
        for label, assignment, notebook, nb in (("floor (imports only)", "00_floor", "floor", _floor_notebook()),
                                                ("segmentation", "02_segmentation", "segmentation", correct)):
            seq = _autograde(root, assignment, notebook, nb, 1, f"seq_{assignment}")
            par = _autograde(root, assignment, notebook, nb, cores, f"par_{assignment}")
            rows[label] = (seq, par)
        os.environ["LECTURELIB_IN_KERNEL_GRADING"] = "1"
        in_kernel = _autograde(root, "02_segmentation", "segmentation", correct, 1, "inkernel")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(work, ignore_errors=True)

    floor_seq, floor_par = rows["floor (imports only)"]
    for label, (seq, par) in rows.items():
        emit(f"  {label:22s} sequential {seq:6.1f} s/submission ({seq / floor_seq:4.2f}x floor), "
             f"parallel x{cores} {par:6.1f} s/submission ({par / floor_par:4.2f}x floor), "
             f"speed-up {seq / par:4.2f}")
    seg_seq, seg_par = rows["segmentation"]
    emit(f"  target: at most 1.3x the floor per submission; parallel speed-up at least 1.8 on 2 cores")
    emit(f"  nbgrader's own in-kernel Execute (no isolation): {in_kernel:.1f} s/submission; "
         f"isolation costs {seg_seq / in_kernel:4.2f}x")
    emit(f"  projected wall time for 600 segmentation submissions on this machine: "
         f"{600 * seg_par / 60:.0f} min ({cores} workers)")
    nbgrader_start()
    attack_suite()


def nbgrader_start() -> None:
    """What ``lecturelib.grading.nbgrader_cli`` saves on every nbgrader command: `nbgrader --version`, plain vs ours."""
    import subprocess
    import sys

    def best(module: str) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", module, "--version"], cwd=REPO, capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        return min(times)

    plain, ours = best("nbgrader"), best("lecturelib.grading.nbgrader_cli")
    emit(f"  nbgrader start-up (`--version`, best of 3): plain {plain:.2f} s, through lecturelib.grading.nbgrader_cli "
         f"{ours:.2f} s (saves {plain - ours:.2f} s on every nbgrader command, once per graded submission)")


def attack_suite() -> None:
    """The attack suite's total run time (tests/test_attacks.py: every submission graded in one run)."""
    import subprocess
    import sys
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_attacks.py"],
                          cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    summary = (proc.stdout.strip().splitlines() or ["no output"])[-1]
    emit(f"  attack suite (tests/test_attacks.py, one autograde run of every attack): {seconds:.0f} s; {summary}")
