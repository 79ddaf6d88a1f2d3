"""Grader side of the visualization checks: oracles, known mistakes, case builders, visible and hidden specs
(grader copy only).

Oracles are constructions whose answer is known by design (the saliency of a linear model is |w|, its
occlusion map is a windowed sum of w * x, a whole-image patch gives f(x) - f(0), Grad-CAM at the last layer
of a GAP + linear model is ReLU(CAM) / (h * w)) and hook-free computations: :class:`TinyCNN` runs layer by
layer, so the activations A at any layer and dS/dA come from a plain ``torch.autograd.grad``
(:func:`_forward_until`, :func:`_forward_from`). Each known mistake is a small wrong implementation with the
cause a student must be told; its outputs on a case's inputs go into the case's data.

The test models are built here and shipped as call arguments; their classes live on the student side
(``checks/visualization.py``), where the calls are unpickled and run.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..checks.core import Call, Case
from ..checks.runner import observe_models
from ..checks.visualization import FailingCNN, LinearModel, TinyCNN
from . import mistake_outputs
from ._inputs import dtype_of, randn, shape_str


def _distinct_outputs(mistakes, *args) -> list:
    """``mistake_outputs`` without the outputs that two mistakes with different causes share on these inputs (two
    all-zero Grad-CAM maps, say): such an output names neither cause (measured: with one student's seeds, alpha
    averaged over the batch and logits[:, class_idx] both gave all-zero maps at relu3)."""
    outputs = mistake_outputs(mistakes, *args)

    def same(a, b):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and bool(
            torch.allclose(a.to(torch.float64), b.to(torch.float64), rtol=1e-6, atol=1e-9))
    return [(out, cause) for out, cause in outputs
            if not any(same(out, other) and other_cause != cause for other, other_cause in outputs)]


def _classes(spec, n: int, num_classes: int) -> torch.Tensor:
    if "classes" in spec:
        return torch.tensor(spec["classes"], dtype=torch.long)
    return torch.arange(n, dtype=torch.long) % num_classes


def _scores(logits, classes):
    """(N,) each image's own entry of (N, C) ``logits``."""
    return logits.gather(1, classes[:, None])[:, 0]


def _first_only(maps):
    """(N, ...) the maps of a batch with every image but the first left at zero. A known mistake rather than left
    to ``core.what_differs``: a Grad-CAM map can be all zero after the ReLU (image 3 of hidden case 1), and a
    zero image that is "right" hides the pattern "only the first image is right"."""
    out = torch.zeros_like(maps)
    out[:1] = maps[:1]
    return out


_FIRST_ONLY = ("only the first image of the batch was computed (the others are zero): process every image of the "
               "batch, each with its own class")


def _class_weights(model: LinearModel, classes: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) the weights w_{y_n} of each image's class: dS_{y_n}/dx of the linear model."""
    return model.fc.weight.detach()[classes].reshape(len(classes), *model.shape)


def _input_gradient(model, images, classes, score="logit"):
    """(N, C, H, W) d score / d x per image, computed one image at a time (no batching assumptions)."""
    grads = []
    for x, c in zip(images, classes):
        x = x[None].clone().requires_grad_(True)
        logits = model(x)
        value = {"logit": logits[0, c], "prob": logits.softmax(1)[0, c],
                 "logprob": logits.log_softmax(1)[0, c]}[score]
        (g,) = torch.autograd.grad(value, x)
        grads.append(g[0])
    return torch.stack(grads)


# ------------------------------------------------------------------------------------------------
# Saliency
# ------------------------------------------------------------------------------------------------
def _saliency_oracle(model, images, classes):
    """(N, H, W) max over channels of |dS/dx|; for a linear model |w| by design, without autograd."""
    if isinstance(model, LinearModel):
        return _class_weights(model, classes).abs().amax(1)
    return _input_gradient(model, images, classes).abs().amax(1).detach()


def _mixed_classes_gradient(model, images, classes):
    """The input gradient of logits[:, classes].sum(): every image gets the sum of all listed classes."""
    summed = torch.zeros_like(images)
    for c in classes.unique():
        summed += _input_gradient(model, images, torch.full_like(classes, int(c))) * int((classes == c).sum())
    return summed


def _saliency_mistakes(n):
    """Wrong saliency maps ``fn(model, images, classes)`` with their causes, in the order they are named."""
    grad = _input_gradient
    mistakes = [
        (lambda m, x, y: grad(m, x, y).abs().sum(1),
         "the absolute gradients were summed over the colour channels (what captum's visualiser does); "
         "Simonyan et al. take the MAXIMUM over channels: .amax(dim=1)"),
        (lambda m, x, y: grad(m, x, y).abs().mean(1),
         "the absolute gradients were averaged over the colour channels; take the maximum"),
        (lambda m, x, y: grad(m, x, y).amax(1),
         "the absolute value is missing: take |gradient| before the maximum over channels"),
        (lambda m, x, y: grad(m, x, y).amax(1).abs(),
         "the absolute value came after the maximum over channels; take |gradient| first, then the maximum: "
         "a large negative gradient counts too"),
    ]
    if n > 1:
        mistakes += [
            (lambda m, x, y: grad(m, x, y[:1].expand(len(y))).abs().amax(1),
             "every image used the class of the first image; use each image's own label"),
            (lambda m, x, y: _mixed_classes_gradient(m, x, y).abs().amax(1),
             "logits[:, labels] mixes the images' classes (an N x N matrix); take each image's own score: "
             "logits[torch.arange(N), labels]"),
        ]
    return mistakes + [
        (lambda m, x, y: grad(m, x, y, "prob").abs().amax(1),
         "that is the gradient of the softmax probability; use the unnormalised class score (the logit)"),
        (lambda m, x, y: grad(m, x, y, "logprob").abs().amax(1),
         "that is the gradient of the log-probability (the cross-entropy loss); use the unnormalised class "
         "score (the logit)"),
        (lambda m, x, y: (grad(m, x, y) * x).abs().amax(1),
         "the gradient was multiplied by the input (gradient x input); saliency is the gradient alone"),
    ]


def _saliency_case(spec) -> Case:
    dtype = dtype_of(spec)
    n, c, h, w = spec["images"]
    num_classes = spec.get("num_classes", 3)
    if spec["model"] == "linear":
        model = LinearModel(spec["seed"], (c, h, w), num_classes, dtype)
        what, about = "linear model (saliency = |w|, max over channels)", "linear model"
    else:
        model = TinyCNN(spec["seed"], channels=c, num_classes=num_classes, dtype=dtype)
        what, about = "small CNN", "small CNN"
    images = randn(spec["images"], spec["seed"] + 1, dtype)
    classes = _classes(spec, n, num_classes)
    data = {"expected": _saliency_oracle(model, images, classes), "images_shape": (n, c, h, w),
            "mistakes": _distinct_outputs(_saliency_mistakes(n), model, images, classes)}
    name = f"{what}, images {shape_str(images.shape)}, labels {classes.tolist()}"
    if "dtype" in spec:
        name += f", {spec['dtype']}"
        about += f", {spec['dtype']}"
    return Case(name, [Call(model, images, classes)], "saliency_map", data, about=about)


def _saliency_cases(specs, reveal):
    return [_saliency_case(spec) for spec in specs]


# ------------------------------------------------------------------------------------------------
# CAM
# ------------------------------------------------------------------------------------------------
def _cam_loop(features, weight, classes):
    """(N, h, w) sum_k w[c_n, k] f[n, k], one channel at a time."""
    out = torch.zeros(features.shape[0], *features.shape[2:], dtype=features.dtype)
    for k in range(features.shape[1]):
        out += weight[classes, k][:, None, None] * features[:, k]
    return out


def _min_max(maps):
    """(N, h, w) each map scaled to [0, 1] (a display step, wrong in a graded answer)."""
    low = maps.flatten(1).min(1).values[:, None, None]
    high = maps.flatten(1).max(1).values[:, None, None]
    return (maps - low) / (high - low).clamp_min(1e-30)


def _cam_mistakes(features, weight):
    """Wrong CAMs ``fn(features, weight, classes)`` with their causes, in the order they are named."""
    n, k, h, w = features.shape
    mistakes = [
        (lambda f, wt, y: F.relu(_cam_loop(f, wt, y)), "CAM has no ReLU: M_c = sum_k w[c, k] f_k can be negative"),
        (lambda f, wt, y: _cam_loop(f, wt, y) / k, "the channels were averaged; CAM SUMS the weighted feature maps "
                                                   "over k"),
        (lambda f, wt, y: _cam_loop(f, wt, y) / (h * w),
         "the map was divided by h * w; CAM is sum_k w[c, k] f_k (dividing by h * w gives the Grad-CAM scale)"),
    ]
    if weight.shape[0] == k:
        mistakes.append((lambda f, wt, y: _cam_loop(f, wt.T, y),
                         "fc_weight is (C, K): row c holds the weights of class c, so use fc_weight[c], not the "
                         "column fc_weight[:, c]"))
    if n > 1:
        mistakes.append((lambda f, wt, y: _cam_loop(f, wt, y[:1].expand(n)),
                         "every image used the class of the first image; use each image's own class"))
    return mistakes + [
        (lambda f, wt, y: _cam_loop(f, wt.sum(0, keepdim=True), torch.zeros_like(y)),
         "the weights of all classes were summed; use only row c = class_idx[n] of fc_weight"),
        (lambda f, wt, y: _min_max(_cam_loop(f, wt, y)),
         "the map was min-max normalised; return it unnormalised (normalise only for display)"),
    ]


def _cam_case(spec) -> Case:
    dtype = dtype_of(spec)
    n, k, h, w = spec["features"]
    num_classes = spec["num_classes"]
    features = randn((n, k, h, w), spec["seed"], dtype)
    weight = randn((num_classes, k), spec["seed"] + 1, dtype)
    bias = randn((num_classes,), spec["seed"] + 2, dtype)
    classes = _classes(spec, n, num_classes)
    data = {"expected": _cam_loop(features, weight, classes), "features_shape": (n, k, h, w),
            "fc_weight_shape": (num_classes, k), "mistakes": _distinct_outputs(_cam_mistakes(features, weight),
                                                                             features, weight, classes)}
    name = f"features {shape_str(features.shape)}, fc_weight {num_classes}x{k}, classes {classes.tolist()}"
    about = "a class per image" + (", as many classes as channels" if num_classes == k else "")
    verify = "class_activation_map"
    if spec.get("kind") == "gap_identity":
        # The identity the notebook derives: the spatial mean of the CAM plus the bias is the class score.
        data.update(bias=bias[classes].to(torch.float64),
                    scores=_scores(F.linear(features.mean(dim=(2, 3)), weight, bias), classes))
        name = "GAP + linear model: mean of CAM + bias = class score; " + name
        about = "mean of CAM + bias = class score; " + about
        verify += ":gap_identity"
    if "dtype" in spec:
        name += f", {spec['dtype']}"
        about += f", {spec['dtype']}"
    return Case(name, [Call(features, weight, classes)], verify, data, explain="class_activation_map", about=about)


def _cam_cases(specs, reveal):
    return [_cam_case(spec) for spec in specs]


# ------------------------------------------------------------------------------------------------
# Grad-CAM
# ------------------------------------------------------------------------------------------------
def _forward_until(model: TinyCNN, name: str, x: torch.Tensor) -> torch.Tensor:
    """The output of layer ``name`` (a copy: the in-place ReLUs after it must not change it)."""
    for layer in model.LAYERS:
        x = getattr(model, layer)(x)
        if layer == name:
            return x.clone()
    raise ValueError(name)


def _forward_from(model: TinyCNN, name: str, a: torch.Tensor) -> torch.Tensor:
    """The logits, from ``a``, the output of layer ``name``: the layers after it, GAP and fc."""
    a = a.clone()  # an in-place layer must not modify the caller's tensor
    for layer in model.LAYERS[model.LAYERS.index(name) + 1:]:
        a = getattr(model, layer)(a)
    return model.fc(a.mean(dim=(2, 3)))


def _layer_grads(model, layer, images, classes, score="logit", head_classes=None):
    """(A, dS/dA) at ``layer``, both (N, K, h, w), without hooks."""
    A = _forward_until(model, layer, images).detach().requires_grad_(True)
    logits = _forward_from(model, layer, A)
    if score == "mixed":  # logits[:, classes].sum(): every image gets the sum of all listed classes
        value = logits[:, classes].sum()
    else:
        cls = classes if head_classes is None else head_classes
        value = {"logit": logits, "prob": logits.softmax(1)}[score].gather(1, cls[:, None]).sum()
    (G,) = torch.autograd.grad(value, A)
    return A.detach(), G


def _cam_from(A, G):
    """(N, h, w) ReLU(sum_k alpha_k A_k), alpha_k the spatial mean of G_k."""
    return F.relu((G.mean(dim=(2, 3), keepdim=True) * A).sum(1))


def _grad_cam_oracle(model, layer, images, classes):
    return _cam_from(*_layer_grads(model, layer, images, classes))


def _grad_cam_identity(model, layer, images, classes):
    """Known by design: for conv -> GAP -> linear, Grad-CAM at the last layer is ReLU(CAM) / (h * w)."""
    with torch.no_grad():
        feats = _forward_until(model, layer, images)
    return F.relu(_cam_loop(feats, model.fc.weight.detach(), classes)) / (feats.shape[2] * feats.shape[3])


def _from_grads(combine):
    """A mistake that combines A and dS/dA of the right score at the right layer the wrong way."""
    return lambda model, layer, images, classes: combine(*_layer_grads(model, layer, images, classes))


def _inplace_after(model, layer):
    """The in-place ReLU that overwrites ``layer``'s output (nn.Identity passes the tensor through)."""
    if layer == "conv3":
        return "relu3"
    if layer == "bn2" or (layer == "conv2" and isinstance(model.bn2, nn.Identity)):
        return "relu2"
    return None


def _overwritten(inplace: str, grads_after: bool):
    """What a hook sees when it keeps `output` itself and the in-place ReLU ``inplace`` then overwrites it;
    the gradient caught at the layer or (``grads_after``) at the ReLU."""
    def mistake(model, layer, images, classes):
        A, G = _layer_grads(model, layer, images, classes)
        if grads_after:
            G = _layer_grads(model, inplace, images, classes)[1]
        return _cam_from(F.relu(A), G)
    return mistake


def _train_mode_map(model, layer, images, classes):
    """Grad-CAM with BatchNorm using the batch's statistics (on a copy: its running statistics change)."""
    return _grad_cam_oracle(copy.deepcopy(model).train(), layer, images, classes)


_GRAD_CAM_MISTAKES = [
    (_from_grads(lambda A, G: (G.mean(dim=(2, 3), keepdim=True) * A).sum(1)),
     "the ReLU is missing: Grad-CAM keeps only the positive evidence, map = ReLU(sum_k alpha_k A_k)"),
    (lambda m, layer, x, y: _cam_from(*_layer_grads(m, layer, x, y, score="prob")),
     "those are gradients of the softmax probability; use the unnormalised class score S_c (the logit, before "
     "softmax)"),
    (_from_grads(lambda A, G: F.relu((A.mean(dim=(2, 3), keepdim=True) * A).sum(1))),
     "the weights alpha_k were computed from the activations; alpha_k is the spatial mean of the GRADIENTS "
     "dS_c/dA_k"),
    (_from_grads(lambda A, G: F.relu((G * A).sum(1))),
     "gradient and activation were multiplied element-wise; Grad-CAM first averages the gradients over space "
     "(alpha_k = mean over h, w), then weights each activation map A_k by its alpha_k"),
    (_from_grads(lambda A, G: F.relu((G.sum(dim=(2, 3), keepdim=True) * A).sum(1))),
     "alpha_k is the spatial MEAN of the gradients (divide the sum by h * w)"),
    (_from_grads(lambda A, G: F.relu((G.mean(dim=(1, 2, 3), keepdim=True) * A).sum(1))),
     "the gradients were averaged over channels too; alpha_k averages over the spatial positions (dims 2, 3) "
     "only, one weight per channel k"),
]

_GRAD_CAM_BATCH_MISTAKES = [
    (lambda m, layer, x, y: _cam_from(*_layer_grads(m, layer, x, y, head_classes=y[:1].expand(len(y)))),
     "every image used the class of the first image; use each image's own class"),
    (lambda m, layer, x, y: _cam_from(*_layer_grads(m, layer, x, y, score="mixed")),
     "logits[:, class_idx] mixes the images' classes (an N x N matrix); take each image's own score: "
     "logits[torch.arange(N), class_idx]"),
    (_from_grads(lambda A, G: F.relu((G.mean(dim=(0, 2, 3), keepdim=True) * A).sum(1))),
     "the gradients were averaged over the batch too (dim 0): alpha_k belongs to one image, the mean of its own "
     "gradients over the spatial positions (dims 2, 3) only"),
    (lambda m, layer, x, y: _first_only(_grad_cam_oracle(m, layer, x, y)), _FIRST_ONLY),
]


def _layer_input_map(model, layer, images, classes):
    """Grad-CAM of the target layer's INPUT (``inputs[0]`` of a forward hook): the previous layer's output, or
    the images for the first layer."""
    index = model.LAYERS.index(layer)
    if index:
        return _grad_cam_oracle(model, model.LAYERS[index - 1], images, classes)
    x = images.detach().clone().requires_grad_(True)
    (G,) = torch.autograd.grad(_scores(model(x), classes).sum(), x)
    return _cam_from(x.detach(), G)


_LAYER_INPUT = ("the activations are the layer's INPUT (inputs[0] in the forward hook); Grad-CAM uses its OUTPUT: "
                "hook(module, inputs, output) keeps `output`")


def _grad_cam_mistakes(model, layer, spec):
    """Wrong maps ``fn(model, layer, images, classes)`` with their causes, in the order they are named."""
    mistakes = []
    if spec.get("train"):
        mistakes.append((_train_mode_map,
                         "the map was computed in train mode (BatchNorm used the batch's statistics); call "
                         "model.eval() before the forward pass and restore the caller's mode afterwards"))
    mistakes += _GRAD_CAM_MISTAKES
    if spec["images"][0] > 1:
        mistakes += _GRAD_CAM_BATCH_MISTAKES
    inplace = _inplace_after(model, layer)
    if inplace:
        cause = (f"the stored activations were overwritten by the in-place ReLU that follows this layer "
                 f"({inplace}); keep a copy that nothing modifies: store `output` and return output.clone() from "
                 "the forward hook, or store output.detach().clone() (and take the gradient of the tensor the "
                 "model really uses)")
        mistakes += [(_overwritten(inplace, False), cause), (_overwritten(inplace, True), cause)]
    return mistakes + [
        (_layer_input_map, _LAYER_INPUT),
        (lambda m, layer, x, y: _min_max(_grad_cam_oracle(m, layer, x, y)), _NORMALISED),
        (lambda m, layer, x, y: _max_scaled(_grad_cam_oracle(m, layer, x, y)), _NORMALISED),
    ]


_NORMALISED = ("the map was normalised; return it unnormalised at the layer's resolution (the display helper "
               "normalises)")


def _max_scaled(maps):
    """(N, h, w) each map divided by its maximum (min-max normalisation differs where a map's minimum is not 0)."""
    return maps / maps.flatten(1).max(1).values.clamp_min(1e-30)[:, None, None]


_GRAD_CAM_ORACLES = {"value": _grad_cam_oracle, "cam_identity": _grad_cam_identity}


def _grad_cam_values(model, layer, images, classes, spec) -> dict:
    """The expected map (by the hook-free oracle, or by design at the last layer) and the known mistakes'."""
    oracle = _GRAD_CAM_ORACLES[spec.get("kind", "value")]
    return {"expected": oracle(model, layer, images, classes),
            "mistakes": _distinct_outputs(_grad_cam_mistakes(model, layer, spec), model, layer, images, classes)}


def _set_caller_state(model, spec):
    """The caller's state, which the call must leave as it is: mode, frozen parameters, gradients."""
    if spec.get("train"):
        model.train()
    if spec.get("frozen"):
        for name, p in model.named_parameters():
            if name.startswith(tuple(spec["frozen"])):
                p.requires_grad_(False)
    if spec.get("grads"):
        for i, p in enumerate(model.parameters()):
            p.grad = randn(p.shape, spec["seed"] + 100 + i, p.dtype)


def _grad_cam_name(spec, classes, images, reveal: bool = True) -> str:
    """What the case checks; without the inputs' shapes and classes for a hidden case's ``about``."""
    layer = spec["layer"]
    what = {"conv1": "conv1 (full resolution)", "relu1": "relu1 (before max-pooling)",
            "conv2": "conv2" if spec.get("bn") else "conv2 (then nn.Identity and an in-place ReLU)",
            "bn2": "bn2 (followed by an in-place ReLU)",
            "conv3": "conv3 (followed by an in-place ReLU)", "relu3": "relu3 (the last layer before GAP)"}[layer]
    parts = [f"target layer {what}"]
    if reveal:
        parts += [f"images {shape_str(images.shape)}", f"classes {classes.tolist()}"]
    elif len(classes) > 1:
        parts.append("a batch with a class per image")
    if spec.get("kind") == "cam_identity":
        parts.insert(0, "Grad-CAM at the last layer = ReLU(CAM) / (h * w)")
    if spec.get("train"):
        parts.append("model with BatchNorm left in train mode by the caller")
    if spec.get("frozen"):
        parts.append(f"frozen parameters ({', '.join(spec['frozen'])}: requires_grad=False)")
    if spec.get("grads"):
        parts.append("parameters already hold .grad")
    if spec.get("fail"):
        parts = ["the model raises after the target layer: the error propagates, the hooks and modes are "
                 "restored", f"target layer {what}"]
    if "dtype" in spec:
        parts.append(spec["dtype"])
    return ", ".join(parts)


def _grad_cam_model(spec) -> TinyCNN:
    model_class = FailingCNN if spec.get("fail") else TinyCNN
    return model_class(spec["seed"], channels=spec["images"][1], widths=tuple(spec.get("widths", (4, 5, 6))),
                       num_classes=spec.get("num_classes", 3), bn=spec.get("bn", False), dtype=dtype_of(spec))


def _grad_cam_case(spec) -> Case:
    n, c, h, w = spec["images"]
    layer = spec["layer"]
    fail = bool(spec.get("fail"))
    model = _grad_cam_model(spec)
    images = randn((n, c, h, w), spec["seed"] + 1, dtype_of(spec))
    classes = _classes(spec, n, spec.get("num_classes", 3))
    data = {} if fail else _grad_cam_values(model, layer, images, classes, spec)
    _set_caller_state(model, spec)
    # The runner's observer reports the model's state right after the call, where the call ran (also in the
    # grader's sandbox); the verifier compares it with the same summary taken here.
    call = Call(model, getattr(model, layer), images, classes).observed_by("models")
    data.update(before=observe_models(call.args, call.kwargs)["0"], frozen=bool(spec.get("frozen")),
                images_shape=(n, c, h, w))
    return Case(_grad_cam_name(spec, classes, images), [call], "grad_cam:fail" if fail else "grad_cam", data,
                expects_error=fail, explain="grad_cam", about=_grad_cam_name(spec, classes, images, reveal=False))


def _grad_cam_cases(specs, reveal):
    return [_grad_cam_case(spec) for spec in specs]


# ------------------------------------------------------------------------------------------------
# Occlusion
# ------------------------------------------------------------------------------------------------
def _positions(h, w, patch, stride) -> tuple[int, int]:
    """(rows, cols): the patch positions that stay inside the image."""
    return (h - patch) // stride + 1, (w - patch) // stride + 1


def _occlusion_brute_force(model, images, classes, patch, stride, score="logit", baseline=None, step=None):
    """((N, rows, cols) score drops, (N,) scores of the images), one patch position at a time; ``baseline``
    (N, C) fills the patch with a value per image and channel instead of zeros; ``step`` (a known mistake) puts
    position i at row i * step instead of i * stride."""
    n, _, h, w = images.shape
    rows, cols = _positions(h, w, patch, stride)
    start = stride if step is None else step

    def score_of(x):
        logits = model(x)
        return _scores(logits.softmax(1) if score == "prob" else logits, classes)

    fill = torch.zeros_like(images) if baseline is None else baseline[:, :, None, None].expand_as(images)
    with torch.no_grad():
        base = score_of(images)
        out = torch.zeros(n, rows, cols, dtype=images.dtype)
        for i in range(rows):
            for j in range(cols):
                region = (slice(None), slice(None), slice(i * start, i * start + patch),
                          slice(j * start, j * start + patch))
                occluded = images.clone()
                occluded[region] = fill[region]
                out[:, i, j] = base - score_of(occluded)
    return out, base


def _occlusion_linear_oracle(model, images, classes, patch, stride):
    """Linear model, zero baseline: the drop is the sum of w_c * x over the patch (known by design)."""
    contrib = (_class_weights(model, classes) * images).sum(1, keepdim=True)
    return F.avg_pool2d(contrib, patch, stride=stride)[:, 0] * patch * patch


def _occlusion_whole_image(model, images, classes):
    """(N, 1, 1) f(x) - f(0): one patch covering the whole image."""
    return (_scores(model(images), classes) - _scores(model(torch.zeros_like(images)), classes))[:, None, None]


def _drops(*args, **kwargs):
    """(N, rows, cols) the score drops of :func:`_occlusion_brute_force`."""
    return _occlusion_brute_force(*args, **kwargs)[0]


def _occluded_scores(*args):
    """(N, rows, cols) the scores of the occluded images (not their drops)."""
    drops, base = _occlusion_brute_force(*args)
    return base[:, None, None] - drops


def _stepped_by_patch(model, images, classes, patch, stride):
    """The drops with position i at row i * patch (left out where patch == stride: then it is right)."""
    if patch == stride:
        raise ValueError("the same as the right answer")
    return _drops(model, images, classes, patch, stride, step=patch)


def _occlusion_mistakes(n, square):
    """Wrong maps ``fn(model, images, classes, patch, stride)`` with their causes, in the order they are named."""
    mistakes = [
        (lambda *a: -_drops(*a),
         "the sign is flipped: the map holds the DROP, S(original) - S(occluded), so covering an important "
         "region gives a large positive value"),
        (_occluded_scores,
         "those are the scores of the occluded images; return the drop S(original) - S(occluded)"),
        (lambda *a: _drops(*a, score="prob"),
         "that is the drop of the softmax probability; use the unnormalised class score (the logit)"),
        (lambda m, x, y, p, s: _drops(m, x, y, p, s, baseline=x.mean(dim=(2, 3))),
         "the patch was filled with the image's mean; fill it with zeros"),
    ]
    if n > 1:
        mistakes.append((lambda m, x, y, p, s: _drops(m, x, y[:1].expand(n), p, s),
                         "every image used the class of the first image; use each image's own label"))
        mistakes.append((lambda *a: _first_only(_drops(*a)), _FIRST_ONLY))
    mistakes.append((_stepped_by_patch,
                     "the patch at position i starts at row i * patch; it starts at row i * stride (consecutive "
                     "positions are `stride` pixels apart, and patches overlap when stride < patch)"))
    if square:
        mistakes.append((lambda *a: _drops(*a).transpose(1, 2),
                         "rows and columns are swapped: entry [n, i, j] has the patch at rows i * stride ... and "
                         "columns j * stride ..."))
    return mistakes


def _occlusion_shape_causes(h, w, patch, stride):
    """``[((rows, cols), cause), ...]``: the map sizes that known mistakes give (first match wins)."""
    rows, cols = _positions(h, w, patch, stride)
    inside = ("the patch must stay inside the image: it starts at 0, stride, 2 * stride, ... as long as "
              "start + patch <= H, so there are (H - patch) // stride + 1 positions")
    return [
        ((h, w), "return one value per patch POSITION (rows, cols), not one per pixel"),
        ((cols, rows), "rows and columns are swapped: the first map axis follows the image height"),
        ((rows - 1, cols - 1), "the last position is missing: there are (H - patch) // stride + 1 positions along "
                               "the height"),
        ((h // stride, w // stride), inside),
        ((-(-h // stride), -(-w // stride)), inside),
        ((h - patch + 1, w - patch + 1), "the stride is ignored: consecutive patch positions are `stride` pixels "
                                         "apart"),
    ]


def _occlusion_expected(model, images, classes, patch, stride) -> tuple[torch.Tensor, str]:
    """The expected map and how it is known."""
    h, w = images.shape[-2:]
    with torch.no_grad():
        if patch >= h and patch >= w:
            return _occlusion_whole_image(model, images, classes), "whole-image patch: f(x) - f(0)"
        if isinstance(model, LinearModel):
            return (_occlusion_linear_oracle(model, images, classes, patch, stride),
                    "linear model: drop = sum of w * x under the patch")
        return _drops(model, images, classes, patch, stride), "small CNN"


def _occlusion_case(spec) -> Case:
    dtype = dtype_of(spec)
    n, c, h, w = spec["images"]
    patch, stride = spec["patch"], spec["stride"]
    num_classes = spec.get("num_classes", 3)
    if spec["model"] == "linear":
        model = LinearModel(spec["seed"], (c, h, w), num_classes, dtype)
    else:
        model = TinyCNN(spec["seed"], channels=c, num_classes=num_classes, dtype=dtype)
    images = randn((n, c, h, w), spec["seed"] + 1, dtype)
    classes = _classes(spec, n, num_classes)
    expected, what = _occlusion_expected(model, images, classes, patch, stride)
    mistakes = _occlusion_mistakes(n, expected.shape[1] == expected.shape[2])
    data = {"expected": expected, "shape_mistakes": _occlusion_shape_causes(h, w, patch, stride),
            "mistakes": _distinct_outputs(mistakes, model, images, classes, patch, stride)}
    name = (f"{what}, images {shape_str(images.shape)}, labels {classes.tolist()}, patch {patch}, "
            f"stride {stride}" + (f", {spec['dtype']}" if "dtype" in spec else ""))
    about = what.split(":")[0] + (", non-square images" if h != w else "") + (
        ", the stride does not divide H - patch" if (h - patch) % stride or (w - patch) % stride else "") + (
        f", {spec['dtype']}" if "dtype" in spec else "")
    return Case(name, [Call(model, images, classes, patch, stride)], "occlusion_map", data, about=about)


def _occlusion_cases(specs, reveal):
    return [_occlusion_case(spec) for spec in specs]


BUILDERS = {
    "saliency_map": _saliency_cases,
    "class_activation_map": _cam_cases,
    "grad_cam": _grad_cam_cases,
    "occlusion_map": _occlusion_cases,
}

VISIBLE = {
    "saliency_map": [
        {"model": "linear", "images": (1, 3, 4, 5), "classes": [1], "seed": 1},
        {"model": "linear", "images": (3, 2, 3, 3), "classes": [2, 0, 1], "seed": 2},
        {"model": "cnn", "images": (3, 3, 6, 6), "classes": [0, 2, 1], "seed": 3},
        {"model": "cnn", "images": (2, 3, 4, 6), "classes": [1, 1], "dtype": "float32", "seed": 4},
    ],
    "class_activation_map": [
        {"kind": "gap_identity", "features": (1, 3, 2, 2), "num_classes": 2, "classes": [1], "seed": 14},
        {"features": (3, 4, 3, 5), "num_classes": 4, "classes": [3, 0, 2], "seed": 11},
        {"kind": "gap_identity", "features": (2, 5, 4, 4), "num_classes": 3, "classes": [2, 2], "seed": 12},
        {"features": (2, 6, 3, 3), "num_classes": 2, "classes": [1, 0], "dtype": "float32", "seed": 13},
    ],
    "grad_cam": [
        {"kind": "cam_identity", "layer": "relu3", "images": (1, 3, 8, 8), "classes": [2], "seed": 20},
        {"layer": "conv2", "images": (3, 3, 8, 8), "classes": [2, 0, 1], "seed": 21},
        {"layer": "conv3", "images": (2, 3, 6, 8), "classes": [1, 2], "seed": 22},
        {"layer": "relu1", "images": (2, 3, 8, 6), "classes": [0, 1], "seed": 23},
        {"layer": "bn2", "bn": True, "train": True, "images": (3, 3, 8, 8), "classes": [1, 0, 2], "seed": 24},
        {"layer": "conv1", "frozen": ["conv1", "conv2", "conv3", "fc"], "images": (2, 3, 6, 6),
         "classes": [2, 1], "seed": 25},
        {"layer": "conv2", "grads": True, "images": (2, 3, 8, 8), "classes": [0, 0], "seed": 26},
        {"layer": "conv2", "fail": True, "bn": True, "train": True, "images": (2, 3, 8, 8), "classes": [0, 1],
         "seed": 27},
        {"layer": "conv3", "images": (2, 3, 8, 8), "classes": [2, 1], "dtype": "float32", "seed": 28},
    ],
    "occlusion_map": [
        {"model": "cnn", "images": (2, 3, 6, 6), "classes": [1, 2], "patch": 6, "stride": 1, "seed": 30},
        {"model": "linear", "images": (2, 3, 6, 6), "classes": [0, 2], "patch": 2, "stride": 2, "seed": 31},
        {"model": "linear", "images": (1, 2, 7, 5), "classes": [1], "patch": 3, "stride": 2, "seed": 32},
        {"model": "cnn", "images": (2, 3, 8, 6), "classes": [2, 0], "patch": 4, "stride": 2, "seed": 33},
        {"model": "cnn", "images": (1, 3, 6, 6), "classes": [1], "patch": 3, "stride": 3,
         "dtype": "float32", "seed": 34},
    ],
}

SPECS = {
    "saliency_map": [
        {"model": "linear", "images": (2, 3, 5, 4), "classes": [2, 1], "num_classes": 4, "seed": 201},
        {"model": "cnn", "images": (4, 3, 4, 4), "classes": [1, 0, 2, 0], "seed": 202},
        {"model": "cnn", "images": (1, 2, 8, 6), "classes": [2], "seed": 203},
        {"model": "linear", "images": (3, 1, 3, 6), "classes": [0, 2, 1], "dtype": "float32", "seed": 204},
    ],
    "class_activation_map": [
        {"kind": "gap_identity", "features": (3, 4, 2, 3), "num_classes": 5, "classes": [4, 0, 4], "seed": 211},
        {"features": (2, 3, 5, 2), "num_classes": 3, "classes": [0, 2], "seed": 212},
        {"features": (4, 7, 2, 2), "num_classes": 7, "classes": [6, 1, 3, 1], "seed": 213},
        {"kind": "gap_identity", "features": (1, 8, 3, 3), "num_classes": 2, "classes": [0], "dtype": "float32",
         "seed": 214},
    ],
    "grad_cam": [
        # An inner layer first: at relu3 (GAP + linear after it) a wrong alpha shared by the batch often makes every
        # map zero after the ReLU, and an all-zero map names no cause.
        {"layer": "conv2", "images": (4, 3, 6, 6), "classes": [1, 2, 0, 2], "num_classes": 3, "seed": 222},
        {"kind": "cam_identity", "layer": "relu3", "images": (3, 3, 6, 10), "classes": [1, 0, 2], "seed": 221},
        {"layer": "conv3", "images": (3, 2, 8, 4), "classes": [0, 2, 1], "seed": 223},
        {"layer": "conv1", "images": (2, 3, 4, 6), "classes": [2, 0], "seed": 224},
        {"layer": "bn2", "bn": True, "train": True, "images": (2, 3, 6, 8), "classes": [2, 0], "seed": 225},
        {"layer": "relu1", "frozen": ["conv1", "conv2", "conv3", "fc"], "images": (3, 3, 8, 8),
         "classes": [1, 1, 0], "seed": 226},
        {"layer": "conv3", "frozen": ["conv1"], "grads": True, "images": (2, 3, 8, 8), "classes": [2, 1],
         "seed": 227},
        {"layer": "bn2", "fail": True, "bn": True, "train": True, "images": (1, 3, 8, 8), "classes": [2],
         "seed": 228},
        {"layer": "conv2", "bn": True, "train": True, "grads": True, "images": (3, 3, 6, 6), "classes": [0, 2, 1],
         "dtype": "float32", "seed": 229},
    ],
    "occlusion_map": [
        {"model": "linear", "images": (3, 2, 5, 5), "classes": [2, 0, 1], "patch": 5, "stride": 2, "seed": 231},
        {"model": "linear", "images": (2, 3, 8, 6), "classes": [1, 0], "patch": 3, "stride": 1, "seed": 232},
        {"model": "cnn", "images": (2, 3, 6, 8), "classes": [0, 1], "patch": 2, "stride": 3, "seed": 233},
        {"model": "cnn", "images": (3, 2, 6, 6), "classes": [2, 2, 0], "patch": 4, "stride": 1, "seed": 234},
        {"model": "linear", "images": (1, 3, 6, 4), "classes": [2], "patch": 2, "stride": 2, "dtype": "float32",
         "seed": 235},
    ],
}
