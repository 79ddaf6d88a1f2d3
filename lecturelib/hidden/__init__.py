"""Everything about the checks that students must not have (grader copy only: the student package and the
grading sandbox leave this folder out).

Each topic module ``hidden/<topic>.py`` holds, per exercise of the topic:

* ``BUILDERS[name](specs, reveal)``: turns plain specs into :class:`~lecturelib.checks.core.Case` objects,
  computing their ``data`` with independent oracles (torch built-ins, float64 NumPy, brute force) and the
  outputs of the exercise's known mistakes (``mistake_outputs``);
* ``VISIBLE[name]``: the visible specs (students get the cases built from them as data, never the code);
* ``SPECS[name]``: the hidden specs. They differ from the visible ones (other shapes, strides, paddings,
  seeds), so passing the visible suite by special-casing is not enough.

``make release`` writes the visible cases of every topic into the student package
(``lecturelib/checks/visible/<topic>.pt``) with :func:`write_visible`.
"""
from __future__ import annotations

import hashlib
import hmac
import importlib
from pathlib import Path
from typing import Callable, Sequence

from ..train import one_thread
from ..checks.core import EXERCISES, Case, NotPlainData, Raised, dump_cases, quiet, sanitize, seeded

__all__ = ["build", "visible_bytes", "write_visible", "mistake_outputs", "topics"]


def _module(topic: str):
    return importlib.import_module(f"{__name__}.{topic}")


def topics() -> list[str]:
    """The topics that have exercises."""
    return sorted({ex.topic for ex in EXERCISES.values()})


def personal_seed(secret: str, student: str, name: str, seed: int) -> int:
    """A hidden spec's seed for one student: HMAC of the course secret, the student and the spec's own seed.
    Regrading a student gives the same inputs; inputs one student saw are worthless to another."""
    digest = hmac.new(secret.encode(), f"{student}\0{name}\0{seed}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:4], "big") % (2 ** 31 - 1)


def build(name: str, suite: str, student: str | None = None, secret: str | None = None) -> list[Case]:
    """The cases of one suite of exercise ``name``, built from its specs (seeded: identical every time).

    With a course ``secret`` and a ``student`` (the grader passes ``LECTURELIB_COURSE_SECRET`` and the student
    id), every hidden spec that draws random inputs draws them from :func:`personal_seed` instead of its own
    seed; the constructed cases (exact ties, thresholds, empty inputs) stay as they are."""
    topic = EXERCISES[name].topic
    module = _module(topic)
    specs = module.VISIBLE[name] if suite == "visible" else module.SPECS[name]
    if suite == "hidden" and secret and student:
        specs = [{**spec, "seed": personal_seed(secret, student, name, spec["seed"])}
                 if isinstance(spec, dict) and isinstance(spec.get("seed"), int) else spec for spec in specs]
    reveal = suite == "visible"
    # One thread: the cases' tensors are tiny, and on a loaded machine OpenMP's threads wait for each other
    # (conv_transpose2d's hidden cases took 0.5-1.4 s with 2 threads at load 6 on 2 cores, 0.02-0.08 s with one).
    with quiet(), seeded(0), one_thread():
        cases = list(module.BUILDERS[name](specs, reveal))
    for i, case in enumerate(cases, 1):
        case.reveal = reveal
        if not reveal:  # hidden names reveal no inputs: the feedback shows them to students
            case.name = f"hidden case {i}" + (f" ({case.about})" if case.about else "")
    return cases


def visible_bytes(topic: str) -> bytes:
    """The visible cases of every exercise of ``topic``, serialized (what the student package ships)."""
    return dump_cases({name: build(name, "visible") for name, ex in EXERCISES.items() if ex.topic == topic})


def write_visible(dest: Path) -> list[Path]:
    """Write ``<dest>/<topic>.pt`` for every topic (``make release``: dest is the student package's
    ``lecturelib/checks/visible``)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for topic in topics():
        path = dest / f"{topic}.pt"
        path.write_bytes(visible_bytes(topic))
        written.append(path)
    return written


def mistake_outputs(mistakes: Sequence[tuple[Callable, str]], *args, **kwargs) -> list[tuple[object, str]]:
    """``(output, cause)`` for each known mistake ``(fn, cause)`` run on the case's inputs, as plain data.

    What the student package compares a wrong answer with to name its cause (``core.known_mistake``);
    a mistake that raises or returns nothing comparable on these inputs is left out."""
    outputs = []
    for fn, cause in mistakes:
        try:
            with quiet():
                value = sanitize(fn(*args, **kwargs))
        except (NotPlainData, ArithmeticError, ValueError, RuntimeError, IndexError):
            continue
        if not isinstance(value, Raised):
            outputs.append((value, cause))
    return outputs
