"""Helpers for the tests of the checks."""
from __future__ import annotations

import pytest

from lecturelib.checks import CheckFailed, check


def fails(name: str, fn, suite: str = "visible") -> str:
    """The CheckFailed message of ``check(name, fn, suite)``; fails the test if the check passes."""
    with pytest.raises(CheckFailed) as info:
        check(name, fn, suite=suite, verbose=False)
    return str(info.value)
