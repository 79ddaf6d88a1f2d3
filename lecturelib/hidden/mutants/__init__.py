"""The mutant library: realistic wrong implementations of every exercise, each with the cause its failure
message must name, and alternative correct implementations that must pass (grader copy only).

One module per topic, ``mutants/<topic>.py``, defines::

    MUTANTS = {"conv_transpose2d": [Mutant("contributions overwritten", fn, "must be summed",
                                           rule="overlapping contributions are summed"), ...]}
    ALTERNATIVES = {"conv_transpose2d": [Alternative("one scatter per kernel tap", fn), ...]}

``cause`` is the text (a substring) the hidden suite's report must contain for the mutant to count as
*named*: a likely cause ("kernel looks flipped") or, where no cause is recognisable, what differs
structurally ("only the first image is right"). ``rule`` is the sentence of the exercise's specification the
mutant breaks (a dtype, a tie rule, "no epsilon"), so every stated rule is covered by a hidden case.
``make audit`` (:mod:`lecturelib.hidden.audit`) runs them all through both suites.

A mutant is the whole function as a student would write it, with one bug: mutants of one exercise repeat
each other's lines by design (``duplicates`` lists them), so that each reads like a real submission.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

__all__ = ["Mutant", "Alternative", "mutants", "alternatives", "MIN_MUTANTS", "CORE"]

# The four core exercises of the lecture get a larger library (issue 12: at least 8 each; 5 for the others).
CORE = ("conv_transpose2d", "generate_anchors", "hungarian_match", "grad_cam")
MIN_MUTANTS = {"core": 8, "other": 5}


@dataclasses.dataclass(frozen=True)
class Mutant:
    """A realistic wrong implementation: what the bug is, the function, and the text its message must hold."""

    label: str
    fn: Callable
    cause: str
    rule: str | None = None


@dataclasses.dataclass(frozen=True)
class Alternative:
    """A correct implementation written differently from the reference: both suites must pass it."""

    label: str
    fn: Callable


def _topic(topic: str):
    return importlib.import_module(f"{__name__}.{topic}")


def mutants(name: str) -> list[Mutant]:
    """The mutant library of exercise ``name`` (empty if its topic has none yet)."""
    from ...checks.core import EXERCISES
    return list(getattr(_topic(EXERCISES[name].topic), "MUTANTS", {}).get(name, []))


def alternatives(name: str) -> list[Alternative]:
    """The alternative correct implementations of exercise ``name``."""
    from ...checks.core import EXERCISES
    return list(getattr(_topic(EXERCISES[name].topic), "ALTERNATIVES", {}).get(name, []))
