"""Checks of the visualization exercises: saliency, CAM, Grad-CAM and occlusion (student side: verifiers, the
small test models and the model-state observer).

Each case's data (built grader-side in ``lecturelib.hidden.visualization``) holds the expected map and the maps
that known mistakes give on the same inputs; the verifiers here compare, name the mistake a wrong answer
matches, and check properties that need no answer (the spatial mean of a CAM plus the bias is the class score).

Grad-CAM must leave the model as it was. Each Grad-CAM call is observed by the runner's own observer
``"models"`` (``Call.observed_by``; the grader's copy of ``checks/runner.py``, which a submission cannot replace),
which reports a summary of the model's state (modes, hook counts, ``requires_grad``, whether ``.grad`` is set,
value checksums) right after the call, where the call ran (in the notebook or in the grader's sandbox); the
case's data holds the same summary taken before the call. The verdict is decided from the two summaries alone.
:func:`model_state` is the full state, for testing an implementation by hand.

The models are fixtures: the grader builds them, the calls carry them, and they are unpickled and run where
the student's function runs, so their classes live here.
"""
from __future__ import annotations

import torch
from torch import nn

from .core import (Exercise, Mismatch, Raised, compare, expect_raises, expect_tensor, explainer, known_mistake,
                   register, revealing, verifier, what_differs)
from .runner import module_state


# ------------------------------------------------------------------------------------------------
# Small fixed models (call arguments)
# ------------------------------------------------------------------------------------------------
class TinyCNN(nn.Module):
    """conv1 -> relu1 -> pool1 -> conv2 -> bn2 -> relu2 -> conv3 -> relu3 -> global average pool -> fc.

    relu2 and relu3 are in-place (as in torchvision's models); ``bn=True`` puts a BatchNorm with
    non-trivial running statistics at bn2 (an Identity otherwise). The layers run one after the other in
    the order of ``LAYERS``, so the grader can run the model from any layer's output without hooks.
    """

    LAYERS = ("conv1", "relu1", "pool1", "conv2", "bn2", "relu2", "conv3", "relu3")

    def __init__(self, seed: int, channels: int = 3, widths=(4, 5, 6), num_classes: int = 3, bn: bool = False,
                 dtype=torch.float64):
        super().__init__()
        g = torch.Generator().manual_seed(int(seed))
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
        for layer in self.LAYERS:
            x = getattr(self, layer)(x)
        return self.fc(x.mean(dim=(2, 3)))

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
        g = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=g))
            self.fc.bias.copy_(torch.randn(num_classes, generator=g))
        self.to(dtype).eval()

    def forward(self, x):
        return self.fc(x.flatten(1))


# ------------------------------------------------------------------------------------------------
# Comparing maps
# ------------------------------------------------------------------------------------------------
def _tol(got: torch.Tensor) -> float:
    """How close a map must be to a known mistake's to be named as that mistake."""
    return 1e-6 if got.dtype == torch.float64 else 1e-4


def _expect_map(got, data, layout: str, shape_cause):
    """``got`` as a tensor of the expected shape and dtype; a wrong shape is named with
    ``shape_cause(got_shape, data)``, a likely cause or None. ``layout`` names the axes, e.g. '(N, H, W)'."""
    expected = data["expected"]
    if isinstance(got, torch.Tensor) and tuple(got.shape) != tuple(expected.shape):
        shown = (f"output has shape {tuple(got.shape)}; expected {layout} = {tuple(expected.shape)}" if revealing()
                 else f"output has the wrong shape; it must be {layout}")
        cause = shape_cause(tuple(got.shape), data)
        raise Mismatch(shown + (f"\nlikely cause: {cause}" if cause else ""))
    return expect_tensor(got, shape=expected.shape, dtype=expected.dtype)


def _compare_map(got, data):
    compare(got, data["expected"], diagnose=lambda g: known_mistake(g, data["mistakes"], _tol(g)))


# ------------------------------------------------------------------------------------------------
# Saliency
# ------------------------------------------------------------------------------------------------
def _saliency_shape_cause(got_shape, data) -> str | None:
    images_shape = tuple(data["images_shape"])
    if got_shape == images_shape:
        return "take the maximum of |gradient| over the colour channels (dim 1)"
    if len(got_shape) == 2 and images_shape[0] == 1:
        return "keep the batch dimension: (N, H, W) with N = 1"
    return None


@verifier("saliency_map")
def _verify_saliency(outcomes, data, reveal):
    _compare_map(_expect_map(outcomes[0], data, "(N, H, W)", _saliency_shape_cause), data)


register(Exercise(
    "saliency_map", topic="visualization",
    summary="max over channels of |d score / d pixel|: equals |w| for linear models, per-image gradients of a "
            "small CNN with a different label per image, keeps the dtype",
))


# ------------------------------------------------------------------------------------------------
# CAM
# ------------------------------------------------------------------------------------------------
def _cam_shape_cause(got_shape, data) -> str | None:
    n, k, h, w = data["features_shape"]
    if got_shape in ((n, data["fc_weight_shape"][0], h, w), (n, k, h, w)):
        return "sum over the channels k with the weights of each image's class only"
    return None


@verifier("class_activation_map")
def _verify_cam(outcomes, data, reveal):
    _compare_map(_expect_map(outcomes[0], data, "(N, h, w)", _cam_shape_cause), data)


@verifier("class_activation_map:gap_identity")
def _verify_cam_gap_identity(outcomes, data, reveal):
    """The spatial mean of the map plus the bias is the class score of the GAP + linear model, then the values."""
    got = _expect_map(outcomes[0], data, "(N, h, w)", _cam_shape_cause)
    mean_plus_bias = got.to(torch.float64).mean(dim=(1, 2)) + data["bias"]
    scores = data["scores"].to(torch.float64)
    if not torch.allclose(mean_plus_bias, scores, atol=1e-6, rtol=1e-6):
        shown = (f": mean of your map + bias = {mean_plus_bias.tolist()}, class scores = {data['scores'].tolist()}"
                 if reveal else "")
        cause = known_mistake(got, data["mistakes"], _tol(got))
        expected = data["expected"].to(torch.float64)
        pattern = None if cause else what_differs(got.to(torch.float64), expected,
                                                  torch.isclose(got.to(torch.float64), expected))
        raise Mismatch("the spatial mean of the map plus the bias is not the class score of the GAP + linear "
                       "model" + shown + (f"\nlikely cause: {cause}" if cause else "")
                       + (f"\nwhat differs: {pattern}" if pattern else ""))
    _compare_map(got, data)


@explainer("class_activation_map")
def _explain_cam_error(raised, data):
    num_classes, k = data["fc_weight_shape"]
    if num_classes != k and any(word in raised.message for word in ("size", "shape", "match", "index")):
        return "fc_weight is (C, K): row c holds the weights of class c; features are (N, K, h, w)"
    return None


register(Exercise(
    "class_activation_map", topic="visualization",
    summary="M_c = sum_k w[c, k] f_k for each image's own class, unnormalised, no ReLU; its spatial mean plus "
            "the bias is the class score of the GAP + linear model",
))


# ------------------------------------------------------------------------------------------------
# Grad-CAM: the model's state as plain data
# ------------------------------------------------------------------------------------------------
def model_state(model: nn.Module) -> dict:
    """What Grad-CAM must leave unchanged, as the runner's observer ``"models"`` reports it (modes, hooks by kind,
    requires_grad, gradients, checksums of parameters and buffers): to test an implementation by hand."""
    return module_state(model)


_ROOT = "(model)"  # how the runner's observer names the model itself among its submodules


def _list(names, limit=3) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _differ(before: dict, after: dict) -> list[str]:
    """The names whose entry differs between two ``{name: value}`` summaries."""
    return [name for name, value in before.items() if after.get(name) != value]


def verify_model_unchanged(before: dict, after: dict, *, on_error: bool = False) -> None:
    """Compare the summaries of the model's state before and after the call (what the runner's observer
    ``"models"`` reports for it: modes, hook counts, requires_grad, whether .grad is set, value checksums);
    raise Mismatch naming what changed and why."""
    when = "after your function raised" if on_error else "after your function returned"
    new_hooks = {k: v - before["hooks"].get(k, 0) for k, v in after["hooks"].items()
                 if v > before["hooks"].get(k, 0)}
    if new_hooks:
        total = sum(new_hooks.values())
        fix = ("remove every hook you register (handle = layer.register_forward_hook(...); handle.remove()) in a "
               "`finally:` block, so that it goes even when the model raises")
        where = _list(f"{v} {k}" for k, v in new_hooks.items())
        raise Mismatch(f"hooks left registered {when}: {total} ({where})\nlikely cause: {fix}")
    flipped = _differ(before["training"], after["training"])
    if flipped:
        was = "train" if before["training"][_ROOT] else "eval"
        flipped = ["the model" if name == _ROOT else name for name in flipped]
        raise Mismatch(f"the model was in {was} mode before the call and some modules changed mode {when} "
                       f"({_list(flipped)})\nlikely cause: compute in eval mode, then restore the caller's mode "
                       "(was_training = model.training; ...; model.train(was_training)), in a `finally:` block")
    flags = _differ(before["requires_grad"], after["requires_grad"])
    if flags:
        raise Mismatch(f"requires_grad of the model's parameters changed {when} ({_list(flags)})\nlikely cause: "
                       "leave the parameters' flags alone; if nothing requires gradients (a frozen model), let a "
                       "copy of the images require them: images.detach().requires_grad_(True)")
    grads = _differ(before["has_grad"], after["has_grad"])
    if grads:
        raise Mismatch(f"the parameters' .grad changed {when} ({_list(grads)})\nlikely cause: backward() "
                       "accumulates gradients into every parameter's .grad (and zero_grad() erases the caller's); "
                       "get dS/dA alone with torch.autograd.grad(score, A), which leaves .grad untouched")
    grads = _differ(before["grad"], after["grad"])
    if grads:
        raise Mismatch(f"the parameters' .grad changed {when} ({_list(grads)})\nlikely cause: backward() "
                       "accumulates gradients into the caller's .grad; get dS/dA alone with "
                       "torch.autograd.grad(score, A), which leaves .grad untouched")
    buffers = _differ(before["buffers"], after["buffers"])
    if buffers:
        raise Mismatch(f"the model's buffers changed {when} ({_list(buffers)})\nlikely cause: a forward pass in "
                       "train mode updates BatchNorm's running statistics; compute in eval mode")
    params = _differ(before["values"], after["values"])
    if params:
        raise Mismatch(f"the model's weights changed {when} ({_list(params)}); Grad-CAM only reads the model")


# ------------------------------------------------------------------------------------------------
# Grad-CAM: values
# ------------------------------------------------------------------------------------------------
def _grad_cam_shape_cause(got_shape, data) -> str | None:
    n, _, h, w = data["images_shape"]
    if got_shape[-2:] == (h, w) and (h, w) != tuple(data["expected"].shape[-2:]):
        return ("return the map at the layer's resolution (h, w); upsampling to the image size is a separate "
                "display step")
    if len(got_shape) == 4 and got_shape[1] == 1:
        return "return (N, h, w): drop the channel dimension"
    if len(got_shape) == 4:
        return "sum the weighted activation maps over the channels k (dim 1)"
    if len(got_shape) == 2 and n == 1:
        return "keep the batch dimension: (N, h, w) with N = 1"
    return None


def _observed(outcome) -> tuple:
    """(what the call returned or raised, the model's state after the call): the model is argument 0."""
    return outcome.value, outcome.facts["0"]


@verifier("grad_cam")
def _verify_grad_cam(outcomes, data, reveal):
    """The map, then the model's state after the call against the state before it."""
    got, after = _observed(outcomes[0])
    _compare_map(_expect_map(got, data, "(N, h, w)", _grad_cam_shape_cause), data)
    verify_model_unchanged(data["before"], after)


@verifier("grad_cam:fail")
def _verify_grad_cam_failure(outcomes, data, reveal):
    """The model raises after the target layer: its error propagates and the model is left as it was."""
    got, after = _observed(outcomes[0])
    try:
        expect_raises(got, ("RuntimeError",), mentioning="fails on purpose")
    except Mismatch:
        if reveal or not isinstance(got, Raised) or got.type_name == "NotImplementedError":
            raise
        # The student's own exception message could quote the hidden inputs.
        raise Mismatch(f"the model's RuntimeError must propagate out of your function unchanged; your function "
                       f"raised {got.type_name} (its message is not shown for hidden cases)") from None
    verify_model_unchanged(data["before"], after, on_error=True)


@explainer("grad_cam")
def _explain_grad_cam_error(raised, data):
    text = raised.message.lower()
    if "view" in text and "inplace" in text.replace("-", "").replace(" ", ""):
        return ("a full backward hook (register_full_backward_hook) cannot be combined with the in-place ReLU "
                "after this layer; catch the gradient with a tensor hook (output.register_hook in the forward hook) "
                "or with torch.autograd.grad(score, A)")
    if "modified by an inplace operation" in text:
        return ("an in-place ReLU after the target layer modified a tensor that autograd needs; return "
                "output.clone() from your forward hook so the rest of the network works on a copy")
    if "does not require grad" in text or "doesn't require gradient" in text or "does not have a grad_fn" in text:
        if data["frozen"]:
            return ("the model's parameters are frozen (requires_grad=False), so nothing in the forward pass "
                    "requires gradients; let a copy of the images require them: "
                    "images = images.detach().requires_grad_(True)")
        return "the activations must be part of the autograd graph: do not detach A before taking dS/dA"
    if "backward through the graph a second time" in text:
        return "the graph was used twice: compute the gradient once per call"
    return None


register(Exercise(
    "grad_cam", topic="visualization",
    summary="ReLU(sum_k mean(dS_c/dA_k) A_k) against a hook-free computation at five layers (in-place ReLUs "
            "after the layer, batches with a class per image, frozen parameters, BatchNorm in train mode); "
            "= ReLU(CAM)/(h*w) at the last layer; the model is left as it was (hooks removed also on error, "
            "modes, requires_grad, .grad, buffers)",
))


# ------------------------------------------------------------------------------------------------
# Occlusion
# ------------------------------------------------------------------------------------------------
def _occlusion_shape_cause(got_shape, data) -> str:
    if len(got_shape) != 3:
        return "return (N, rows, cols): one score drop per image and patch position"
    for shape, cause in data["shape_mistakes"]:
        if tuple(shape) == got_shape[1:]:
            return cause
    if revealing():
        rows, cols = data["expected"].shape[1:]
        return f"there are (H - patch) // stride + 1 = {rows} rows and (W - patch) // stride + 1 = {cols} columns"
    return "there are (H - patch) // stride + 1 rows and (W - patch) // stride + 1 columns"


@verifier("occlusion_map")
def _verify_occlusion(outcomes, data, reveal):
    _compare_map(_expect_map(outcomes[0], data, "(N, rows, cols)", _occlusion_shape_cause), data)


register(Exercise(
    "occlusion_map", topic="visualization",
    summary="score drop S(x) - S(x with a zero patch) per patch position: f(x) - f(0) for a whole-image patch, "
            "windowed sums of w * x for linear models, brute force for a small CNN; strides that do not divide "
            "the image, non-square images, a label per image",
))
