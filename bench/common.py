"""Shared helpers of the benchmarks: timing, printing, checks and notebook runs."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from lecturelib.timing import timed  # noqa: F401 - the benchmarks time with it

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

lines: list[str] = []


def emit(text: str = "") -> None:
    print(text, flush=True)
    lines.append(text)


def bench_checks(topic: str) -> None:
    from lecturelib import reference
    from lecturelib.checks import EXERCISES, run_suite

    emit(f"  {'exercise':28s} {'visible s':>10s} {'hidden s':>10s}   (target: each under 1 s)")
    for name, exercise in EXERCISES.items():
        if exercise.topic != topic:
            continue
        fn = getattr(reference, name)
        vis = timed(lambda: run_suite(name, fn, "visible"), repeat=3)
        hid = timed(lambda: run_suite(name, fn, "hidden"), repeat=3)
        emit(f"  {name:28s} {vis:10.4f} {hid:10.4f}")


def bench_notebook(path: Path, target: float) -> None:
    from notebook_tools import errors, execute

    start = time.perf_counter()
    nb = execute(path)
    seconds = time.perf_counter() - start
    emit(f"  notebook full run (instructor version, incl. kernel start): {seconds:.1f} s "
         f"(target under {target:.0f} s){'  ERRORS: ' + str(errors(nb)) if errors(nb) else ''}")


