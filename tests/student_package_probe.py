"""Plug every function of the student package in as the answer to every exercise (run as a subprocess by
tests/test_student_package.py, so that what the functions do to global state stays in this process).

Usage: python student_package_probe.py STUDENT_PACKAGE_DIR HIDDEN_CASES_FILE
Prints one JSON object: how many functions were tried per exercise, and the (function, exercise, suite) triples that
passed. Everything is imported from STUDENT_PACKAGE_DIR (what students receive); its visible suites are its own data
files; the hidden cases come from HIDDEN_CASES_FILE, written by the grader copy (the student package cannot build
them), and are verified by the student package's own verifiers.
"""
from __future__ import annotations

import gc
import importlib
import inspect
import json
import pkgutil
import signal
import sys
import types
import warnings
from pathlib import Path

SECONDS_PER_CALL = 2.0


class _TimeUp(Exception):
    pass


def _alarm(*_):
    raise _TimeUp("took too long")


def student_functions(package_dir: Path) -> list[types.FunctionType]:
    """Every function object defined by a module of the student package: module-level functions, methods,
    lambdas and closures alive after importing every module."""
    sys.path.insert(0, str(package_dir))
    import lecturelib
    assert Path(lecturelib.__file__).resolve().is_relative_to(package_dir.resolve()), lecturelib.__file__
    for info in pkgutil.walk_packages(lecturelib.__path__, "lecturelib."):
        importlib.import_module(info.name)
    gc.collect()
    return [obj for obj in gc.get_objects() if isinstance(obj, types.FunctionType)
            and (obj.__module__ or "").split(".")[0] == "lecturelib"]


def adapted(fn, call):
    """``fn`` wrapped to take the exercise's call, if its signature accepts those arguments (as given, or all
    positional); None otherwise."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    for args, kwargs, how in ((call.args, call.kwargs, "as given"),
                              (call.args + tuple(call.kwargs.values()), {}, "positional")):
        try:
            sig.bind(*args, **kwargs)
        except TypeError:
            continue

        def candidate(*a, _positional=how == "positional", **k):
            signal.setitimer(signal.ITIMER_REAL, SECONDS_PER_CALL)
            try:
                return fn(*a, *k.values()) if _positional else fn(*a, **k)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        return candidate
    return None


def _passes(fn, cases, forbidden) -> bool:
    from lecturelib.checks.core import quiet, run_case, seeded
    try:
        with quiet(), seeded(0):
            return all(run_case(fn, case, forbidden).passed for case in cases)
    except BaseException as exc:  # noqa: BLE001 - a function that breaks the harness is not an answer
        if isinstance(exc, KeyboardInterrupt):
            raise
        return False


def main(package_dir: Path, hidden_file: Path) -> dict:
    warnings.simplefilter("ignore")
    signal.signal(signal.SIGALRM, _alarm)
    functions = student_functions(package_dir)
    from lecturelib.checks import EXERCISES
    from lecturelib.checks.core import build_cases, load_cases

    hidden = load_cases(hidden_file.read_bytes())
    tried, passed = {}, []
    for name in sorted(EXERCISES):
        suites = {"visible": build_cases(name, "visible")[1], "hidden": hidden[name]}
        first_call = suites["visible"][0].calls[0]
        tried[name] = 0
        for fn in functions:
            candidate = adapted(fn, first_call)
            if candidate is None:
                continue
            tried[name] += 1
            for suite, cases in suites.items():
                if _passes(candidate, cases, EXERCISES[name].forbidden):
                    passed.append([f"{fn.__module__}.{fn.__qualname__}", name, suite])
    return {"functions": len(functions), "tried": tried, "passed": passed}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]))))
