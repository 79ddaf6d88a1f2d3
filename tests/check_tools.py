"""Helpers for the tests of the checks."""
from __future__ import annotations

import pytest

from lecturelib.checks import CheckFailed, check


def fails(name: str, fn, suite: str = "visible") -> str:
    """The CheckFailed report of ``check(name, fn, suite)``, lines unwrapped (the message students see wraps
    them at ``core.REPORT_WIDTH``); fails the test if the check passes."""
    with pytest.raises(CheckFailed) as info:
        check(name, fn, suite=suite, verbose=False)
    return info.value.result.report()
