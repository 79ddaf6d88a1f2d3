"""``IsolatedExecute``: nbgrader's Execute step, with the student's code in a sandbox and the verdict outside.

nbgrader (sanitize) has already cleared outputs and restored every locked and test cell from the
gradebook. This preprocessor then

1. reads each graded test cell's ``check("exercise", fn[, suite="hidden"])`` calls (trusted source);
2. builds the cases of each suite here, and writes only their inputs for the sandbox;
3. runs the notebook in a sandboxed kernel (test cells run their visible checks only: the in-kernel
   verdict); a cell that kills the kernel is skipped and the kernel restarted, so a crash costs that cell
   and what depends on it; a cell that runs too long is interrupted, or its kernel killed;
4. asks the kernel to call each graded function on the grader's inputs (``collect.run``) and to write
   the outcomes as plain data, through a channel that IPython input transformers do not touch;
5. verifies the outcomes here, writes the authoritative verdict into each test cell's output (so that
   nbgrader's SaveAutoGrades, feedback and export use it), and flags cells where the in-kernel verdict
   disagrees with it;
6. writes a JSON report per submission (status: graded, timed out, crashed, memory limit, flagged).
"""
from __future__ import annotations

import ast
import copy
import json
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_core.utils import ensure_async, run_sync
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode
from nbformat.v4 import new_output
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool

from ..checks.core import EXERCISES, CaseResult, CheckResult, build_cases, verify_case
from . import protocol
from .paths import report_path
from .sandbox import Limits, SandboxKernelManager, isolation_level, prepare_work

HIDDEN_BLOCK = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
MEMORY_WORDS = ("MemoryError", "can't allocate memory", "Cannot allocate memory", "not enough memory",
                "DefaultCPUAllocator")


@dataclass
class CheckCall:
    """One ``check(...)`` call of a test cell."""

    exercise: str
    suite: str
    expression: str
    key: str = ""


@dataclass
class GradedCell:
    index: int
    grade_id: str
    points: float
    checks: list[CheckCall]
    inkernel_passed: bool | None = None
    results: list[CheckResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.results) and len(self.results) == len(self.checks) and all(r.passed for r in self.results) \
            and not self.problems

    @property
    def visible_passed(self) -> bool:
        vis = [r for r, c in zip(self.results, self.checks) if c.suite == "visible"]
        return bool(vis) and all(r.passed for r in vis)


def parse_checks(source: str) -> list[CheckCall] | None:
    """The ``check(...)`` calls of a test cell, or None if it holds anything else."""
    lines = [line for line in source.splitlines() if line.strip() not in HIDDEN_BLOCK]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return None
    calls = []
    for stmt in tree.body:
        call = stmt.value if isinstance(stmt, ast.Expr) else None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "check"
                and len(call.args) == 2 and isinstance(call.args[0], ast.Constant)
                and isinstance(call.args[0].value, str)):
            return None
        suite = "visible"
        for kw in call.keywords:
            if kw.arg == "suite" and isinstance(kw.value, ast.Constant):
                suite = kw.value.value
            elif kw.arg not in ("verbose",):
                return None
        calls.append(CheckCall(call.args[0].value, suite, ast.unparse(call.args[1])))
    return calls or None


def visible_source(source: str) -> str:
    """A test cell's source without its hidden block (what the kernel runs)."""
    out, hidden = [], False
    for line in source.splitlines():
        if line.strip() == HIDDEN_BLOCK[0]:
            hidden = True
        elif line.strip() == HIDDEN_BLOCK[1]:
            hidden = False
        elif not hidden:
            out.append(line)
    return "\n".join(out)


class _Watchdog:
    """Kill the kernel if one step runs ``seconds`` past its own time-out (interrupt ignored)."""

    def __init__(self, km, seconds: float):
        self.km, self.seconds, self.fired = km, seconds, False
        self._timer = None

    def __enter__(self):
        self._timer = threading.Timer(self.seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def _fire(self):
        self.fired = True
        try:
            self.km.provisioner.process.kill() if self.km.provisioner else None
        except Exception:  # noqa: BLE001 - already gone
            pass

    def __exit__(self, *exc):
        self._timer.cancel()


class SandboxRun:
    """Execute a notebook in sandboxed kernels, restarting past crashing cells."""

    def __init__(self, nb: NotebookNode, work: Path, limits: Limits, course_roots: list[Path], log):
        self.nb, self.work, self.limits, self.course_roots, self.log = nb, work, limits, course_roots, log
        self.skip: dict[int, str] = {}          # cell index -> "crashed" | "timed out"
        self.events: list[str] = []
        self.restarts = 0

    def _client(self):
        km = SandboxKernelManager(self.work, self.limits, self.course_roots)
        return NotebookClient(self.nb, km=km, timeout=self.limits.cell_timeout, allow_errors=True,
                              interrupt_on_timeout=True, record_timing=False,
                              resources={"metadata": {"path": str(self.work / "submission")}})

    def run(self, collectors: list[tuple[str, str]]) -> dict[str, dict]:
        """Run every code cell, then every collector expression; returns collector replies by key."""
        replies: dict[str, dict] = {}
        pending = list(collectors)
        while True:
            client = self._client()
            try:
                with client.setup_kernel():
                    crashed = self._run_cells(client)
                    if crashed:
                        continue
                    while pending:
                        key, expression = pending[0]
                        reply = self._collect(client, expression)
                        if reply is None:       # the kernel died or hung: that exercise gets nothing
                            replies[key] = {"status": "error", "ename": "Crashed",
                                            "evalue": "the kernel died or hung while your function ran"}
                            pending.pop(0)
                            break
                        replies[key] = reply
                        pending.pop(0)
                    else:
                        return replies
            except DeadKernelError:
                pass
            finally:
                self.restarts += 1
            if self.restarts > self.limits.max_restarts:
                for key, _ in pending:
                    replies[key] = {"status": "error", "ename": "Crashed", "evalue": "too many kernel crashes"}
                return replies

    def _run_cells(self, client) -> bool:
        """Execute the code cells not skipped; True if the kernel died (the cell is then skipped)."""
        for index, cell in enumerate(self.nb.cells):
            if cell.cell_type != "code" or index in self.skip:
                continue
            cell.outputs = []
            started = time.monotonic()
            try:
                with _Watchdog(client.km, self.limits.cell_timeout + 15) as dog:
                    client.execute_cell(cell, index)
            except DeadKernelError:
                timed_out = dog.fired or time.monotonic() - started >= self.limits.cell_timeout
                why = "timed out" if timed_out else "crashed"
                self.skip[index] = why
                self.events.append(f"cell {index} {why}; kernel restarted without it")
                cell.outputs = [new_output("error", ename="KernelDied" if why == "crashed" else "Timeout",
                                           evalue=f"this cell {why} the kernel; it was skipped", traceback=[])]
                return True
            if any(o.get("ename") == "KeyboardInterrupt" for o in cell.outputs if o.output_type == "error"):
                self.events.append(f"cell {index} timed out and was interrupted")
                self.skip.setdefault(index, "timed out")
        return False

    def _collect(self, client, expression: str) -> dict | None:
        """Evaluate a collector as a user expression (bypasses input transformers)."""
        return run_sync(self._async_collect)(client, expression)

    async def _async_collect(self, client, expression: str) -> dict | None:
        kc, km = client.kc, client.km
        msg_id = kc.execute("", silent=False, store_history=False, user_expressions={"r": expression})
        deadline = time.monotonic() + self.limits.collect_timeout
        interrupted = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if interrupted:
                    self.events.append("a graded function hung: kernel killed")
                    await ensure_async(km.shutdown_kernel(now=True))
                    return None
                await ensure_async(km.interrupt_kernel())
                interrupted = True
                deadline = time.monotonic() + 10
                continue
            try:
                msg = await ensure_async(kc.get_shell_msg(timeout=min(remaining, 2)))
            except Exception:  # noqa: BLE001 - queue.Empty: keep waiting, unless the kernel is gone
                if not await ensure_async(km.is_alive()):
                    return None
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if interrupted:
                return {"status": "error", "ename": "Timeout",
                        "evalue": f"your function ran longer than {self.limits.collect_timeout} s"}
            content = msg["content"]
            if content.get("status") != "ok":
                return {"status": "error", "ename": content.get("ename", "Error"),
                        "evalue": content.get("evalue", "")}
            return content["user_expressions"].get("r", {"status": "error", "ename": "Missing", "evalue": ""})


def _error_output(message: str, ename: str = "CheckFailed") -> NotebookNode:
    return new_output("error", ename=ename, evalue=message, traceback=[f"{ename}: {message}"])


def _stream(text: str) -> NotebookNode:
    return new_output("stream", name="stdout", text=text)


def grade_notebook(nb: NotebookNode, submission_dir: Path, course_roots: list[Path], log,
                   limits: Limits | None = None) -> tuple[NotebookNode, dict]:
    """Execute ``nb`` in the sandbox, verify outside, rewrite test cell outputs; return (nb, report)."""
    limits = limits or Limits()
    work = Path(tempfile.mkdtemp(prefix="lecturelib-grade-"))
    try:
        prepare_work(work)
        for item in Path(submission_dir).iterdir():
            target = work / "submission" / item.name
            if item.is_dir():
                shutil.copytree(item, target, symlinks=True)
            elif item.is_file():
                shutil.copy(item, target)

        graded, collectors, cases = [], [], {}
        for index, cell in enumerate(nb.cells):
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type != "code" or not meta.get("grade") or meta.get("solution"):
                continue
            checks = parse_checks(cell.source)
            gc = GradedCell(index, meta.get("grade_id", f"cell-{index}"), float(meta.get("points", 0)), checks or [])
            if checks is None:
                gc.problems.append("this test cell is not a list of check(...) calls: graded in the kernel only")
            for k, chk in enumerate(gc.checks):
                chk.key = f"c{index}_{k}"
                try:
                    _, built = build_cases(chk.exercise, chk.suite)
                except Exception as exc:  # noqa: BLE001 - a broken check must not lose the submission
                    gc.problems.append(f"could not build the {chk.suite} cases of {chk.exercise}: {exc}")
                    continue
                cases[chk.key] = built
                protocol.save_calls([case.calls for case in built], work / "calls" / f"{chk.key}.pt")
                collectors.append((chk.key, (
                    f"__import__('lecturelib.grading.collect', fromlist=['run']).run("
                    f"{chk.exercise!r}, {chk.expression}, {str(work / 'calls' / (chk.key + '.pt'))!r}, "
                    f"{str(work / 'outcomes' / chk.key)!r})")))
            graded.append(gc)

        runnable = copy.deepcopy(nb)
        for gc in graded:
            runnable.cells[gc.index].source = visible_source(nb.cells[gc.index].source)
        started = time.monotonic()
        run = SandboxRun(runnable, work, limits, course_roots, log)
        replies = run.run(collectors)
        seconds = time.monotonic() - started

        # Outputs of every non-test cell come from the sandbox run (untrusted, for display only).
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                cell.outputs = runnable.cells[index].outputs
                cell.execution_count = runnable.cells[index].get("execution_count")

        statuses = set()
        for gc in graded:
            executed = runnable.cells[gc.index]
            if gc.index in run.skip:
                gc.inkernel_passed = False
            else:
                gc.inkernel_passed = not any(o.output_type == "error" for o in executed.outputs)
            for chk in gc.checks:
                gc.results.append(_verdict(chk, cases.get(chk.key), replies.get(chk.key), work))
            messages = [r.headline() if r.passed else r.report() for r in gc.results] + gc.problems
            nb.cells[gc.index].outputs = ([_stream("\n".join(messages) + "\n")] if gc.passed
                                          else [_error_output("\n".join(messages))])
            if gc.checks and gc.inkernel_passed != gc.visible_passed:
                statuses.add("flagged")

        for index, why in run.skip.items():
            statuses.add(why)
        if any(why == "timed out" for why in run.skip.values()) or any(
                r.get("ename") == "Timeout" for r in replies.values()):
            statuses.add("timed out")
        if any(r.get("ename") == "Crashed" for r in replies.values()):
            statuses.add("crashed")
        for cell in runnable.cells:
            for out in cell.get("outputs", []):
                if out.output_type == "error" and any(w in f"{out.ename}: {out.evalue}" for w in MEMORY_WORDS):
                    statuses.add("memory limit")
        report = {
            "isolation": isolation_level(),
            "status": sorted(statuses) or ["graded"],
            "seconds": round(seconds, 2),
            "kernel_restarts": run.restarts - 1,
            "events": run.events,
            "cells": {gc.grade_id: {"points": gc.points, "score": gc.points if gc.passed else 0.0,
                                    "passed": gc.passed, "inkernel_passed": gc.inkernel_passed,
                                    "flagged": bool(gc.checks) and gc.inkernel_passed != gc.visible_passed,
                                    "checks": [r.to_dict() for r in gc.results], "problems": gc.problems}
                      for gc in graded},
        }
        return nb, report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _verdict(chk: CheckCall, cases, reply: dict | None, work: Path) -> CheckResult:
    """Verify one check call's outcomes (plain data) against its cases, outside the sandbox."""
    def failed(message: str) -> CheckResult:
        return CheckResult(chk.exercise, chk.suite, (CaseResult("all cases", False, message),), 0.0)

    if cases is None:
        return failed("the cases of this check could not be built")
    if reply is None:
        return failed("not evaluated")
    if reply.get("status") != "ok":
        ename, evalue = reply.get("ename", "Error"), reply.get("evalue", "")
        if ename == "NameError":
            return failed(f"{chk.expression} is not defined: its solution cell did not run to the end "
                          f"({evalue})")
        return failed(f"your function could not be evaluated: {ename}: {evalue}")
    try:
        outcomes, forbidden = protocol.load_outcomes(work / "outcomes" / chk.key)
    except Exception as exc:  # noqa: BLE001 - missing or malformed outcomes fail the check
        return failed(f"no valid outcomes were produced ({type(exc).__name__}: {exc})")
    if len(outcomes) != len(cases):
        return failed("the outcomes do not match the cases")
    results = []
    for case, outcome, used in zip(cases, outcomes, forbidden):
        if len(outcome) != len(case.calls):
            results.append(CaseResult(case.name, False, "the outcomes do not match the calls"))
            continue
        results.append(verify_case(case, outcome, used))
    return CheckResult(chk.exercise, chk.suite, tuple(results), 0.0, EXERCISES[chk.exercise].summary)


class IsolatedExecute(NbGraderPreprocessor):
    """nbgrader preprocessor replacing ``Execute`` (configured in nbgrader_config.py)."""

    enabled = Bool(True).tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict):
        from .paths import course_root, source_root
        submission_dir = Path(resources["metadata"]["path"])
        info = resources.get("nbgrader", {})
        nb, report = grade_notebook(nb, submission_dir, [course_root(), source_root()], self.log)
        report.update({"student": info.get("student"), "assignment": info.get("assignment"),
                       "notebook": info.get("notebook")})
        path = report_path(info.get("assignment", "unknown"), info.get("student", "unknown"),
                           info.get("notebook", "notebook"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))
        self.log.info("isolated grading of %s/%s: %s (%s)", info.get("student"), info.get("notebook"),
                      ", ".join(report["status"]), report["isolation"])
        return nb, resources
