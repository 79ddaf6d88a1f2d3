"""Running a student's function: the one loop that calls it, in the notebook's ``check`` and in the grader's
sandbox, and reduces what it returns to plain data.

This module imports nothing from ``lecturelib``: at grading time the grader sends its own copy of this source
into the sandboxed kernel at the moment of the graded call and runs it in a fresh namespace
(:func:`collect`), so a submission that replaces ``lecturelib`` modules in its process changes nothing here.
Everything the runner needs arrives as data: the calls (inputs), the forbidden library operations (as
specs: ATen operator names, module attributes), the names of observers, and a nonce per case.

* :func:`run_calls`: call the function on each call of a case, with the forbidden-op watches on, a fresh copy
  of every argument, a check that no argument was modified in place, and the observers' facts.
* :func:`sanitize`: exact tensors, arrays, numbers and tuples of those; anything else is refused.
* Watches: :class:`ForbiddenOp` (ATen operators at torch's dispatcher, whatever the Python route),
  :class:`CallableWatch` (Python callables such as scipy's solvers, with a time limit per call) and
  :class:`TorchFunctionWatch` (torch functions that never reach the dispatcher as one operator).
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import importlib
import inspect
import io
import json
import math
import signal
import sys
import threading
import traceback
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode


RUNNER_FILENAME = "<lecturelib runner>"  # the file name of this source when the grader runs it in the sandbox


class NotPlainData(Exception):
    """A returned value that is not plain data (a subclass, an object of another type, ...)."""


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
    ``torch.ops.aten``, an ``nn.Module`` or autograd are all seen).
    """

    aten: str
    what: str
    flag_arg: int | None = None  # counts only when this positional argument is truthy (e.g. `transposed`)

    def applies(self, args: tuple) -> bool:
        return self.flag_arg is None or (len(args) > self.flag_arg and bool(args[self.flag_arg]))


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
            if op.applies(args) and op.what not in self.used:
                self.used.append(op.what)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _torch_ops_calls(recorder: _ForbiddenOpRecorder):
    """``torch.ops.aten.<op>(...)`` called by name: a composite operator (``rms_norm`` on the CPU) never reaches
    the dispatch mode as itself, only as what it decomposes into, so the call is seen where it is made."""
    from torch._ops import OpOverload, OpOverloadPacket
    originals = {OpOverloadPacket: OpOverloadPacket.__call__, OpOverload: OpOverload.__call__}

    def seen(cls):
        def call(self, /, *args, **kwargs):
            packet = self if cls is OpOverloadPacket else self.overloadpacket
            for op in recorder._by_name.get(getattr(packet, "__name__", ""), ()):
                if op.applies(args) and op.what not in recorder.used:
                    recorder.used.append(op.what)
            return originals[cls](self, *args, **kwargs)
        return call

    for cls in originals:
        cls.__call__ = seen(cls)
    try:
        yield
    finally:
        for cls, original in originals.items():
            cls.__call__ = original


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
            stack.enter_context(_torch_ops_calls(recorder))
        for watcher in forbidden:
            if not isinstance(watcher, ForbiddenOp):
                stack.enter_context(watcher.watch(recorder.used))
        yield recorder.used


@dataclasses.dataclass
class Call:
    """One call of the student's function: ``fn(*args, **kwargs)``.

    ``observer`` (set with :meth:`observed_by`) names an observer of :data:`OBSERVERS` that the runner calls
    as ``observer(args, kwargs)`` right after the call, where the call ran, whether it returned or raised;
    its result (plain data, e.g. a model's hooks and modes) comes back with the outcome as :class:`Observed`.
    """

    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)
    observer: str | None = None

    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs
        self.observer = None

    def observed_by(self, observer: str | None) -> "Call":
        if isinstance(observer, str) and observer not in OBSERVERS:
            raise ValueError(f"unknown observer {observer!r}; known: {sorted(OBSERVERS)}")
        self.observer = observer
        return self


@dataclasses.dataclass(frozen=True)
class Observed:
    """The outcome of an observed call (``value``: plain data or Raised) and what its observer saw."""

    value: Any
    facts: Any


def _clone_arg(value):
    """Fresh copies of tensor/array arguments (keeping ``requires_grad``), so a function that modifies its
    input in place cannot change the inputs of the oracle or of later calls."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad)
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (list, tuple)):
        return type(value)(_clone_arg(v) for v in value)
    if isinstance(value, dict):
        return {k: _clone_arg(v) for k, v in value.items()}
    return value


def _modified(given, original) -> str | None:
    """How a tensor or array argument was changed by the call (values, dtype, shape, requires_grad, grad);
    None if it was not. Containers are searched; models are the observers' business."""
    if isinstance(original, torch.Tensor) and isinstance(given, torch.Tensor):
        if given.dtype != original.dtype or given.shape != original.shape:
            return f"its dtype or shape changed ({original.dtype} {tuple(original.shape)} -> " \
                   f"{given.dtype} {tuple(given.shape)})"
        if not torch.equal(torch.nan_to_num(given.detach(), 0.5), torch.nan_to_num(original, 0.5)) or \
                not torch.equal(given.detach().isnan(), original.isnan()):
            return "its values changed (an in-place operation such as x[...] = v, x.mul_(), x += 1)"
        if given.requires_grad != original.requires_grad:
            return "its requires_grad flag changed (requires_grad_() on the caller's tensor)"
        if given.grad is not None:
            return "its .grad was set (backward through the caller's tensor)"
        return None
    if isinstance(original, np.ndarray) and isinstance(given, np.ndarray):
        if given.dtype != original.dtype or given.shape != original.shape or \
                not np.array_equal(given, original, equal_nan=original.dtype.kind in "fc"):
            return "its values changed (an in-place operation)"
        return None
    if isinstance(original, (list, tuple)) and isinstance(given, (list, tuple)):
        if len(given) != len(original):
            return "its length changed"
        return next((m for g, o in zip(given, original) if (m := _modified(g, o))), None)
    if isinstance(original, dict) and isinstance(given, dict):
        if given.keys() != original.keys():
            return "its keys changed"
        return next((m for k in original if (m := _modified(given[k], original[k]))), None)
    return None


def _argument_names(fn, args, kwargs) -> list[tuple[str, object, object]]:
    """(parameter name, position or key) of every argument, named as the student's function names them."""
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs).arguments
        names = list(bound)
    except (TypeError, ValueError):
        names = []
    keys = list(range(len(args))) + list(kwargs)
    return [(names[i] if i < len(names) else (key if isinstance(key, str) else f"argument {key + 1}"), key)
            for i, key in enumerate(keys)]


def modified_argument(fn, call: Call, args: tuple, kwargs: dict) -> str | None:
    """A message naming the first argument the call changed in place, or None."""
    for name, key in _argument_names(fn, args, kwargs):
        given = args[key] if isinstance(key, int) else kwargs[key]
        original = call.args[key] if isinstance(key, int) else call.kwargs[key]
        how = _modified(given, original)
        if how:
            return (f"modified its argument `{name}` in place: {how}; work on a copy (x.clone()) or build new "
                    "tensors, the caller's inputs must stay as they were")
    return None


_PLAIN_SCALARS = (bool, int, float, str, type(None), np.bool_, np.integer, np.floating)


def sanitize(value, _depth: int = 0):
    """Reduce a returned value to plain data, refusing anything that is not what it claims to be.

    Exact ``torch.Tensor`` and ``np.ndarray`` (not subclasses: those can override comparisons)
    are copied; tuples, lists and dicts are rebuilt; numbers must be of a built-in numeric type.
    Anything else raises :class:`NotPlainData` naming its type.
    """
    if _depth > 4:
        raise NotPlainData("returned a structure nested too deeply")
    if type(value) is torch.Tensor:
        if value.is_sparse or value.layout != torch.strided:
            raise NotPlainData(f"returned a {value.layout} tensor; expected a dense (strided) tensor")
        return value.detach().cpu().clone()
    if type(value) is torch.nn.Parameter:
        return value.detach().cpu().clone()
    if type(value) is np.ndarray:
        if value.dtype == object:
            raise NotPlainData("returned an np.ndarray of dtype object; expected a numeric array")
        return value.copy()
    if type(value) in (tuple, list):
        return type(value)(sanitize(v, _depth + 1) for v in value)
    if type(value) is dict:
        return {str(k): sanitize(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, _PLAIN_SCALARS) and type(value).__module__ in ("builtins", "numpy"):
        return value.item() if isinstance(value, np.generic) else value
    raise NotPlainData(f"returned an object of type {type(value).__module__}.{type(value).__qualname__}; "
                   "expected a plain torch.Tensor, np.ndarray, number or tuple of those")


def _where(exc: BaseException) -> str:
    """The innermost frame of a traceback that is not inside torch/numpy: the student's line."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "site-packages" not in f.filename and "/lecturelib/checks/" not in f.filename
              and f.filename != RUNNER_FILENAME]
    if not frames:
        return ""
    f = frames[-1]
    name = "your notebook" if f.filename.startswith("<ipython-input") or "/ipykernel_" in f.filename else f.filename
    return f"{name}, line {f.lineno}: {(f.line or '').strip()}"


def run_call(fn: Callable, call: Call, forbidden: Sequence[ForbiddenOp] = ()):
    """Run one call; return ``(outcome, forbidden_used)`` where outcome is plain data or Raised."""
    args, kwargs = _clone_arg(call.args), _clone_arg(call.kwargs)
    with _time_limit(TIME_LIMIT, f"your function ran for more than {TIME_LIMIT:g} s and was stopped (an endless "
                                 "loop?)"):
        outcome, used = _call(fn, args, kwargs, forbidden)
    if not isinstance(outcome, Raised) and (change := modified_argument(fn, call, args, kwargs)):
        outcome = Raised("ModifiedInput", change)
    if call.observer is not None:
        observer = OBSERVERS[call.observer] if isinstance(call.observer, str) else call.observer
        outcome = Observed(outcome, sanitize(observer(args, kwargs)))
    return outcome, used


def _call(fn, args, kwargs, forbidden):
    with forbidden_ops_used(forbidden) as used:
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the student's error becomes data
            return Raised(type(exc).__name__, str(exc)[:500], _where(exc)), list(used)
    try:
        return sanitize(value), list(used)
    except NotPlainData as exc:
        return Raised("WrongType", str(exc)), list(used)


def run_calls(fn: Callable, calls: Sequence[Call], forbidden: Sequence[ForbiddenOp] = ()) -> tuple[list, list]:
    """Call ``fn`` on each call of one case: ``(outcomes, forbidden ops used)``, plain data only.

    The one loop that runs a student's function, in the notebook's ``check`` and in the grader's sandbox."""
    outcomes, used = [], []
    for call in calls:
        outcome, used_here = run_call(fn, call, forbidden)
        outcomes.append(outcome)
        used += [u for u in used_here if u not in used]
    return outcomes, used


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


_COMPILED = ("cython_function_or_method", "fused_cython_function", "builtin_function_or_method")


@contextlib.contextmanager
def forbidden_callables_used(forbidden, used: list | None = None, modules: Sequence[tuple[str, str]] = ()):
    """Context manager yielding a list (``used``, or a new one) that fills with the ``what`` of forbidden
    callables called inside, as they are called.

    Two views, both undone on exit: a profiler hook (``sys.setprofile``, this thread) recognises the
    function objects themselves (builtins by identity, Python functions by their code object), so an
    alias made before the check (``from scipy.optimize import linear_sum_assignment as lsa``) is seen
    too; and the module attribute, plus any alias of it in the notebook's namespace (``__main__``), is
    replaced by a recording wrapper, which also catches Cython functions the profiler cannot see. The
    forbidden functions still run and return their result: the case then fails with a clear message.
    ``modules`` holds ``(prefix, what)`` pairs: any function of a module under ``prefix`` (public or private:
    ``scipy.optimize._lsap``, ``scipy.sparse.csgraph._matching``) counts, whatever route reached it.
    If another profiler is active, only the wrappers are used.
    """
    used = [] if used is None else used
    if not forbidden and not modules:
        yield used
        return
    builtins, codes, patches = {}, {}, []
    main = sys.modules.get("__main__")

    def wrap(module, attribute, original, what):
        wrapper = _recording_wrapper(original, what, used)
        patches.append((module, attribute, original))
        setattr(module, attribute, wrapper)
        if main is not None:
            for name, value in list(vars(main).items()):
                if value is original:
                    patches.append((main, name, original))
                    setattr(main, name, wrapper)

    for item in forbidden:
        module, original = _resolve(item)
        if original is None:
            continue
        code = getattr(original, "__code__", None)
        if type(original).__name__ == "builtin_function_or_method":
            builtins[id(original)] = item.what
        elif code is not None and type(code).__name__ == "code":
            codes[code] = item.what
        wrap(module, item.attribute, original, item.what)
    for prefix, what in modules:  # compiled functions the profiler cannot see: wrapped where they live
        for name, module in list(sys.modules.items()):
            if module is not None and (name == prefix or name.startswith(prefix + ".")):
                for attribute, value in list(vars(module).items()):
                    if type(value).__name__ in _COMPILED and getattr(value, "__module__", "") == name:
                        wrap(module, attribute, value, what)

    by_module: dict[str, str | None] = {}

    def module_what(name: str) -> str | None:
        if name not in by_module:
            by_module[name] = next((what for prefix, what in modules
                                    if name == prefix or name.startswith(prefix + ".")), None)
        return by_module[name]

    def profile(frame, event, arg):
        if event == "c_call":
            what = builtins.get(id(arg)) or (module_what(getattr(arg, "__module__", None) or "") if modules else None)
        elif event == "call":
            what = codes.get(frame.f_code) or (module_what(frame.f_globals.get("__name__", "")) if modules else None)
        else:
            return
        if what is not None and what not in used:
            used.append(what)

    previous = sys.getprofile()
    watch = previous is None and bool(builtins or codes or modules)
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
    modules: tuple[tuple[str, str], ...] = ()   # (module prefix, what): every function under it, private too

    @contextlib.contextmanager
    def watch(self, used: list):
        seconds = TIME_LIMIT if self.time_limit else None
        message = f"your function ran for more than {seconds or 0:g} s and was stopped: {self.slow_hint}"
        with forbidden_callables_used(self.callables, used, self.modules), _time_limit(seconds, message):
            yield used


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


# ------------------------------------------------------------------------------------------------
# Observers: facts about the arguments after the call, reported as plain data
# ------------------------------------------------------------------------------------------------
_MODULE_HOOKS = (("forward hook", "_forward_hooks"), ("forward pre-hook", "_forward_pre_hooks"),
                 ("backward hook", "_backward_hooks"), ("backward pre-hook", "_backward_pre_hooks"))
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")


def _hook_counts(model: torch.nn.Module) -> dict[str, int]:
    """Where hooks are registered: {"<kind> on <module>": count}, for modules, parameters and global hooks."""
    from torch.nn.modules import module as module_module
    counts = {}
    for name, sub in model.named_modules():
        for kind, attr in _MODULE_HOOKS:
            count = len(getattr(sub, attr, None) or {})
            if count:
                counts[f"{kind} on {name or 'the model'}"] = count
    for name, param in model.named_parameters():
        count = len(getattr(param, "_backward_hooks", None) or {})
        count += len(getattr(param, "_post_accumulate_grad_hooks", None) or {})
        if count:
            counts[f"tensor hook on parameter {name}"] = count
    for attr in _GLOBAL_HOOKS:
        count = len(getattr(module_module, attr, None) or {})
        if count:
            counts[f"global module {attr.removeprefix('_global_').replace('_', ' ')[:-1]}"] = count
    return counts


def _checksum(tensor) -> list[float] | None:
    """Two numbers that change when a tensor's values do (sum and sum of squares, in float64)."""
    if tensor is None:
        return None
    t = tensor.detach().to(torch.float64)
    return [float(t.sum()), float((t * t).sum())]


def module_state(module: torch.nn.Module) -> dict:
    """What a call may have changed in a model, as plain data: each submodule's mode, the hooks, each
    parameter's requires_grad flag and gradient, and checksums of the parameters and buffers."""
    return {
        "hooks": _hook_counts(module),
        "training": {name or "(model)": sub.training for name, sub in module.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in module.named_parameters()},
        "has_grad": {name: p.grad is not None for name, p in module.named_parameters()},
        "grad": {name: _checksum(p.grad) for name, p in module.named_parameters()},
        "values": {name: _checksum(p) for name, p in module.named_parameters()},
        "buffers": {name: _checksum(b) for name, b in module.named_buffers()},
    }


def observe_models(args, kwargs) -> dict:
    """The state of every ``nn.Module`` argument (by position or keyword), after the call."""
    items = list(enumerate(args)) + list(kwargs.items())
    return {str(key): module_state(value) for key, value in items if isinstance(value, torch.nn.Module)}


OBSERVERS: dict[str, Callable] = {"models": observe_models}


# ------------------------------------------------------------------------------------------------
# Forbidden operations as data (what the grader sends into the sandbox)
# ------------------------------------------------------------------------------------------------
def _callable_name(fn) -> tuple[str, str]:
    """``(module, dotted name)`` that resolves back to ``fn`` (torch's builtins have a qualname of
    ``_VariableFunctionsClass.x`` that their module does not hold)."""
    module = fn.__module__
    for name in (fn.__name__, fn.__qualname__):
        try:
            if _attribute(module, name) is fn:
                return module, name
        except (ImportError, AttributeError):
            continue
    raise ValueError(f"cannot name {fn!r} so that the sandbox can find it")


def forbidden_spec(forbidden: Sequence) -> list:
    """``Exercise.forbidden`` as plain data (tuples of strings and numbers)."""
    spec = []
    for item in forbidden:
        if isinstance(item, ForbiddenOp):
            spec.append(("op", item.aten, item.what, item.flag_arg))
        elif isinstance(item, CallableWatch):
            spec.append(("callables", [(c.module, c.attribute, c.what) for c in item.callables], item.time_limit,
                         item.slow_hint, [list(m) for m in item.modules]))
        elif isinstance(item, TorchFunctionWatch):
            spec.append(("torch_functions", [(*_callable_name(fn), what) for fn, what in item.functions]))
        else:
            raise TypeError(f"cannot describe forbidden entry {item!r} as data")
    return spec


def _attribute(module: str, qualname: str):
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def forbidden_from_spec(spec: Sequence) -> list:
    """The watches described by :func:`forbidden_spec`."""
    forbidden = []
    for kind, *rest in spec:
        if kind == "op":
            forbidden.append(ForbiddenOp(*rest))
        elif kind == "callables":
            callables, time_limit, slow_hint, modules = rest
            forbidden.append(CallableWatch(tuple(ForbiddenCallable(*c) for c in callables), time_limit, slow_hint,
                                           tuple(tuple(m) for m in modules)))
        elif kind == "torch_functions":
            forbidden.append(TorchFunctionWatch(tuple((_attribute(m, q), what) for m, q, what in rest[0])))
        else:
            raise ValueError(f"unknown forbidden kind {kind!r}")
    return forbidden


# ------------------------------------------------------------------------------------------------
# Outcomes as plain data: a JSON tree whose arrays travel as one .npz (read with allow_pickle=False)
# ------------------------------------------------------------------------------------------------
class _Encoder:
    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}

    def encode(self, value, depth=0):
        if depth > 6:
            raise ValueError("outcome nested too deeply")
        if isinstance(value, Raised):
            return {"raised": [value.type_name, value.message, value.where]}
        if isinstance(value, Observed):
            return {"observed": [self.encode(value.value, depth + 1), self.encode(value.facts, depth + 1)]}
        if type(value) is torch.Tensor:
            tensor = value.detach().cpu()
            return {"tensor": self._store(tensor.float() if tensor.dtype == torch.bfloat16 else tensor)}
        if type(value) is np.ndarray:
            return {"array": self._store(value)}
        if type(value) in (tuple, list):
            return {"tuple" if type(value) is tuple else "list": [self.encode(v, depth + 1) for v in value]}
        if type(value) is dict:
            return {"dict": {str(k): self.encode(v, depth + 1) for k, v in value.items()}}
        if type(value) is float and not math.isfinite(value):
            return {"float": repr(value)}
        if type(value) in (bool, int, float, str, type(None)):
            return {"value": value}
        raise ValueError(f"cannot encode {type(value).__name__}")

    def _store(self, value) -> str:
        key = f"a{len(self.arrays)}"
        self.arrays[key] = value.numpy() if isinstance(value, torch.Tensor) else value
        return key


def encode_outcomes(cases: list) -> str:
    """``cases``: per case, ``{"nonce", "outcomes", "forbidden"}``; returns one JSON string."""
    encoder = _Encoder()
    tree = [{"nonce": c["nonce"], "outcomes": [encoder.encode(o) for o in c["outcomes"]],
             "forbidden": list(c["forbidden"])} for c in cases]
    buffer = io.BytesIO()
    np.savez(buffer, **encoder.arrays)
    return json.dumps({"cases": tree, "arrays": base64.b64encode(buffer.getvalue()).decode("ascii")})


# ------------------------------------------------------------------------------------------------
# The graded call (run by the grader inside the sandbox, from its own copy of this source)
# ------------------------------------------------------------------------------------------------
def collect(fn, payload: str) -> str:
    """Run ``fn`` on every case of ``payload`` (base64 of ``torch.save({"forbidden", "cases": [{"nonce",
    "calls": [(args, kwargs, observer)]}]})``, written by the grader) and return the outcomes as JSON."""
    import warnings
    request = torch.load(io.BytesIO(base64.b64decode(payload)), weights_only=False)
    forbidden = forbidden_from_spec(request["forbidden"])
    results = []
    with warnings.catch_warnings(action="ignore"), torch.random.fork_rng(devices=[]):
        np_state = np.random.get_state()
        torch.manual_seed(0)
        np.random.seed(0)
        try:
            for case in request["cases"]:
                calls = [Call(*args, **kwargs).observed_by(observer) for args, kwargs, observer in case["calls"]]
                outcomes, used = run_calls(fn, calls, forbidden)
                results.append({"nonce": case["nonce"], "outcomes": outcomes, "forbidden": used})
        finally:
            np.random.set_state(np_state)
    return encode_outcomes(results)
