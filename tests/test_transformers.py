"""The transformers topic module: patch embedding, pre/post-norm profiles, the MoE layer, the widgets'
computations, and the notebook's claims about them."""

import matplotlib
import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lecturelib import data
from lecturelib import reference as ref
from lecturelib import transformers as tr
from notebook_tools import REPO

matplotlib.use("Agg")
NOTEBOOK = REPO / "notebooks" / "01_transformers" / "transformers.ipynb"


# ---------------------------------------------------------------------------------------------
# Patches
# ---------------------------------------------------------------------------------------------
def test_conv_patch_embedding_equals_linear_on_patches():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 12, 20, dtype=torch.float64)
    linear = torch.nn.Linear(3 * 4 * 4, 6).double()
    conv = tr.conv_patch_embedding(linear, 3, 4)
    with torch.no_grad():
        expected = conv(images).flatten(2).transpose(1, 2)
        got = linear(ref.patchify(images, 4))
    assert torch.allclose(got, expected, atol=1e-12)


def test_conv_patch_embedding_rejects_bad_input():
    with pytest.raises(ValueError, match="in_features"):
        tr.conv_patch_embedding(torch.nn.Linear(10, 4), 3, 2)
    with pytest.raises(TypeError, match="linear"):
        tr.conv_patch_embedding(torch.nn.Conv2d(3, 4, 2), 3, 2)


def test_reference_patchify_matches_unfold():
    x = torch.randn(2, 3, 6, 9)
    assert torch.equal(ref.patchify(x, 3), F.unfold(x, 3, stride=3).transpose(1, 2))


def test_patch_view_rebuilds_the_photo_only_with_the_right_layout():
    photo = data.sample_image("cat")
    good = tr.patch_view(ref.patchify, photo, 48)
    assert good["correct"] and good["grid"] == (photo.shape[0] // 48, photo.shape[1] // 48)
    assert good["tokens"].shape == (good["grid"][0] * good["grid"][1], 3 * 48 * 48)
    assert np.allclose(good["rebuilt"], good["image"], atol=1e-6)

    def channels_last(x, p):
        n, c, h, w = x.shape
        return x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(n, -1, c * p * p)

    assert tr.patch_view(channels_last, photo, 48)["correct"] is False
    assert "shape" in tr.patch_view(lambda x, p: x.flatten(1), photo, 48)["error"]

    def stub(x, p):
        raise NotImplementedError()
    assert "implement patchify" in tr.patch_view(stub, photo, 48)["error"]


def test_patch_explorer_runs_the_given_function():
    calls = []

    def spy(x, p):
        calls.append((tuple(x.shape), p))
        return ref.patchify(x, p)

    box = tr.patch_explorer(spy)
    assert calls and calls[-1][1] == 32
    assert box.interactive.result["correct"]


# ---------------------------------------------------------------------------------------------
# Pre-norm vs post-norm: the notebook's claims
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def profiles():
    return {pos: tr.depth_profile(pos, depth=16) for pos in ("pre", "post")}


def test_pre_norm_stream_grows_and_later_blocks_change_it_less(profiles):
    pre = profiles["pre"]
    assert np.mean(np.diff(pre["stream_rms"]) > 0) > 0.8
    assert 3 < pre["stream_rms"][-1] / pre["stream_rms"][0] < 2 * np.sqrt(len(pre["stream_rms"]))
    assert pre["update_ratio"][-1] < 0.5 * pre["update_ratio"][0]
    assert pre["param_grad"][0] > 2 * pre["param_grad"][-1]


def test_post_norm_stream_stays_normalised_and_every_block_rewrites_it(profiles):
    post = profiles["post"]
    assert np.allclose(post["stream_rms"][1:], 1.0, atol=1e-3)
    assert post["update_ratio"].min() > 2 * profiles["pre"]["update_ratio"][-1]
    assert post["param_grad"].max() / post["param_grad"].min() < profiles["pre"]["param_grad"].max() / \
        profiles["pre"]["param_grad"].min()


def test_depth_profile_is_deterministic_and_leaves_the_global_seed_alone():
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    a = tr.depth_profile("post", depth=3, seed=1)
    assert torch.equal(torch.rand(2), expected)
    b = tr.depth_profile("post", depth=3, seed=1)
    assert np.array_equal(a["param_grad"], b["param_grad"])


def test_norm_block_positions():
    block = tr.NormBlock(8, 2, "post")
    out = block(torch.randn(2, 3, 8) * 10)
    assert torch.allclose(out.mean(-1), torch.zeros(2, 3), atol=1e-5)  # ends in a LayerNorm
    with pytest.raises(ValueError, match="position"):
        tr.NormBlock(8, 2, "middle")


# ---------------------------------------------------------------------------------------------
# Mixture of experts
# ---------------------------------------------------------------------------------------------
def test_moe_layer_equals_the_sum_over_routed_experts():
    torch.manual_seed(0)
    moe = tr.MoELayer(6, 10, num_experts=4, k=2, routing_fn=ref.top_k_routing).double()
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    out, routing = moe(x, return_routing=True)
    tokens = x.reshape(-1, 6)
    expected = torch.stack([sum(routing["weights"][t, j] * moe.experts[int(routing["indices"][t, j])](tokens[t])
                                for j in range(2)) for t in range(len(tokens))]).reshape(x.shape)
    assert torch.allclose(out, expected, atol=1e-12)
    assert torch.allclose(routing["logits"], moe.router(tokens))


def test_moe_with_all_experts_and_equal_gates_is_their_mean():
    def uniform(logits, k):
        t, e = logits.shape
        return torch.arange(e).repeat(t, 1), torch.full((t, e), 1 / e, dtype=logits.dtype)
    moe = tr.MoELayer(4, 8, num_experts=3, k=3, routing_fn=uniform)
    x = torch.randn(7, 4)
    assert torch.allclose(moe(x), sum(expert(x) for expert in moe.experts) / 3, atol=1e-6)


def test_moe_temperature_changes_weights_not_experts():
    torch.manual_seed(1)
    moe = tr.MoELayer(8, 8, num_experts=6, k=2, routing_fn=ref.top_k_routing)
    x = torch.randn(20, 8)
    _, cold = moe(x, return_routing=True)
    moe.temperature = 5.0
    _, hot = moe(x, return_routing=True)
    assert torch.equal(cold["indices"], hot["indices"])
    assert hot["weights"].max() < cold["weights"].max()


def test_moe_rejects_bad_arguments_and_bad_routers():
    with pytest.raises(ValueError, match="k"):
        tr.MoELayer(4, 4, num_experts=2, k=3, routing_fn=ref.top_k_routing)
    with pytest.raises(TypeError, match="routing_fn"):
        tr.MoELayer(4, 4, num_experts=2, k=1, routing_fn="topk")
    moe = tr.MoELayer(4, 4, num_experts=2, k=1, routing_fn=lambda logits, k: (logits.argmax(-1), logits))
    with pytest.raises(ValueError, match="expert indices"):
        moe(torch.randn(3, 4))
    with pytest.raises(ValueError, match="x must have shape"):
        tr.MoELayer(4, 4, 2, 1, ref.top_k_routing)(torch.randn(3, 5))


def test_routing_view_load_and_loss():
    problem = tr.routing_problem()
    view = tr.routing_view(ref.top_k_routing, problem, num_experts=6, k=2, temperature=1.0,
                           loss_fn=ref.load_balancing_loss)
    tokens = len(problem["tokens"])
    assert view["load"].sum() == 2 * tokens and view["load"].shape == (6,)
    assert np.array_equal(view["load"], np.bincount(view["indices"].ravel(), minlength=6))
    assert np.allclose(view["gates"].sum(1), 1.0)
    assert np.isclose(view["loss"], float(ref.load_balancing_loss(torch.as_tensor(view["logits"]),
                                                                  torch.as_tensor(view["indices"]))))
    assert "larger than the number of experts" in tr.routing_view(ref.top_k_routing, problem, 2, 3)["error"]

    def broken(logits, k):
        raise RuntimeError("boom")
    assert "RuntimeError: boom" in tr.routing_view(broken, problem)["error"]


def test_routing_temperature_moves_the_loss_but_not_the_load():
    problem = tr.routing_problem()
    cold, hot = (tr.routing_view(ref.top_k_routing, problem, 8, 2, t, ref.load_balancing_loss) for t in (0.2, 5.0))
    assert np.array_equal(cold["load"], hot["load"])
    assert cold["loss"] > hot["loss"]


def test_routing_explorer_runs_the_given_functions():
    calls = []

    def spy(logits, k):
        calls.append(k)
        return ref.top_k_routing(logits, k)

    box = tr.routing_explorer(spy, ref.load_balancing_loss)
    assert calls == [2] and box.interactive.result["loss"] is not None


# ---------------------------------------------------------------------------------------------
# The notebook
# ---------------------------------------------------------------------------------------------
def test_notebook_solutions_agree_with_the_reference():
    """The instructor notebook's solution cells are the graded functions; they must pass the hidden suites."""
    from lecturelib.checks import run_suite
    nb = nbformat.read(NOTEBOOK, as_version=4)
    namespace = {"torch": torch, "F": F}
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            exec(cell.source, namespace)
            name = cell.metadata["nbgrader"]["grade_id"]
            assert run_suite(name, namespace[name], "hidden").passed, name


def test_notebook_points_table_matches_the_test_cells():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    points = {c.metadata["nbgrader"]["grade_id"].removeprefix("test_"): c.metadata["nbgrader"]["points"]
              for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")}   # vs README: tests/test_topics.py
    intro = nb.cells[0].source
    for name, p in points.items():
        assert f"| `{name}`" in intro and f"| {p} |" in intro.split(f"`{name}`")[1].split("\n")[0]
