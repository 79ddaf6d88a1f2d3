"""The student's functions as the topic modules take them: checked, called, their failures shown.

No topic module implements a graded exercise. A demo, model or widget that needs one takes it as an
argument: the notebook passes the student's function, scripts, the bench and the tests pass the reference.

* :func:`reference_functions` gives a topic's reference solutions by name. The graded names of a topic are
  ``lecturelib.reference.<topic>.__all__`` (its registered checks, ``lecturelib.checks.EXERCISES``, name
  the same functions); there is no other list of them.
* :func:`function_or_reference` is how a widget whose function argument may be left out picks its
  function. One behaviour for every topic: the reference where it ships (the instructor and grader copy);
  in the student copy, which has no ``lecturelib.reference``, a TypeError asking for the student's function.
* :func:`call_student` runs the student's function for a widget: a function that is not implemented yet
  or raises gives a one-line message to show instead of a traceback.
"""
from __future__ import annotations

import importlib
from typing import Callable

from . import has_reference
from ._validate import require_callable

__all__ = ["reference_functions", "function_or_reference", "call_student"]


def reference_functions(topic: str) -> dict[str, Callable]:
    """{name: reference solution} for every graded function of ``topic`` (e.g. "detection").

    An empty dict in the student copy of the package, where ``lecturelib.reference`` is left out.
    """
    if not has_reference():
        return {}
    module = importlib.import_module(f"lecturelib.reference.{topic}")
    return {name: getattr(module, name) for name in module.__all__}


def function_or_reference(fn: Callable | None, name: str, topic: str) -> Callable:
    """``fn`` (checked to be callable), or the reference ``name`` of ``topic`` when ``fn`` is None.

    In the student copy, leaving ``fn`` out raises a TypeError that asks for the student's function.
    """
    if fn is not None:
        return require_callable(name, fn)
    reference = reference_functions(topic).get(name)
    if reference is None:
        raise TypeError(f"pass your {name} (the reference solutions ship with the instructor copy only)")
    return reference


def call_student(fn: Callable, *args, what: str, **kwargs):
    """``(fn(*args, **kwargs), None)``, or ``(None, message)`` when ``fn`` raised.

    ``what`` names the student's function(s) in the message: "implement {what} above" for a stub that
    raises NotImplementedError, "your {what} raised {type}: {message}" for any other error.
    """
    try:
        return fn(*args, **kwargs), None
    except NotImplementedError:
        return None, f"implement {what} above"
    except Exception as exc:  # noqa: BLE001 - shown in the widget instead of a traceback
        return None, f"your {what} raised {type(exc).__name__}: {exc}"[:300]
