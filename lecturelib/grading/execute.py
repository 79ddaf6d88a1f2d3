"""nbgrader steps of honest grading: ``IsolatedExecute`` runs the student's code in a sandbox and decides every
test cell outside it; ``FlagDisagreements`` marks in the gradebook what needs a TA's eyes.

nbgrader (sanitize) has already cleared outputs and restored every locked and test cell from the source.
``IsolatedExecute`` then

1. reads each graded test cell's ``check("exercise", fn[, suite="hidden"])`` calls (trusted source) and builds
   the cases of each suite here, outside the sandbox;
2. reads the student's own cells for constructs that only get around the grader (``scan.py``);
3. runs the notebook in a sandboxed kernel whose first code is an audit hook reporting escape hatches on a pipe
   (test cells run their visible checks only: the in-kernel verdict); a cell that kills the kernel is skipped
   and the kernel restarted, so a crash costs that cell and what depends on it; a cell that runs too long is
   interrupted, or its kernel killed; the whole notebook has a time budget;
4. at the graded calls only, sends the grader's own runner with the inputs, one IPython user expression per
   ``check`` call (``protocol.py``), all in one execute request (one by one if that request does not finish), and
   reads the outcomes back from their values as plain data, one per case by nonce;
5. verifies the outcomes here, writes the authoritative verdict into each test cell's output (so that
   nbgrader's SaveAutoGrades, feedback and export use it), and puts the report in ``resources["lecturelib"]``
   (and a JSON file): status (graded, timed out, crashed, memory limit, flagged, refused files), per cell its
   verdict and the reasons to flag it (in-kernel verdict disagrees; the submission tampers with the grader).
"""
from __future__ import annotations

import ast
import asyncio
import copy
import json
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nbformat
import torch
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode
from nbformat.v4 import new_output
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool, Integer, Unicode

from ..checks.core import EXERCISES, CaseResult, CheckResult, _visible_bytes, build_cases, verify_case
from . import protocol, scan
from .sandbox import Limits, SandboxKernelManager, Work, copy_submission, isolation_level

HIDDEN_BLOCK = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
MEMORY_WORDS = ("MemoryError", "can't allocate memory", "Cannot allocate memory", "not enough memory",
                "DefaultCPUAllocator")
MAX_AUDIT_EVENTS = 50


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
                and isinstance(call.args[0].value, str) and isinstance(call.args[1], ast.Name)):
            return None
        suite = "visible"
        for kw in call.keywords:
            if kw.arg == "suite" and isinstance(kw.value, ast.Constant):
                suite = kw.value.value
            elif kw.arg not in ("verbose",):
                return None
        calls.append(CheckCall(call.args[0].value, suite, call.args[1].id))
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


# ------------------------------------------------------------------------------------------------
# The sandboxed run
# ------------------------------------------------------------------------------------------------
class _AuditChannel:
    """The read end of the kernel's audit pipe, drained by a thread into ``events``."""

    def __init__(self):
        self.read_fd, self.write_fd = os.pipe()
        self.events: list[dict] = []
        self.dropped = 0
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self):
        with os.fdopen(self.read_fd, "rb") as pipe:
            for line in pipe:
                try:
                    event = json.loads(line[:2000])
                except ValueError:
                    event = {"event": "garbled audit line", "detail": "", "where": ""}
                if not isinstance(event, dict):
                    event = {"event": "garbled audit line", "detail": "", "where": ""}
                if len(self.events) < MAX_AUDIT_EVENTS or event.get("event") == "lecturelib.nonce":
                    self.events.append(event)
                else:
                    self.dropped += 1

    def close(self):
        """Close the grader's copy of the write end; the reader ends when every kernel has died."""
        if self.write_fd is not None:
            os.close(self.write_fd)
            self.write_fd = None
        self._thread.join(timeout=10)

    def nonces(self) -> set[str]:
        return {str(e.get("detail")) for e in self.events if e.get("event") == "lecturelib.nonce"}

    def escapes(self) -> list[str]:
        return [f"{e.get('where', '?')}: {e.get('event')} {e.get('detail', '')}".strip()
                for e in self.events if e.get("event") != "lecturelib.nonce"]


@dataclass
class Collector:
    key: str
    expression: str          # the student's function, e.g. "conv_transpose2d"
    cases: list
    payload: str
    nonces: list[str]
    audit_nonce: str = ""


class SandboxRun:
    """Execute a notebook in sandboxed kernels, restarting past crashing cells, then make the graded calls."""

    def __init__(self, nb: NotebookNode, work: Work, limits: Limits, course_roots: list[Path], log):
        self.nb, self.work, self.limits, self.course_roots, self.log = nb, work, limits, course_roots, log
        self.skip: dict[int, str] = {}          # cell index -> "crashed" | "timed out" | "over budget"
        self.events: list[str] = []
        self.restarts = 0
        self.batch_tried = False
        self.audit = _AuditChannel()
        self.deadline = time.monotonic() + limits.submission_seconds

    def over_budget(self) -> bool:
        return time.monotonic() > self.deadline

    def run(self, prepare: Callable[[], list[Collector]]) -> tuple[list[Collector], dict[str, dict]]:
        """Run every code cell, then every collector; returns the collectors and their replies by key.

        ``prepare`` (write the visible cases, build the collectors) runs in a thread while the first kernel
        starts: the two overlap (measured: about 0.5 s of a 7.6 s segmentation submission)."""
        try:
            with ThreadPoolExecutor(max_workers=1) as pool:
                prepared = pool.submit(prepare)
                try:
                    replies = run_sync(self._run)(prepared)
                finally:
                    prepared.result()   # never leave the thread running; re-raises what prepare raised
                return prepared.result(), replies
        finally:
            self.audit.close()

    async def _run(self, prepared: Future) -> dict[str, dict]:
        replies: dict[str, dict] = {}
        pending: list[Collector] | None = None
        while True:
            km = SandboxKernelManager(self.work, self.limits, self.course_roots, self.audit.write_fd)
            client = NotebookClient(self.nb, km=km, timeout=self.limits.cell_timeout, allow_errors=True,
                                    interrupt_on_timeout=True, record_timing=False,
                                    resources={"metadata": {"path": str(self.work.submission)}})
            try:
                async with client.async_setup_kernel():
                    if pending is None:              # the visible cases must be in place before any cell runs
                        pending = list(await asyncio.wrap_future(prepared))
                    if await self._run_cells(client):
                        continue                     # a cell killed the kernel: start again without it
                    if len(pending) > 1 and not self.batch_tried:
                        self.batch_tried = True      # one request for all; what it leaves unanswered goes one by one
                        answered, usable = await self._collect_batch(client, pending)
                        replies.update(answered)
                        pending = [c for c in pending if c.key not in replies]
                        if not usable:
                            self.events.append("the graded calls made together did not finish: kernel restarted, "
                                               "calls made one by one")
                            continue                 # a fresh kernel (the cells run again) for the calls one by one
                    while pending:
                        reply = await self._collect(client, pending[0])
                        replies[pending.pop(0).key] = reply
                        if reply.get("ename") in ("Crashed", "Timeout") and reply.get("kernel_lost"):
                            break                    # the kernel is gone: a new one for the other collectors
                    else:
                        return replies
            except DeadKernelError:
                pass
            finally:
                await _stop(km)
                self.restarts += 1
            if self.restarts > self.limits.max_restarts or self.over_budget():
                why = "too many kernel crashes" if not self.over_budget() else "the notebook's time budget ran out"
                for collector in pending if pending is not None else prepared.result():
                    replies[collector.key] = {"status": "error", "ename": "Crashed", "evalue": why}
                return replies

    async def _run_cells(self, client) -> bool:
        """Execute the code cells not skipped; True if the kernel died (the cell is then skipped)."""
        for index, cell in enumerate(self.nb.cells):
            if cell.cell_type != "code" or index in self.skip:
                continue
            if self.over_budget():
                self.skip[index] = "over budget"
                cell.outputs = [new_output("error", ename="Timeout", traceback=[],
                                           evalue="not run: the notebook's time budget ran out")]
                continue
            cell.outputs = []
            started = time.monotonic()
            try:
                with _Watchdog(client.km, self.limits.cell_timeout + 15) as dog:
                    await client.async_execute_cell(cell, index)
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

    def _collect_timeout(self) -> float:
        # The budget may be spent, but a graded call still gets a short while: the cells that ran earned it.
        return max(min(10.0, self.limits.collect_timeout), min(self.limits.collect_timeout,
                                                                self.deadline - time.monotonic()))

    async def _collect_batch(self, client, collectors: list[Collector]) -> tuple[dict[str, dict], bool]:
        """Every graded call in one execute request: IPython evaluates each user expression on its own (an error
        answers that key only), in order, each with its own fresh runner (measured: 0.05 s of the segmentation
        notebook's twelve calls saved). Returns the replies and whether the kernel can go on.

        Each call announces itself on the audit channel (its nonce) as it starts, so each still has its own time
        limit (``_collect_timeout``). If one runs out, or the kernel dies, nothing is kept and the kernel is not
        reused (it would go on with the other calls): the caller makes the calls one by one in a fresh kernel."""
        for collector in collectors:
            collector.audit_nonce = protocol.new_nonce()
        expressions = {c.key: protocol.collector_expression(c.expression, c.payload, c.audit_nonce)
                       for c in collectors}
        request = asyncio.ensure_future(client.kc.execute_interactive(
            "", silent=False, store_history=False, user_expressions=expressions, timeout=None,
            output_hook=lambda msg: None))
        running, started, limit = -1, time.monotonic(), self._collect_timeout()
        try:
            while not request.done():
                await asyncio.wait([request], timeout=0.1)
                seen = self.audit.nonces()
                now = max((i for i, c in enumerate(collectors) if c.audit_nonce in seen), default=0)
                if now != running:
                    running, started, limit = now, time.monotonic(), self._collect_timeout()
                elif time.monotonic() - started > limit or not await client.km.is_alive():
                    return {}, False
            reply = request.result()
        except (DeadKernelError, RuntimeError):
            return {}, False
        finally:
            request.cancel()
        content = reply["content"]
        if content.get("status") != "ok":
            return {}, True
        answers = content.get("user_expressions", {})
        return {key: answers[key] for key in expressions if isinstance(answers.get(key), dict)}, True

    async def _collect(self, client, collector: Collector) -> dict:
        """The graded call: one user expression (input transformers do not touch it)."""
        collector.audit_nonce = protocol.new_nonce()
        expression = protocol.collector_expression(collector.expression, collector.payload, collector.audit_nonce)
        kc, km = client.kc, client.km
        timeout = self._collect_timeout()
        try:
            reply = await kc.execute_interactive("", silent=False, store_history=False,
                                                 user_expressions={"r": expression}, timeout=timeout,
                                                 output_hook=lambda msg: None)
        except TimeoutError:
            await km.interrupt_kernel()
            try:                                    # still answering? then the next collector can run here
                await kc.execute_interactive("", silent=True, timeout=10, output_hook=lambda msg: None)
                lost = False
            except (TimeoutError, RuntimeError):
                self.events.append("a graded function hung: kernel killed")
                lost = True
            return {"status": "error", "ename": "Timeout", "kernel_lost": lost,
                    "evalue": f"your function ran longer than {timeout:.0f} s"}
        except (DeadKernelError, RuntimeError) as exc:
            return {"status": "error", "ename": "Crashed", "kernel_lost": True,
                    "evalue": f"the kernel died while your function ran ({type(exc).__name__})"}
        content = reply["content"]
        if content.get("status") != "ok":
            return {"status": "error", "ename": content.get("ename", "Error"), "evalue": content.get("evalue", "")}
        return content["user_expressions"].get("r", {"status": "error", "ename": "Missing", "evalue": ""})


async def _stop(km) -> None:
    """Shut the kernel down and make sure its process (bubblewrap, and with it the PID namespace) is gone."""
    try:
        if await km.is_alive():
            await km.shutdown_kernel(now=True)
    except Exception:  # noqa: BLE001 - already gone, or never started
        pass
    process = getattr(km.provisioner, "process", None) if km.provisioner else None
    if process is not None and process.poll() is None:
        process.kill()
        process.wait(timeout=10)


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


# ------------------------------------------------------------------------------------------------
# Grading one notebook
# ------------------------------------------------------------------------------------------------
def _error_output(message: str, ename: str = "CheckFailed") -> NotebookNode:
    return new_output("error", ename=ename, evalue=message, traceback=[f"{ename}: {message}"])


def _stream(text: str) -> NotebookNode:
    return new_output("stream", name="stdout", text=text)


def _graded_cells(nb: NotebookNode) -> list[GradedCell]:
    graded = []
    for index, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("grade") or meta.get("solution"):
            continue
        checks = parse_checks(cell.source)
        try:
            points = float(meta.get("points", 0))
        except (TypeError, ValueError):
            points = 0.0
        gc = GradedCell(index, str(meta.get("grade_id", f"cell-{index}")), points, checks or [])
        if checks is None:
            gc.problems.append("this test cell is not a list of check(...) calls: graded in the kernel only")
        for k, chk in enumerate(gc.checks):
            chk.key = f"c{index}_{k}"
        graded.append(gc)
    return graded


def _collectors(graded: list[GradedCell], student: str | None = None, secret: str | None = None) -> list[Collector]:
    collectors = []
    for gc in graded:
        for chk in gc.checks:
            try:
                exercise, cases = build_cases(chk.exercise, chk.suite, student, secret)
            except Exception as exc:  # noqa: BLE001 - a broken check must not lose the submission
                gc.problems.append(f"could not build the {chk.suite} cases of {chk.exercise}: {exc}")
                continue
            payload, nonces = protocol.request(cases, exercise.forbidden)
            collectors.append(Collector(chk.key, chk.expression, cases, payload, nonces))
    return collectors


def _write_visible(graded: list[GradedCell], dest: Path) -> None:
    """The visible cases of the notebook's topics, for its own checks in the kernel (the in-kernel verdict)."""
    for topic in {EXERCISES[c.exercise].topic for gc in graded for c in gc.checks if c.exercise in EXERCISES}:
        (dest / f"{topic}.pt").write_bytes(_visible_bytes(topic))   # built once: the visible suite's calls use it


def grade_notebook(nb: NotebookNode, submission_dir: Path, course_roots: list[Path], log,
                   limits: Limits | None = None, source_nb: NotebookNode | None = None, student: str | None = None,
                   secret: str | None = None) -> tuple[NotebookNode, dict]:
    """Execute ``nb`` in the sandbox, verify outside, rewrite test cell outputs; return (nb, report).

    ``source_nb`` is the instructor's notebook: cells the student did not write are not read for tampering.
    With a course ``secret``, the hidden cases' random inputs are the ``student``'s own."""
    limits = limits or Limits()
    work = Work()
    try:
        refused = copy_submission(Path(submission_dir), work.submission)
        graded = _graded_cells(nb)

        def prepare() -> list[Collector]:
            _write_visible(graded, work.root / "visible")
            return _collectors(graded, student, secret)

        findings = scan.scan(scan.student_cells(nb, source_nb or nbformat.v4.new_notebook()))

        runnable = copy.deepcopy(nb)
        for gc in graded:
            runnable.cells[gc.index].source = visible_source(nb.cells[gc.index].source)
        started = time.monotonic()
        run = SandboxRun(runnable, work, limits, course_roots, log)
        collectors, replies = run.run(prepare)
        seconds = time.monotonic() - started

        # Outputs of every non-test cell come from the sandbox run (untrusted, for display only).
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                cell.outputs = runnable.cells[index].outputs
                cell.execution_count = runnable.cells[index].get("execution_count")

        tampering = [f"reads as an attempt to get around the grader: {f}" for f in findings]
        tampering += [f"did at run time what only gets around the grader: {e}" for e in run.audit.escapes()]
        by_key = {c.key: c for c in collectors}
        for collector in collectors:
            reply = replies.get(collector.key, {})
            if reply.get("status") == "ok" and collector.audit_nonce not in run.audit.nonces():
                tampering.append("the kernel's audit channel did not answer (closed or replaced)")
        statuses, cells = set(), {}
        for gc in graded:
            executed = runnable.cells[gc.index]
            if run.skip.get(gc.index) == "over budget":
                gc.inkernel_passed = None         # never ran: there is no in-kernel verdict to compare
            else:
                gc.inkernel_passed = gc.index not in run.skip and not any(
                    o.output_type == "error" for o in executed.outputs)
            for chk in gc.checks:
                verdict, problems = _verdict(chk, by_key.get(chk.key), replies.get(chk.key))
                gc.results.append(verdict)
                tampering += problems
            messages = [r.headline() if r.passed else r.report(width=100) for r in gc.results] + gc.problems
            nb.cells[gc.index].outputs = ([_stream("\n".join(messages) + "\n")] if gc.passed
                                          else [_error_output("\n".join(messages))])
        tampering = list(dict.fromkeys(tampering))
        for gc in graded:
            reasons = list(tampering)
            if gc.checks and gc.inkernel_passed is not None and gc.inkernel_passed != gc.visible_passed:
                reasons.append("the notebook's own check and the grader disagree")
            if reasons:
                statuses.add("flagged")
            cells[gc.grade_id] = {"points": gc.points, "score": gc.points if gc.passed else 0.0, "passed": gc.passed,
                                  "inkernel_passed": gc.inkernel_passed, "flagged": bool(reasons),
                                  "flag_reasons": reasons, "checks": [r.to_dict() for r in gc.results],
                                  "problems": gc.problems}

        for why in run.skip.values():
            statuses.add("timed out" if why == "over budget" else why)
        if run.over_budget():
            statuses.add("timed out")
        if any(r.get("ename") == "Timeout" for r in replies.values()):
            statuses.add("timed out")
        if any(r.get("ename") == "Crashed" for r in replies.values()):
            statuses.add("crashed")
        if refused:
            statuses.add("refused files")
        for cell in runnable.cells:
            for out in cell.get("outputs", []):
                if out.output_type == "error" and any(w in f"{out.ename}: {out.evalue}" for w in MEMORY_WORDS):
                    statuses.add("memory limit")
        report = {
            "isolation": isolation_level(),
            "status": sorted(statuses) or ["graded"],
            "seconds": round(seconds, 2),
            "kernel_restarts": run.restarts - 1,
            "events": run.events + [f"refused: {r}" for r in refused],
            "tampering": tampering,
            "cells": cells,
        }
        return nb, report
    finally:
        work.remove()


def _verdict(chk: CheckCall, collector: Collector | None, reply: dict | None) -> tuple[CheckResult, list[str]]:
    """Verify one check call's outcomes (plain data) against its cases, outside the sandbox; also what was wrong
    with the reply as a whole (a sign of tampering)."""
    def failed(message: str) -> CheckResult:
        return CheckResult(chk.exercise, chk.suite, (CaseResult("all cases", False, message),), 0.0)

    if collector is None:
        return failed("the cases of this check could not be built"), []
    if reply is None:
        return failed("not evaluated"), []
    if reply.get("status") != "ok":
        ename, evalue = reply.get("ename", "Error"), reply.get("evalue", "")
        if ename == "NameError":
            return failed(f"{chk.expression} is not defined: its solution cell did not run to the end "
                          f"({evalue})"), []
        return failed(f"your function could not be evaluated: {ename}: {evalue}"), []
    try:
        outcomes, forbidden, problems = protocol.read_reply(
            reply.get("data", {}).get("text/plain", ""), collector.nonces, [len(c.calls) for c in collector.cases])
    except Exception as exc:  # noqa: BLE001 - a missing or malformed reply fails the check
        return failed(f"no valid outcomes were produced ({type(exc).__name__})"), [
            "the graded call's reply was malformed"]
    results = []
    for case, outcome, used in zip(collector.cases, outcomes, forbidden):
        if outcome is None:
            results.append(CaseResult(case.name, False, "no valid outcome answers this case"))
            problems.append("a case got no valid outcome (missing, duplicated or malformed)")
        else:
            results.append(verify_case(case, outcome, used))
    return CheckResult(chk.exercise, chk.suite, tuple(results), 0.0, EXERCISES[chk.exercise].summary), problems


# ------------------------------------------------------------------------------------------------
# The nbgrader steps
# ------------------------------------------------------------------------------------------------
class IsolatedExecute(NbGraderPreprocessor):
    """nbgrader preprocessor replacing ``Execute`` (configured in nbgrader_config.py)."""

    enabled = Bool(True).tag(config=True)
    memory_mb = Integer(Limits.memory_mb, help="Address-space limit of the kernel (MB)").tag(config=True)
    cpu_seconds = Integer(Limits.cpu_seconds, help="CPU-time limit of the kernel (s)").tag(config=True)
    cell_timeout = Integer(Limits.cell_timeout, help="Wall time of one cell (s)").tag(config=True)
    collect_timeout = Integer(Limits.collect_timeout, help="Wall time of one graded call (s)").tag(config=True)
    submission_seconds = Integer(Limits.submission_seconds,
                                 help="Wall time of one notebook: cells, restarts, graded calls (s)").tag(config=True)
    max_restarts = Integer(Limits.max_restarts, help="Kernel restarts past crashing cells").tag(config=True)
    keep_figures = Bool(False, help="Draw, show and rasterise figures while grading (slower)").tag(config=True)
    report_root = Unicode("", help="Folder of the JSON reports (<assignment>/<student>/<notebook>.json)"
                          ).tag(config=True)
    source_root = Unicode("", help="The instructor notebooks (nbgrader's source folder)").tag(config=True)
    course_roots = Unicode("", help="os.pathsep-separated folders the sandbox must not see").tag(config=True)
    course_secret = Unicode("", help="With a secret, each student's hidden inputs are their own "
                                     "(hidden.personal_seed); keep it out of the repository").tag(config=True)

    def limits(self) -> Limits:
        return Limits(memory_mb=self.memory_mb, cpu_seconds=self.cpu_seconds, cell_timeout=self.cell_timeout,
                      collect_timeout=self.collect_timeout, submission_seconds=self.submission_seconds,
                      max_restarts=self.max_restarts, figures=self.keep_figures)

    def preprocess(self, nb: NotebookNode, resources: dict):
        # One core per submission: what the grader computes with torch is small, and a second torch thread spins
        # after every parallel op, taking the core of the other worker's kernel (measured: 0.2 s of every
        # segmentation submission with two workers on two cores).
        torch.set_num_threads(1)
        info = resources.get("nbgrader", {})
        submission_dir = Path(resources["metadata"]["path"])
        source = Path(self.source_root) / str(info.get("assignment")) / f"{info.get('notebook')}.ipynb"
        source_nb = nbformat.read(source, as_version=4) if self.source_root and source.is_file() else None
        roots = [Path(p) for p in self.course_roots.split(os.pathsep) if p]
        nb, report = grade_notebook(nb, submission_dir, roots, self.log, self.limits(), source_nb,
                                    info.get("student"), self.course_secret or None)
        report.update({"student": info.get("student"), "assignment": info.get("assignment"),
                       "notebook": info.get("notebook"),
                       "repairs": list(nb.metadata.get("lecturelib", {}).get("repairs", []))})
        resources["lecturelib"] = report
        if self.report_root:
            path = Path(self.report_root) / str(info.get("assignment")) / str(info.get("student")) / \
                f"{info.get('notebook')}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report, indent=1))
        self.log.info("isolated grading of %s/%s: %s (%s)", info.get("student"), info.get("notebook"),
                      ", ".join(report["status"]), report["isolation"])
        return nb, resources


class FlagDisagreements(NbGraderPreprocessor):
    """After ``SaveAutoGrades``: mark the test cells whose verdict needs a TA's eyes as "needs manual grade"
    (SaveAutoGrades resets the flag from the cell's output alone)."""

    enabled = Bool(True).tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict):
        report = resources.get("lecturelib")
        info = resources.get("nbgrader", {})
        flagged = [gid for gid, cell in (report or {}).get("cells", {}).items() if cell.get("flagged")]
        if not flagged:
            return nb, resources
        with Gradebook(info["db_url"]) as gb:
            for grade_id in flagged:
                try:
                    grade = gb.find_grade(grade_id, info["notebook"], info["assignment"], info["student"])
                except MissingEntry:
                    continue
                grade.needs_manual_grade = True
            gb.db.commit()
        return nb, resources
