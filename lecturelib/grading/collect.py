"""Runs inside the sandboxed kernel: call the student's function on the grader's inputs and write
the outcomes as plain data. Nothing here decides a grade; the grader verifies outside."""
from __future__ import annotations

from pathlib import Path


def run(exercise: str, fn, calls_path: str, out_path: str) -> str:
    """Call ``fn`` on every call in ``calls_path``; write outcomes next to ``out_path``."""
    from ..checks.core import EXERCISES, _quiet, _seeded, run_call
    from .protocol import load_calls, save_outcomes

    forbidden_ops = EXERCISES[exercise].forbidden
    outcomes, forbidden = [], []
    with _quiet(), _seeded(0):
        for case_calls in load_calls(Path(calls_path)):
            case_outcomes, used = [], []
            for call in case_calls:
                outcome, used_here = run_call(fn, call, forbidden_ops)
                case_outcomes.append(outcome)
                used += [u for u in used_here if u not in used]
            outcomes.append(case_outcomes)
            forbidden.append(used)
    save_outcomes(outcomes, forbidden, Path(out_path))
    return "ok"
