"""What crosses the sandbox boundary, and in which form.

Into the sandbox: the calls of each case (trusted data, written with ``torch.save`` by the grader).
Out of the sandbox: the outcomes of those calls as plain data only: a JSON tree whose arrays are
stored in an ``.npz`` file read with ``allow_pickle=False``. Nothing the student's code built is
ever unpickled or called by the grader; decoded outcomes are fresh tensors, arrays and numbers.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..checks.core import Call, Observed, Raised

MAX_OUTCOME_BYTES = 256 * 1024 * 1024
MAX_JSON_BYTES = 8 * 1024 * 1024


def save_calls(calls: list, path: Path) -> None:
    """The calls of one suite: a list (per case) of lists of (args, kwargs, observer)."""
    torch.save([[(call.args, call.kwargs, call.observer) for call in case_calls] for case_calls in calls], path)


def load_calls(path: Path) -> list:
    """The calls of one suite as :class:`Call` objects (per case, a list)."""
    return [[Call(*args, **kwargs).observed_by(observer) if observer else Call(*args, **kwargs)
             for args, kwargs, observer in case_calls] for case_calls in torch.load(path, weights_only=False)]


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
            key = f"a{len(self.arrays)}"
            tensor = value.detach().cpu()
            if tensor.dtype == torch.bfloat16:
                tensor = tensor.float()
            self.arrays[key] = tensor.numpy()
            return {"tensor": key}
        if type(value) is np.ndarray:
            key = f"a{len(self.arrays)}"
            self.arrays[key] = value
            return {"array": key}
        if type(value) in (tuple, list):
            return {"tuple" if type(value) is tuple else "list": [self.encode(v, depth + 1) for v in value]}
        if type(value) is dict:
            return {"dict": {str(k): self.encode(v, depth + 1) for k, v in value.items()}}
        if type(value) is float and not math.isfinite(value):
            return {"float": repr(value)}
        if type(value) in (bool, int, float, str, type(None)):
            return {"value": value}
        raise ValueError(f"cannot encode {type(value).__name__}")


def save_outcomes(outcomes: list, forbidden: list, path: Path) -> None:
    """``outcomes``: per case, a list of sanitized values or Raised; ``forbidden``: per case, op names."""
    encoder = _Encoder()
    tree = {"cases": [[encoder.encode(o) for o in case] for case in outcomes], "forbidden": forbidden}
    np.savez(path.with_suffix(".npz"), **encoder.arrays)
    path.with_suffix(".json").write_text(json.dumps(tree))


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


def load_outcomes(path: Path) -> tuple[list, list]:
    """Read outcomes written in the sandbox: plain data only, size-limited."""
    json_path, npz_path = path.with_suffix(".json"), path.with_suffix(".npz")
    if json_path.stat().st_size > MAX_JSON_BYTES or npz_path.stat().st_size > MAX_OUTCOME_BYTES:
        raise ValueError("outcomes too large")
    tree = json.loads(json_path.read_text())
    with np.load(npz_path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    cases = [[_decode(o, arrays) for o in case] for case in tree["cases"]]
    forbidden = [[str(x) for x in case] for case in tree["forbidden"]]
    return cases, forbidden
