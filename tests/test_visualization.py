"""The visualization topic module, its models and the reference solutions' facts and argument checks."""
import numpy as np
import pytest
import torch
from torch import nn

from lecturelib import data, reference as ref, visualization as vis
from lecturelib._student import reference_functions
from lecturelib.checks.visualization import TinyCNN, model_state
from lecturelib.visualization_models import WEIGHTS_DIR


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors: with one thread these tests run several times faster on a busy 2-core machine
    (two threads per process oversubscribe the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def held_out():
    return data.make_classification(120, seed=1)


@pytest.fixture(scope="module")
def classifier():
    return vis.load_pretrained("classifier_shapes")


# ---------------------------------------------------------------------------------------------
# Models and weights
# ---------------------------------------------------------------------------------------------
def test_classifier_architecture_has_a_gap_linear_head_and_16x16_last_layer():
    model = vis.ShapesClassifier().eval()
    assert list(model.blocks()) == ["block1", "block2", "block3", "block4", "block5"]
    x = torch.rand(2, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (2, 64, 16, 16)
    assert torch.allclose(model(x), model.fc(feats.mean((2, 3))), atol=1e-6)


def test_shipped_classifier_is_accurate_and_documented(classifier, held_out):
    assert not classifier.training
    assert vis.accuracy(classifier, held_out) >= 0.95
    meta = classifier.metadata
    # the shipped file predates the one `make weights` entry; a retrained one names it
    assert meta["command"].startswith(("python scripts/train_visualization.py",
                                       "python scripts/train_weights.py visualization"))
    assert meta["held_out_accuracy"] >= 0.97
    assert set(meta["pointing_game"]) == set(classifier.blocks())
    assert max(meta["pointing_game"].values()) >= 0.9   # Grad-CAM's best layer points at the object


def test_shipped_vit_loads_and_classifies(held_out):
    vit = vis.load_pretrained("vit_shapes")
    assert vis.accuracy(vit, held_out) > 0.9
    assert vit.metadata["held_out_accuracy"] > 0.95


def test_weights_files_are_small():
    for name in vis.PRETRAINED:
        path = WEIGHTS_DIR / f"{name}.pt"
        assert path.stat().st_size < 2_000_000, name


def test_load_pretrained_rejects_unknown_names():
    with pytest.raises(ValueError, match="classifier_shapes"):
        vis.load_pretrained("resnet50")
    with pytest.raises(TypeError, match="name"):
        vis.load_pretrained(3)


def test_train_classifier_reduces_the_loss():
    torch.manual_seed(0)
    model = vis.ShapesClassifier(blocks=((8, 1, True), (8, 1, True)))
    losses = vis.train_classifier(model, data.make_classification(128, seed=3), epochs=3, batch_size=32,
                                  progress=False)
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_first_layer_filters(classifier):
    assert vis.first_layer_filters(classifier).shape == (16, 3, 3, 3)
    with pytest.raises(ValueError, match="Conv2d"):
        vis.first_layer_filters(nn.Linear(2, 2))


def test_classifier_blocks_may_set_kernel_and_stride():
    model = vis.ShapesClassifier(blocks=((8, 1, True, 7, 2), (16, 2, False))).eval()
    assert model.config["blocks"] == [[8, 1, True, 7, 2], [16, 2, False]]
    assert vis.first_layer_filters(model).shape == (8, 3, 7, 7)
    assert model.forward_features(torch.rand(2, 3, 64, 64)).shape == (2, 16, 16, 16)   # 64 / 2 (stride) / 2 (pool)
    with pytest.raises(ValueError, match="kernel, stride"):
        vis.ShapesClassifier(blocks=((8, 1, True, 7),))
    with pytest.raises(ValueError, match="stride"):
        vis.ShapesClassifier(blocks=((8, 1, True, 7, 0),))


def test_colour_augmentation_permutes_and_inverts_channels_only_when_asked():
    import itertools

    from lecturelib.visualization_models import _Augmented
    images, targets = torch.rand(40, 3, 8, 8), torch.zeros(40, dtype=torch.long)

    def variants(image, colours):
        for k, flip in itertools.product(range(4), (False, True)):
            turned = torch.rot90(image, k, dims=(1, 2))
            turned = turned.flip(2) if flip else turned
            for order, invert in (itertools.product(itertools.permutations(range(3)), (False, True)) if colours
                                  else [((0, 1, 2), False)]):
                out = turned[list(order)]
                yield 1 - out if invert else out

    plain, coloured = _Augmented(images, targets, seed=0), _Augmented(images, targets, seed=0, colours=True)
    recoloured = 0
    for i in range(40):
        out = plain[i][0]                                      # each call draws new random choices
        assert any(torch.equal(out, v) for v in variants(images[i], colours=False))
        out = coloured[i][0]
        assert any(torch.equal(out, v) for v in variants(images[i], colours=True))
        recoloured += not any(torch.equal(out, v) for v in variants(images[i], colours=False))
    assert recoloured > 20                                     # most images get other colours


def test_shipped_filters_model_has_smooth_oriented_7x7_filters(held_out):
    model = vis.load_pretrained("filters_shapes")
    filters = vis.first_layer_filters(model)
    assert filters.shape == (16, 3, 7, 7)
    assert vis.accuracy(model, held_out) >= 0.95 and model.metadata["held_out_accuracy"] >= 0.97
    assert model.metadata["command"] == "python scripts/train_weights.py visualization --models filters"
    measured = vis.filter_structure(filters)
    stored = model.metadata["filter_structure"]
    assert stored["smoothness_median"] == pytest.approx(float(measured["smoothness"].median()), abs=1e-4)
    assert stored["oriented_share"] == pytest.approx(measured["oriented_share"])
    assert measured["smoothness"].median() >= 0.6 and measured["shuffled_smoothness"] <= 0.15
    assert measured["oriented_share"] >= 0.5
    # "about half of them colour-opponent ... the others light against dark": the share of each filter's spatial
    # pattern that is the same in all three channels (luminance).
    pattern = filters.double() - filters.double().mean((2, 3), keepdim=True)
    luminance = 3 * pattern.mean(1).square().sum((1, 2)) / pattern.square().sum((1, 2, 3))
    assert 5 <= int((luminance < 0.3).sum()) <= 11 and int((luminance > 0.6).sum()) >= 5
    # The classifier's 3 x 3 filters are barely smoother than shuffled: colour noise to the eye.
    small = vis.filter_structure(vis.first_layer_filters(vis.load_pretrained("classifier_shapes")))
    assert small["smoothness"].median() < 0.3 and small["oriented_share"] <= 0.25


# ---------------------------------------------------------------------------------------------
# Filter structure, linear classifiers and their templates
# ---------------------------------------------------------------------------------------------
def _grid(k=7):
    y, x = torch.meshgrid(torch.arange(k) - k // 2, torch.arange(k) - k // 2, indexing="ij")
    return x.double(), y.double()


def test_filter_smoothness_and_orientation_on_known_patterns():
    x, y = _grid()
    edge = (x + y > 0).double()                                # a diagonal step edge
    ramp = 0.3 * x - 0.1                                      # a horizontal ramp
    blob = torch.exp(-(x ** 2 + y ** 2) / 4)                  # round: no orientation
    noise = torch.randn(200, 3, 7, 7, generator=torch.Generator().manual_seed(0))
    filters = torch.stack([f.expand(3, 7, 7) for f in (edge, ramp, blob)])
    smooth = vis.filter_smoothness(filters)
    assert smooth.min() > 0.5 and abs(float(vis.filter_smoothness(noise).median())) < 0.1
    orientation = vis.filter_orientation(filters)
    assert orientation[0] == pytest.approx(1) and orientation[1] == pytest.approx(1)
    assert orientation[2] < 0.1                                # (forward differences: not exactly 0)
    # An opposite colour on each side of the edge (colour-opponent) is just as oriented.
    assert vis.filter_orientation(torch.stack([edge, -edge, edge])[None])[0] == pytest.approx(1)
    with pytest.raises(ValueError, match="4 dimensions"):
        vis.filter_smoothness(torch.zeros(3, 7, 7))


def test_shuffled_and_smooth_random_filters_are_baselines():
    weight = vis.first_layer_filters(vis.load_pretrained("filters_shapes")).double()
    shuffled = vis.shuffled_filters(weight, copies=3, seed=1)
    assert shuffled.shape == (48, 3, 7, 7)
    for copy in range(3):                                      # the same taps, in another order
        block = shuffled[copy * 16:(copy + 1) * 16]
        assert torch.equal(block.flatten(2).sort(dim=2).values, weight.flatten(2).sort(dim=2).values)
    assert not torch.equal(shuffled[:16], weight)
    random = vis.smooth_random_filters(weight, n=400)
    assert random.shape == (400, 3, 7, 7)
    assert float(vis.filter_smoothness(random).median()) == pytest.approx(
        float(vis.filter_smoothness(weight).median()), abs=0.03)
    again = vis.filter_structure(weight)
    assert again["oriented_share"] == vis.filter_structure(weight)["oriented_share"]    # seeded


def test_fit_linear_classifier_learns_templates():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 4
    prototypes = torch.randn(4, 1, 5, 5, generator=generator)
    inputs = prototypes[labels] + 0.5 * torch.randn(200, 1, 5, 5, generator=generator)
    model = vis.fit_linear_classifier(inputs, labels)
    assert isinstance(model, vis.LinearClassifier) and not model.training
    with torch.no_grad():
        assert float((model(inputs).argmax(1) == labels).float().mean()) > 0.95
    templates = model.templates()
    assert templates.shape == (4, 1, 5, 5)
    cosine = torch.nn.functional.cosine_similarity(templates.flatten(1)[:, None], prototypes.flatten(1)[None], dim=2)
    assert torch.equal(cosine.argmax(1), torch.arange(4))      # each template looks like its class
    assert torch.equal(vis.fit_linear_classifier(inputs, labels).templates(), templates)   # convex, no seed
    with pytest.raises(ValueError, match="same N"):
        vis.fit_linear_classifier(inputs, labels[:10])
    with pytest.raises(TypeError, match="integer"):
        vis.fit_linear_classifier(inputs, labels.float())
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(2, 1, 4, 4))


def test_object_crops_centre_the_object():
    shapes = data.make_classification(12, seed=4)
    crops = vis.object_crops(shapes, size=24)
    contrast = vis.object_crops(shapes, size=24, contrast=True)
    assert crops.shape == (12, 3, 24, 24) and contrast.shape == (12, 1, 24, 24)
    assert float(crops.min()) >= 0 and float(crops.max()) <= 1
    centre, border = contrast[:, 0, 10:14, 10:14].mean((1, 2)), contrast[:, 0, 0].mean(1)
    assert bool((centre > border + 0.2).all())                 # the object in the middle, the background around
    with pytest.raises(TypeError, match="Shapes"):
        vis.object_crops(torch.zeros(2, 3, 8, 8))


def test_contrast_templates_are_a_ring_for_circles_and_a_centre_for_stars():
    """The notebook's reading of the templates (section 2): the circle's is a ring where its outline runs, the
    star's a solid centre surrounded by blue (negative)."""
    train = data.make_classification(1000, seed=0)
    inputs = vis.object_crops(train, contrast=True)
    templates = vis.fit_linear_classifier(inputs, vis.classification_data(train)[1]).templates()[:, 0]
    x, y = _grid(32)
    radius = ((x + 0.5) ** 2 + (y + 0.5) ** 2).sqrt()
    inner, middle, ring = radius < 6, (radius >= 8) & (radius < 12), (radius >= 12) & (radius < 14)
    circle, star = templates[vis.CLASS_NAMES.index("circle")], templates[vis.CLASS_NAMES.index("star")]
    assert circle[ring].mean() > 0 > circle[inner].mean()
    assert star[inner].mean() > 0 > star[middle].mean()


def test_show_templates_draws_one_panel_per_class():
    import matplotlib.pyplot as plt
    model = vis.fit_linear_classifier(torch.rand(8, 3, 4, 4), torch.arange(8) % 4)
    fig = vis.show_templates(model, row_label="rgb")
    assert len(fig.axes) == 4 and [a.get_title() for a in fig.axes] == list(vis.CLASS_NAMES)
    plt.close(fig)
    gray = vis.fit_linear_classifier(torch.rand(8, 1, 4, 4), torch.arange(8) % 4)
    fig, axes = plt.subplots(1, 4)
    vis.show_templates(gray, axes=axes)
    assert axes[0].images[0].get_cmap().name == "RdBu_r"
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Facts the notebook shows, on the shipped model with the reference solutions
# ---------------------------------------------------------------------------------------------
def test_grad_cam_equals_cam_over_hw_at_the_last_layer(classifier, held_out):
    images, labels = vis.classification_data(held_out.subset(range(8)))
    out = vis.gradcam_cam_identity(classifier, images, labels, ref.grad_cam, ref.class_activation_map)
    assert out["hw"] == 256
    assert out["max_abs_difference"] < 1e-5 * float(out["grad_cam"].abs().max())
    assert out["ratio"] == pytest.approx(256, rel=1e-4)


def test_cam_mean_plus_bias_is_the_score(classifier, held_out):
    images, labels = vis.classification_data(held_out.subset(range(4)))
    with torch.no_grad():
        feats = classifier.forward_features(images)
        cam = ref.class_activation_map(feats, classifier.fc.weight, labels)
        scores = classifier(images).gather(1, labels[:, None])[:, 0]
    assert torch.allclose(cam.mean((1, 2)) + classifier.fc.bias[labels], scores, atol=1e-4)


def test_occlusion_with_a_whole_image_patch_is_f_x_minus_f_zero(classifier, held_out):
    images, labels = vis.classification_data(held_out.subset(range(3)))
    drops = ref.occlusion_map(classifier, images, labels, patch=64, stride=1)
    with torch.no_grad():
        expected = (classifier(images) - classifier(torch.zeros_like(images))).gather(1, labels[:, None])[:, 0]
    assert drops.shape == (3, 1, 1)
    assert torch.allclose(drops[:, 0, 0], expected, atol=1e-4)


def test_saliency_of_a_linear_model_is_abs_w():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 5 * 4, 3)).double()
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    y = torch.tensor([2, 0])
    got = ref.saliency_map(model, x, y)
    expected = model[1].weight.detach()[y].reshape(2, 3, 5, 4).abs().amax(1)
    assert torch.equal(got, expected)


def test_reference_grad_cam_leaves_the_model_as_it_was():
    model = TinyCNN(5, bn=True).train()
    model.conv1.weight.requires_grad_(False)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    before = model_state(model)
    ref.grad_cam(model, model.conv3, torch.randn(3, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2]))
    after = model_state(model)
    assert before["hooks"] == after["hooks"] == {}
    assert before["training"] == after["training"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["grad"]["fc.weight"] == after["grad"]["fc.weight"] == [float(model.fc.weight.numel()),
                                                                          float(model.fc.weight.numel())]
    assert after["grad"]["conv2.weight"] is None
    assert before["buffers"] == after["buffers"] and before["buffers"]


def test_reference_grad_cam_removes_its_hook_on_error():
    model = TinyCNN(6)
    with pytest.raises(ValueError, match="class_idx"):
        ref.grad_cam(model, model.conv2, torch.randn(1, 3, 8, 8, dtype=torch.float64), torch.tensor([7]))
    assert model_state(model)["hooks"] == {}


@pytest.mark.parametrize("call, match", [
    (lambda m, x: ref.grad_cam(m, nn.Conv2d(3, 3, 1), x, torch.tensor([0])), "not a submodule"),
    (lambda m, x: ref.grad_cam(m, m.conv1, x[0], torch.tensor([0])), "images"),
    (lambda m, x: ref.grad_cam(m, m.conv1, x, torch.tensor([0, 1])), "class_idx"),
    (lambda m, x: ref.grad_cam(m, m.conv1, x, torch.tensor([0.5])), "class_idx"),
    (lambda m, x: ref.grad_cam("model", m.conv1, x, 0), "model"),
    (lambda m, x: ref.saliency_map(m, x, torch.tensor([-1])), "labels"),
    (lambda m, x: ref.occlusion_map(m, x, torch.tensor([0]), 9, 1), "patch"),
    (lambda m, x: ref.occlusion_map(m, x, torch.tensor([0]), 2, 0), "stride"),
    (lambda m, x: ref.class_activation_map(x, torch.ones(2, 4), torch.tensor([0])), "fc_weight"),
])
def test_reference_validates_arguments(call, match):
    model = TinyCNN(7)
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    with pytest.raises((ValueError, TypeError), match=match):
        call(model, x)


def test_reference_accepts_an_int_class_for_every_image():
    model = TinyCNN(8)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    assert torch.equal(ref.grad_cam(model, model.conv2, x, 1),
                       ref.grad_cam(model, model.conv2, x, torch.tensor([1, 1])))


# ---------------------------------------------------------------------------------------------
# Display helper, pointing game, guided backprop, sanity check, ViT
# ---------------------------------------------------------------------------------------------
def test_upsample_maps_resizes_and_normalises():
    maps = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[5.0, 5.0], [5.0, 5.0]]])
    up = vis.upsample_maps(maps, 8)
    assert up.shape == (2, 8, 8) and up.dtype == torch.float32
    assert float(up[0].min()) == 0.0 and float(up[0].max()) == pytest.approx(1.0)
    assert torch.equal(up[1], torch.zeros(8, 8))      # a constant map has no maximum to show
    assert vis.upsample_maps(maps[0], (4, 6), normalize=False).shape == (1, 4, 6)


def test_pointing_game_hits_and_misses():
    maps = torch.zeros(3, 4, 4)
    maps[0, 0, 0] = 1      # top-left cell -> upsampled peak near (4, 4) of a 32 x 32 image
    maps[1, 3, 3] = 1      # bottom-right
    maps[2, 0, 3] = 1      # top-right
    boxes = [np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10]]), np.array([[0, 0, 5, 5], [20, 0, 32, 9]])]
    assert vis.pointing_game(maps, boxes, 32).tolist() == [True, False, True]


def test_evaluate_pointing_game_reports_errors_and_rates(held_out):
    def stub(x, y):
        raise NotImplementedError()

    def center(x, y):
        maps = torch.zeros(len(x), 8, 8)
        maps[:, 4, 4] = 1
        return maps
    out = vis.evaluate_pointing_game({"stub": stub, "centre": center}, held_out.subset(range(20)), batch_size=7)
    assert out["stub"] == {"error": "implement stub above"}
    assert 0 <= out["centre"]["hit_rate"] <= 1 and len(out["centre"]["hits"]) == 20


def test_guided_backprop_without_relus_is_the_plain_gradient():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).double().eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 2])
    (plain,) = torch.autograd.grad(model(x).gather(1, y[:, None]).sum(), x)
    assert torch.allclose(vis.guided_backprop(model, x.detach(), y), plain)


def test_guided_backprop_differs_with_relus_and_restores_them():
    model = TinyCNN(9)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1, 2])
    (plain,) = torch.autograd.grad(model(x).gather(1, y[:, None]).sum(), x)
    guided = vis.guided_backprop(model, x.detach(), y)
    assert not torch.allclose(guided, plain)
    assert all("forward" not in m.__dict__ for m in model.modules())
    with pytest.raises(RuntimeError):
        with vis.guided_relus(model):
            raise RuntimeError("boom")
    assert all("forward" not in m.__dict__ for m in model.modules())
    (again,) = torch.autograd.grad(model(x).gather(1, y[:, None]).sum(), x)
    assert torch.equal(again, plain)


def test_guided_grad_cam_shape(classifier, held_out):
    images, labels = vis.classification_data(held_out.subset(range(2)))
    out = vis.guided_grad_cam(classifier, classifier.blocks()["block5"], images, labels, ref.grad_cam)
    assert out.shape == images.shape


def test_randomized_copy_and_rank_correlation(classifier):
    twin = vis.randomized_copy(classifier, seed=1)
    w0 = classifier.fc.weight.detach().clone()
    assert not torch.allclose(twin.fc.weight, classifier.fc.weight)
    assert torch.equal(classifier.fc.weight, w0)
    a = torch.rand(3, 5, 5)
    assert torch.allclose(vis.rank_correlation(a, a), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(vis.rank_correlation(a, -a), -torch.ones(3, dtype=torch.float64))


def test_randomization_check_grad_cam_changes_more_than_guided_backprop(classifier, held_out):
    images, labels = vis.classification_data(held_out.subset(range(16)))
    out = vis.randomization_check(classifier, images, labels, {
        "grad_cam": lambda m, x, y: ref.grad_cam(m, list(m.blocks().values())[-1], x, y),
        "guided": lambda m, x, y: vis.guided_backprop(m, x, y).abs().amax(1),
    })
    assert out["grad_cam"]["correlation"] < out["guided"]["correlation"]


def test_attention_maps_and_rollout():
    vit = vis.TinyViT(depth=2, heads=2, dim=16, mlp_dim=32).eval()
    x = torch.rand(3, 3, 64, 64)
    maps = vis.attention_maps(vit, x)
    assert maps.shape == (3, 2, 2, 8, 8)
    _, attentions = vit(x, return_attention=True)
    assert torch.allclose(attentions[0].sum(-1), torch.ones(3, 2, 65), atol=1e-5)
    roll = vis.attention_rollout(vit, x)
    assert roll.shape == (3, 8, 8) and bool((roll >= 0).all()) and float(roll.sum((1, 2)).max()) <= 1 + 1e-5


# ---------------------------------------------------------------------------------------------
# Widgets: a pure compute function, and the widgets on top of it
# ---------------------------------------------------------------------------------------------
def test_explain_runs_given_functions_and_reports_stubs(classifier, held_out):
    images, labels = vis.classification_data(held_out.subset(range(1)))

    def stub(*args):
        raise NotImplementedError()

    out = vis.explain(classifier, images[0], int(labels[0]), "block3", grad_cam=ref.grad_cam,
                      saliency_map=stub, occlusion_map=ref.occlusion_map, patch=16, stride=8)
    assert set(out["maps"]) == {"Grad-CAM (block3)", "occlusion (patch 16)"}
    assert out["errors"] == {"saliency": "implement saliency_map above"}
    for heat in out["maps"].values():
        assert heat.shape == (64, 64) and heat.min() >= 0 and heat.max() <= 1
    assert out["probabilities"].sum() == pytest.approx(1, abs=1e-5)


def test_explanation_widget_draws(classifier, held_out):
    functions = reference_functions("visualization")
    assert set(functions) == {"saliency_map", "class_activation_map", "grad_cam", "occlusion_map"}
    box = vis.explanation_widget(classifier, held_out.subset(range(5)), grad_cam=functions["grad_cam"],
                                 saliency_map=functions["saliency_map"], occlusion_map=functions["occlusion_map"])
    result = box.interactive.result
    assert len(result["maps"]) == 3 and not result["errors"]
    box.interactive.children[2].value = "block2"   # the layer dropdown
    assert "Grad-CAM (block2)" in box.interactive.result["maps"]
    patch_box = vis.occlusion_patch_widget(classifier, vis.classification_data(held_out)[0][0], 1, ref.occlusion_map)
    assert patch_box.interactive.result["patch"] == 16 and patch_box.interactive.result["drops"].ndim == 2
    patch_box.interactive.children[0].value = 32
    assert patch_box.interactive.result["patch"] == 32
