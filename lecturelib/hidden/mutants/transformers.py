"""Mutant library of the transformers-recap exercises (format: ``mutants/__init__``).

Each mutant is a whole function the way a student would write it, with one realistic bug; its ``cause`` is
the text the hidden suite's report must contain. The alternatives are correct implementations written
differently from the reference (``lecturelib.reference.transformers``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import Alternative, Mutant


# ------------------------------------------------------------------------------------------------
# patchify(images (N, C, H, W), patch_size p) -> (N, L, C*p*p)
# ------------------------------------------------------------------------------------------------
def _grid(images, p):
    """(N, C, H/p, p, W/p, p) blocks, after the divisibility check."""
    n, c, h, w = images.shape
    if h % p or w % p:
        raise ValueError(f"patch_size {p} must divide H = {h} and W = {w}")
    return images.reshape(n, c, h // p, p, w // p, p)


def patchify_channels_last(images, patch_size):
    """Flattens each patch as (p, p, C), the layout of an (H, W, C) image."""
    n, c = images.shape[:2]
    blocks = _grid(images, patch_size)
    return blocks.permute(0, 2, 4, 3, 5, 1).reshape(n, -1, c * patch_size ** 2)


def patchify_column_major(images, patch_size):
    """Lists the patches column by column (grid x before grid y)."""
    n, c = images.shape[:2]
    blocks = _grid(images, patch_size)
    return blocks.permute(0, 4, 2, 1, 3, 5).reshape(n, -1, c * patch_size ** 2)


def patchify_reshape_only(images, patch_size):
    """A single reshape to (N, L, C*p*p), without a permute."""
    n, c, h, w = images.shape
    if h % patch_size or w % patch_size:
        raise ValueError("patch_size must divide H and W")
    return images.reshape(n, (h // patch_size) * (w // patch_size), c * patch_size ** 2)


def patchify_unfold_layout(images, patch_size):
    """Returns F.unfold's layout (N, C*p*p, L): features before tokens."""
    n, c = images.shape[:2]
    blocks = _grid(images, patch_size)
    return blocks.permute(0, 1, 3, 5, 2, 4).reshape(n, c * patch_size ** 2, -1)


def patchify_rows_cols_swapped(images, patch_size):
    """Inside a patch, flattens column j before row i (i and j swapped)."""
    n, c = images.shape[:2]
    blocks = _grid(images, patch_size)
    return blocks.permute(0, 2, 4, 1, 5, 3).reshape(n, -1, c * patch_size ** 2)


def patchify_crops_silently(images, patch_size):
    """No divisibility check: crops the image to a multiple of patch_size instead of raising."""
    n, c, h, w = images.shape
    p = patch_size
    images = images[:, :, : h // p * p, : w // p * p]
    blocks = images.reshape(n, c, h // p, p, w // p, p)
    return blocks.permute(0, 2, 4, 1, 3, 5).reshape(n, -1, c * p * p)


def patchify_message_without_name(images, patch_size):
    """Raises ValueError, but its message does not say which argument is wrong."""
    n, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h} x {w} is not a multiple of {p}")
    blocks = images.reshape(n, c, h // p, p, w // p, p)
    return blocks.permute(0, 2, 4, 1, 3, 5).reshape(n, -1, c * p * p)


def patchify_assert(images, patch_size):
    """Checks divisibility with assert (AssertionError, and gone under python -O) instead of ValueError."""
    n, c, h, w = images.shape
    p = patch_size
    assert h % p == 0 and w % p == 0, "patch_size must divide H and W"
    blocks = images.reshape(n, c, h // p, p, w // p, p)
    return blocks.permute(0, 2, 4, 1, 3, 5).reshape(n, -1, c * p * p)


def patchify_float32_loop(images, patch_size):
    """Fills a torch.zeros output (float32, whatever the input's dtype) patch by patch."""
    n, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError("patch_size must divide H and W")
    out = torch.zeros(n, (h // p) * (w // p), c * p * p)
    for t in range((h // p) * (w // p)):
        row, col = divmod(t, w // p)
        out[:, t] = images[:, :, row * p: (row + 1) * p, col * p: (col + 1) * p].reshape(n, -1)
    return out


def patchify_tensor_unfold(images, patch_size):
    """Correct: Tensor.unfold (a strided view, not F.unfold) twice, then permute."""
    n, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError("patch_size must divide H and W")
    patches = images.unfold(2, p, p).unfold(3, p, p)                  # (N, C, rows, cols, p, p)
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(n, -1, c * p * p)


def patchify_loop(images, patch_size):
    """Correct: a loop over the grid, row-major, keeping the dtype."""
    n, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError("patch_size must divide H and W")
    patches = [images[:, :, r: r + p, s: s + p].reshape(n, -1) for r in range(0, h, p) for s in range(0, w, p)]
    return torch.stack(patches, dim=1)


# ------------------------------------------------------------------------------------------------
# rms_norm(x (..., D), weight (D,), eps) -> like x
# ------------------------------------------------------------------------------------------------
def rms_layer_norm(x, weight, eps=1e-6):
    """Subtracts the mean first (LayerNorm without bias)."""
    centred = x - x.mean(-1, keepdim=True)
    return centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps) * weight


def rms_unbiased_variance(x, weight, eps=1e-6):
    """Centres and divides by the standard deviation from torch.var (unbiased)."""
    centred = x - x.mean(-1, keepdim=True)
    return centred / torch.sqrt(x.var(-1, keepdim=True) + eps) * weight


def rms_eps_outside(x, weight, eps=1e-6):
    """Adds eps after the square root."""
    return x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps) * weight


def rms_eps_ignored(x, weight, eps=1e-6):
    """Leaves eps out."""
    return x / x.pow(2).mean(-1, keepdim=True).sqrt() * weight


def rms_no_sqrt(x, weight, eps=1e-6):
    """Divides by the mean square, not its root."""
    return x / (x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rms_no_weight(x, weight, eps=1e-6):
    """Never applies the gain."""
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def rms_sum_of_squares(x, weight, eps=1e-6):
    """Uses sum(x^2) instead of mean(x^2)."""
    return x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps) * weight


def rms_first_dim(x, weight, eps=1e-6):
    """Normalises over dimension 0 (the batch) instead of the features."""
    return x / torch.sqrt(x.pow(2).mean(0, keepdim=True) + eps) * weight


def rms_no_keepdim(x, weight, eps=1e-6):
    """mean(-1) without keepdim: the (..., 1) axis is gone, so the division broadcasts the wrong way."""
    return x * torch.rsqrt(x.pow(2).mean(-1) + eps) * weight


def rms_float64_result(x, weight, eps=1e-6):
    """Computes in float64 for accuracy and returns float64 whatever the input's dtype."""
    x = x.double()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.double()


def rms_in_place(x, weight, eps=1e-6):
    """Scales x in place with mul_ (the caller's tensor)."""
    return x.mul_(torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)).mul_(weight)


def rms_by_norm(x, weight, eps=1e-6):
    """Correct: the root mean square from the vector norm, sqrt(|x|^2 / D + eps)."""
    d = x.shape[-1]
    return x / torch.sqrt(torch.linalg.vector_norm(x, dim=-1, keepdim=True) ** 2 / d + eps) * weight


# ------------------------------------------------------------------------------------------------
# swiglu(x (..., D), w_gate (D, F), w_up (D, F), w_down (F, D)) -> (..., D)
# ------------------------------------------------------------------------------------------------
def swiglu_sigmoid(x, w_gate, w_up, w_down):
    """Gates with sigmoid (GLU) instead of SiLU."""
    return (torch.sigmoid(x @ w_gate) * (x @ w_up)) @ w_down


def swiglu_gate_up_swapped(x, w_gate, w_up, w_down):
    """Applies silu to the up projection."""
    return (F.silu(x @ w_up) * (x @ w_gate)) @ w_down


def swiglu_gelu(x, w_gate, w_up, w_down):
    """Gates with GELU (GeGLU)."""
    return (F.gelu(x @ w_gate) * (x @ w_up)) @ w_down


def swiglu_gelu_tanh(x, w_gate, w_up, w_down):
    """Gates with the tanh approximation of GELU."""
    return (F.gelu(x @ w_gate, approximate="tanh") * (x @ w_up)) @ w_down


def swiglu_relu(x, w_gate, w_up, w_down):
    """Gates with ReLU (ReGLU)."""
    return (torch.relu(x @ w_gate) * (x @ w_up)) @ w_down


def swiglu_linear_layout(x, w_gate, w_up, w_down):
    """Transposes the weights as if they were nn.Linear weights (out, in)."""
    return (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


def swiglu_no_up(x, w_gate, w_up, w_down):
    """Forgets the up projection."""
    return F.silu(x @ w_gate) @ w_down


def swiglu_silu_after_product(x, w_gate, w_up, w_down):
    """Applies silu to the product of both projections."""
    return F.silu((x @ w_gate) * (x @ w_up)) @ w_down


def swiglu_written_out(x, w_gate, w_up, w_down):
    """Correct: silu written out as z / (1 + exp(-z))."""
    gate = x @ w_gate
    return ((gate / (1 + torch.exp(-gate))) * (x @ w_up)) @ w_down


def swiglu_einsum(x, w_gate, w_up, w_down):
    """Correct: einsum projections and z * sigmoid(z)."""
    gate = torch.einsum("...d,df->...f", x, w_gate)
    up = torch.einsum("...d,df->...f", x, w_up)
    return torch.einsum("...f,fd->...d", gate * torch.sigmoid(gate) * up, w_down)


# ------------------------------------------------------------------------------------------------
# top_k_routing(router_logits (T, E), k) -> (expert_indices (T, k) int64, gate_weights (T, k))
# ------------------------------------------------------------------------------------------------
def _need_k(router_logits, k):
    if k > router_logits.shape[-1]:
        raise ValueError(f"k = {k} is larger than the number of experts {router_logits.shape[-1]}")


def routing_not_renormalised(router_logits, k):
    """Softmax over all experts, then top-k of the probabilities (Switch style): weights do not sum to 1."""
    _need_k(router_logits, k)
    weights, indices = router_logits.softmax(-1).topk(k, dim=-1)
    return indices, weights


def routing_ascending(router_logits, k):
    """argsort ascending and the first k: the k smallest logits."""
    _need_k(router_logits, k)
    indices = router_logits.argsort(dim=-1)[:, :k]
    return indices, router_logits.gather(1, indices).softmax(-1)


def routing_ascending_tail(router_logits, k):
    """argsort ascending and the last k: the right experts, smallest first."""
    _need_k(router_logits, k)
    indices = router_logits.argsort(dim=-1)[:, -k:]
    return indices, router_logits.gather(1, indices).softmax(-1)


def routing_by_value(router_logits, k):
    """Looks up where each top value occurs: equal logits give the same expert twice."""
    _need_k(router_logits, k)
    values = router_logits.topk(k, dim=-1).values
    indices = torch.stack([torch.stack([(row == v).nonzero()[0, 0] for v in vals])
                           for row, vals in zip(router_logits, values)])
    return indices, values.softmax(-1)


def routing_no_check(router_logits, k):
    """Clamps k to the number of experts instead of raising."""
    k = min(k, router_logits.shape[-1])
    values, indices = router_logits.topk(k, dim=-1)
    return indices, values.softmax(-1)


def routing_assert(router_logits, k):
    """Checks k with assert (AssertionError) instead of raising ValueError."""
    assert k <= router_logits.shape[-1], "k must not exceed the number of experts"
    values, indices = router_logits.topk(k, dim=-1)
    return indices, values.softmax(-1)


def routing_message_without_k(router_logits, k):
    """Raises ValueError for k > E with a message that does not name k."""
    if k > router_logits.shape[-1]:
        raise ValueError("too many experts requested")
    values, indices = router_logits.topk(k, dim=-1)
    return indices, values.softmax(-1)


def routing_refuses_k_equal_e(router_logits, k):
    """Raises for k >= E: k = E (every expert) is allowed."""
    if k >= router_logits.shape[-1]:
        raise ValueError(f"k = {k} must be smaller than the number of experts")
    values, indices = router_logits.topk(k, dim=-1)
    return indices, values.softmax(-1)


def routing_int32_indices(router_logits, k):
    """Returns the indices as int32 (.int())."""
    _need_k(router_logits, k)
    values, indices = router_logits.topk(k, dim=-1)
    return indices.int(), values.softmax(-1)


def routing_raw_logits(router_logits, k):
    """Returns the selected logits as gate weights."""
    _need_k(router_logits, k)
    values, indices = router_logits.topk(k, dim=-1)
    return indices, values


def routing_softmax_over_tokens(router_logits, k):
    """Softmax along dim 0 (over the tokens) instead of over the k selected logits."""
    _need_k(router_logits, k)
    values, indices = router_logits.topk(k, dim=-1)
    return indices, values.softmax(0)


def routing_masks_in_place(router_logits, k):
    """Picks the argmax k times, masking each pick with -inf in the caller's logits."""
    _need_k(router_logits, k)
    values, indices = [], []
    for _ in range(k):
        v, i = router_logits.max(dim=-1)
        values.append(v)
        indices.append(i)
        router_logits[torch.arange(router_logits.shape[0]), i] = float("-inf")
    values = torch.stack(values, 1)
    return torch.stack(indices, 1), values.softmax(-1)


def routing_argsort(router_logits, k):
    """Correct: a stable descending argsort (ties to the lower index)."""
    _need_k(router_logits, k)
    indices = router_logits.argsort(dim=-1, descending=True, stable=True)[:, :k]
    return indices, router_logits.gather(1, indices).softmax(-1)


def routing_reverse_ties(router_logits, k):
    """Correct: ties broken towards the higher expert index."""
    _need_k(router_logits, k)
    flipped = router_logits.flip(-1).argsort(dim=-1, descending=True, stable=True)[:, :k]
    indices = router_logits.shape[-1] - 1 - flipped
    return indices, router_logits.gather(1, indices).softmax(-1)


def routing_renormalised_probs(router_logits, k):
    """Correct: softmax over all experts, top-k, then divide by the kept sum (equal to the softmax over k)."""
    _need_k(router_logits, k)
    probs, indices = router_logits.softmax(-1).topk(k, dim=-1)
    return indices, probs / probs.sum(-1, keepdim=True)


# ------------------------------------------------------------------------------------------------
# load_balancing_loss(router_logits (T, E), expert_indices (T, k) int64) -> 0-d tensor
# ------------------------------------------------------------------------------------------------
def _f_and_p(router_logits, expert_indices):
    e = router_logits.shape[1]
    counts = torch.bincount(expert_indices.flatten(), minlength=e).to(router_logits.dtype)
    return e, counts, router_logits.softmax(-1).mean(0)


def balance_no_factor(router_logits, expert_indices):
    """Forgets the factor E."""
    e, counts, p = _f_and_p(router_logits, expert_indices)
    return (counts / expert_indices.numel() * p).sum()


def balance_mean_over_experts(router_logits, expert_indices):
    """Takes the mean over the experts instead of E times the sum."""
    e, counts, p = _f_and_p(router_logits, expert_indices)
    return (counts / expert_indices.numel() * p).mean()


def balance_per_token(router_logits, expert_indices):
    """Divides the counts by T only (HF Mixtral's convention: the f_i sum to k)."""
    e, counts, p = _f_and_p(router_logits, expert_indices)
    return e * (counts / expert_indices.shape[0] * p).sum()


def balance_first_choice(router_logits, expert_indices):
    """Counts only each token's first expert."""
    e = router_logits.shape[1]
    counts = torch.bincount(expert_indices[:, 0], minlength=e).to(router_logits.dtype)
    p = router_logits.softmax(-1).mean(0)
    return e * (counts / expert_indices.shape[0] * p).sum()


def balance_probs_as_f(router_logits, expert_indices):
    """Uses the mean router probabilities for f_i as well."""
    e, _, p = _f_and_p(router_logits, expert_indices)
    return e * (p * p).sum()


def balance_gates_as_p(router_logits, expert_indices):
    """P_i from the renormalised top-k gate weights instead of the full softmax."""
    e, counts, _ = _f_and_p(router_logits, expert_indices)
    gates = router_logits.gather(1, expert_indices).softmax(-1)
    p = torch.zeros_like(router_logits).scatter_(1, expert_indices, gates).mean(0)
    return e * (counts / expert_indices.numel() * p).sum()


def balance_python_float(router_logits, expert_indices):
    """Returns a Python float (.item())."""
    e, counts, p = _f_and_p(router_logits, expert_indices)
    return (e * (counts / expert_indices.numel() * p).sum()).item()


def balance_per_expert(router_logits, expert_indices):
    """Returns the E terms instead of their sum."""
    e, counts, p = _f_and_p(router_logits, expert_indices)
    return e * counts / expert_indices.numel() * p


def balance_softmax_over_tokens(router_logits, expert_indices):
    """Softmax along dim 0 (over the tokens) for P_i."""
    e, counts, _ = _f_and_p(router_logits, expert_indices)
    p = router_logits.softmax(0).mean(0)
    return e * (counts / expert_indices.numel() * p).sum()


def balance_float64_counts(router_logits, expert_indices):
    """Counts converted with .double(): the loss comes out float64 whatever the logits' dtype."""
    e = router_logits.shape[1]
    f = torch.bincount(expert_indices.flatten(), minlength=e).double() / expert_indices.numel()
    return e * (f * router_logits.softmax(-1).mean(0)).sum()


def balance_stabilised_in_place(router_logits, expert_indices):
    """Subtracts the row max in place (for a stable softmax): changes the caller's logits."""
    router_logits -= router_logits.max(-1, keepdim=True).values
    e, counts, p = _f_and_p(router_logits, expert_indices)
    return e * (counts / expert_indices.numel() * p).sum()


def balance_one_hot(router_logits, expert_indices):
    """Correct: f from one_hot over the (T, k) assignments, a dot product."""
    e = router_logits.shape[1]
    f = F.one_hot(expert_indices, e).to(router_logits.dtype).mean(dim=(0, 1))
    return e * torch.dot(f, router_logits.softmax(-1).mean(0))


# ------------------------------------------------------------------------------------------------
# The library
# ------------------------------------------------------------------------------------------------
_DTYPE = "keep the dtype of the input"

MUTANTS = {
    "patchify": [
        Mutant("channels last", patchify_channels_last, "channels last",
               rule="each patch is flattened channel first"),
        Mutant("column-major patches", patchify_column_major, "column-major order",
               rule="patches in row-major order"),
        Mutant("reshape without permute", patchify_reshape_only, "a reshape without a permute"),
        Mutant("F.unfold's layout", patchify_unfold_layout, "F.unfold's layout (N, C*p*p, L)"),
        Mutant("rows and columns swapped in a patch", patchify_rows_cols_swapped, "rows and columns are swapped"),
        Mutant("crops instead of raising", patchify_crops_silently, "expected ValueError",
               rule="ValueError when H or W is not divisible"),
        Mutant("message without patch_size", patchify_message_without_name, "should mention 'patch_size'",
               rule="the ValueError mentions patch_size"),
        Mutant("assert instead of ValueError", patchify_assert, "expected ValueError, but got AssertionError",
               rule="ValueError when H or W is not divisible"),
        Mutant("float32 output", patchify_float32_loop, _DTYPE, rule="the dtype is kept"),
    ],
    "rms_norm": [
        Mutant("LayerNorm", rms_layer_norm, "that is LayerNorm", rule="no centring"),
        Mutant("LayerNorm with torch.var", rms_unbiased_variance, "unbiased variance"),
        Mutant("eps outside the root", rms_eps_outside, "eps is added outside the square root",
               rule="eps inside the square root"),
        Mutant("eps ignored", rms_eps_ignored, "eps is missing", rule="eps inside the square root"),
        Mutant("no square root", rms_no_sqrt, "the square root is missing"),
        Mutant("weight not applied", rms_no_weight, "the weight (the learned per-feature gain) is not applied",
               rule="multiplied by the per-feature weight"),
        Mutant("sum of squares", rms_sum_of_squares, "sum(x^2) was used instead of mean(x^2)"),
        Mutant("normalised over dim 0", rms_first_dim, "instead of the last one", rule="over the last dimension"),
        Mutant("mean without keepdim", rms_no_keepdim, "keepdim=True"),
        Mutant("float64 result", rms_float64_result, _DTYPE, rule="returns a tensor like x"),
        Mutant("x.mul_ in place", rms_in_place, "modified its argument `x` in place"),
    ],
    "swiglu": [
        Mutant("sigmoid gate", swiglu_sigmoid, "the gate uses sigmoid(x W_gate)", rule="the gate uses SiLU"),
        Mutant("gate and up swapped", swiglu_gate_up_swapped, "gate and up projections are swapped",
               rule="silu(x @ w_gate) * (x @ w_up)"),
        Mutant("GELU gate", swiglu_gelu, "GELU was used: that is GeGLU"),
        Mutant("tanh-GELU gate", swiglu_gelu_tanh, "the tanh approximation of GELU"),
        Mutant("ReLU gate", swiglu_relu, "ReLU was used"),
        Mutant("nn.Linear layout", swiglu_linear_layout, "the weights are laid out for x @ W",
               rule="w_gate, w_up (D, F), w_down (F, D)"),
        Mutant("no up projection", swiglu_no_up, "the up projection (the linear, ungated half) is missing"),
        Mutant("silu after the product", swiglu_silu_after_product, "silu is applied after the product"),
    ],
    "top_k_routing": [
        Mutant("probabilities not renormalised", routing_not_renormalised, "not renormalised",
               rule="gate weights are the softmax over the k selected logits"),
        Mutant("k smallest", routing_ascending, "the k SMALLEST logits"),
        Mutant("smallest first", routing_ascending_tail, "not in order: list them by decreasing logit",
               rule="largest first"),
        Mutant("top values looked up by value", routing_by_value, "an expert is chosen twice for one token",
               rule="a token never gets the same expert twice"),
        Mutant("k clamped instead of raising", routing_no_check, "expected ValueError",
               rule="ValueError when k > E"),
        Mutant("assert instead of ValueError", routing_assert, "expected ValueError, but got AssertionError",
               rule="ValueError when k > E"),
        Mutant("ValueError without k", routing_message_without_k, "should mention 'k'",
               rule="the ValueError mentions k"),
        Mutant("k = E refused", routing_refuses_k_equal_e, "k = E is allowed", rule="k = E is allowed"),
        Mutant("int32 indices", routing_int32_indices, "expected torch.int64", rule="expert_indices int64"),
        Mutant("raw logits as weights", routing_raw_logits, "these are the raw logits"),
        Mutant("softmax over the tokens", routing_softmax_over_tokens, "over the tokens"),
        Mutant("-inf masking in place", routing_masks_in_place, "modified its argument `router_logits` in place"),
    ],
    "load_balancing_loss": [
        Mutant("no factor E", balance_no_factor, "the factor num_experts is missing",
               rule="loss = E * sum_i f_i P_i"),
        Mutant("mean over experts", balance_mean_over_experts, "a mean over the experts instead of the sum"),
        Mutant("counts / T (HF Mixtral)", balance_per_token, "HF Mixtral's convention",
               rule="f_i is the share of the T * k assignments"),
        Mutant("first choice only", balance_first_choice, "only each token's first choice was counted"),
        Mutant("probabilities as f", balance_probs_as_f, "f_i was computed from the router probabilities"),
        Mutant("gates as P", balance_gates_as_p, "P_i was computed from the renormalised top-k gate weights",
               rule="P_i is the mean of the full softmax"),
        Mutant("Python float", balance_python_float, "returned a Python number", rule="returns a 0-d tensor"),
        Mutant("per-expert terms", balance_per_expert, "expected a 0-d tensor", rule="returns a 0-d tensor"),
        Mutant("softmax over the tokens", balance_softmax_over_tokens, "over the tokens"),
        Mutant("float64 counts", balance_float64_counts, _DTYPE, rule="the loss has the dtype of the logits"),
        Mutant("logits stabilised in place", balance_stabilised_in_place,
               "modified its argument `router_logits` in place"),
    ],
}

ALTERNATIVES = {
    "patchify": [Alternative("Tensor.unfold twice", patchify_tensor_unfold), Alternative("loop over the grid", patchify_loop)],
    "rms_norm": [Alternative("vector norm", rms_by_norm)],
    "swiglu": [Alternative("silu written out", swiglu_written_out), Alternative("einsum", swiglu_einsum)],
    "top_k_routing": [Alternative("stable descending argsort", routing_argsort),
                      Alternative("ties to the higher index", routing_reverse_ties),
                      Alternative("renormalised probabilities", routing_renormalised_probs)],
    "load_balancing_loss": [Alternative("one_hot and dot", balance_one_hot)],
}
