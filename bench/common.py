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




#: How the detection topics' AP is computed (printed beside every AP: say which definition a number uses).
AP_DEFINITION = ("AP = all-point interpolated AP (PASCAL VOC 2010+), mean over the 4 classes; COCO = COCO's "
                 "101-point AP@[.5:.95]; objects less than 25% visible are ignored (VOC 'difficult')")


def held_out_sets(n: int = 1000):
    """The detection topics' held-out sets: the data set's default (occlusion on) and unoccluded, seed 1."""
    from lecturelib import data
    return {"default (occluded)": data.make_shapes(n, seed=1),
            "unoccluded": data.make_shapes(n, seed=1, occlusion=False)}
