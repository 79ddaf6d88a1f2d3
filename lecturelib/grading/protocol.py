"""What crosses the sandbox boundary, and in which form.

Into the sandbox, only at the moment of the graded call: one IPython *user expression* that runs the grader's
own copy of ``checks/runner.py`` (compiled here, sent marshalled, run in a fresh module) on the student's function, with the calls
of every case (``torch.save``, base64) and a nonce per case. Nothing is written where code that ran earlier
could read it. Out of the sandbox: the expression's value, a JSON string whose arrays travel as one ``.npz``
read with ``allow_pickle=False``; its size, the arrays' declared sizes and every node are checked before
anything is decoded, and every case must be answered exactly once, by its own nonce. Nothing the student's
code built is ever unpickled or called by the grader; decoded outcomes are fresh tensors, arrays and numbers.
"""
from __future__ import annotations

import ast
import base64
import functools
import io
import json
import marshal
import secrets
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..checks import runner
from ..checks.core import Observed, Raised

RUNNER_SOURCE = Path(runner.__file__).read_text()
MAX_REPLY_CHARS = 256 * 1024 * 1024     # the user expression's repr, as the kernel sends it
MAX_ARRAY_BYTES = 512 * 1024 * 1024     # all arrays of one reply, decompressed


def new_nonce() -> str:
    return secrets.token_hex(8)


def request(cases, forbidden) -> tuple[str, list[str]]:
    """``(payload, nonces)``: the calls of ``cases`` and the exercise's forbidden ops, as the runner reads them."""
    nonces = [new_nonce() for _ in cases]
    observer = lambda call: call.observer if isinstance(call.observer, str) else None  # noqa: E731
    body = {"forbidden": runner.forbidden_spec(forbidden),
            "cases": [{"nonce": nonce, "calls": [(c.args, c.kwargs, observer(c)) for c in case.calls]}
                      for nonce, case in zip(nonces, cases)]}
    buffer = io.BytesIO()
    torch.save(body, buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii"), nonces


@functools.cache
def runner_code() -> str:
    """The runner compiled once by the grader, marshalled, base64 (the kernel runs the grader's interpreter: the
    sandbox starts the same venv's python). Measured: 0.7 ms to load in the kernel, where compiling the source
    took 5 ms of every graded call."""
    return base64.b64encode(marshal.dumps(compile(RUNNER_SOURCE, runner.RUNNER_FILENAME, "exec"))).decode("ascii")


def collector_expression(fn_expression: str, payload: str, audit_nonce: str) -> str:
    """A user expression that raises the audit nonce, loads the runner into a fresh module and runs it."""
    name = f"_lecturelib_runner_{audit_nonce}"
    return ("(lambda sys, types, marshal, base64: (sys.audit('lecturelib.nonce', {nonce!r}), "
            "(m := types.ModuleType({name!r})), sys.modules.__setitem__({name!r}, m), "
            "exec(marshal.loads(base64.b64decode({code!r})), m.__dict__), "
            "m.collect({fn}, {payload!r}))[-1])(__import__('sys'), __import__('types'), __import__('marshal'), "
            "__import__('base64'))").format(nonce=audit_nonce, name=name, code=runner_code(), fn=fn_expression,
                                            payload=payload)


# ------------------------------------------------------------------------------------------------
# Reading the reply
# ------------------------------------------------------------------------------------------------
def _arrays(blob: bytes) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz``, after checking their declared sizes (a small archive must not expand to GiBs)."""
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        if sum(info.file_size for info in archive.infolist()) > MAX_ARRAY_BYTES:
            raise ValueError("outcome arrays too large")
        for info in archive.infolist():
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:
                    raise ValueError("unknown array format")
                shape, _, dtype = read_header(member)
                if dtype.hasobject:
                    raise ValueError("outcome arrays must not hold Python objects")
                if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize > MAX_ARRAY_BYTES:
                    raise ValueError("outcome array too large")
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def _decode(node, arrays, depth=0):
    if depth > 8 or not isinstance(node, dict) or len(node) != 1:
        raise ValueError("malformed outcome")
    (kind, payload), = node.items()
    if kind == "raised":
        type_name, message, where = (str(x)[:2000] for x in payload)
        return Raised(type_name, message, where)
    if kind == "observed":
        value, facts = payload
        return Observed(_decode(value, arrays, depth + 1), _decode(facts, arrays, depth + 1))
    if kind == "tensor":
        return torch.from_numpy(np.array(arrays[str(payload)], copy=True))
    if kind == "array":
        return np.array(arrays[str(payload)], copy=True)
    if kind in ("tuple", "list"):
        items = [_decode(v, arrays, depth + 1) for v in payload]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        return {str(k): _decode(v, arrays, depth + 1) for k, v in payload.items()}
    if kind == "float":
        return float(payload)
    if kind == "value":
        if type(payload) not in (bool, int, float, str, type(None)):
            raise ValueError("malformed outcome value")
        return payload
    raise ValueError(f"unknown outcome kind {kind!r}")


def decode(text: str) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The JSON string the runner returned: its case records and arrays, checked."""
    if not isinstance(text, str) or len(text) > MAX_REPLY_CHARS:
        raise ValueError("reply missing or too large")
    tree = json.loads(text)
    return tree["cases"], _arrays(base64.b64decode(tree["arrays"], validate=True))


def read_reply(text_plain: str, nonces: list[str], calls_per_case: list[int]) -> tuple[list, list, list[str]]:
    """Outcomes per case from the user expression's ``text/plain`` value (the repr of the runner's JSON string).

    Returns ``(outcomes, forbidden, problems)``: per case, the decoded outcomes (or None when the case has no
    valid answer: missing, duplicated or malformed) and the forbidden ops reported; ``problems`` lists what was
    wrong with the reply as a whole (records answering no case)."""
    records, arrays = decode(ast.literal_eval(text_plain))
    by_nonce: dict[str, list] = {}
    for record in records:
        by_nonce.setdefault(str(record.get("nonce")) if isinstance(record, dict) else "", []).append(record)
    problems = [f"{len(v)} outcome(s) answer no case" for k, v in by_nonce.items() if k not in nonces]
    outcomes, forbidden = [], []
    for nonce, n_calls in zip(nonces, calls_per_case):
        found = by_nonce.get(nonce, [])
        try:
            if len(found) != 1:
                raise ValueError("missing" if not found else "answered twice")
            values = [_decode(o, arrays) for o in found[0]["outcomes"]]
            if len(values) != n_calls:
                raise ValueError("wrong number of outcomes")
            outcomes.append(values)
            forbidden.append([str(x)[:200] for x in found[0]["forbidden"]])
        except (ValueError, KeyError, TypeError, IndexError):
            outcomes.append(None)
            forbidden.append([])
    return outcomes, forbidden, problems
