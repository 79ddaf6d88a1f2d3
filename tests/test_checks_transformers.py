"""The checkers of the transformers-recap exercises: references pass, realistic bugs fail with their cause."""
import pytest
import torch
import torch.nn.functional as F

from check_tools import fails
from lecturelib import reference as ref
from lecturelib.checks import EXERCISES, check, run_suite

NAMES = [name for name, ex in EXERCISES.items() if ex.topic == "transformers"]


def test_the_five_exercises_are_registered():
    assert set(NAMES) == {"patchify", "rms_norm", "swiglu", "top_k_routing", "load_balancing_loss"}


# ---------------------------------------------------------------------------------------------
# patchify
# ---------------------------------------------------------------------------------------------
def _blocks(x, p):
    n, c, h, w = x.shape
    if h % p or w % p:
        raise ValueError(f"patch_size {p} does not divide {h} x {w}")
    return x.reshape(n, c, h // p, p, w // p, p), n, c, (h // p) * (w // p)


def patchify_tensor_unfold(x, p):
    """Another correct way: Tensor.unfold (a strided view, not F.unfold)."""
    if x.shape[2] % p or x.shape[3] % p:
        raise ValueError("patch_size must divide H and W")
    n, c = x.shape[:2]
    patches = x.unfold(2, p, p).unfold(3, p, p)                    # (N, C, rows, cols, p, p)
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(n, -1, c * p * p)


def patchify_ppc(x, p):
    b, n, c, length = _blocks(x, p)
    return b.permute(0, 2, 4, 3, 5, 1).reshape(n, length, c * p * p)


def patchify_column_major(x, p):
    b, n, c, length = _blocks(x, p)
    return b.permute(0, 4, 2, 1, 3, 5).reshape(n, length, c * p * p)


def patchify_no_permute(x, p):
    n, c, h, w = x.shape
    if h % p or w % p:
        raise ValueError("patch_size must divide H and W")
    return x.reshape(n, (h // p) * (w // p), c * p * p)


def patchify_unfold_layout(x, p):
    if x.shape[2] % p or x.shape[3] % p:
        raise ValueError("patch_size must divide H and W")
    n, c, h, w = x.shape
    b = x.reshape(n, c, h // p, p, w // p, p)
    return b.permute(0, 1, 3, 5, 2, 4).reshape(n, c * p * p, -1)


def patchify_no_check(x, p):
    n, c, h, w = x.shape
    x = x[:, :, : h // p * p, : w // p * p]
    return ref.patchify(x, p)


def patchify_library(x, p):
    if x.shape[2] % p or x.shape[3] % p:
        raise ValueError("patch_size must divide H and W")
    return F.unfold(x, p, stride=p).transpose(1, 2)


def patchify_wrong_error(x, p):
    if x.shape[2] % p or x.shape[3] % p:
        raise ValueError("image size is not a multiple")
    return ref.patchify(x, p)


def test_alternative_patchify_passes_both_suites():
    for suite in ("visible", "hidden"):
        assert run_suite("patchify", patchify_tensor_unfold, suite).passed


@pytest.mark.parametrize("fn, cause", [
    (patchify_ppc, "channels last"),
    (patchify_column_major, "column-major order"),
    (patchify_no_permute, "a reshape without a permute"),
    (patchify_unfold_layout, "F.unfold's layout (N, C*p*p, L)"),
    (patchify_no_check, "expected ValueError: H = 10 is not divisible"),
    (patchify_wrong_error, "should mention 'patch_size'"),
    (patchify_library, "F.unfold / nn.Unfold"),
])
def test_patchify_bugs_are_named(fn, cause):
    assert cause in fails("patchify", fn)


def test_patchify_conv_case_names_the_embedding():
    message = fails("patchify", patchify_ppc)
    assert "also failing" in message and "Conv2d patch embedding" in message


def test_patchify_hidden_failure_reveals_no_values():
    message = fails("patchify", patchify_column_major, "hidden")
    assert "hidden case 1 (batch, non-square grid)" in message and "column-major" in message
    assert "first mismatch" not in message and "max abs error" not in message


# ---------------------------------------------------------------------------------------------
# rms_norm
# ---------------------------------------------------------------------------------------------
def rms_layer_norm(x, w, eps=1e-6):
    c = x - x.mean(-1, keepdim=True)
    return c / torch.sqrt(c.pow(2).mean(-1, keepdim=True) + eps) * w


def rms_eps_outside(x, w, eps=1e-6):
    return x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps) * w


def rms_wrong_dim(x, w, eps=1e-6):
    return x / torch.sqrt(x.pow(2).mean(0, keepdim=True) + eps) * w


def rms_no_weight(x, w, eps=1e-6):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def rms_library(x, w, eps=1e-6):
    return F.rms_norm(x, (x.shape[-1],), w, eps)


def rms_module(x, w, eps=1e-6):
    norm = torch.nn.RMSNorm(x.shape[-1], eps=eps, dtype=x.dtype)
    with torch.no_grad():
        norm.weight.copy_(w)
    return norm(x)


def rms_layer_norm_library(x, w, eps=1e-6):
    return F.layer_norm(x, (x.shape[-1],), eps=eps) * w


def rms_norm_alternative(x, w, eps=1e-6):
    return x / (x * x).mean(dim=-1, keepdim=True).add(eps).sqrt() * w


def test_alternative_rms_norm_passes_both_suites():
    for suite in ("visible", "hidden"):
        assert run_suite("rms_norm", rms_norm_alternative, suite).passed


@pytest.mark.parametrize("fn, cause", [
    (rms_layer_norm, "that is LayerNorm"),
    (rms_eps_outside, "eps is added outside the square root"),
    (rms_wrong_dim, "normalised over dimension 0 instead of the last one"),
    (rms_no_weight, "the weight (the learned per-feature gain) is not applied"),
    (rms_library, "F.rms_norm / nn.RMSNorm"),
    (rms_module, "F.rms_norm / nn.RMSNorm"),
    (rms_layer_norm_library, "F.layer_norm / nn.LayerNorm"),
])
def test_rms_norm_bugs_are_named(fn, cause):
    assert cause in fails("rms_norm", fn)


def test_eps_outside_passes_ordinary_inputs_but_fails_small_ones():
    result = run_suite("rms_norm", rms_eps_outside)
    failing = [c.name for c in result.failures]
    assert failing == ["x 3x16, eps 0.01, |x| about 0.05"]


def test_refused_library_call_does_not_leak_the_recorder():
    """After a refused F.rms_norm the torch-function mode is gone: F.rms_norm works and is not recorded."""
    fails("rms_norm", rms_library)
    from torch.overrides import _get_current_function_mode_stack
    assert _get_current_function_mode_stack() == []
    x = torch.randn(2, 4)
    assert torch.allclose(F.rms_norm(x, (4,), eps=1e-6), ref.rms_norm(x, torch.ones(4), 1e-6), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# swiglu
# ---------------------------------------------------------------------------------------------
def swiglu_sigmoid(x, wg, wu, wd):
    return (torch.sigmoid(x @ wg) * (x @ wu)) @ wd


def swiglu_swapped(x, wg, wu, wd):
    return (F.silu(x @ wu) * (x @ wg)) @ wd


def swiglu_gelu(x, wg, wu, wd):
    return (F.gelu(x @ wg) * (x @ wu)) @ wd


def swiglu_linear_layout(x, wg, wu, wd):
    return (F.silu(x @ wg.T) * (x @ wu.T)) @ wd.T


def swiglu_manual(x, wg, wu, wd):
    gate = x @ wg
    return ((gate / (1 + torch.exp(-gate))) * (x @ wu)) @ wd


def test_swiglu_written_out_passes_both_suites():
    for suite in ("visible", "hidden"):
        assert run_suite("swiglu", swiglu_manual, suite).passed


@pytest.mark.parametrize("fn, cause", [
    (swiglu_sigmoid, "the gate uses sigmoid(x W_gate)"),
    (swiglu_swapped, "gate and up projections are swapped"),
    (swiglu_gelu, "GELU was used: that is GeGLU"),
    (swiglu_linear_layout, "the weights are laid out for x @ W"),
])
def test_swiglu_bugs_are_named(fn, cause):
    assert cause in fails("swiglu", fn)


def test_gate_and_up_swap_fails_every_case():
    """Every case has independent W_gate and W_up, so silu(x W_up) * x W_gate differs everywhere."""
    for suite in ("visible", "hidden"):
        result = run_suite("swiglu", swiglu_swapped, suite)
        assert not any(c.passed for c in result.cases)


# ---------------------------------------------------------------------------------------------
# top_k_routing
# ---------------------------------------------------------------------------------------------
def _need_k(logits, k):
    if k > logits.shape[-1]:
        raise ValueError(f"k = {k} > number of experts")


def routing_argsort(logits, k):
    """Correct, ties broken by argsort (the other way than topk may)."""
    _need_k(logits, k)
    indices = logits.argsort(dim=-1, descending=True, stable=True)[:, :k]
    return indices, logits.gather(1, indices).softmax(-1)


def routing_reverse_ties(logits, k):
    """Correct, ties broken towards the HIGHER expert index."""
    _need_k(logits, k)
    flipped = logits.flip(-1).argsort(dim=-1, descending=True, stable=True)[:, :k]
    indices = logits.shape[-1] - 1 - flipped
    return indices, logits.gather(1, indices).softmax(-1)


def routing_not_renormalised(logits, k):
    _need_k(logits, k)
    probs = logits.softmax(-1)
    weights, indices = probs.topk(k, dim=-1)
    return indices, weights


def routing_ascending(logits, k):
    _need_k(logits, k)
    indices = logits.argsort(dim=-1)[:, :k]
    return indices, logits.gather(1, indices).softmax(-1)


def routing_ascending_tail(logits, k):
    _need_k(logits, k)
    indices = logits.argsort(dim=-1)[:, -k:]
    return indices, logits.gather(1, indices).softmax(-1)


def routing_by_value(logits, k):
    """Ties bug: looks up the position of each top value, so equal values give the same expert twice."""
    _need_k(logits, k)
    values = logits.topk(k, dim=-1).values
    indices = torch.stack([torch.stack([(row == v).nonzero()[0, 0] for v in vals])
                           for row, vals in zip(logits, values)])
    return indices, values.softmax(-1)


def routing_no_check(logits, k):
    k = min(k, logits.shape[-1])
    values, indices = logits.topk(k, dim=-1)
    return indices, values.softmax(-1)


def test_any_tie_breaking_passes_both_suites():
    for fn in (routing_argsort, routing_reverse_ties):
        for suite in ("visible", "hidden"):
            assert run_suite("top_k_routing", fn, suite).passed, fn.__name__


@pytest.mark.parametrize("fn, cause", [
    (routing_not_renormalised, "not renormalised"),
    (routing_ascending, "the k SMALLEST logits: argsort sorts ascending"),
    (routing_ascending_tail, "not in order: list them by decreasing logit"),
    (routing_by_value, "an expert is chosen twice for one token"),
    (routing_no_check, "expected ValueError for k = 4 with only 3 experts"),
])
def test_routing_bugs_are_named(fn, cause):
    assert cause in fails("top_k_routing", fn)


def test_value_lookup_fails_only_with_ties():
    result = run_suite("top_k_routing", routing_by_value)
    assert [c.name for c in result.failures] == ["8 tokens, 6 experts, k = 3, integer logits (ties)"]


def test_not_renormalised_passes_only_when_k_equals_e():
    result = run_suite("top_k_routing", routing_not_renormalised)
    passed = [c.name for c in result.cases if c.passed]
    assert passed == ["3 tokens, 3 experts, k = 3, float32",
                      "2 tokens, 3 experts, k = 4: k larger than the number of experts raises ValueError"]


# ---------------------------------------------------------------------------------------------
# load_balancing_loss
# ---------------------------------------------------------------------------------------------
def _fp(logits, indices):
    e = logits.shape[1]
    counts = torch.bincount(indices.flatten(), minlength=e).to(logits.dtype)
    return e, counts, logits.softmax(-1).mean(0)


def balance_alternative(logits, indices):
    e = logits.shape[1]
    f = F.one_hot(indices, e).to(logits.dtype).mean(dim=(0, 1))
    return e * torch.dot(f, logits.softmax(-1).mean(0))


def balance_no_factor(logits, indices):
    e, counts, p = _fp(logits, indices)
    return (counts / indices.numel() * p).sum()


def balance_per_token(logits, indices):
    e, counts, p = _fp(logits, indices)
    return e * (counts / indices.shape[0] * p).sum()


def balance_probs_as_f(logits, indices):
    e, _, p = _fp(logits, indices)
    return e * (p * p).sum()


def balance_python_float(logits, indices):
    return float(ref.load_balancing_loss(logits, indices))


def balance_per_expert(logits, indices):
    e, counts, p = _fp(logits, indices)
    return e * counts / indices.numel() * p


def test_alternative_balance_loss_passes_both_suites():
    for suite in ("visible", "hidden"):
        assert run_suite("load_balancing_loss", balance_alternative, suite).passed


@pytest.mark.parametrize("fn, cause", [
    (balance_no_factor, "the factor num_experts is missing"),
    (balance_per_token, "HF Mixtral's convention"),
    (balance_probs_as_f, "f_i was computed from the router probabilities"),
    (balance_python_float, "returned a Python number"),
    (balance_per_expert, "expected a 0-d tensor"),
])
def test_balance_bugs_are_named(fn, cause):
    assert cause in fails("load_balancing_loss", fn)


def test_per_token_convention_passes_only_for_k_1():
    result = run_suite("load_balancing_loss", balance_per_token, "hidden")
    assert [c.name for c in result.cases if c.passed] == ["hidden case 1 (perfect balance)",
                                                           "hidden case 4 (k = 1 (Switch))"]


# ---------------------------------------------------------------------------------------------
# Common behaviour
# ---------------------------------------------------------------------------------------------
def test_visible_failure_shows_index_expected_and_got_values():
    message = fails("rms_norm", rms_no_weight)
    assert "first mismatch at index" in message and "expected" in message and "got" in message


@pytest.mark.parametrize("suite", ["visible", "hidden"])
def test_input_modified_in_place_is_named(suite):
    """A right answer that changes the caller's tensor fails, naming the argument (the framework checks every
    exercise this way)."""
    def in_place(x, w, eps=1e-6):
        x.mul_(torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)).mul_(w)
        return x
    assert "modified its argument `x` in place: its values changed" in fails("rms_norm", in_place, suite)


def test_check_leaves_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check("top_k_routing", ref.top_k_routing, verbose=False)
    assert torch.equal(torch.rand(3), expected)


def test_reference_rejects_bad_input():
    with pytest.raises(ValueError, match="patch_size"):
        ref.patchify(torch.zeros(1, 3, 8, 10), 4)
    with pytest.raises(ValueError, match="images"):
        ref.patchify(torch.zeros(3, 8, 8), 4)
    with pytest.raises(ValueError, match="weight"):
        ref.rms_norm(torch.zeros(2, 4), torch.ones(3))
    with pytest.raises(ValueError, match="k = 5"):
        ref.top_k_routing(torch.zeros(2, 4), 5)
    with pytest.raises(TypeError, match="expert_indices"):
        ref.load_balancing_loss(torch.zeros(2, 4), torch.zeros(2, 1))


@pytest.mark.parametrize("route", ["aten_packet", "aten_overload", "torch_group_norm"])
def test_library_norms_are_refused_by_every_route(route):
    """Whatever the Python route (torch.ops.aten by name, a functional variant under another name), the library
    normalisation is refused."""
    def rms(x, weight, eps=1e-6):
        if route == "aten_packet":
            return torch.ops.aten.rms_norm(x, [x.shape[-1]], weight, eps)
        if route == "aten_overload":
            return torch.ops.aten.rms_norm.default(x, [x.shape[-1]], weight, eps)
        scale = x.pow(2).mean(-1, keepdim=True).add(eps).rsqrt()
        torch.group_norm(x.reshape(-1, x.shape[-1], 1), 1)  # reached, even if unused
        return x * scale * weight

    message = fails("rms_norm", rms)
    assert "implement it yourself" in message
