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
        if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("solution"):
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


# ---------------------------------------------------------------------------------------------
# Three ways of processing a sequence (issue 15)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["RNN", "convolution", "self-attention"])
def test_sequence_layers_keep_the_shape_and_are_causal_or_not_as_stated(kind):
    layer = tr.sequence_layer(kind, dim=8, seed=1)
    x = torch.randn(2, 7, 8, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape
    y[:, 3].sum().backward()
    reached = (x.grad.abs().sum(dim=(0, 2)) > 0).tolist()
    expected = {"RNN": [True] * 4 + [False] * 3,                         # only the past, through the state
                "convolution": [False, False, True, True, True, False, False],   # k = 3 neighbours
                "self-attention": [True] * 7}[kind]
    assert reached == expected
    with pytest.raises(ValueError, match="kind"):
        tr.sequence_layer("transformer")


def test_recurrent_layer_is_the_elman_recurrence():
    layer = tr.RecurrentLayer(4).double()
    x = torch.randn(1, 5, 4, dtype=torch.float64)
    h = torch.zeros(1, 4, dtype=torch.float64)
    for t in range(5):
        h = torch.tanh(layer.inp(x[:, t]) + layer.step(h))
    torch.testing.assert_close(layer(x)[:, -1], h)


def test_measured_costs_follow_the_formulas():
    rows = {(r["kind"], r["length"]): r for r in tr.sequence_costs(lengths=(16, 64), dim=16, repeats=1)}
    d = 16
    for length in (16, 64):
        rnn, conv, att = (rows[k, length] for k in ("RNN", "convolution", "self-attention"))
        assert rnn["flops"] == 2 * 2 * length * d * d                    # input and recurrent products, 2 FLOPs each
        assert conv["flops"] == 2 * length * 3 * d * d
        assert att["flops"] == 2 * (4 * length * d * d + 2 * length * length * d)   # qkv + proj, scores + sum
        assert (rnn["sequential_steps"], conv["sequential_steps"], att["sequential_steps"]) == (length, 1, 1)
        assert (rnn["path_length"], conv["path_length"], att["path_length"]) == (length - 1, length - 1, 1)
        assert (conv["reach"], att["reach"]) == (2, length)
        assert att["activation_bytes"] > 4 * length * length * 4       # the attention weights, 4 heads, float32
        assert all(r["seconds"] > 0 for r in (rnn, conv, att))
    for kind in ("RNN", "convolution"):
        assert 3.9 < rows[kind, 64]["activation_bytes"] / rows[kind, 16]["activation_bytes"] <= 4.0   # O(L D)
    table = tr.sequence_cost_table(list(rows.values()))
    assert "recurrent steps" in table and len(table.splitlines()) == 7
    assert torch.get_num_threads() >= 1


def test_sequence_figures_draw():
    import matplotlib.pyplot as plt
    fig = tr.plot_sequence_layers(length=6)
    assert "5 sequential steps" in fig.axes[0].get_title()
    assert "5 layers" in fig.axes[1].get_title()
    rows = tr.sequence_costs(lengths=(8, 16), dim=8, repeats=1)
    assert len(tr.plot_sequence_costs(rows).axes) == 3
    plt.close("all")


# ---------------------------------------------------------------------------------------------
# ViT: positions, pooling, masking
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vit_and_images():
    from lecturelib import visualization_models
    vit = visualization_models.load_pretrained("vit_shapes")
    images, labels = visualization_models.classification_data(data.make_classification(12, seed=5))
    return vit, images, labels


def test_vit_tokens_by_default_is_the_models_forward(vit_and_images):
    vit, images, _ = vit_and_images
    with torch.no_grad():
        torch.testing.assert_close(vit.head(tr.vit_tokens(vit, images)[:, 0]), vit(images))


def test_without_positions_a_shuffle_changes_nothing_with_positions_it_does(vit_and_images):
    vit, images, _ = vit_and_images
    order = torch.randperm(vit.grid ** 2, generator=torch.Generator().manual_seed(3))
    plain = tr.vit_tokens(vit, images, positions=False)
    shuffled = tr.vit_tokens(vit, images, positions=False, order=order)
    torch.testing.assert_close(shuffled[:, 0], plain[:, 0], atol=1e-4, rtol=0)          # the class token
    torch.testing.assert_close(shuffled[:, 1:], plain[:, 1:][:, order], atol=1e-4, rtol=0)  # patches permuted
    with_positions = (tr.vit_tokens(vit, images, order=order)[:, 0] - tr.vit_tokens(vit, images)[:, 0]).abs().max()
    assert with_positions > 0.01
    with pytest.raises(ValueError, match="permutation"):
        tr.vit_tokens(vit, images, order=torch.zeros(vit.grid ** 2, dtype=torch.long))


def test_shuffle_patches_moves_whole_patches(vit_and_images):
    _, images, _ = vit_and_images
    order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    shuffled = tr.shuffle_patches(images, 8, order)
    torch.testing.assert_close(ref.patchify(shuffled, 8), ref.patchify(images, 8)[:, order])
    back = tr.shuffle_patches(shuffled, 8, torch.argsort(order))
    torch.testing.assert_close(back, images)


def test_causal_mask_leaves_the_class_token_blind(vit_and_images):
    from lecturelib.layers import Attention
    vit, images, _ = vit_and_images
    mask = tr.causal_mask(1 + vit.grid ** 2)
    assert mask.dtype == torch.bool and mask[0].sum() == 1 and mask[-1].all()
    cls = tr.vit_tokens(vit, images, mask=mask)[:, 0]
    torch.testing.assert_close(cls, cls[:1].expand_as(cls))      # the same for every image
    attn = Attention(8, 2)
    _, weights = attn(torch.randn(1, 5, 8), mask=tr.causal_mask(5))
    assert torch.all(weights.triu(1) == 0) and torch.allclose(weights.sum(-1), torch.ones(1, 2, 5))
    with pytest.raises(ValueError, match="mask"):
        attn(torch.randn(1, 5, 8), mask=torch.ones(4, 4, dtype=torch.bool))


def test_linear_probe_separates_separable_features():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 4
    centres = torch.randn(4, 6, generator=g) * 5
    features = centres[labels] + torch.randn(200, 6, generator=g) * 0.1
    assert tr.linear_probe_accuracy(features[:100], labels[:100], features[100:], labels[100:]) == 1.0
    noise = torch.randn(200, 6, generator=g)
    assert tr.linear_probe_accuracy(noise[:100], labels[:100], noise[100:], labels[100:]) < 0.6


def test_position_similarity_and_figures(vit_and_images):
    import matplotlib.pyplot as plt
    vit, images, _ = vit_and_images
    sim = tr.position_similarity(vit)
    assert sim["similarity"].shape == (64, 64) and np.allclose(np.diag(sim["similarity"]), 1, atol=1e-5)
    assert sorted(sim["by_distance"]) == list(range(1, 15))
    tr.plot_position_similarity(vit)
    _, attention = vit(images[:1], return_attention=True)
    fig = tr.plot_attention_masks(attention[-1][0, 0], length=6)
    assert "15 of 15 entries above the diagonal are nonzero" in fig.axes[0].get_title()
    plt.close("all")
