"""The check framework: one entry point, one result type, messages that say what is wrong.

An *exercise* is a named function that students implement. Its checks are a list of *cases*; a case
calls the student's function one or more times (``calls``) and then *verifies* what came back. A case
is plain data: its calls' inputs, the name of a verifier, and ``data`` (expected outputs, the outputs
that known mistakes produce on these inputs, ...). The verifiers are code in this package
(``checks/<topic>.py``) and need no answer: they compare the student's outcomes with ``data`` and check
properties (shapes, linearity, adjointness, hooks removed). What computes ``data`` (oracles, the known
mistakes) is grader-side, in ``lecturelib.hidden``; the student package ships the visible cases as a
data file written by ``make release`` (``checks/visible/<topic>.pt``), never the code that made them.

The student's code only ever turns inputs into outputs, and the outputs are first reduced to plain
data (exact ``torch.Tensor`` / ``np.ndarray`` / numbers, copied) by :func:`sanitize` before any
comparison, so the verdict can be computed in another process than the one that ran the student's code.

Writing the checks of a new exercise (see ``checks/segmentation.py`` and ``hidden/segmentation.py``)::

    # lecturelib/hidden/<topic>.py (grader side): specs -> cases, with oracles and known mistakes
    def _my_op_cases(specs, reveal):
        for spec in specs:
            x = ...                                   # inputs, deterministic from the spec's seed
            data = {"expected": oracle(x), "mistakes": mistake_outputs(MY_OP_MISTAKES, x)}
            yield Case(describe(spec), [Call(x)], "my_op", data)

    # lecturelib/checks/<topic>.py (student side): the verifier, and the exercise
    @verifier("my_op")
    def _verify_my_op(outcomes, data, reveal):
        got = expect_tensor(outcomes[0], shape=data["expected"].shape, dtype=data["expected"].dtype)
        compare(got, data["expected"], diagnose=lambda g: known_mistake(g, data["mistakes"]))

    register(Exercise("my_op", topic="<topic>", summary="..."))
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import io
import os
import textwrap
import importlib
import numbers
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .runner import (Call, CallableWatch, ForbiddenCallable, ForbiddenOp, NotPlainData, Observed, Raised,
                     TorchFunctionWatch, forbidden_ops_used, run_call, run_calls, sanitize)

__all__ = [
    "Call", "Case", "CaseResult", "CheckFailed", "CheckResult", "Exercise", "Raised", "Mismatch",
    "EXERCISES", "HiddenSuiteUnavailable", "check", "compare", "expect_tensor", "expect_array",
    "expect_number", "expect_raises", "register", "what_differs", "rel_error", "run_case", "sanitize",
    "ForbiddenOp", "forbidden_ops_used", "verifier", "explainer", "known_mistake", "run_suite",
    # re-exported from .runner, where the call loop lives
    "matches", "revealing", "CallableWatch", "ForbiddenCallable", "NotPlainData", "Observed", "TorchFunctionWatch", "run_call", "run_calls",
]

SUITES = ("visible", "hidden")


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CaseResult:
    """The outcome of one case: plain data only, so it can cross a process boundary."""

    name: str
    passed: bool
    message: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome of one suite of one exercise. ``passed`` is True iff every case passed."""

    exercise: str
    suite: str
    cases: tuple[CaseResult, ...]
    seconds: float
    summary: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    @property
    def failures(self) -> tuple[CaseResult, ...]:
        return tuple(c for c in self.cases if not c.passed)

    def headline(self) -> str:
        n, ok = len(self.cases), sum(c.passed for c in self.cases)
        mark = "PASSED" if self.passed else "FAILED"
        return f"{mark} {self.exercise} ({self.suite}): {ok}/{n} cases passed in {self.seconds:.2f} s"

    def report(self, width: int | None = None) -> str:
        """The headline, what was verified, and the first failure in full; failure lines wrapped at
        ``width`` characters (the message of :class:`CheckFailed` uses ``REPORT_WIDTH``)."""
        lines = [self.headline()]
        if self.passed:
            return lines[0] + (f"; verified: {self.summary}" if self.summary else "")
        first, *rest = self.failures
        lines.append(f"  case '{first.name}':")
        lines.extend("    " + line for line in first.message.splitlines())
        if rest:
            lines.append("  also failing: " + "; ".join(f"'{c.name}'" for c in rest[:6])
                         + (" ..." if len(rest) > 6 else ""))
        return "\n".join(_wrap(line, width) if width else line for line in lines)

    __str__ = report

    def to_dict(self) -> dict:
        return {"exercise": self.exercise, "suite": self.suite, "seconds": self.seconds,
                "summary": self.summary, "passed": self.passed,
                "cases": [c.to_dict() for c in self.cases]}

    @classmethod
    def from_dict(cls, d: dict) -> "CheckResult":
        return cls(d["exercise"], d["suite"], tuple(CaseResult(**c) for c in d["cases"]),
                   float(d["seconds"]), d.get("summary", ""))


REPORT_WIDTH = 80  # nbgrader validate (CLI and the Validate dialog) cuts lines at 83 characters


def _wrap(line: str, width: int) -> str:
    """Wrap a long report line at word boundaries, continuation lines indented under its text."""
    if len(line) <= width:
        return line
    indent = line[:len(line) - len(line.lstrip())]
    return textwrap.fill(line, width=width, subsequent_indent=indent + "  ", break_long_words=False,
                         break_on_hyphens=False)


class CheckFailed(AssertionError):
    """Raised by :func:`check` when a case fails. ``.result`` holds the full :class:`CheckResult`."""

    def __init__(self, result: CheckResult):
        super().__init__(result.report(REPORT_WIDTH))
        self.result = result

    def _render_traceback_(self) -> list[str]:
        """What IPython (the notebook, nbgrader validate) shows: the report, not the checker's stack; the report
        starts on its own line, so no line is longer than ``REPORT_WIDTH`` (nbgrader validate cuts them)."""
        return [f"{type(self).__name__}:", *str(self).splitlines()]


class HiddenSuiteUnavailable(RuntimeError):
    """The hidden suites ship only with the grader's copy of the package."""


class Mismatch(Exception):
    """Raised inside ``verify`` to fail a case with a message (converted into a failed CaseResult)."""


# --------------------------------------------------------------------------------------------
# Calling the student's function
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Case:
    """A named check, as plain data: the calls to make, and how to verify their outcomes.

    ``verify`` names a verifier registered with :func:`verifier`; it is called as
    ``verifier(outcomes, data, reveal)`` and raises :class:`Mismatch`. ``outcomes`` has one entry per
    call: the sanitized return value, or a :class:`Raised`. Unless ``expects_error`` is set, a call that
    raised fails the case before the verifier runs; the explainer registered under ``explain`` (if any)
    may then name a likely cause of the exception. ``reveal`` is False for hidden cases: their messages
    show no inputs, expected values, shapes or counts. ``about`` says what a hidden case is about (its
    name would reveal the inputs: the feedback shows hidden cases as "hidden case i (about)").
    """

    name: str
    calls: list
    verify: str
    data: dict = dataclasses.field(default_factory=dict)
    expects_error: bool = False
    explain: str | None = None
    about: str = ""
    reveal: bool = True

    def to_dict(self) -> dict:
        calls = [(call.args, call.kwargs, call.observer) for call in self.calls]
        return {"name": self.name, "calls": calls, "verify": self.verify, "data": self.data,
                "expects_error": self.expects_error, "explain": self.explain, "about": self.about,
                "reveal": self.reveal}

    @classmethod
    def from_dict(cls, d: dict) -> "Case":
        calls = [Call(*args, **kwargs).observed_by(observer) for args, kwargs, observer in d["calls"]]
        return cls(d["name"], calls, d["verify"], d["data"], d["expects_error"], d["explain"], d["about"],
                   d["reveal"])


VERIFIERS: dict[str, Callable[[list, dict, bool], None]] = {}
EXPLAINERS: dict[str, Callable[[Raised, dict], str | None]] = {}


def verifier(name: str):
    """Register ``fn(outcomes, data, reveal)`` as the verifier named ``name`` (raises :class:`Mismatch`)."""
    def register_verifier(fn):
        if name in VERIFIERS:
            raise ValueError(f"verifier {name!r} is registered twice")
        VERIFIERS[name] = fn
        return fn
    return register_verifier


def explainer(name: str):
    """Register ``fn(raised, data) -> likely cause or None`` for cases whose calls raised."""
    def register_explainer(fn):
        if name in EXPLAINERS:
            raise ValueError(f"explainer {name!r} is registered twice")
        EXPLAINERS[name] = fn
        return fn
    return register_explainer


def _same(got, output, tol: float) -> bool:
    """``got`` equals a known mistake's ``output`` (tensors and arrays to ``tol``, tuples element-wise)."""
    if isinstance(output, (torch.Tensor, np.ndarray)):
        if not isinstance(got, (torch.Tensor, np.ndarray)):
            return False
        g = torch.as_tensor(np.asarray(got)) if isinstance(got, np.ndarray) else got
        return matches(g, torch.as_tensor(output), tol)
    if isinstance(output, (tuple, list)):
        return isinstance(got, (tuple, list)) and len(got) == len(output) and all(
            _same(g, o, tol) for g, o in zip(got, output))
    return type(got) is type(output) and got == output


def known_mistake(got, mistakes, tol: float = 1e-5) -> str | None:
    """The cause of the first known mistake whose output ``got`` equals: ``mistakes`` is a list of
    ``(output, cause)`` pairs computed grader-side on the same inputs (``hidden.mistake_outputs``)."""
    return next((cause for output, cause in mistakes if _same(got, output, tol)), None)


def run_case(fn: Callable, case: Case, forbidden: Sequence[ForbiddenOp] = ()) -> CaseResult:
    """Run a case's calls and verify their outcomes; never raises."""
    outcomes, used = run_calls(fn, case.calls, forbidden)
    return verify_case(case, outcomes, used)


_REVEAL: contextvars.ContextVar[bool] = contextvars.ContextVar("reveal", default=True)


def revealing() -> bool:
    """Whether the case being verified may show its values (False while a hidden case is verified)."""
    return _REVEAL.get()


def verify_case(case: Case, outcomes: list, forbidden_used: Sequence[str] = ()) -> CaseResult:
    """Decide a case from plain outcomes (possibly produced in another process); never raises."""
    token = _REVEAL.set(case.reveal)
    try:
        message = _failure(case, outcomes, forbidden_used)
    except Mismatch as exc:
        message = str(exc)
    except Exception as exc:  # noqa: BLE001 - a bug in a check must still produce a result
        message = (f"the check itself failed ({type(exc).__name__}: {exc}); please report this to the course "
                   "staff")
    finally:
        _REVEAL.reset(token)
    return CaseResult(case.name, message is None, message or "")


def _failure(case: Case, outcomes: list, forbidden_used: Sequence[str]) -> str | None:
    """Why the case fails (None if it passes); a verifier's Mismatch propagates."""
    if forbidden_used:
        return (f"your function calls {', '.join(forbidden_used)}; this exercise asks you to implement it "
                "yourself, without the library version")
    if not case.expects_error:
        for outcome in outcomes:
            outcome = outcome.value if isinstance(outcome, Observed) else outcome
            if isinstance(outcome, Raised):
                explain = EXPLAINERS.get(case.explain) if case.explain else None
                cause = explain(outcome, case.data) if explain and outcome.type_name not in (
                    "NotImplementedError", "WrongType", "ModifiedInput") else None
                return _describe_raised(outcome, case.reveal) + (f"\nlikely cause: {cause}" if cause else "")
    VERIFIERS[case.verify](outcomes, case.data, case.reveal)
    return None


def _describe_raised(outcome: Raised, reveal: bool = True) -> str:
    if outcome.type_name == "NotImplementedError":
        return ("not implemented yet: replace `raise NotImplementedError()` in the solution cell "
                "with your code, then run that cell again")
    if outcome.type_name in ("WrongType", "ModifiedInput"):
        return "your function " + outcome.message
    if not reveal:  # the student's own message could quote the hidden inputs (shapes, sizes)
        return (f"your function raised {outcome.type_name} (its message is not shown for hidden cases)"
                + (f"\n  (raised at {outcome.where})" if outcome.where else ""))
    return "your function raised " + outcome.describe()


# --------------------------------------------------------------------------------------------
# Comparing outputs
# --------------------------------------------------------------------------------------------
def rel_error(x, y) -> float:
    """The largest elementwise relative error max |x - y| / max(1e-8, |x| + |y|) (as in CS231n)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    if x.shape != y.shape:
        raise ValueError(f"rel_error needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.numel() == 0:
        return 0.0
    return float(((x - y).abs() / (x.abs() + y.abs()).clamp_min(1e-8)).max())


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v + 0.0:.6g}"
    return str(v)


def expect_tensor(value, *, shape: Sequence[int] | None = None, dtype: torch.dtype | None = None,
                  floating: bool = False, name: str = "output") -> torch.Tensor:
    """Require a ``torch.Tensor`` with the given shape and dtype; raise Mismatch saying what differs."""
    if isinstance(value, np.ndarray):
        raise Mismatch(f"{name} is an np.ndarray; expected a torch.Tensor (use torch.from_numpy or "
                       "build the result with torch operations)")
    if not isinstance(value, torch.Tensor):
        raise Mismatch(f"{name} is a {type(value).__name__}; expected a torch.Tensor")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise Mismatch(f"{name} has shape {tuple(value.shape)}; expected {tuple(shape)}" if revealing()
                       else f"{name} has the wrong shape")
    if dtype is not None and value.dtype != dtype:
        # A dtype is part of the specification, no secret: hidden cases name it too.
        raise Mismatch(f"{name} has dtype {value.dtype}; expected {dtype}"
                       + (" (keep the dtype of the input)" if dtype.is_floating_point else ""))
    if floating and not value.is_floating_point():
        raise Mismatch(f"{name} has dtype {value.dtype}; expected a floating-point dtype")
    return value


def expect_array(value, *, shape: Sequence[int] | None = None, kind: str | None = None,
                 name: str = "output") -> np.ndarray:
    """Require an ``np.ndarray`` (``kind``: 'i' integer, 'f' float, 'b' bool) of the given shape."""
    if isinstance(value, torch.Tensor):
        raise Mismatch(f"{name} is a torch.Tensor; expected an np.ndarray")
    if not isinstance(value, np.ndarray):
        raise Mismatch(f"{name} is a {type(value).__name__}; expected an np.ndarray")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise Mismatch(f"{name} has shape {value.shape}; expected {tuple(shape)}" if revealing()
                       else f"{name} has the wrong shape")
    kinds = {"i": "iu", "f": "f", "b": "b"}
    if kind is not None and value.dtype.kind not in kinds[kind]:
        names = {"i": "an integer", "f": "a floating-point", "b": "a boolean"}
        raise Mismatch(f"{name} has dtype {value.dtype}; expected {names[kind]} dtype")
    return value


def expect_number(value, *, integer: bool = False, name: str = "output") -> float:
    """Require a Python/numpy number (or a 0-d tensor) and return it as a float or int."""
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise Mismatch(f"{name} is a {type(value).__name__}; expected {'an int' if integer else 'a number'}")
    if integer:
        if not isinstance(value, numbers.Integral):
            raise Mismatch(f"{name} is {value!r}; expected an int" if revealing()
                           else f"{name} is a {type(value).__name__}; expected an int")
        return int(value)
    return float(value)


def expect_raises(outcome, error_types: tuple[str, ...] = ("ValueError",), mentioning: str = "") -> None:
    """Require that a call raised one of ``error_types`` (by name), optionally with a word in its message."""
    if not isinstance(outcome, Raised):
        raise Mismatch(f"expected {' or '.join(error_types)} to be raised, but the function returned normally")
    if outcome.type_name not in error_types:
        if outcome.type_name == "NotImplementedError":
            raise Mismatch(_describe_raised(outcome))
        got = outcome.describe() if revealing() else outcome.type_name  # its message may quote hidden inputs
        raise Mismatch(f"expected {' or '.join(error_types)}, but got {got}")
    if mentioning and mentioning.lower() not in outcome.message.lower():
        raise Mismatch(f"the {outcome.type_name} is right, but its message should mention '{mentioning}'"
                       + (f" (got: {outcome.message!r})" if revealing() else ""))


def compare(got: torch.Tensor, expected: torch.Tensor, *, atol: float | None = None,
            rtol: float | None = None, name: str = "output",
            diagnose: Callable[[torch.Tensor], str | None] | None = None, reveal: bool | None = None) -> None:
    """Compare values (shapes/dtypes are checked first by ``expect_tensor``); raise a detailed Mismatch.

    The message gives the first mismatching index with expected and got values, how many entries
    differ, the tolerance, and ``diagnose(got)`` (a likely cause) where one is recognised. With
    ``reveal=False`` (default: False while a hidden case is verified) no values, counts or indices are shown.
    """
    reveal = revealing() if reveal is None else reveal
    expected = torch.as_tensor(expected)
    got = expect_tensor(got, shape=expected.shape, name=name)
    if atol is None or rtol is None:
        precise = expected.dtype == torch.float64
        atol = (1e-8 if precise else 1e-4) if atol is None else atol
        rtol = (1e-6 if precise else 1e-4) if rtol is None else rtol
    g64, e64 = got.to(torch.float64), expected.to(torch.float64)
    close = torch.isclose(g64, e64, rtol=rtol, atol=atol, equal_nan=True)
    if bool(close.all()):
        return
    bad = (~close).nonzero()
    first = tuple(int(i) for i in bad[0])
    lines = [f"{name} values differ: {bad.shape[0]} of {close.numel()} entries are off "
             f"(tolerance atol={atol:g}, rtol={rtol:g})" if reveal
             else f"{name} values differ (tolerance atol={atol:g}, rtol={rtol:g})"]
    if reveal:
        lines.append(f"first mismatch at index {first}: expected {_fmt(float(e64[first]))}, "
                     f"got {_fmt(float(g64[first]))}")
        finite = torch.isfinite(g64).all() and torch.isfinite(e64).all()
        if finite:
            lines.append(f"max abs error {float((g64 - e64).abs().max()):.3g}, "
                         f"rel_error {rel_error(g64, e64):.3g}")
    if bool(torch.isnan(g64).any()) and not bool(torch.isnan(e64).any()):
        lines.append("your output contains NaN")
    cause = diagnose(got) if diagnose is not None else None
    if cause:
        lines.append(f"likely cause: {cause}")
    else:
        pattern = what_differs(g64, e64, close)
        if pattern:
            lines.append(f"what differs: {pattern}")
    raise Mismatch("\n".join(lines))


def _along_first_axis(close: torch.Tensor) -> str | None:
    """Some items along the first axis (images of a batch, boxes, rows) right and others wrong."""
    if close.ndim < 2 or close.shape[0] < 2:
        return None
    ok = close.reshape(close.shape[0], -1).all(1)
    if not bool(ok.any()):
        return None
    if bool(ok[0]) and not bool(ok[1:].any()):
        return ("only the first entry along the first axis (the first image of a batch, the first row) is "
                "right; every other one differs: is the whole batch processed, with its own values?")
    if not revealing():
        return "some entries along the first axis are right and others differ"
    return f"{int((~ok).sum())} of {ok.numel()} entries along the first axis differ, the others are right"


def _borders(close: torch.Tensor) -> str | None:
    """Only the outer rows/columns of the last two axes differ (padding, cropping, edge handling)."""
    if close.ndim < 2 or min(close.shape[-2:]) < 3:
        return None
    inner = close[..., 1:-1, 1:-1]
    if bool(inner.all()):
        return "only the border (the outermost rows and columns) differs: check padding, cropping or the edges"
    border = close.clone()
    border[..., 1:-1, 1:-1] = True
    if bool(border.all()):
        return "the border is right but the interior differs"
    return None


def _last_axis(close: torch.Tensor) -> str | None:
    """Some positions of a short last axis (box coordinates, channels last) right and others wrong."""
    if close.ndim < 2 or not 2 <= close.shape[-1] <= 8:
        return None
    ok = close.reshape(-1, close.shape[-1]).all(0)
    if bool(ok.all()) or not bool(ok.any()):
        return None
    wrong = ", ".join(str(int(i)) for i in (~ok).nonzero().flatten())
    return f"only positions {wrong} of the last axis differ (for boxes: which coordinates are wrong)"


def _scaled(got: torch.Tensor, expected: torch.Tensor) -> str | None:
    """``got`` is ``expected`` times a constant, or ``expected`` plus a constant."""
    if not bool(got.any()):
        return "your output is zero everywhere"
    norm = float((expected * expected).sum())
    if norm > 0:
        factor = float((got * expected).sum()) / norm
        if torch.allclose(got, factor * expected, rtol=1e-4, atol=1e-6) and abs(factor - 1) > 1e-3:
            return "your output is the expected one times a constant factor" + (
                f" ({factor:.4g})" if revealing() else "")
    shift = got - expected
    offset = float(shift.mean())
    if torch.allclose(shift, torch.full_like(shift, offset), rtol=1e-4, atol=1e-6):
        return "your output is off by the same constant everywhere" + (f" ({offset:.4g})" if revealing() else "")
    return None


def _moved(got: torch.Tensor, expected: torch.Tensor) -> str | None:
    """The right values in the wrong places: a transpose, an axis order or an index mix-up."""
    if torch.allclose(got, expected, rtol=1e-4, atol=1e-6):
        return "every value is close, but outside the tolerance (an epsilon, or float32 arithmetic?)"
    if got.numel() < 2 or not torch.allclose(got.flatten().sort().values, expected.flatten().sort().values,
                                              rtol=1e-4, atol=1e-6):
        return None
    if got.ndim >= 2 and got.shape[-1] == got.shape[-2] and torch.allclose(got, expected.transpose(-1, -2),
                                                                          rtol=1e-4, atol=1e-6):
        return "your output is the expected one with its last two axes transposed"
    return "the right values, in the wrong places (an axis order, a transpose or an index mix-up)"


def what_differs(got: torch.Tensor, expected: torch.Tensor, close: torch.Tensor) -> str | None:
    """Where no known mistake matches: the structure of the difference (no values), or None.

    Needs no answer beyond the expected output the case already holds; shows no values of hidden cases."""
    if not (bool(torch.isfinite(got).all()) and bool(torch.isfinite(expected).all())):
        return None
    for describe in (lambda: _moved(got, expected), lambda: _scaled(got, expected),
                     lambda: _along_first_axis(close), lambda: _borders(close), lambda: _last_axis(close)):
        found = describe()
        if found:
            return found
    return None


def matches(got: torch.Tensor, candidate: torch.Tensor, tol: float = 1e-5) -> bool:
    """True if ``got`` equals ``candidate`` in shape and value (used to recognise known bugs)."""
    candidate = torch.as_tensor(candidate)
    return (tuple(got.shape) == tuple(candidate.shape)
            and bool(torch.allclose(got.to(torch.float64), candidate.to(torch.float64), atol=tol, rtol=tol,
                                    equal_nan=True)))


# --------------------------------------------------------------------------------------------
# Exercises and the check() entry point
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Exercise:
    """A graded function: its name, topic, what its checks verify, and the library calls it may not use.

    Its cases are built grader-side (``lecturelib.hidden.<topic>``); students get the visible ones as data.
    """

    name: str
    topic: str
    summary: str
    forbidden: tuple = ()


EXERCISES: dict[str, Exercise] = {}
VISIBLE_DATA = Path(__file__).resolve().parent / "visible"


def register(exercise: Exercise) -> Exercise:
    if exercise.name in EXERCISES:
        raise ValueError(f"exercise {exercise.name!r} is registered twice")
    EXERCISES[exercise.name] = exercise
    return exercise


def _grader_side():
    """``lecturelib.hidden`` (grader copy only), or HiddenSuiteUnavailable in the student package."""
    try:
        return importlib.import_module("lecturelib.hidden")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("lecturelib.hidden"):
            raise HiddenSuiteUnavailable(
                "the hidden tests are not part of the student package: they run only at grading time. "
                "Run the visible tests with check(name, fn)") from None
        raise


@functools.lru_cache(maxsize=None)
def _visible_bytes(topic: str) -> bytes:
    """The visible cases of a topic, serialized: the file ``make release`` wrote, or (grader copy) built now."""
    # The sandboxed grader hands the kernel fresh visible cases in a folder of its own (the grader copy of the
    # package has no data files: its visible cases are built from the specs).
    for folder in (os.environ.get("LECTURELIB_VISIBLE_DATA"), VISIBLE_DATA):
        path = Path(folder) / f"{topic}.pt" if folder else None
        if path is not None and path.is_file():
            return path.read_bytes()
    try:
        hidden = _grader_side()
    except HiddenSuiteUnavailable:
        raise FileNotFoundError(f"the visible cases of topic {topic!r} are missing ({path}): reinstall the "
                                "student package from the course release") from None
    return hidden.visible_bytes(topic)


def dump_cases(table: dict[str, list[Case]]) -> bytes:
    """Serialize cases by exercise, each exercise on its own: a check loads only its own exercise's (measured:
    6 ms saved on every check of the segmentation topic, which otherwise decoded all 864 tensors of the topic)."""
    def serialized(value) -> bytes:
        buffer = io.BytesIO()
        torch.save(value, buffer)
        return buffer.getvalue()
    return serialized({name: serialized([case.to_dict() for case in cases]) for name, cases in table.items()})


def load_cases(data: bytes, name: str | None = None) -> dict[str, list[Case]]:
    """Cases serialized by :func:`dump_cases` (those of exercise ``name`` only, if given): fresh objects on every
    call."""
    # Our own release data (tensors, small models): never a file a student or a submission wrote.
    table = torch.load(io.BytesIO(data), weights_only=False)
    return {key: [Case.from_dict(d) for d in torch.load(io.BytesIO(blob), weights_only=False)]
            for key, blob in table.items() if name is None or key == name}


def build_cases(name: str, suite: str = "visible", student: str | None = None,
                secret: str | None = None) -> tuple[Exercise, list[Case]]:
    """Look up an exercise and the cases of one suite (the hidden suite: grader copy only; with a course
    ``secret``, its random inputs are the ``student``'s own: ``hidden.personal_seed``)."""
    if not isinstance(name, str) or name not in EXERCISES:
        raise ValueError(f"unknown exercise {name!r}; known exercises: {', '.join(sorted(EXERCISES))}")
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {SUITES}, got {suite!r}")
    exercise = EXERCISES[name]
    if suite == "visible":
        return exercise, load_cases(_visible_bytes(exercise.topic), name)[name]
    return exercise, _grader_side().build(name, suite, student, secret)


def quiet():
    """Silence warnings raised while checking, so a correct answer never prints to stderr."""
    return warnings.catch_warnings(action="ignore")


@contextlib.contextmanager
def seeded(seed: int):
    """Run with torch and numpy seeded, restoring the caller's random state afterwards."""
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)


def run_suite(name: str, fn: Callable, suite: str = "visible") -> CheckResult:
    """Run every case of one suite and return the full :class:`CheckResult` (for tests and tools);
    never raises for a wrong answer (see :func:`check`)."""
    exercise, cases = build_cases(name, suite)
    start = time.perf_counter()
    with quiet(), seeded(0):
        results = tuple(run_case(fn, case, exercise.forbidden) for case in cases)
    return CheckResult(name, suite, results, time.perf_counter() - start, exercise.summary)


def check(name: str, fn: Callable, suite: str = "visible", *, verbose: bool = True) -> None:
    """Check a student's implementation of exercise ``name``.

    Prints one line saying what was verified when every case passes (and returns None, so a notebook
    shows nothing more); raises :class:`CheckFailed` (an ``AssertionError``) describing the first failing
    case otherwise. :func:`run_suite` returns the full result instead.
    """
    __tracebackhide__ = True     # pytest shows the caller, not this frame
    if not callable(fn):
        raise TypeError(f"fn must be the function you implemented, got {type(fn).__name__}")
    result = run_suite(name, fn, suite)
    if not result.passed:
        raise CheckFailed(result)
    if verbose:
        print(result.report())
