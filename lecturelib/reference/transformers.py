"""Reference solutions of the transformers-recap exercises: ViT patches, RMSNorm, SwiGLU, top-k routing
and the load-balancing loss of a mixture of experts."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._validate import require_float, require_int, require_tensor

__all__ = ["patchify", "rms_norm", "swiglu", "top_k_routing", "load_balancing_loss"]


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into non-overlapping square patches, one flattened vector per patch.

    images: (N, C, H, W) with H and W divisible by patch_size = p.
    Returns (N, L, C*p*p) with L = (H/p) * (W/p): patch t covers grid row t // (W/p), column t % (W/p)
    (row-major), and is flattened channel first: feature c*p*p + i*p + j is pixel (i, j) of channel c,
    the layout of the weight of Conv2d(C, D, kernel_size=p, stride=p) reshaped to (D, C*p*p).
    """
    images = require_tensor("images", images, ndim=4)
    p = require_int("patch_size", patch_size, minimum=1)
    n, c, h, w = images.shape
    if h % p or w % p:
        raise ValueError(f"patch_size {p} must divide the image height and width, got H = {h}, W = {w}")
    gh, gw = h // p, w // p
    blocks = images.reshape(n, c, gh, p, gw, p)                    # (N, C, gy, i, gx, j)
    return blocks.permute(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, c * p * p)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dimension: x / sqrt(mean(x^2) + eps) * weight.

    x: (..., D); weight: (D,). Returns a tensor like x.
    """
    x = require_tensor("x", x, floating=True)
    weight = require_tensor("weight", weight, shape=(x.shape[-1],))
    eps = require_float("eps", eps, minimum=0.0)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def swiglu(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """The SwiGLU feed-forward layer: (silu(x @ w_gate) * (x @ w_up)) @ w_down.

    x: (..., D); w_gate, w_up: (D, F); w_down: (F, D). Returns (..., D).
    """
    return (F.silu(x @ w_gate) * (x @ w_up)) @ w_down


def top_k_routing(router_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixtral's router: the k experts with the largest logits and their gate weights.

    router_logits: (T, E). Returns (expert_indices (T, k) int64, largest logit first;
    gate_weights (T, k), the softmax over the k selected logits, summing to 1 per token).
    """
    router_logits = require_tensor("router_logits", router_logits, ndim=2, floating=True)
    k = require_int("k", k, minimum=1)
    if k > router_logits.shape[1]:
        raise ValueError(f"k = {k} is larger than the number of experts ({router_logits.shape[1]})")
    values, indices = router_logits.topk(k, dim=-1)
    return indices, values.softmax(dim=-1)


def load_balancing_loss(router_logits: torch.Tensor, expert_indices: torch.Tensor) -> torch.Tensor:
    """Switch Transformer's auxiliary loss E * sum_i f_i P_i, as a 0-d tensor.

    router_logits: (T, E); expert_indices: (T, k) int64 (from the router). f_i is the share of the T*k
    assignments that go to expert i, P_i the mean over tokens of softmax(router_logits)[:, i].
    """
    router_logits = require_tensor("router_logits", router_logits, ndim=2, floating=True)
    expert_indices = require_tensor("expert_indices", expert_indices, ndim=2, integer=True)
    num_experts = router_logits.shape[1]
    counts = torch.bincount(expert_indices.flatten(), minlength=num_experts)
    f = counts.to(router_logits.dtype) / expert_indices.numel()
    p = router_logits.softmax(dim=-1).mean(dim=0)
    return num_experts * (f * p).sum()
