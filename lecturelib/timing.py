"""Measured time, the same way everywhere: the notebooks' demos (``detection.family_costs``) and ``bench/``."""
from __future__ import annotations

import statistics
import time
from typing import Callable

from ._validate import require_int

__all__ = ["timed"]


def timed(fn: Callable[[], object], repeat: int = 5) -> float:
    """Median seconds of ``repeat`` calls of ``fn()``, after one warm-up call (lazy imports, caches)."""
    repeat = require_int("repeat", repeat, minimum=1)
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)
