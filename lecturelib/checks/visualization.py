"""Checks of the visualization exercises: saliency, CAM, Grad-CAM and occlusion.

Oracles are constructions whose answer is known by design (the saliency of a linear model is |w|,
its occlusion map is a windowed sum of w * x, a whole-image patch gives f(x) - f(0), the spatial mean
of CAM plus the bias is the class score, Grad-CAM at the last layer of a GAP + linear model is
ReLU(CAM) / (h * w)) and hook-free computations: the small models here can run from any layer's
output (``forward_from``), so dS/dA is a plain ``torch.autograd.grad``. Failures are matched against
the outputs of known bugs to name the likely cause.

Grad-CAM must leave the model as it was. Each Grad-CAM case records, as plain data, the model's state
before the call (hooks, modes, ``requires_grad``, ``.grad``, weights, buffers; :func:`model_state`) and
compares it with the state right after the call, deciding from the two summaries alone. The state after
the call must be taken where the call ran: each Grad-CAM call carries the observer
:func:`observe_model`, which the framework runs right after the call and whose plain result travels with
the outcome (``Call.observed_by`` / ``core.Observed``). Where the framework has no observers yet, the
state is read from the case's own model when ``verify`` runs: right in the student's kernel and in
``run_suite``, but blind when the calls ran in another process (the isolated grader), where the
in-kernel verdict then disagrees with the isolated one and the submission is flagged.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from . import core
from .core import (Call, Case, Exercise, Mismatch, compare, expect_raises, expect_tensor, matches, register)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _randn(shape, seed, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=_generator(seed), dtype=dtype)


def _dtype(spec) -> torch.dtype:
    return getattr(torch, spec.get("dtype", "float64"))


def _classes(spec, n: int, num_classes: int) -> torch.Tensor:
    if "classes" in spec:
        return torch.tensor(spec["classes"], dtype=torch.long)
    return torch.arange(n, dtype=torch.long) % num_classes


def _shape_str(shape) -> str:
    return "x".join(str(s) for s in shape)


# ------------------------------------------------------------------------------------------------
# Small fixed models
# ------------------------------------------------------------------------------------------------
class TinyCNN(nn.Module):
    """conv1 -> relu1 -> pool1 -> conv2 -> bn2 -> relu2 -> conv3 -> relu3 -> global average pool -> fc.

    relu2 and relu3 are in-place (as in torchvision's models); ``bn=True`` puts a BatchNorm with
    non-trivial running statistics at bn2 (an Identity otherwise). ``forward_from(name, a)`` runs the
    layers after ``name`` on ``a`` (that layer's output): the hook-free oracle of Grad-CAM.
    """

    LAYERS = ("conv1", "relu1", "pool1", "conv2", "bn2", "relu2", "conv3", "relu3")

    def __init__(self, seed: int, channels: int = 3, widths=(4, 5, 6), num_classes: int = 3, bn: bool = False,
                 dtype=torch.float64):
        super().__init__()
        g = _generator(seed)
        self.conv1 = nn.Conv2d(channels, widths[0], 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(widths[0], widths[1], 3, padding=1)
        self.bn2 = nn.BatchNorm2d(widths[1]) if bn else nn.Identity()
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(widths[1], widths[2], 3, padding=1)
        self.relu3 = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[2], num_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (0.6 if p.ndim > 1 else 0.3))
            if bn:
                self.bn2.running_mean.copy_(torch.randn(widths[1], generator=g) * 0.3)
                self.bn2.running_var.copy_(torch.rand(widths[1], generator=g) + 0.5)
        self.to(dtype).eval()

    def forward(self, x):
        return self.forward_from("input", x)

    # The parameters' .grad is part of the caller's state that Grad-CAM must leave alone, but pickling
    # (how the grader ships a case's calls into the sandbox) drops it: carry it explicitly.
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_grads"] = {name: p.grad for name, p in self.named_parameters()}
        return state

    def __setstate__(self, state):
        grads = state.pop("_grads", {})
        super().__setstate__(state)
        for name, p in self.named_parameters():
            p.grad = grads.get(name)

    def forward_from(self, name: str, a: torch.Tensor) -> torch.Tensor:
        started = name == "input"
        if not started:
            a = a.clone()  # an in-place layer must not modify the caller's tensor
        for layer in self.LAYERS:
            if started:
                a = getattr(self, layer)(a)
            started = started or layer == name
        return self.fc(a.mean(dim=(2, 3)))

    def forward_until(self, name: str, x: torch.Tensor) -> torch.Tensor:
        for layer in self.LAYERS:
            x = getattr(self, layer)(x)
            if layer == name:
                return x.clone()
        raise ValueError(name)


class FailingCNN(TinyCNN):
    """A TinyCNN whose forward raises right after relu2: for 'the hooks go even on error'."""

    MESSAGE = "this model fails on purpose after its second block"

    def forward(self, x):
        for layer in self.LAYERS:
            x = getattr(self, layer)(x)
            if layer == "relu2":
                raise RuntimeError(self.MESSAGE)
        return x


class LinearModel(nn.Module):
    """Flatten + Linear: S_c(x) = w_c . x + b_c, so dS_c/dx = w_c everywhere."""

    def __init__(self, seed: int, shape, num_classes: int = 3, dtype=torch.float64):
        super().__init__()
        c, h, w = shape
        self.shape = (c, h, w)
        self.fc = nn.Linear(c * h * w, num_classes)
        g = _generator(seed)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=g))
            self.fc.bias.copy_(torch.randn(num_classes, generator=g))
        self.to(dtype).eval()

    def forward(self, x):
        return self.fc(x.flatten(1))

    def class_weights(self, classes: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) the weights w_{y_n} of each image's class."""
        return self.fc.weight.detach()[classes].reshape(len(classes), *self.shape)


def _scores(logits, classes):
    return logits.gather(1, classes[:, None])[:, 0]


def _input_gradient(model, images, classes, score="logit"):
    """d score / d x per image, computed one image at a time (no batching assumptions)."""
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
def _saliency_mutants(model, images, classes):
    g = _input_gradient(model, images, classes)
    yield g.abs().amax(1), None
    yield g.abs().sum(1), ("the absolute gradients were summed over the colour channels (what captum's "
                           "visualiser does); Simonyan et al. take the MAXIMUM over channels: .amax(dim=1)")
    yield g.abs().mean(1), "the absolute gradients were averaged over the colour channels; take the maximum"
    yield g.amax(1), "the absolute value is missing: take |gradient| before the maximum over channels"
    yield g.amax(1).abs(), ("the absolute value came after the maximum over channels; take |gradient| first, "
                            "then the maximum: a large negative gradient counts too")
    yield g.abs(), "return one map per image (N, H, W): take the maximum over the colour channels"
    if images.shape[0] > 1:
        yield _input_gradient(model, images, classes[:1].expand(len(classes))).abs().amax(1), (
            "every image used the class of the first image; use each image's own label")
        summed = torch.zeros_like(g)
        for c in classes.unique():
            summed += _input_gradient(model, images, torch.full_like(classes, int(c))) * int((classes == c).sum())
        yield summed.abs().amax(1), ("logits[:, labels] mixes the images' classes (an N x N matrix); take each "
                                     "image's own score: logits[torch.arange(N), labels]")
    yield _input_gradient(model, images, classes, "prob").abs().amax(1), (
        "that is the gradient of the softmax probability; use the unnormalised class score (the logit)")
    yield _input_gradient(model, images, classes, "logprob").abs().amax(1), (
        "that is the gradient of the log-probability (the cross-entropy loss); use the unnormalised class "
        "score (the logit)")
    yield (g * images).abs().amax(1), ("the gradient was multiplied by the input (gradient x input); saliency is "
                                       "the gradient alone")


def _diagnose(got, mutants) -> str | None:
    for candidate, cause in mutants:
        if cause and matches(got, candidate, tol=1e-6 if got.dtype == torch.float64 else 1e-4):
            return cause
    return None


def _saliency_model(spec, dtype):
    n, c, h, w = spec["images"]
    if spec["model"] == "linear":
        return LinearModel(spec["seed"], (c, h, w), spec.get("num_classes", 3), dtype)
    return TinyCNN(spec["seed"], channels=c, num_classes=spec.get("num_classes", 3), dtype=dtype)


def _saliency_case(spec, reveal) -> Case:
    dtype = _dtype(spec)
    model = _saliency_model(spec, dtype)
    images = _randn(spec["images"], spec["seed"] + 1, dtype)
    classes = _classes(spec, images.shape[0], spec.get("num_classes", 3))
    if spec["model"] == "linear":
        expected = model.class_weights(classes).abs().amax(1)  # known by design: |w|, max over channels
        what = "linear model (saliency = |w|, max over channels)"
    else:
        expected = _input_gradient(model, images, classes).abs().amax(1).detach()
        what = "small CNN"
    n, _, h, w = images.shape

    def verify(outcomes):
        got = outcomes[0]
        if isinstance(got, torch.Tensor) and tuple(got.shape) != tuple(expected.shape):
            hint = ""
            if tuple(got.shape) == tuple(images.shape):
                hint = "\nlikely cause: take the maximum of |gradient| over the colour channels (dim 1)"
            elif got.ndim == 2 and n == 1:
                hint = "\nlikely cause: keep the batch dimension: (N, H, W) with N = 1"
            raise Mismatch(f"output has shape {tuple(got.shape)}; expected (N, H, W) = {tuple(expected.shape)}{hint}")
        got = expect_tensor(got, shape=expected.shape, dtype=expected.dtype)
        compare(got, expected, reveal=reveal,
                diagnose=lambda g: _diagnose(g, _saliency_mutants(model, images, classes)))

    name = f"{what}, images {_shape_str(images.shape)}, labels {classes.tolist()}"
    about = spec["model"] == "linear" and "linear model" or "small CNN"
    if dtype != torch.float64:
        name += f", {spec['dtype']}"
        about += f", {spec['dtype']}"
    return Case(name, [Call(model, images, classes)], verify, about=about)


def _saliency_cases(specs, reveal):
    return [_saliency_case(spec, reveal) for spec in specs]


register(Exercise(
    "saliency_map", topic="visualization",
    summary="max over channels of |d score / d pixel|: equals |w| for linear models, per-image gradients of a "
            "small CNN with a different label per image, keeps the dtype",
    cases=_saliency_cases,
    visible=[{"model": "linear", "images": (1, 3, 4, 5), "classes": [1], "seed": 1},
             {"model": "linear", "images": (3, 2, 3, 3), "classes": [2, 0, 1], "seed": 2},
             {"model": "cnn", "images": (3, 3, 6, 6), "classes": [0, 2, 1], "seed": 3},
             {"model": "cnn", "images": (2, 3, 4, 6), "classes": [1, 1], "dtype": "float32", "seed": 4}],
))


# ------------------------------------------------------------------------------------------------
# CAM
# ------------------------------------------------------------------------------------------------
def _cam_loop(features, weight, classes):
    """sum_k w[c_n, k] f[n, k], one channel at a time."""
    out = torch.zeros(features.shape[0], *features.shape[2:], dtype=features.dtype)
    for k in range(features.shape[1]):
        out += weight[classes, k][:, None, None] * features[:, k]
    return out


def _cam_mutants(features, weight, classes, expected):
    n, k, h, w = features.shape
    yield F.relu(expected), "CAM has no ReLU: M_c = sum_k w[c, k] f_k can be negative"
    yield expected / k, "the channels were averaged; CAM SUMS the weighted feature maps over k"
    yield expected / (h * w), ("the map was divided by h * w; CAM is sum_k w[c, k] f_k (dividing by h * w gives "
                               "the Grad-CAM scale)")
    if weight.shape[0] == k:
        yield _cam_loop(features, weight.T, classes), ("fc_weight is (C, K): row c holds the weights of class c, "
                                                       "so use fc_weight[c], not the column fc_weight[:, c]")
    if n > 1:
        yield _cam_loop(features, weight, classes[:1].expand(n)), ("every image used the class of the first "
                                                                    "image; use each image's own class")
    yield _cam_loop(features, weight.sum(0, keepdim=True), torch.zeros_like(classes)), (
        "the weights of all classes were summed; use only row c = class_idx[n] of fc_weight")
    low = expected.flatten(1).min(1).values[:, None, None]
    high = expected.flatten(1).max(1).values[:, None, None]
    yield (expected - low) / (high - low), ("the map was min-max normalised; return it unnormalised (normalise "
                                            "only for display)")


def _cam_case(spec, reveal) -> Case:
    dtype = _dtype(spec)
    n, k, h, w = spec["features"]
    num_classes = spec["num_classes"]
    features = _randn((n, k, h, w), spec["seed"], dtype)
    fc = nn.Linear(k, num_classes).to(dtype)
    with torch.no_grad():
        fc.weight.copy_(_randn((num_classes, k), spec["seed"] + 1, dtype))
        fc.bias.copy_(_randn((num_classes,), spec["seed"] + 2, dtype))
    weight = fc.weight.detach().clone()
    classes = _classes(spec, n, num_classes)
    expected = _cam_loop(features, weight, classes)
    with torch.no_grad():  # the identity the notebook derives: mean of the CAM + bias = class score
        scores = _scores(fc(features.mean(dim=(2, 3))), classes)
    property_case = spec.get("kind") == "gap_identity"

    def verify(outcomes):
        got = outcomes[0]
        if isinstance(got, torch.Tensor) and tuple(got.shape) != tuple(expected.shape):
            hint = ""
            if tuple(got.shape) in ((n, num_classes, h, w), (n, k, h, w)):
                hint = "\nlikely cause: sum over the channels k with the weights of each image's class only"
            raise Mismatch(f"output has shape {tuple(got.shape)}; expected (N, h, w) = {tuple(expected.shape)}{hint}")
        got = expect_tensor(got, shape=expected.shape, dtype=expected.dtype)
        diagnose = lambda g: _diagnose(g, _cam_mutants(features, weight, classes, expected))  # noqa: E731
        if property_case:
            mean_plus_bias = got.to(torch.float64).mean(dim=(1, 2)) + fc.bias.detach().to(torch.float64)[classes]
            if not torch.allclose(mean_plus_bias, scores.to(torch.float64), atol=1e-6, rtol=1e-6):
                shown = (f": mean of your map + bias = {mean_plus_bias.tolist()}, class scores = {scores.tolist()}"
                         if reveal else "")
                cause = diagnose(got)
                raise Mismatch("the spatial mean of the map plus the bias is not the class score of the GAP + linear "
                               "model" + shown + (f"\nlikely cause: {cause}" if cause else ""))
        compare(got, expected, reveal=reveal, diagnose=diagnose)

    name = f"features {_shape_str(features.shape)}, fc_weight {num_classes}x{k}, classes {classes.tolist()}"
    about = "a class per image" + (", as many classes as channels" if num_classes == k else "")
    if property_case:
        name = "GAP + linear model: mean of CAM + bias = class score; " + name
        about = "mean of CAM + bias = class score; " + about
    if dtype != torch.float64:
        name += f", {spec['dtype']}"
        about += f", {spec['dtype']}"

    def explain_error(raised):
        if weight.shape[0] != k and any(w in raised.message for w in ("size", "shape", "match", "index")):
            return "fc_weight is (C, K): row c holds the weights of class c; features are (N, K, h, w)"
        return None

    return Case(name, [Call(features, weight, classes)], verify, explain_error=explain_error, about=about)


def _cam_cases(specs, reveal):
    return [_cam_case(spec, reveal) for spec in specs]


register(Exercise(
    "class_activation_map", topic="visualization",
    summary="M_c = sum_k w[c, k] f_k for each image's own class, unnormalised, no ReLU; its spatial mean plus "
            "the bias is the class score of the GAP + linear model",
    cases=_cam_cases,
    visible=[{"kind": "gap_identity", "features": (1, 3, 2, 2), "num_classes": 2, "classes": [1], "seed": 14},
             {"features": (3, 4, 3, 5), "num_classes": 4, "classes": [3, 0, 2], "seed": 11},
             {"kind": "gap_identity", "features": (2, 5, 4, 4), "num_classes": 3, "classes": [2, 2], "seed": 12},
             {"features": (2, 6, 3, 3), "num_classes": 2, "classes": [1, 0], "dtype": "float32", "seed": 13}],
))


# ------------------------------------------------------------------------------------------------
# Grad-CAM: the model's state as plain data
# ------------------------------------------------------------------------------------------------
_MODULE_HOOKS = (("forward hook", "_forward_hooks"), ("forward pre-hook", "_forward_pre_hooks"),
                 ("backward hook", "_backward_hooks"), ("backward pre-hook", "_backward_pre_hooks"))
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")


def _hook_counts(model: nn.Module) -> dict[str, int]:
    """Where hooks are registered: {description: count}, for modules, parameters and global hooks."""
    counts = {}
    for name, module in model.named_modules():
        for kind, attr in _MODULE_HOOKS:
            count = len(getattr(module, attr, None) or {})
            if count:
                counts[f"{kind} on {name or 'the model'}"] = count
    for name, param in model.named_parameters():
        count = len(getattr(param, "_backward_hooks", None) or {})
        count += len(getattr(param, "_post_accumulate_grad_hooks", None) or {})
        if count:
            counts[f"tensor hook on parameter {name}"] = count
    from torch.nn.modules import module as module_module
    for attr in _GLOBAL_HOOKS:
        count = len(getattr(module_module, attr, None) or {})
        if count:
            counts[f"global module {attr.removeprefix('_global_').replace('_', ' ')[:-1]}"] = count
    return counts


def model_state(model: nn.Module) -> dict:
    """Everything Grad-CAM must leave unchanged, as plain data (names -> numbers/tensors)."""
    return {
        "hooks": _hook_counts(model),
        "training": {name or "the model": m.training for name, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "grad": {name: None if p.grad is None else p.grad.detach().clone() for name, p in model.named_parameters()},
        "params": {name: p.detach().clone() for name, p in model.named_parameters()},
        "buffers": {name: b.detach().clone() for name, b in model.named_buffers()},
    }


def _changed(before: dict, after: dict) -> list[str]:
    names = []
    for name, value in before.items():
        other = after.get(name)
        if value is None or other is None:
            if (value is None) != (other is None):
                names.append(name)
        elif value.shape != other.shape or not torch.equal(value, other):
            names.append(name)
    return names


def _list(names, limit=3) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def verify_model_unchanged(before: dict, after: dict, *, on_error: bool = False) -> None:
    """Compare two :func:`model_state` summaries; raise Mismatch naming what changed and why."""
    when = "after your function raised" if on_error else "after your function returned"
    new_hooks = {k: v - before["hooks"].get(k, 0) for k, v in after["hooks"].items()
                 if v > before["hooks"].get(k, 0)}
    if new_hooks:
        total = sum(new_hooks.values())
        fix = ("remove every hook you register (handle = layer.register_forward_hook(...); handle.remove()) in a "
               "`finally:` block, so that it goes even when the model raises")
        raise Mismatch(f"hooks left registered {when}: {total} ({_list(f'{v} {k}' for k, v in new_hooks.items())})"
                       f"\nlikely cause: {fix}")
    flipped = [name for name, mode in before["training"].items() if after["training"].get(name) != mode]
    if flipped:
        was = "train" if before["training"]["the model"] else "eval"
        raise Mismatch(f"the model was in {was} mode before the call and some modules changed mode {when} "
                       f"({_list(flipped)})\nlikely cause: compute in eval mode, then restore the caller's mode "
                       "(was_training = model.training; ...; model.train(was_training)), in a `finally:` block")
    flags = [name for name, flag in before["requires_grad"].items() if after["requires_grad"].get(name) != flag]
    if flags:
        raise Mismatch(f"requires_grad of the model's parameters changed {when} ({_list(flags)})\nlikely cause: "
                       "leave the parameters' flags alone; if nothing requires gradients (a frozen model), let a "
                       "copy of the images require them: images.detach().requires_grad_(True)")
    grads = _changed(before["grad"], after["grad"])
    if grads:
        raise Mismatch(f"the parameters' .grad changed {when} ({_list(grads)})\nlikely cause: backward() "
                       "accumulates gradients into every parameter's .grad (and zero_grad() erases the caller's); "
                       "get dS/dA alone with torch.autograd.grad(score, A), which leaves .grad untouched")
    params = _changed(before["params"], after["params"])
    if params:
        raise Mismatch(f"the model's weights changed {when} ({_list(params)}); Grad-CAM only reads the model")
    buffers = _changed(before["buffers"], after["buffers"])
    if buffers:
        raise Mismatch(f"the model's buffers changed {when} ({_list(buffers)})\nlikely cause: a forward pass in "
                       "train mode updates BatchNorm's running statistics; call model.eval() before the forward "
                       "pass (and restore the caller's mode afterwards)")


# ------------------------------------------------------------------------------------------------
# Grad-CAM: values
# ------------------------------------------------------------------------------------------------
def _layer_grads(model, layer, images, classes, score="logit", head_classes=None):
    """A at ``layer`` and d score / dA, without hooks (the oracle)."""
    A = model.forward_until(layer, images).detach().requires_grad_(True)
    logits = model.forward_from(layer, A)
    if score == "mixed":  # logits[:, classes].sum(): every image gets the sum of all listed classes
        value = logits[:, classes].sum()
    else:
        cls = classes if head_classes is None else head_classes
        value = {"logit": logits, "prob": logits.softmax(1)}[score].gather(1, cls[:, None]).sum()
    (G,) = torch.autograd.grad(value, A)
    return A.detach(), G


def _cam_from(A, G):
    return F.relu((G.mean(dim=(2, 3), keepdim=True) * A).sum(1))


def _grad_cam_oracle(model, layer, images, classes):
    return _cam_from(*_layer_grads(model, layer, images, classes))


def _inplace_after(model, layer):
    """The in-place ReLU that overwrites ``layer``'s output (nn.Identity passes the tensor through)."""
    if layer == "conv3" or layer == "bn2" or (layer == "conv2" and isinstance(model.bn2, nn.Identity)):
        return "relu2" if layer != "conv3" else "relu3"
    return None


def _grad_cam_mutants(model, layer, images, classes):
    A, G = _layer_grads(model, layer, images, classes)
    n = images.shape[0]
    yield (G.mean(dim=(2, 3), keepdim=True) * A).sum(1), (
        "the ReLU is missing: Grad-CAM keeps only the positive evidence, map = ReLU(sum_k alpha_k A_k)")
    _, Gp = _layer_grads(model, layer, images, classes, score="prob")
    yield _cam_from(A, Gp), ("those are gradients of the softmax probability; use the unnormalised class score "
                             "S_c (the logit, before softmax)")
    yield F.relu((A.mean(dim=(2, 3), keepdim=True) * A).sum(1)), (
        "the weights alpha_k were computed from the activations; alpha_k is the spatial mean of the GRADIENTS "
        "dS_c/dA_k")
    yield F.relu((G * A).sum(1)), ("gradient and activation were multiplied element-wise; Grad-CAM first averages "
                                   "the gradients over space (alpha_k = mean over h, w), then weights each "
                                   "activation map A_k by its alpha_k")
    yield F.relu((G.sum(dim=(2, 3), keepdim=True) * A).sum(1)), (
        "alpha_k is the spatial MEAN of the gradients (divide the sum by h * w)")
    yield F.relu((G.mean(dim=(1, 2, 3), keepdim=True) * A).sum(1)), (
        "the gradients were averaged over channels too; alpha_k averages over the spatial positions (dims 2, 3) "
        "only, one weight per channel k")
    if n > 1:
        yield _cam_from(*_layer_grads(model, layer, images, classes, head_classes=classes[:1].expand(n))), (
            "every image used the class of the first image; use each image's own class")
        yield _cam_from(*_layer_grads(model, layer, images, classes, score="mixed")), (
            "logits[:, class_idx] mixes the images' classes (an N x N matrix); take each image's own score: "
            "logits[torch.arange(N), class_idx]")
    inplace = _inplace_after(model, layer)
    if inplace:
        # What a hook sees when it keeps `output` itself and an in-place ReLU then overwrites it.
        overwritten = F.relu(A)
        G_after = _layer_grads(model, inplace, images, classes)[1]
        cause = (f"the stored activations were overwritten by the in-place ReLU that follows this layer "
                 f"({inplace}); keep a copy that nothing modifies: store `output` and "
                 "return output.clone() from the forward hook, or store output.detach().clone() (and take the "
                 "gradient of the tensor the model really uses)")
        for grads in (G, G_after):
            yield _cam_from(overwritten, grads), cause
    low = _cam_from(A, G).flatten(1).min(1).values[:, None, None]
    high = _cam_from(A, G).flatten(1).max(1).values[:, None, None]
    yield (_cam_from(A, G) - low) / (high - low).clamp_min(1e-30), (
        "the map was normalised; return it unnormalised at the layer's resolution (the display helper normalises)")


def _train_mode_map(model, layer, images, classes):
    twin = copy.deepcopy(model).train()
    return _cam_from(*_layer_grads(twin, layer, images, classes))


def _explain_grad_cam_error(raised, frozen: bool):
    text = raised.message.lower()
    if "view" in text and "inplace" in text.replace("-", "").replace(" ", ""):
        return ("a full backward hook (register_full_backward_hook) cannot be combined with the in-place ReLU "
                "after this layer; catch the gradient with a tensor hook (output.register_hook in the forward hook) "
                "or with torch.autograd.grad(score, A)")
    if "modified by an inplace operation" in text:
        return ("an in-place ReLU after the target layer modified a tensor that autograd needs; return "
                "output.clone() from your forward hook so the rest of the network works on a copy")
    if "does not require grad" in text or "doesn't require gradient" in text or "does not have a grad_fn" in text:
        if frozen:
            return ("the model's parameters are frozen (requires_grad=False), so nothing in the forward pass "
                    "requires gradients; let a copy of the images require them: "
                    "images = images.detach().requires_grad_(True)")
        return "the activations must be part of the autograd graph: do not detach A before taking dS/dA"
    if "backward through the graph a second time" in text:
        return "the graph was used twice: compute the gradient once per call"
    return None


def observe_model(args, kwargs) -> dict:
    """Observer of a grad_cam call (run by the harness right after it, where the call ran): the state
    of the model, its first argument, as plain data."""
    return model_state(args[0])


def _observed_call(*args) -> Call:
    """A Call whose model state the harness reports with the outcome, where the framework supports
    observers (``Call.observed_by``, see the module docstring); a plain Call otherwise."""
    call = Call(*args)
    return call.observed_by(observe_model) if hasattr(call, "observed_by") else call


def _split_observed(outcome, model) -> tuple:
    """(the function's outcome, the model's state after the call) from an outcome. With observer
    support the state comes with the outcome (plain data, possibly from the sandbox); without it, it is
    read here from ``model`` (right only when the call ran in this process)."""
    observed = getattr(core, "Observed", None)
    if observed is not None and isinstance(outcome, observed):
        return outcome.value, outcome.facts
    return outcome, model_state(model)


def _grad_cam_case(spec, reveal) -> Case:
    dtype = _dtype(spec)
    n, c, h, w = spec["images"]
    layer = spec["layer"]
    num_classes = spec.get("num_classes", 3)
    model_class = FailingCNN if spec.get("fail") else TinyCNN
    model = model_class(spec["seed"], channels=c, widths=tuple(spec.get("widths", (4, 5, 6))),
                        num_classes=num_classes, bn=spec.get("bn", False), dtype=dtype)
    images = _randn((n, c, h, w), spec["seed"] + 1, dtype)
    classes = _classes(spec, n, num_classes)
    target = getattr(model, layer)
    if not spec.get("fail"):
        if spec.get("kind") == "cam_identity":
            # Known by design: for conv -> GAP -> linear, Grad-CAM at the last layer is ReLU(CAM) / (h * w).
            with torch.no_grad():
                feats = model.forward_until(layer, images)
            expected = F.relu(_cam_loop(feats, model.fc.weight.detach(), classes)) / (feats.shape[2] * feats.shape[3])
        else:
            expected = _grad_cam_oracle(model, layer, images, classes)
    # The caller's state, which the call must leave as it is.
    if spec.get("train"):
        model.train()
    if spec.get("frozen"):
        for name, p in model.named_parameters():
            if name.startswith(tuple(spec["frozen"])):
                p.requires_grad_(False)
    if spec.get("grads"):
        for i, p in enumerate(model.parameters()):
            p.grad = _randn(p.shape, spec["seed"] + 100 + i, dtype)
    before = model_state(model)

    def verify(outcomes):
        got, after = _split_observed(outcomes[0], model)  # decide from the before/after summaries only
        if spec.get("fail"):
            expect_raises(got, ("RuntimeError",), mentioning="fails on purpose")
            verify_model_unchanged(before, after, on_error=True)
            return
        if isinstance(got, torch.Tensor) and tuple(got.shape) != tuple(expected.shape):
            hint = ""
            if tuple(got.shape[-2:]) == (h, w) and (h, w) != tuple(expected.shape[-2:]):
                hint = ("return the map at the layer's resolution (h, w); upsampling to the image size is a "
                        "separate display step")
            elif got.ndim == 4 and got.shape[1] == 1:
                hint = "return (N, h, w): drop the channel dimension"
            elif got.ndim == 4:
                hint = "sum the weighted activation maps over the channels k (dim 1)"
            elif got.ndim == 2 and n == 1:
                hint = "keep the batch dimension: (N, h, w) with N = 1"
            raise Mismatch(f"output has shape {tuple(got.shape)}; expected (N, h, w) = {tuple(expected.shape)}"
                           + (f"\nlikely cause: {hint}" if hint else ""))
        got = expect_tensor(got, shape=expected.shape, dtype=expected.dtype)

        def diagnose(g):
            if spec.get("train") and matches(g, _train_mode_map(model_class(spec["seed"], channels=c,
                                                  widths=tuple(spec.get("widths", (4, 5, 6))),
                                                  num_classes=num_classes, bn=True, dtype=dtype),
                                                  layer, images, classes)):
                return ("the map was computed in train mode (BatchNorm used the batch's statistics); call "
                        "model.eval() before the forward pass and restore the caller's mode afterwards")
            twin = model_class(spec["seed"], channels=c, widths=tuple(spec.get("widths", (4, 5, 6))),
                               num_classes=num_classes, bn=spec.get("bn", False), dtype=dtype)
            return _diagnose(g, _grad_cam_mutants(twin, layer, images, classes))

        compare(got, expected, reveal=reveal, diagnose=diagnose)
        verify_model_unchanged(before, after)

    frozen = bool(spec.get("frozen"))
    return Case(_grad_cam_name(spec, classes, images), [_observed_call(model, target, images, classes)], verify,
                expects_error=bool(spec.get("fail")),
                explain_error=lambda raised: _explain_grad_cam_error(raised, frozen),
                about=_grad_cam_name(spec, classes, images, reveal=False))


def _grad_cam_name(spec, classes, images, reveal: bool = True) -> str:
    """What the case checks; without the inputs' shapes and classes for a hidden case's ``about``."""
    layer = spec["layer"]
    what = {"conv1": "conv1 (full resolution)", "relu1": "relu1 (before max-pooling)",
            "conv2": "conv2" if spec.get("bn") else "conv2 (then nn.Identity and an in-place ReLU)",
            "bn2": "bn2 (followed by an in-place ReLU)",
            "conv3": "conv3 (followed by an in-place ReLU)", "relu3": "relu3 (the last layer before GAP)"}[layer]
    parts = [f"target layer {what}"]
    if reveal:
        parts += [f"images {_shape_str(images.shape)}", f"classes {classes.tolist()}"]
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


def _grad_cam_cases(specs, reveal):
    return [_grad_cam_case(spec, reveal) for spec in specs]


register(Exercise(
    "grad_cam", topic="visualization",
    summary="ReLU(sum_k mean(dS_c/dA_k) A_k) against a hook-free computation at five layers (in-place ReLUs "
            "after the layer, batches with a class per image, frozen parameters, BatchNorm in train mode); "
            "= ReLU(CAM)/(h*w) at the last layer; the model is left as it was (hooks removed also on error, "
            "modes, requires_grad, .grad, buffers)",
    cases=_grad_cam_cases,
    visible=[
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
))


# ------------------------------------------------------------------------------------------------
# Occlusion
# ------------------------------------------------------------------------------------------------
def _occlude(images, i0, j0, patch, baseline=0.0):
    occluded = images.clone()
    occluded[:, :, i0: i0 + patch, j0: j0 + patch] = baseline
    return occluded


def _occlusion_brute_force(model, images, classes, patch, stride, score="logit", baseline=None):
    """Score drops, one patch position at a time."""
    n, _, h, w = images.shape
    rows, cols = (h - patch) // stride + 1, (w - patch) // stride + 1

    def score_of(x):
        logits = model(x)
        values = logits.softmax(1) if score == "prob" else logits
        return _scores(values, classes)

    with torch.no_grad():
        base = score_of(images)
        out = torch.zeros(n, rows, cols, dtype=images.dtype)
        fill = 0.0 if baseline is None else baseline
        for i in range(rows):
            for j in range(cols):
                occ = images.clone()
                value = fill if not isinstance(fill, torch.Tensor) else fill[:, :, None, None].expand_as(occ)
                region = (slice(None), slice(None), slice(i * stride, i * stride + patch),
                          slice(j * stride, j * stride + patch))
                occ[region] = value[region] if isinstance(value, torch.Tensor) else value
                out[:, i, j] = base - score_of(occ)
    return out, base


def _occlusion_linear_oracle(model, images, classes, patch, stride):
    """Linear model, zero baseline: the drop is the sum of w_c * x over the patch (known by design)."""
    contrib = (model.class_weights(classes) * images).sum(1, keepdim=True)
    return F.avg_pool2d(contrib, patch, stride=stride)[:, 0] * patch * patch


def _occlusion_mutants(model, images, classes, patch, stride, expected):
    n = images.shape[0]
    yield -expected, ("the sign is flipped: the map holds the DROP, S(original) - S(occluded), so covering an "
                      "important region gives a large positive value")
    _, base = _occlusion_brute_force(model, images, classes, patch, stride)
    yield base[:, None, None] - expected, ("those are the scores of the occluded images; return the drop "
                                           "S(original) - S(occluded)")
    yield _occlusion_brute_force(model, images, classes, patch, stride, score="prob")[0], (
        "that is the drop of the softmax probability; use the unnormalised class score (the logit)")
    yield _occlusion_brute_force(model, images, classes, patch, stride, baseline=images.mean(dim=(2, 3)))[0], (
        "the patch was filled with the image's mean; fill it with zeros")
    if n > 1:
        yield _occlusion_brute_force(model, images, classes[:1].expand(n), patch, stride)[0], (
            "every image used the class of the first image; use each image's own label")
    if expected.shape[1] == expected.shape[2]:
        yield expected.transpose(1, 2), ("rows and columns are swapped: entry [n, i, j] has the patch at rows "
                                         "i * stride ... and columns j * stride ...")


def _occlusion_shape_hint(got_shape, images, patch, stride):
    n, _, h, w = images.shape
    rows, cols = (h - patch) // stride + 1, (w - patch) // stride + 1
    if len(got_shape) != 3:
        return "return (N, rows, cols): one score drop per image and patch position"
    g = tuple(got_shape[1:])
    if g == (h, w):
        return "return one value per patch POSITION (rows, cols), not one per pixel"
    if g == (cols, rows):
        return "rows and columns are swapped: the first map axis follows the image height"
    if g == (rows - 1, cols - 1):
        return "the last position is missing: there are (H - patch) // stride + 1 positions along the height"
    if g in ((h // stride, w // stride), (-(-h // stride), -(-w // stride))):
        return ("the patch must stay inside the image: it starts at 0, stride, 2 * stride, ... as long as "
                "start + patch <= H, so there are (H - patch) // stride + 1 positions")
    if g == (h - patch + 1, w - patch + 1):
        return "the stride is ignored: consecutive patch positions are `stride` pixels apart"
    return f"there are (H - patch) // stride + 1 = {rows} rows and (W - patch) // stride + 1 = {cols} columns"


def _occlusion_case(spec, reveal) -> Case:
    dtype = _dtype(spec)
    n, c, h, w = spec["images"]
    patch, stride = spec["patch"], spec["stride"]
    num_classes = spec.get("num_classes", 3)
    if spec["model"] == "linear":
        model = LinearModel(spec["seed"], (c, h, w), num_classes, dtype)
    else:
        model = TinyCNN(spec["seed"], channels=c, num_classes=num_classes, dtype=dtype)
    images = _randn((n, c, h, w), spec["seed"] + 1, dtype)
    classes = _classes(spec, n, num_classes)
    with torch.no_grad():
        if patch >= h and patch >= w:  # one window over the whole image: f(x) - f(0)
            baseline = _scores(model(torch.zeros_like(images)), classes)
            expected = (_scores(model(images), classes) - baseline)[:, None, None]
            what = "whole-image patch: f(x) - f(0)"
        elif spec["model"] == "linear":
            expected = _occlusion_linear_oracle(model, images, classes, patch, stride)
            what = "linear model: drop = sum of w * x under the patch"
        else:
            expected = _occlusion_brute_force(model, images, classes, patch, stride)[0]
            what = "small CNN"

    def verify(outcomes):
        got = outcomes[0]
        if isinstance(got, torch.Tensor) and tuple(got.shape) != tuple(expected.shape):
            raise Mismatch(f"output has shape {tuple(got.shape)}; expected (N, rows, cols) = "
                           f"{tuple(expected.shape)}\nlikely cause: "
                           + _occlusion_shape_hint(tuple(got.shape), images, patch, stride))
        got = expect_tensor(got, shape=expected.shape, dtype=expected.dtype)
        compare(got, expected, reveal=reveal,
                diagnose=lambda g: _diagnose(g, _occlusion_mutants(model, images, classes, patch, stride, expected)))

    name = (f"{what}, images {_shape_str(images.shape)}, labels {classes.tolist()}, patch {patch}, "
            f"stride {stride}" + (f", {spec['dtype']}" if "dtype" in spec else ""))
    about = what.split(":")[0] + (", non-square images" if h != w else "") + (
        ", the stride does not divide H - patch" if (h - patch) % stride or (w - patch) % stride else "") + (
        f", {spec['dtype']}" if "dtype" in spec else "")
    return Case(name, [Call(model, images, classes, patch, stride)], verify, about=about)


def _occlusion_cases(specs, reveal):
    return [_occlusion_case(spec, reveal) for spec in specs]


register(Exercise(
    "occlusion_map", topic="visualization",
    summary="score drop S(x) - S(x with a zero patch) per patch position: f(x) - f(0) for a whole-image patch, "
            "windowed sums of w * x for linear models, brute force for a small CNN; strides that do not divide "
            "the image, non-square images, a label per image",
    cases=_occlusion_cases,
    visible=[{"model": "cnn", "images": (2, 3, 6, 6), "classes": [1, 2], "patch": 6, "stride": 1, "seed": 30},
             {"model": "linear", "images": (2, 3, 6, 6), "classes": [0, 2], "patch": 2, "stride": 2, "seed": 31},
             {"model": "linear", "images": (1, 2, 7, 5), "classes": [1], "patch": 3, "stride": 2, "seed": 32},
             {"model": "cnn", "images": (2, 3, 8, 6), "classes": [2, 0], "patch": 4, "stride": 2, "seed": 33},
             {"model": "cnn", "images": (1, 3, 6, 6), "classes": [1], "patch": 3, "stride": 3,
              "dtype": "float32", "seed": 34}],
))
