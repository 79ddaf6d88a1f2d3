"""Benchmarks of the DETR topic."""
from __future__ import annotations

import time

import numpy as np

from common import AP_DEFINITION, REPO, bench_checks, bench_notebook, emit, held_out_sets, timed

ORDER = 4  # the lecture's order of topics


def run() -> None:
    from scipy.optimize import linear_sum_assignment

    from lecturelib import data, detr
    from lecturelib.reference import hungarian_match

    emit("== DETR: bipartite matching and set prediction ==")
    bench_notebook(REPO / "notebooks" / "04_detr" / "detr.ipynb", 90)
    bench_checks("detr")

    emit("  hungarian_match, reference (NumPy, shortest augmenting paths) vs scipy.optimize.linear_sum_assignment "
         "(target at n = 300: within 20x):")
    rng = np.random.default_rng(0)
    for n in (10, 100, 300):
        cost = rng.random((n, n))
        ours = timed(lambda: hungarian_match(cost), repeat=5 if n < 300 else 3)
        theirs = timed(lambda: linear_sum_assignment(cost), repeat=20)
        same = np.isclose(cost[hungarian_match(cost)].sum(), cost[linear_sum_assignment(cost)].sum())
        emit(f"    n = {n:3d}: ours {ours * 1e3:8.2f} ms, scipy {theirs * 1e3:7.3f} ms, ratio {ours / theirs:6.1f}x"
             f"{'' if same else '  DIFFERENT TOTALS'}")

    model = detr.load_pretrained()
    meta = model.metadata
    emit(f"  detr_shapes, 1000 held-out images (seed 1); {AP_DEFINITION}:")
    for name, held_out in held_out_sets().items():
        start = time.perf_counter()
        scores = detr.evaluate(model, held_out, coco=True)
        seconds = time.perf_counter() - start
        target = " (target at least 0.85)" if name.startswith("default") else ""
        emit(f"    {name:18s}: AP@0.5 {scores['map']:.3f}{target}, COCO AP@[.5:.95] {scores['coco']:.3f}, "
             f"object-count accuracy {scores['count_accuracy']:.3f}; per class "
             + ", ".join(f"{data.CLASSES[c]} {ap:.2f}" for c, ap in scores["ap"].items())
             + f"; inference + evaluation {seconds / len(held_out) * 1e3:.2f} ms/image")
    emit(f"    trained by `{meta['command']}` on {meta.get('train', '?')}: {meta['epochs']} epochs, "
         f"{meta.get('train_seconds', '?')} s with {meta.get('threads', '?')} thread(s)")
