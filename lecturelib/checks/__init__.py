"""Checks for the graded exercises: ``check(name, fn)`` runs the visible suite of exercise ``name``.

    from lecturelib.checks import check
    check("conv_transpose2d", conv_transpose2d)                  # visible suite
    check("conv_transpose2d", conv_transpose2d, suite="hidden")  # hidden suite (grader copy only)

On success ``check`` prints one line saying what was verified; on failure it raises
:class:`CheckFailed` (an ``AssertionError``) whose message names the failing case, expected and
got values, the tolerance and, where recognisable, the likely cause.

Each topic's exercises are registered by its module here (``checks/<topic>.py``), imported below.
"""
import importlib
import pkgutil

from .core import (EXERCISES, CaseResult, CheckFailed, CheckResult, HiddenSuiteUnavailable, check, rel_error,
                   run_suite)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "core":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["check", "CheckFailed", "CheckResult", "CaseResult", "EXERCISES", "HiddenSuiteUnavailable",
           "rel_error", "run_suite"]
