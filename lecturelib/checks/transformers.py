"""Checks of the transformers-recap exercises (student side: verifiers only): ViT patches, RMSNorm, SwiGLU,
top-k routing and the load-balancing loss of a mixture of experts.

Each case's data (built grader-side in ``lecturelib.hidden.transformers``) holds the expected output and the
outputs that known mistakes give on the same inputs; the verifiers here compare, name the mistake a wrong
answer matches, and check properties that need no answer: patchify + Linear equals the Conv2d patch embedding
given in the data; RMSNorm is scale invariant; a routing is valid whatever way ties are broken (its experts'
logits are the k largest that the data lists).

Library versions of what the exercises implement are refused while the student's function runs:
``F.unfold`` at the ATen level (``im2col``); ``F.rms_norm``/``nn.RMSNorm`` and ``F.layer_norm`` at the
``torch.nn.functional`` level (:class:`TorchFunctionWatch`), because on the CPU ``rms_norm`` is a
composite operator that reaches the dispatcher only as ``pow``, ``mean`` and ``rsqrt``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .core import (Exercise, ForbiddenOp, Mismatch, Raised, TorchFunctionWatch, compare, expect_raises,
                   expect_tensor, explainer, known_mistake, matches, register, revealing, verifier)

_NORMS = (
    TorchFunctionWatch(((F.rms_norm, "F.rms_norm / nn.RMSNorm"), (torch.rms_norm, "torch.rms_norm"),
                        (F.layer_norm, "F.layer_norm / nn.LayerNorm"), (torch.layer_norm, "torch.layer_norm"),
                        (F.group_norm, "F.group_norm / nn.GroupNorm"), (torch.group_norm, "torch.group_norm"))),
    ForbiddenOp("native_layer_norm", "a layer-norm kernel (F.layer_norm / nn.LayerNorm)"),
    ForbiddenOp("native_group_norm", "a group-norm kernel (F.group_norm / nn.GroupNorm)"),
    ForbiddenOp("rms_norm", "torch.ops.aten.rms_norm"),          # composite: seen at the call (runner)
    ForbiddenOp("_fused_rms_norm", "torch.ops.aten._fused_rms_norm"),
)
_UNFOLD = (ForbiddenOp("im2col", "F.unfold / nn.Unfold (write the reshape and permute yourself)"),)


def _tolerance(dtype, atol=1e-5, rtol=1e-5) -> dict:
    """compare's defaults in float64; float32 results of the same formula differ by rounding."""
    return {} if dtype == torch.float64 else {"atol": atol, "rtol": rtol}


def _closest_mistake(got, mistakes, tol: float = 1e-5) -> str | None:
    """The cause of the known mistake nearest to ``got`` among those within ``tol`` of it: two mistakes can agree
    to ``tol`` on ordinary inputs (eps inside or outside the root, exact or tanh GELU), and the nearest is the one
    made (``known_mistake`` would name the first listed)."""
    best = None
    for output, cause in mistakes:
        if not (isinstance(output, torch.Tensor) and matches(got, output, tol)):
            continue
        err = float((got.to(torch.float64) - output.to(torch.float64)).abs().max()) if got.numel() else 0.0
        if best is None or err < best[0]:
            best = (err, cause)
    return best[1] if best else None


def _expect_value_error(outcome, mentioning: str, reveal: bool) -> None:
    """expect_raises for a ValueError, without quoting the student's message in hidden cases (it could
    quote the hidden inputs)."""
    try:
        expect_raises(outcome, ("ValueError",), mentioning=mentioning)
    except Mismatch:
        if reveal or outcome.type_name == "NotImplementedError":
            raise
        right = outcome.type_name == "ValueError"
        raise Mismatch(f"the ValueError is right, but its message should mention '{mentioning}'" if right
                       else f"expected ValueError, but got {outcome.type_name} (its message is not shown for "
                            "hidden cases)") from None


# ------------------------------------------------------------------------------------------------
# patchify
# ------------------------------------------------------------------------------------------------
_UNFOLD_LAYOUT = ("the last two axes look swapped: that is F.unfold's layout (N, C*p*p, L); a transformer wants "
                  "tokens first: (N, L, C*p*p)")


def _patchify_shape_cause(shape, expected_shape, reveal) -> str:
    """Why an output has the wrong shape; ``expected_shape`` is (N, L, C*p*p)."""
    n, length, features = expected_shape
    if tuple(shape) == (n, features, length):
        return _UNFOLD_LAYOUT
    if len(shape) in (5, 6):
        return "flatten each patch into one vector of C*p*p numbers and the grid into one axis of L patches"
    if not reveal:
        return "L = (H / p) * (W / p) patches of C * p * p numbers each"
    return f"L = (H / p) * (W / p) = {length} patches of C * p * p = {features} numbers each"


def _diagnose_patchify(got, data) -> str | None:
    # A permutation of the right values: only an exact match names a mistake. F.unfold's layout has the
    # expected shape only when L = C*p*p.
    unfold_layout = matches(got.transpose(1, 2), data["expected"], tol=0)
    return known_mistake(got, data["mistakes"], tol=0) or (_UNFOLD_LAYOUT if unfold_layout else None)


def _check_patches(got, data, reveal):
    """``got`` against the expected (N, L, C*p*p), naming a shape mix-up or a known mistake."""
    expected = data["expected"]
    if isinstance(got, torch.Tensor) and tuple(got.shape) != tuple(expected.shape):
        shown = (f"output has shape {tuple(got.shape)}; expected {tuple(expected.shape)}" if reveal
                 else "output has the wrong shape")
        raise Mismatch(f"{shown}\nlikely cause: {_patchify_shape_cause(got.shape, expected.shape, reveal)}")
    got = expect_tensor(got, shape=expected.shape, dtype=expected.dtype)
    compare(got, expected, diagnose=lambda g: _diagnose_patchify(g, data))


@verifier("patchify:value")
def _verify_patchify(outcomes, data, reveal):
    _check_patches(outcomes[0], data, reveal)


@verifier("patchify:conv")
def _verify_patch_embedding(outcomes, data, reveal):
    """Patches (N, L, C*p*p) @ W.reshape(D, C*p*p).T + b must equal the given Conv2d embedding (N, L, D)."""
    got, weight = outcomes[0], data["weight"]
    if isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(data["expected"].shape):
        linear = got.to(weight.dtype) @ weight.reshape(weight.shape[0], -1).T + data["bias"]
        try:
            compare(linear, data["embedding"], name="patchify(x) @ W.reshape(D, C*p*p).T + b")
        except Mismatch as exc:
            raise Mismatch("patchify followed by a Linear layer must equal the Conv2d(kernel_size=p, stride=p) "
                           "patch embedding whose weight (D, C, p, p) is reshaped to (D, C*p*p); it does not\n"
                           + str(exc)) from None
    _check_patches(got, data, reveal)


@verifier("patchify:error")
def _verify_patchify_error(outcomes, data, reveal):
    if not isinstance(outcomes[0], Raised):
        what = f"{data['side']} = {data['size']} is not divisible by patch_size = {data['p']}" if reveal \
            else f"{data['side']} is not divisible by patch_size"
        raise Mismatch(f"expected ValueError: {what}, but the function returned normally (a reshape can silently "
                       "drop or mix pixels: check the sizes first)")
    _expect_value_error(outcomes[0], "patch_size", reveal)


register(Exercise(
    "patchify", topic="transformers",
    summary="(N, C, H, W) -> (N, L, C*p*p) in row-major patch order with channel-first patches, equal to F.unfold "
            "and, followed by a Linear layer, to the Conv2d(kernel=stride=p) patch embedding; non-square images "
            "and grids, dtype kept; ValueError when H or W is not divisible",
    forbidden=_UNFOLD,
))


# ------------------------------------------------------------------------------------------------
# rms_norm
# ------------------------------------------------------------------------------------------------
_KEEPDIM = ("reduce with keepdim=True: x.pow(2).mean(-1, keepdim=True) keeps the reduced axis with size 1, so it "
            "broadcasts against x (..., D); without keepdim that axis is gone and the division lines up the wrong "
            "axes")


def _check_rms(got, data):
    expected = data["expected"]
    if isinstance(got, torch.Tensor) and tuple(got.shape) != tuple(expected.shape):
        shown = (f"output has shape {tuple(got.shape)}; expected {tuple(expected.shape)}" if revealing()
                 else "output has the wrong shape")
        raise Mismatch(f"{shown} (the shape of x)\nlikely cause: {_KEEPDIM}")
    got = expect_tensor(got, shape=expected.shape, dtype=expected.dtype)
    compare(got, expected, diagnose=lambda g: _closest_mistake(g, data["mistakes"]), **_tolerance(expected.dtype))
    return got


@explainer("rms_norm")
def _explain_rms_error(raised, data):
    if "must match the size" in raised.message:
        return _KEEPDIM
    return None


@verifier("rms_norm:value")
def _verify_rms_norm(outcomes, data, reveal):
    _check_rms(outcomes[0], data)


@verifier("rms_norm:scale")
def _verify_scale_invariance(outcomes, data, reveal):
    """With eps = 0, rms_norm(c x) (second call) must equal rms_norm(x) (first call)."""
    expected = data["expected"]
    a, b = (expect_tensor(o, shape=expected.shape, dtype=expected.dtype) for o in outcomes)
    factor = f"{data['factor']:g}" if reveal else "c"
    try:
        compare(b, a, name=f"rms_norm({factor} x) vs rms_norm(x)")
    except Mismatch as exc:
        raise Mismatch(f"with eps = 0, RMSNorm is invariant to scaling a token: rms_norm({factor} * x) must equal "
                       "rms_norm(x); yours is not\n" + str(exc)) from None
    _check_rms(a, data)


register(Exercise(
    "rms_norm", topic="transformers",
    summary="matches F.rms_norm over the last dimension (no centring, eps inside the square root, per-feature "
            "weight) for 2-D and 3-D inputs, small and offset inputs, an all-zero token and float32; scale "
            "invariant with eps = 0",
    forbidden=_NORMS,
))


# ------------------------------------------------------------------------------------------------
# swiglu
# ------------------------------------------------------------------------------------------------
@verifier("swiglu")
def _verify_swiglu(outcomes, data, reveal):
    expected = data["expected"]
    got = expect_tensor(outcomes[0], shape=expected.shape, dtype=expected.dtype)
    compare(got, expected, diagnose=lambda g: _closest_mistake(g, data["mistakes"]), **_tolerance(expected.dtype))


@explainer("swiglu")
def _explain_swiglu_error(raised, data):
    if any(word in raised.message for word in ("shape", "size", "mat1", "match", "multiplied")):
        return ("the weights are laid out for x @ W: w_gate and w_up are (D, F), w_down is (F, D) "
                "(the transpose of nn.Linear's weight); do not transpose them")
    return None


register(Exercise(
    "swiglu", topic="transformers",
    summary="(silu(x W_gate) * (x W_up)) W_down with (D, F), (D, F), (F, D) weights, for 2-D and 3-D inputs, "
            "F != D, float32; tells SiLU from sigmoid and GELU, and the gate from the up projection",
))


# ------------------------------------------------------------------------------------------------
# top_k_routing
# ------------------------------------------------------------------------------------------------
def _unpack_routing(out, t, k):
    """(expert_indices (T, k) int64, gate_weights (T, k) floating) from the returned pair."""
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise Mismatch("return a tuple (expert_indices, gate_weights); got "
                       + (f"a {type(out).__name__} of length {len(out)}" if isinstance(out, (tuple, list))
                          else f"a {type(out).__name__}"))
    indices = expect_tensor(out[0], name="expert_indices")
    if indices.dtype != torch.int64:  # the spec's dtype, not the input's: say it (it reveals nothing)
        raise Mismatch(f"expert_indices has dtype {indices.dtype}; expected torch.int64 (what topk / argsort return)")
    indices = expect_tensor(indices, shape=(t, k), dtype=torch.int64, name="expert_indices")
    weights = expect_tensor(out[1], shape=(t, k), floating=True, name="gate_weights")
    return indices, weights


def _chosen_logits(indices, logits, reveal):
    """The logits (T, k) of the experts chosen, once indices are known to be distinct and in range."""
    e = logits.shape[1]
    if bool(((indices < 0) | (indices >= e)).any()):
        raise Mismatch(f"expert_indices out of range: they must lie in [0, {e})" if reveal
                       else "expert_indices out of range: they must lie in [0, number of experts)")
    duplicated = (indices.sort(-1).values.diff(dim=-1) == 0).any(-1)
    if bool(duplicated.any()):
        token = f" (token {int(duplicated.nonzero()[0])})" if reveal else ""
        raise Mismatch(f"an expert is chosen twice for one token{token}\n"
                       "likely cause: equal logits (ties) picked by value, e.g. by looking up where each of the top "
                       "values occurs; take positions, not values: torch.topk or an argsort gives k distinct experts")
    return logits.gather(1, indices)


@verifier("top_k_routing:value")
def _verify_routing(outcomes, data, reveal):
    """A valid top-k routing whatever the tie-breaking: k distinct experts per token whose logits are the
    k largest (data["top"]), in non-increasing order, and gate weights = softmax over the selected logits."""
    logits, top = data["logits"], data["top"]
    indices, weights = _unpack_routing(outcomes[0], *top.shape)
    if weights.dtype != logits.dtype:
        raise Mismatch(f"gate_weights has dtype {weights.dtype}; expected {logits.dtype} (the dtype of the logits)"
                       if reveal else f"gate_weights has the wrong dtype ({weights.dtype}); keep the dtype of "
                                      "the logits")
    chosen = _chosen_logits(indices, logits, reveal)
    ranked = chosen.sort(-1, descending=True).values
    if not torch.equal(ranked, top):
        cause = ("these are the k SMALLEST logits: argsort sorts ascending; use argsort(descending=True) or "
                 "torch.topk" if torch.equal(chosen.sort(-1).values, data["bottom"])
                 else "take the k largest router logits of each token")
        token = f" (token {int((ranked != top).any(-1).nonzero()[0])})" if reveal else ""
        raise Mismatch(f"the chosen experts are not the top k of each token{token}\nlikely cause: {cause}")
    if bool((chosen.diff(dim=-1) > 0).any()):
        raise Mismatch("the right experts, but not in order: list them by decreasing logit (largest first), as "
                       "torch.topk does")
    compare(weights, data["expected"], name="gate_weights",
            diagnose=lambda g: _closest_mistake(g, data["mistakes"]), **_tolerance(logits.dtype, atol=1e-6))


@explainer("top_k_routing")
def _explain_routing_error(raised, data):
    top, logits = data.get("top"), data.get("logits")
    if raised.type_name == "ValueError" and top is not None and top.shape[1] == logits.shape[1]:
        return ("k = E is allowed (every expert is chosen, largest logit first): raise ValueError only when k is "
                "larger than the number of experts")
    return None


@verifier("top_k_routing:error")
def _verify_routing_error(outcomes, data, reveal):
    if not isinstance(outcomes[0], Raised):
        what = f"for k = {data['k']} with only {data['experts']} experts" if reveal \
            else "when k is larger than the number of experts"
        raise Mismatch(f"expected ValueError {what}, but the function returned normally")
    _expect_value_error(outcomes[0], "k", reveal)


register(Exercise(
    "top_k_routing", topic="transformers",
    summary="k distinct experts per token with the k largest logits, largest first (any tie-breaking), int64; "
            "gate weights = softmax over the selected logits (Mixtral), summing to 1; k = 1 and k = E; "
            "ValueError when k > E",
))


# ------------------------------------------------------------------------------------------------
# load_balancing_loss
# ------------------------------------------------------------------------------------------------
@verifier("load_balancing_loss")
def _verify_balance_loss(outcomes, data, reveal):
    got, expected = outcomes[0], data["expected"]
    if isinstance(got, (int, float)) and not isinstance(got, bool):
        raise Mismatch("returned a Python number; return a 0-d tensor (e.g. `(f * P).sum() * E`) so the loss "
                       "can be backpropagated into the router")
    got = expect_tensor(got, name="the loss")
    if got.ndim != 0:
        shown = f"the loss has shape {tuple(got.shape)}" if reveal else f"the loss has {got.ndim} dimension(s)"
        raise Mismatch(f"{shown}; expected a 0-d tensor (a scalar): sum over the experts")
    got = expect_tensor(got, shape=(), dtype=expected.dtype, name="the loss")
    compare(got, expected, name="the loss", diagnose=lambda g: _closest_mistake(g, data["mistakes"], tol=1e-6),
            **_tolerance(expected.dtype))


register(Exercise(
    "load_balancing_loss", topic="transformers",
    summary="E * sum_i f_i P_i (f_i: share of the T*k assignments, P_i: mean softmax probability) as a 0-d "
            "tensor: 1 at perfect balance, about E when collapsed, random routings with k = 1, 2, 3, float32",
))
