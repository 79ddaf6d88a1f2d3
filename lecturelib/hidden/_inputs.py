"""Deterministic inputs for the case builders: seeded generators, random tensors, readable shapes."""
from __future__ import annotations

import torch


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def randn(shape, seed, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=generator(seed), dtype=dtype)


def shape_str(shape) -> str:
    return "x".join(str(s) for s in shape)


def dtype_of(spec, default: str = "float64") -> torch.dtype:
    return getattr(torch, spec.get("dtype", default))
