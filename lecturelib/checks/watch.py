"""Watching what the student's function calls, beyond torch's dispatcher (``core.ForbiddenOp``).

Entries of ``Exercise.forbidden`` that have a ``watch(used)`` context manager are entered by
``core.forbidden_ops_used`` around every call of the student's function, in the notebook and in the
grader's sandbox alike; what they append to ``used`` fails the case with "your function calls ...".

* :class:`CallableWatch`: Python callables (scipy's solvers, the checker's own oracles): a profiler hook
  sees every call of a builtin or Python function whatever name it is reached by, and module attributes
  are wrapped too, for Cython functions that the profiler cannot see. It also stops a call that runs
  longer than ``TIME_LIMIT`` seconds (:class:`TimeLimitExceeded`).
* :class:`TorchFunctionWatch`: torch functions that never reach the dispatcher as one operator (on the
  CPU ``F.rms_norm`` arrives as ``pow``, ``mean`` and ``rsqrt``), seen by a torch function mode.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import signal
import sys
import threading

from torch.overrides import TorchFunctionMode

__all__ = ["ForbiddenCallable", "forbidden_callables_used", "CallableWatch", "TimeLimitExceeded", "oracles",
           "TorchFunctionWatch", "TIME_LIMIT"]


# ------------------------------------------------------------------------------------------------
# Refusing library solvers (Python callables) and bounding the running time
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ForbiddenCallable:
    """A Python-level function that an exercise asks the student to write without (``module.attribute``)."""

    module: str
    attribute: str
    what: str


def _resolve(item: ForbiddenCallable):
    try:
        module = importlib.import_module(item.module)
    except ImportError:
        return None, None
    return module, getattr(module, item.attribute, None)


def _recording_wrapper(original, what: str, used: list):
    def wrapper(*args, **kwargs):
        if what not in used:
            used.append(what)
        return original(*args, **kwargs)
    wrapper.__wrapped__ = original
    return wrapper


@contextlib.contextmanager
def forbidden_callables_used(forbidden, used: list | None = None):
    """Context manager yielding a list (``used``, or a new one) that fills with the ``what`` of forbidden
    callables called inside, as they are called.

    Two views, both undone on exit: a profiler hook (``sys.setprofile``, this thread) recognises the
    function objects themselves (builtins by identity, Python functions by their code object), so an
    alias made before the check (``from scipy.optimize import linear_sum_assignment as lsa``) is seen
    too; and the module attribute, plus any alias of it in the notebook's namespace (``__main__``), is
    replaced by a recording wrapper, which also catches Cython functions the profiler cannot see. The
    forbidden functions still run and return their result: the case then fails with a clear message.
    If another profiler is active, only the wrappers are used.
    """
    used = [] if used is None else used
    if not forbidden:
        yield used
        return
    builtins, codes, patches = {}, {}, []
    main = sys.modules.get("__main__")
    for item in forbidden:
        module, original = _resolve(item)
        if original is None:
            continue
        code = getattr(original, "__code__", None)
        if type(original).__name__ == "builtin_function_or_method":
            builtins[id(original)] = item.what
        elif code is not None and type(code).__name__ == "code":
            codes[code] = item.what
        wrapper = _recording_wrapper(original, item.what, used)
        patches.append((module, item.attribute, original))
        setattr(module, item.attribute, wrapper)
        if main is not None:
            for name, value in list(vars(main).items()):
                if value is original:
                    patches.append((main, name, original))
                    setattr(main, name, wrapper)

    def profile(frame, event, arg):
        if event == "c_call":
            what = builtins.get(id(arg))
        elif event == "call":
            what = codes.get(frame.f_code)
        else:
            return
        if what is not None and what not in used:
            used.append(what)

    previous = sys.getprofile()
    watch = previous is None and bool(builtins or codes)
    if watch:
        sys.setprofile(profile)
    try:
        yield used
    finally:
        if watch:
            sys.setprofile(None)
        for owner, name, original in reversed(patches):
            setattr(owner, name, original)


class TimeLimitExceeded(Exception):
    """Raised inside the student's function when a call runs longer than the case allows."""


@contextlib.contextmanager
def _time_limit(seconds: float | None, message: str):
    """Raise TimeLimitExceeded (every second after ``seconds``) in the main thread until the block ends."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise TimeLimitExceeded(message)

    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_timer = signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_timer[0] > 0:
            signal.setitimer(signal.ITIMER_REAL, *previous_timer)


TIME_LIMIT = 15.0  # seconds per call of the student's function (read when a call starts)


@dataclasses.dataclass(frozen=True)
class CallableWatch:
    """An entry of ``Exercise.forbidden`` for what torch's dispatcher cannot see.

    ``core.forbidden_ops_used`` enters ``watch(used)`` around every call of the student's function:
    calls of the ``callables`` are appended to ``used`` (the case then fails with "your function calls
    ..."), and with ``time_limit`` a call running longer than ``TIME_LIMIT`` seconds raises
    :class:`TimeLimitExceeded` inside the student's code (main thread only).
    """

    callables: tuple[ForbiddenCallable, ...] = ()
    time_limit: bool = True
    slow_hint: str = "an endless loop?"

    @contextlib.contextmanager
    def watch(self, used: list):
        seconds = TIME_LIMIT if self.time_limit else None
        message = f"your function ran for more than {seconds or 0:g} s and was stopped: {self.slow_hint}"
        with forbidden_callables_used(self.callables, used), _time_limit(seconds, message):
            yield used


def oracles(module: str, *names: str) -> tuple[ForbiddenCallable, ...]:
    """A checks module's own oracle functions, refused where they would answer the exercise."""
    return tuple(ForbiddenCallable(module, name, f"the checker's own oracle ({name})") for name in names)


# ------------------------------------------------------------------------------------------------
# Refusing torch functions that never reach the dispatcher as one operator
# ------------------------------------------------------------------------------------------------
class _TorchFunctionRecorder(TorchFunctionMode):
    def __init__(self, names: dict, used: list):
        super().__init__()
        self._names = names
        self._used = used

    def __torch_function__(self, func, types, args=(), kwargs=None):
        what = self._names.get(func)
        if what is not None and what not in self._used:
            self._used.append(what)
        return func(*args, **(kwargs or {}))


@dataclasses.dataclass(frozen=True)
class TorchFunctionWatch:
    """An entry of ``Exercise.forbidden`` that records calls of torch-level functions.

    ``functions`` holds ``(callable, what)`` pairs, e.g. ``(F.rms_norm, "F.rms_norm / nn.RMSNorm")``;
    a torch function mode sees them under any alias and through ``nn.Module``s.
    """

    functions: tuple[tuple[object, str], ...]

    @contextlib.contextmanager
    def watch(self, used: list):
        with _TorchFunctionRecorder(dict(self.functions), used):
            yield used
