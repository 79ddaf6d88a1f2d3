"""The check framework: one entry point, one result type, messages that say what is wrong.

An *exercise* is a named function that students implement. Its checks are a list of *cases*; a case
calls the student's function one or more times (``calls``) and then *verifies* what came back. The
split matters for honest grading: the student's code only ever turns inputs into outputs, and the
outputs are first reduced to plain data (exact ``torch.Tensor`` / ``np.ndarray`` / numbers, copied)
by :func:`sanitize` before any comparison. The verdict is computed from that plain data alone, so it
can be computed in another process than the one that ran the student's code.

Writing the checks of a new exercise (see ``checks/segmentation.py`` for complete examples)::

    def _cases(specs, reveal):              # specs: plain dicts, visible here, hidden in lecturelib.hidden
        for spec in specs:
            x = ...                         # inputs, deterministic from the spec's seed
            expected = oracle(x)            # an independent oracle: torch built-in, scipy, brute force
            def verify(outcomes, x=x, expected=expected):
                got = expect_tensor(outcomes[0], shape=expected.shape, dtype=expected.dtype)
                compare(got, expected, diagnose=lambda g: my_diagnosis(g, x), reveal=reveal)
            yield Case(describe(spec), [Call(x)], verify)

    register(Exercise("my_op", topic="segmentation", summary="...", cases=_cases, visible=[...]))
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import numbers
import time
import traceback
import warnings
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = [
    "Call", "Case", "CaseResult", "CheckFailed", "CheckResult", "Exercise", "Raised", "Mismatch",
    "EXERCISES", "HiddenSuiteUnavailable", "check", "compare", "expect_tensor", "expect_array",
    "expect_number", "expect_raises", "register", "rel_error", "run_case", "sanitize",
    "ForbiddenOp", "forbidden_ops_used",
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

    def report(self) -> str:
        """The headline, what was verified, and the first failure in full."""
        lines = [self.headline()]
        if self.passed:
            return lines[0] + (f"; verified: {self.summary}" if self.summary else "")
        first, *rest = self.failures
        lines.append(f"  case '{first.name}':")
        lines.extend("    " + line for line in first.message.splitlines())
        if rest:
            lines.append("  also failing: " + "; ".join(f"'{c.name}'" for c in rest[:6])
                         + (" ..." if len(rest) > 6 else ""))
        return "\n".join(lines)

    __str__ = report

    def to_dict(self) -> dict:
        return {"exercise": self.exercise, "suite": self.suite, "seconds": self.seconds,
                "summary": self.summary, "passed": self.passed,
                "cases": [c.to_dict() for c in self.cases]}

    @classmethod
    def from_dict(cls, d: dict) -> "CheckResult":
        return cls(d["exercise"], d["suite"], tuple(CaseResult(**c) for c in d["cases"]),
                   float(d["seconds"]), d.get("summary", ""))


class CheckFailed(AssertionError):
    """Raised by :func:`check` when a case fails. ``.result`` holds the full :class:`CheckResult`."""

    def __init__(self, result: CheckResult):
        super().__init__(result.report())
        self.result = result

    def _render_traceback_(self) -> list[str]:
        """What IPython (the notebook, nbgrader validate) shows: the report, not the checker's stack."""
        return f"{type(self).__name__}: {self}".splitlines()


class HiddenSuiteUnavailable(RuntimeError):
    """The hidden suites ship only with the grader's copy of the package."""


class Mismatch(Exception):
    """Raised inside ``verify`` to fail a case with a message (converted into a failed CaseResult)."""


# --------------------------------------------------------------------------------------------
# Calling the student's function
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Raised:
    """The student's function raised: its exception type and message, as plain data."""

    type_name: str
    message: str
    where: str = ""

    def describe(self) -> str:
        text = f"{self.type_name}: {self.message}" if self.message else self.type_name
        return text + (f"\n  (raised at {self.where})" if self.where else "")


@dataclasses.dataclass(frozen=True)
class ForbiddenOp:
    """A library operator that an exercise asks the student to implement by hand.

    ``aten`` is the ATen operator name seen by torch's dispatcher (so calls through any alias,
    an ``nn.Module`` or autograd are all seen); ``when`` optionally filters on its arguments.
    """

    aten: str
    what: str
    when: Callable[[tuple], bool] | None = None


class _ForbiddenOpRecorder(TorchDispatchMode):
    """Records which forbidden ATen operators run while it is active (forward and backward)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Checks are never compiled: without this, the first check imports torch._dynamo (about 1 s).
        return False

    def __init__(self, forbidden: Sequence[ForbiddenOp]):
        super().__init__()
        self._by_name: dict[str, list[ForbiddenOp]] = {}
        for op in forbidden:
            self._by_name.setdefault(op.aten, []).append(op)
        self.used: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for op in self._by_name.get(func.overloadpacket.__name__, ()):
            if (op.when is None or op.when(args)) and op.what not in self.used:
                self.used.append(op.what)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def forbidden_ops_used(forbidden: Sequence[ForbiddenOp]):
    """Context manager yielding a list that fills with the forbidden ops called inside it.

    Besides ``ForbiddenOp`` (ATen operators), ``forbidden`` may hold watchers of what the dispatcher
    cannot see: any object with a ``watch(used)`` method returning a context manager that appends the
    names of forbidden things called inside it to ``used`` (e.g. Python callables such as scipy's
    solvers, see ``checks/detr.py``).
    """
    if not forbidden:
        yield []
        return
    recorder = _ForbiddenOpRecorder([op for op in forbidden if isinstance(op, ForbiddenOp)])
    with contextlib.ExitStack() as stack:
        if recorder._by_name:
            stack.enter_context(recorder)
        for watcher in forbidden:
            if not isinstance(watcher, ForbiddenOp):
                stack.enter_context(watcher.watch(recorder.used))
        yield recorder.used


@dataclasses.dataclass
class Call:
    """One call of the student's function: ``fn(*args, **kwargs)``.

    ``observer`` (set with :meth:`observed_by`) is a module-level function ``observer(args, kwargs)``
    that the harness runs right after the call, where the call ran, whether it returned or raised; its
    result (plain data, e.g. a model's hooks and modes) comes back with the outcome as :class:`Observed`.
    """

    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)
    observer: Callable | None = None

    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs
        self.observer = None

    def observed_by(self, observer: Callable) -> "Call":
        self.observer = observer
        return self


@dataclasses.dataclass(frozen=True)
class Observed:
    """The outcome of an observed call (``value``: plain data or Raised) and what its observer saw."""

    value: Any
    facts: Any


@dataclasses.dataclass
class Case:
    """A named check: the calls to make, and ``verify(outcomes)`` which raises :class:`Mismatch`.

    ``outcomes`` has one entry per call: the sanitized return value, or a :class:`Raised`.
    Unless ``expects_error`` is set, a call that raised fails the case before ``verify`` runs;
    ``explain_error(raised)`` may then name a likely cause of the exception.
    """

    name: str
    calls: list[Call]
    verify: Callable[[list], None]
    expects_error: bool = False
    explain_error: Callable[[Raised], str | None] | None = None
    about: str = ""  # what a hidden case is about, safe to show (its name reveals the inputs)


def _clone_arg(value):
    """Fresh copies of tensor/array arguments, so a function that modifies its input in place
    cannot change the inputs of the oracle or of later calls."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (list, tuple)):
        return type(value)(_clone_arg(v) for v in value)
    if isinstance(value, dict):
        return {k: _clone_arg(v) for k, v in value.items()}
    return value


_PLAIN_SCALARS = (bool, int, float, str, type(None), np.bool_, np.integer, np.floating)


def sanitize(value, _depth: int = 0):
    """Reduce a returned value to plain data, refusing anything that is not what it claims to be.

    Exact ``torch.Tensor`` and ``np.ndarray`` (not subclasses: those can override comparisons)
    are copied; tuples, lists and dicts are rebuilt; numbers must be of a built-in numeric type.
    Anything else raises :class:`Mismatch` naming its type.
    """
    if _depth > 4:
        raise Mismatch("returned a structure nested too deeply")
    if type(value) is torch.Tensor:
        if value.is_sparse or value.layout != torch.strided:
            raise Mismatch(f"returned a {value.layout} tensor; expected a dense (strided) tensor")
        return value.detach().cpu().clone()
    if type(value) is torch.nn.Parameter:
        return value.detach().cpu().clone()
    if type(value) is np.ndarray:
        if value.dtype == object:
            raise Mismatch("returned an np.ndarray of dtype object; expected a numeric array")
        return value.copy()
    if type(value) in (tuple, list):
        return type(value)(sanitize(v, _depth + 1) for v in value)
    if type(value) is dict:
        return {str(k): sanitize(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, _PLAIN_SCALARS) and type(value).__module__ in ("builtins", "numpy"):
        return value.item() if isinstance(value, np.generic) else value
    raise Mismatch(f"returned an object of type {type(value).__module__}.{type(value).__qualname__}; "
                   "expected a plain torch.Tensor, np.ndarray, number or tuple of those")


def _where(exc: BaseException) -> str:
    """The innermost frame of a traceback that is not inside torch/numpy: the student's line."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "site-packages" not in f.filename and "/lecturelib/checks/" not in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    name = "your notebook" if f.filename.startswith("<ipython-input") or "/ipykernel_" in f.filename else f.filename
    return f"{name}, line {f.lineno}: {(f.line or '').strip()}"


def run_call(fn: Callable, call: Call, forbidden: Sequence[ForbiddenOp] = ()):
    """Run one call; return ``(outcome, forbidden_used)`` where outcome is plain data or Raised."""
    args, kwargs = _clone_arg(call.args), _clone_arg(call.kwargs)
    outcome, used = _call(fn, args, kwargs, forbidden)
    if getattr(call, "observer", None) is not None:
        outcome = Observed(outcome, sanitize(call.observer(args, kwargs)))
    return outcome, used


def _call(fn, args, kwargs, forbidden):
    with forbidden_ops_used(forbidden) as used:
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the student's error becomes data
            return Raised(type(exc).__name__, str(exc)[:500], _where(exc)), list(used)
    try:
        return sanitize(value), list(used)
    except Mismatch as exc:
        return Raised("WrongType", str(exc)), list(used)


def run_case(fn: Callable, case: Case, forbidden: Sequence[ForbiddenOp] = ()) -> CaseResult:
    """Run a case's calls and verify their outcomes; never raises."""
    outcomes, used = [], []
    for call in case.calls:
        outcome, used_here = run_call(fn, call, forbidden)
        outcomes.append(outcome)
        used += [u for u in used_here if u not in used]
    return verify_case(case, outcomes, used)


def verify_case(case: Case, outcomes: list, forbidden_used: Sequence[str] = ()) -> CaseResult:
    """Decide a case from plain outcomes (possibly produced in another process)."""
    if forbidden_used:
        return CaseResult(case.name, False,
                          f"your function calls {', '.join(forbidden_used)}; this exercise asks you to "
                          "implement it yourself, without the library version")
    if not case.expects_error:
        for outcome in outcomes:
            outcome = outcome.value if isinstance(outcome, Observed) else outcome
            if isinstance(outcome, Raised):
                message = _describe_raised(outcome)
                cause = case.explain_error(outcome) if case.explain_error and outcome.type_name not in (
                    "NotImplementedError", "WrongType") else None
                return CaseResult(case.name, False, message + (f"\nlikely cause: {cause}" if cause else ""))
    try:
        case.verify(outcomes)
    except Mismatch as exc:
        return CaseResult(case.name, False, str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug in a check must still produce a result
        return CaseResult(case.name, False, f"the check itself failed ({type(exc).__name__}: {exc}); "
                                            "please report this to the course staff")
    return CaseResult(case.name, True)


def _describe_raised(outcome: Raised) -> str:
    if outcome.type_name == "NotImplementedError":
        return ("not implemented yet: replace `raise NotImplementedError()` in the solution cell "
                "with your code, then run that cell again")
    if outcome.type_name == "WrongType":
        return "your function " + outcome.message
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
        raise Mismatch(f"{name} has shape {tuple(value.shape)}; expected {tuple(shape)}")
    if dtype is not None and value.dtype != dtype:
        raise Mismatch(f"{name} has dtype {value.dtype}; expected {dtype} (the dtype of the input)")
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
        raise Mismatch(f"{name} has shape {value.shape}; expected {tuple(shape)}")
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
            raise Mismatch(f"{name} is {value!r}; expected an int")
        return int(value)
    return float(value)


def expect_raises(outcome, error_types: tuple[str, ...] = ("ValueError",), mentioning: str = "") -> None:
    """Require that a call raised one of ``error_types`` (by name), optionally with a word in its message."""
    if not isinstance(outcome, Raised):
        raise Mismatch(f"expected {' or '.join(error_types)} to be raised, but the function returned normally")
    if outcome.type_name not in error_types:
        if outcome.type_name == "NotImplementedError":
            raise Mismatch(_describe_raised(outcome))
        raise Mismatch(f"expected {' or '.join(error_types)}, but got {outcome.describe()}")
    if mentioning and mentioning.lower() not in outcome.message.lower():
        raise Mismatch(f"the {outcome.type_name} is right, but its message should mention '{mentioning}' "
                       f"(got: {outcome.message!r})")


def compare(got: torch.Tensor, expected: torch.Tensor, *, atol: float | None = None,
            rtol: float | None = None, name: str = "output",
            diagnose: Callable[[torch.Tensor], str | None] | None = None, reveal: bool = True) -> None:
    """Compare values (shapes/dtypes are checked first by ``expect_tensor``); raise a detailed Mismatch.

    The message gives the first mismatching index with expected and got values, how many entries
    differ, the tolerance, and ``diagnose(got)`` (a likely cause) where one is recognised. With
    ``reveal=False`` (hidden suites) no values are shown.
    """
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
             f"(tolerance atol={atol:g}, rtol={rtol:g})"]
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
    raise Mismatch("\n".join(lines))


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
    """A graded function: its name, topic, what its checks verify, and how to build its cases.

    ``cases(specs, reveal)`` turns plain specs into :class:`Case` objects (``reveal=False`` for the
    hidden suite: messages then show no input or expected values); ``visible`` holds the visible
    specs; the hidden specs live in ``lecturelib.hidden.<topic>.SPECS[name]`` (grader copy only).
    """

    name: str
    topic: str
    summary: str
    cases: Callable[[list, bool], Iterable[Case]]
    visible: list
    forbidden: tuple[ForbiddenOp, ...] = ()


EXERCISES: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    if exercise.name in EXERCISES:
        raise ValueError(f"exercise {exercise.name!r} is registered twice")
    EXERCISES[exercise.name] = exercise
    return exercise


def hidden_specs(exercise: Exercise) -> list:
    """The hidden specs of an exercise, from the grader-only ``lecturelib.hidden`` package."""
    try:
        module = importlib.import_module(f"lecturelib.hidden.{exercise.topic}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("lecturelib.hidden"):
            raise HiddenSuiteUnavailable(
                "the hidden tests are not part of the student package: they run only at grading time. "
                "Run the visible tests with check(name, fn)") from None
        raise
    return module.SPECS[exercise.name]


def build_cases(name: str, suite: str = "visible") -> tuple[Exercise, list[Case]]:
    """Look up an exercise and build the cases of one suite."""
    if not isinstance(name, str) or name not in EXERCISES:
        raise ValueError(f"unknown exercise {name!r}; known exercises: {', '.join(sorted(EXERCISES))}")
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {SUITES}, got {suite!r}")
    exercise = EXERCISES[name]
    specs = exercise.visible if suite == "visible" else hidden_specs(exercise)
    with _quiet(), _seeded(0):
        cases = list(exercise.cases(specs, suite == "visible"))
    if suite == "hidden":  # hidden names reveal no inputs: the feedback shows them to students
        for i, case in enumerate(cases, 1):
            case.name = f"hidden case {i}" + (f" ({case.about})" if case.about else "")
    return exercise, cases


@contextlib.contextmanager
def _quiet():
    """Silence warnings raised while checking, so a correct answer never prints to stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _seeded(seed: int):
    """Run with torch and numpy seeded, restoring the caller's random state afterwards."""
    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()
    torch.manual_seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(torch_state)
        np.random.set_state(np_state)


def run_suite(name: str, fn: Callable, suite: str = "visible") -> CheckResult:
    """Run every case of one suite; never raises for a wrong answer (see :func:`check`)."""
    exercise, cases = build_cases(name, suite)
    start = time.perf_counter()
    with _quiet(), _seeded(0):
        results = tuple(run_case(fn, case, exercise.forbidden) for case in cases)
    return CheckResult(name, suite, results, time.perf_counter() - start, exercise.summary)


def check(name: str, fn: Callable, suite: str = "visible", *, verbose: bool = True) -> CheckResult:
    """Check a student's implementation of exercise ``name``.

    Prints a one-line summary when every case passes and returns the :class:`CheckResult`;
    raises :class:`CheckFailed` (an ``AssertionError``) describing the first failing case otherwise.
    """
    __tracebackhide__ = True     # pytest shows the caller, not this frame
    if not callable(fn):
        raise TypeError(f"fn must be the function you implemented, got {type(fn).__name__}")
    result = run_suite(name, fn, suite)
    if not result.passed:
        raise CheckFailed(result)
    if verbose:
        print(result.report())
    return result
