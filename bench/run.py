"""`make bench`: measured numbers for every topic, against the library a user would otherwise use.

Runs every bench/bench_<topic>.py (in the lecture's order), prints one block per topic and writes the
same text to bench/latest.txt. Targets are printed next to the measurements; nothing here fails a build
(targets belong in benchmarks, not in timed tests). `make bench TOPIC=segmentation` runs one topic.
"""
from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

from common import emit, lines  # noqa: E402

torch.set_num_threads(2)


def main(argv: list[str]) -> None:
    modules = [importlib.import_module(p.stem) for p in sorted(HERE.glob("bench_*.py"))]
    modules.sort(key=lambda m: m.ORDER)
    wanted = set(argv)
    start = time.perf_counter()
    for module in modules:
        if not wanted or module.__name__.removeprefix("bench_") in wanted:
            module.run()
    emit(f"total bench time {time.perf_counter() - start:.0f} s")
    if not wanted:
        (HERE / "latest.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
