"""The checkers of the transformers-recap exercises: message format, reveal rules, refused library calls, and
which cases tell a bug (eps, ties, k). The realistic bugs and the cause each must be told are the mutant library
(``lecturelib/hidden/mutants/transformers.py``), run by tests/test_audit.py."""
import pytest
import torch
import torch.nn.functional as F

from check_tools import fails
from lecturelib import reference as ref
from lecturelib.checks import EXERCISES, check, run_suite
from lecturelib.hidden.mutants.transformers import (balance_per_token, patchify_channels_last, patchify_column_major,
                                                    rms_eps_outside, rms_no_weight, routing_argsort, routing_by_value,
                                                    routing_not_renormalised, routing_reverse_ties,
                                                    swiglu_gate_up_swapped)

NAMES = [name for name, ex in EXERCISES.items() if ex.topic == "transformers"]


def test_the_five_exercises_are_registered():
    assert set(NAMES) == {"patchify", "rms_norm", "swiglu", "top_k_routing", "load_balancing_loss"}


# ---------------------------------------------------------------------------------------------
# patchify
# ---------------------------------------------------------------------------------------------
def patchify_library(x, p):
    if x.shape[2] % p or x.shape[3] % p:
        raise ValueError("patch_size must divide H and W")
    return F.unfold(x, p, stride=p).transpose(1, 2)


def test_patchify_library_call_is_refused():
    assert "F.unfold / nn.Unfold" in fails("patchify", patchify_library)


def test_patchify_conv_case_names_the_embedding():
    message = fails("patchify", patchify_channels_last)
    assert "also failing" in message and "Conv2d patch embedding" in message


def test_patchify_hidden_failure_reveals_no_values():
    message = fails("patchify", patchify_column_major, "hidden")
    assert "hidden case 1 (batch, non-square grid)" in message and "column-major" in message
    assert "first mismatch" not in message and "max abs error" not in message


# ---------------------------------------------------------------------------------------------
# rms_norm
# ---------------------------------------------------------------------------------------------
def rms_library(x, w, eps=1e-6):
    return F.rms_norm(x, (x.shape[-1],), w, eps)


def rms_module(x, w, eps=1e-6):
    norm = torch.nn.RMSNorm(x.shape[-1], eps=eps, dtype=x.dtype)
    with torch.no_grad():
        norm.weight.copy_(w)
    return norm(x)


def rms_layer_norm_library(x, w, eps=1e-6):
    return F.layer_norm(x, (x.shape[-1],), eps=eps) * w


@pytest.mark.parametrize("fn", [rms_library, rms_module, rms_layer_norm_library])
def test_rms_norm_library_calls_are_refused(fn):
    message = fails("rms_norm", fn)
    assert "implement it yourself" in message and ("F.rms_norm / nn.RMSNorm" in message
                                                   or "F.layer_norm / nn.LayerNorm" in message)


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
def test_gate_and_up_swap_fails_every_case():
    """Every case has independent W_gate and W_up, so silu(x W_up) * x W_gate differs everywhere."""
    for suite in ("visible", "hidden"):
        result = run_suite("swiglu", swiglu_gate_up_swapped, suite)
        assert not any(c.passed for c in result.cases)


# ---------------------------------------------------------------------------------------------
# top_k_routing
# ---------------------------------------------------------------------------------------------
def test_any_tie_breaking_passes_both_suites():
    """The spec lets ties be broken either way."""
    for fn in (routing_argsort, routing_reverse_ties):
        for suite in ("visible", "hidden"):
            assert run_suite("top_k_routing", fn, suite).passed, fn.__name__


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
