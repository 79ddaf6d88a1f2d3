"""Argument checks shared by every public function.

Bad input must fail early with an error that names the argument and says what was expected,
never deep inside torch. Each helper returns the value it checked, so calls read as assignments::

    x = require_tensor("x", x, ndim=4)
    stride = require_int("stride", stride, minimum=1)
"""
from __future__ import annotations

import numbers
from typing import Callable

import numpy as np
import torch

__all__ = [
    "require_tensor",
    "require_int",
    "require_pair",
    "require_float",
    "require_array",
    "require_callable",
    "require_module",
    "describe",
]


def describe(value) -> str:
    """A short description of a value for error messages: type, and shape/dtype for arrays."""
    if isinstance(value, torch.Tensor):
        return f"torch.Tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, np.ndarray):
        return f"np.ndarray of shape {value.shape} and dtype {value.dtype}"
    return f"{type(value).__name__} {value!r}"[:120]


def require_tensor(name: str, value, *, ndim: int | tuple[int, ...] | None = None,
                   floating: bool | None = None, integer: bool | None = None,
                   shape: tuple | None = None) -> torch.Tensor:
    """Check that ``value`` is a ``torch.Tensor`` with the given rank and kind of dtype.

    ``shape`` may contain ``None`` for free dimensions, e.g. ``(None, 4)`` for a box list.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {describe(value)}")
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if ndims is not None and value.ndim not in ndims:
        want = " or ".join(str(n) for n in ndims)
        raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(value.shape)}")
    if shape is not None:
        ok = value.ndim == len(shape) and all(s is None or s == v for s, v in zip(shape, value.shape))
        if not ok:
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {tuple(value.shape)}")
    if floating is True and not value.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
    if integer is True and (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        raise TypeError(f"{name} must have an integer dtype (e.g. torch.long), got {value.dtype}")
    return value


def require_array(name: str, value, *, ndim: int | None = None) -> np.ndarray:
    """Check that ``value`` is a numpy array (or convertible nested list) of the given rank."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except Exception as exc:  # noqa: BLE001 - reported as a TypeError naming the argument
            raise TypeError(f"{name} must be an array, got {describe(value)}") from exc
    if value.dtype == object:
        raise TypeError(f"{name} must be a numeric array, got dtype object")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {value.shape}")
    return value


def require_int(name: str, value, *, minimum: int | None = None) -> int:
    """Check that ``value`` is an integer (bool and floats are refused) no smaller than ``minimum``."""
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {describe(value)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def require_pair(name: str, value, *, minimum: int | None = None) -> tuple[int, int]:
    """An int or a pair of ints, as torch accepts for kernel sizes, strides and padding."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        return (require_int(f"{name}[0]", value[0], minimum=minimum),
                require_int(f"{name}[1]", value[1], minimum=minimum))
    v = require_int(name, value, minimum=minimum)
    return (v, v)


def require_float(name: str, value, *, minimum: float | None = None, maximum: float | None = None) -> float:
    """Check that ``value`` is a real number in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {describe(value)}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def require_module(name: str, value) -> "torch.nn.Module":
    """Check that ``value`` is a ``torch.nn.Module`` (a model or a layer)."""
    if not isinstance(value, torch.nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {describe(value)}")
    return value


def require_callable(name: str, value) -> Callable:
    """Check that ``value`` can be called: a function (the student's, or the reference) or any callable."""
    if not callable(value):
        raise TypeError(f"{name} must be a function, got {describe(value)}")
    return value
