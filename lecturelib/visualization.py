"""Visualization and understanding: linear-classifier templates, first-layer filters and their measured
structure, saliency, CAM, Grad-CAM, guided backprop, occlusion, how good the maps are (pointing game,
randomisation sanity check), ViT attention maps, and widgets.

Demos of the visualization notebook. The graded operations (``saliency_map``,
``class_activation_map``, ``grad_cam``, ``occlusion_map``) are NOT implemented here: every function
that needs one takes it as an argument (the notebook passes the student's; scripts, the bench and
tests pass ``lecturelib.reference.<name>``, see ``lecturelib._student``). Models and training live in
:mod:`lecturelib.visualization_models` and are re-exported here.
"""
from __future__ import annotations

import contextlib
import copy
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._student import call_student
from ._validate import describe, require_callable, require_float, require_int, require_module, require_tensor
from .data import Shapes
from .plot import display_only, explorer
from .train import eval_mode
from .visualization_models import (CLASS_NAMES, PRETRAINED, LinearClassifier, ShapesClassifier,  # noqa: F401
                                   TinyViT, accuracy, classification_data, fit_linear_classifier,
                                   load_pretrained, predict, train_classifier)

__all__ = [
    "CLASS_NAMES", "PRETRAINED", "ShapesClassifier", "TinyViT", "classification_data", "train_classifier",
    "predict", "accuracy", "load_pretrained", "LinearClassifier", "fit_linear_classifier", "object_crops",
    "show_templates", "first_layer_filters", "filter_smoothness", "filter_orientation", "shuffled_filters",
    "smooth_random_filters", "filter_structure", "upsample_maps",
    "pointing_game", "centre_in_box", "evaluate_pointing_game", "guided_relus", "guided_backprop", "guided_grad_cam",
    "randomized_copy", "rank_correlation", "randomization_check", "attention_maps", "attention_rollout",
    "explain", "plot_explanations", "explanation_widget", "occlusion_patch_widget", "gradcam_cam_identity",
]


# ------------------------------------------------------------------------------------------------
# Interpreting a linear classifier: one template per class
# ------------------------------------------------------------------------------------------------
def object_crops(shapes: Shapes, size: int = 32, *, contrast: bool = False, margin: float = 1.15) -> torch.Tensor:
    """Each image cut to a square around its object's box and resized to ``size`` x ``size`` (bilinear).

    The square is centred on the box (``shapes.boxes``, the first box of each image) and ``margin`` times
    the box's longer side, so every object is centred and equally large: the alignment a single template
    needs. Returns (N, 3, size, size) in [0, 1]; with ``contrast=True``, (N, 1, size, size): each pixel's
    RGB distance from the background colour (the median of the crop's border pixels), which no longer
    depends on the object's or the background's colour.
    """
    if not isinstance(shapes, Shapes):
        raise TypeError(f"shapes must be a Shapes (from make_classification), got {describe(shapes)}")
    size = require_int("size", size, minimum=2)
    margin = require_float("margin", margin, minimum=1.0)
    images = shapes.image_tensor()
    n, _, h, w = images.shape
    boxes = torch.tensor(np.stack([np.asarray(b, np.float32).reshape(-1, 4)[0] for b in shapes.boxes]))
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * margin
    theta = torch.zeros(n, 2, 3)                   # maps the output grid [-1, 1]^2 to the square in the image
    theta[:, 0, 0], theta[:, 1, 1] = side / w, side / h
    theta[:, 0, 2], theta[:, 1, 2] = 2 * cx / w - 1, 2 * cy / h - 1
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    crops = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if not contrast:
        return crops
    border = torch.cat([crops[:, :, 0], crops[:, :, -1], crops[:, :, :, 0], crops[:, :, :, -1]], dim=2)
    background = border.median(dim=2).values       # (N, 3)
    return (crops - background[:, :, None, None]).norm(dim=1, keepdim=True)


@display_only
def show_templates(model: LinearClassifier, titles=CLASS_NAMES, *, axes=None, row_label: str | None = None):
    """Draw a linear classifier's templates, one per class, on ``axes`` (a row of axes) or a new figure.

    RGB templates are scaled to [0, 1] each (as in the lecture); one-channel templates are drawn with a
    diverging colour map: red positive (evidence for the class), blue negative, white 0. ``row_label`` is
    written to the left of the row. Returns the figure.
    """
    import matplotlib.pyplot as plt

    if not isinstance(model, LinearClassifier):
        raise TypeError(f"model must be a LinearClassifier, got {describe(model)}")
    templates = model.templates()
    if templates.ndim != 4 or templates.shape[1] not in (1, 3):
        raise ValueError(f"the templates must be images (C, 1 or 3, H, W), got {tuple(templates.shape)}")
    if axes is None:
        _, axes = plt.subplots(1, len(templates), figsize=(2 * len(templates), 2.2), squeeze=False)
        axes = axes[0]
    axes = list(axes)
    if len(axes) < len(templates):
        raise ValueError(f"axes must hold one axes per class ({len(templates)}), got {len(axes)}")
    for ax, template, title in zip(axes, templates, titles):
        if template.shape[0] == 3:
            low, high = template.min(), template.max()
            ax.imshow(((template - low) / (high - low).clamp_min(1e-12)).permute(1, 2, 0).numpy())
        else:
            bound = float(template.abs().max()) or 1.0
            ax.imshow(template[0].numpy(), cmap="RdBu_r", vmin=-bound, vmax=bound)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    if row_label:
        axes[0].text(-0.08, 0.5, row_label, rotation=90, ha="right", va="center", fontsize=9,
                     transform=axes[0].transAxes)
    return axes[0].figure


# ------------------------------------------------------------------------------------------------
# First-layer filters
# ------------------------------------------------------------------------------------------------
def first_layer_filters(model: nn.Module) -> torch.Tensor:
    """The weight (out, in, k, k) of the model's first nn.Conv2d (what the lecture shows for AlexNet)."""
    for module in require_module("model", model).modules():
        if isinstance(module, nn.Conv2d):
            return module.weight.detach().cpu()
    raise ValueError("the model has no nn.Conv2d layer")


def _filters(weight) -> torch.Tensor:
    if isinstance(weight, nn.Conv2d):
        weight = weight.weight
    weight = require_tensor("weight", torch.as_tensor(weight), ndim=4, floating=True).detach().cpu().double()
    if weight.shape[-1] < 2 or weight.shape[-2] < 2:
        raise ValueError(f"filters must be at least 2 x 2, got shape {tuple(weight.shape)}")
    return weight


def filter_smoothness(weight) -> torch.Tensor:
    """(out,) how smooth each filter is: the correlation between horizontally and vertically neighbouring taps
    (all channels pooled). Near 1 for smooth patterns (blobs, edges, ramps); near 0 for noise.

    weight: (out, in, k, k), e.g. ``first_layer_filters(model)``.
    """
    w = _filters(weight)
    a = torch.cat([w[..., :, :-1].flatten(1), w[..., :-1, :].flatten(1)], dim=1)
    b = torch.cat([w[..., :, 1:].flatten(1), w[..., 1:, :].flatten(1)], dim=1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)


def filter_orientation(weight) -> torch.Tensor:
    """(out,) how strongly each filter has one orientation: the coherence (l1 - l2) / (l1 + l2) of its structure
    tensor, the 2 x 2 matrix of summed products of its horizontal and vertical differences (all channels).
    1 for a straight edge, bar or ramp (every difference points the same way), 0 when no direction dominates
    (a round blob)."""
    w = _filters(weight)
    gx = (w[..., :, 1:] - w[..., :, :-1])[..., :-1, :]
    gy = (w[..., 1:, :] - w[..., :-1, :])[..., :, :-1]
    jxx, jyy, jxy = (gx * gx).sum((1, 2, 3)), (gy * gy).sum((1, 2, 3)), (gx * gy).sum((1, 2, 3))
    return ((jxx - jyy) ** 2 + 4 * jxy ** 2).sqrt() / (jxx + jyy).clamp_min(1e-30)


def shuffled_filters(weight, copies: int = 20, seed: int = 0) -> torch.Tensor:
    """(copies * out, in, k, k): the same taps at random positions (one permutation per filter and copy, shared
    by its channels): the values of the filters without their spatial arrangement."""
    w = _filters(weight)
    copies = require_int("copies", copies, minimum=1)
    generator = torch.Generator().manual_seed(require_int("seed", seed, minimum=0))
    out, channels, kh, kw = w.shape
    flat = w.flatten(2).repeat(copies, 1, 1)
    order = torch.rand(copies * out, kh * kw, generator=generator).argsort(dim=1)
    return flat.gather(2, order[:, None, :].expand(-1, channels, -1)).reshape(copies * out, channels, kh, kw)


def _blurred_noise(n, channels, size, sigma, generator) -> torch.Tensor:
    radius = int(np.ceil(3 * sigma))
    noise = torch.randn(n * channels, 1, size + 2 * radius, size + 2 * radius, generator=generator,
                        dtype=torch.float64)
    taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float64) ** 2 / (2 * sigma ** 2))
    taps = taps / taps.sum()
    blurred = F.conv2d(F.conv2d(noise, taps.view(1, 1, 1, -1)), taps.view(1, 1, -1, 1))
    return blurred.reshape(n, channels, size, size)


def smooth_random_filters(weight, n: int = 1000, seed: int = 0) -> torch.Tensor:
    """(n, in, k, k) random filters as smooth as ``weight``: Gaussian noise blurred by a Gaussian whose width is
    chosen (by bisection) so that their median :func:`filter_smoothness` equals that of ``weight``. Random
    patterns with the same smoothness: the baseline for :func:`filter_orientation`."""
    w = _filters(weight)
    n = require_int("n", n, minimum=1)
    _, channels, kh, kw = w.shape
    if kh != kw:
        raise ValueError(f"filters must be square, got {kh} x {kw}")
    target = float(filter_smoothness(w).median())
    low, high = 0.05, 6.0

    seed = require_int("seed", seed, minimum=0)

    def draw(count, sigma):
        return _blurred_noise(count, channels, kh, sigma, torch.Generator().manual_seed(seed))

    for _ in range(16):                          # the width to 1e-4; smoothness grows with the width
        mid = (low + high) / 2
        if float(filter_smoothness(draw(200, mid)).median()) < target:
            low = mid
        else:
            high = mid
    return draw(n, (low + high) / 2)


def filter_structure(weight, seed: int = 0) -> dict:
    """Measured structure of a layer's filters against two random baselines.

    Returns {"smoothness": (out,), "orientation": (out,), "shuffled_smoothness": median smoothness of the same taps
    at random positions, "random_orientation_95": the 95th percentile of the orientation of random filters as
    smooth as these (:func:`smooth_random_filters`), "oriented_share": the share of the filters more oriented than
    that (0.05 expected for random filters)}.
    """
    w = _filters(weight)
    smoothness, orientation = filter_smoothness(w), filter_orientation(w)
    random_orientation = filter_orientation(smooth_random_filters(w, seed=seed))
    threshold = float(random_orientation.quantile(0.95))
    return {"smoothness": smoothness, "orientation": orientation,
            "shuffled_smoothness": float(filter_smoothness(shuffled_filters(w, seed=seed)).median()),
            "random_orientation_95": threshold, "oriented_share": float((orientation > threshold).float().mean())}


# ------------------------------------------------------------------------------------------------
# Maps for display, and the pointing game
# ------------------------------------------------------------------------------------------------
def upsample_maps(maps, size, normalize: bool = True) -> torch.Tensor:
    """(N, h, w) maps -> (N, H, W) float32, bilinear; ``normalize`` scales each map to [0, 1].

    The display helper of Grad-CAM and occlusion maps (their functions return them at their own
    resolution, unnormalised). A constant map becomes all zeros.
    """
    maps = torch.as_tensor(maps).detach().cpu().float()
    if maps.ndim == 2:
        maps = maps[None]
    require_tensor("maps", maps, ndim=3)
    if isinstance(size, int):
        size = (size, size)
    h, w = (require_int("size", int(s), minimum=1) for s in size)
    out = F.interpolate(maps[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    if normalize:
        low = out.flatten(1).min(1).values[:, None, None]
        high = out.flatten(1).max(1).values[:, None, None]
        out = torch.where(high > low, (out - low) / (high - low).clamp_min(1e-12), torch.zeros_like(out))
    return out


def pointing_game(maps, boxes, size) -> np.ndarray:
    """(N,) bool: does the maximum of each map, upsampled to ``size``, fall inside the object's box?

    maps: (N, h, w) any resolution; boxes: N arrays (K, 4) xyxy (x2, y2 exclusive), as in
    ``Shapes.boxes``: a hit if the maximum lies in any of the image's boxes. Ties: the first maximum.
    """
    up = upsample_maps(maps, size, normalize=False)
    if len(boxes) != len(up):
        raise ValueError(f"boxes must hold one entry per map ({len(up)}), got {len(boxes)}")
    flat = up.flatten(1).argmax(1)
    ys, xs = (flat // up.shape[2]).numpy(), (flat % up.shape[2]).numpy()
    hits = np.zeros(len(up), bool)
    for i, (x, y, b) in enumerate(zip(xs, ys, boxes)):
        b = np.asarray(b, np.float64).reshape(-1, 4)
        hits[i] = bool(np.any((b[:, 0] <= x) & (x < b[:, 2]) & (b[:, 1] <= y) & (y < b[:, 3])))
    return hits


def centre_in_box(shapes: Shapes) -> np.ndarray:
    """(N,) bool: does the image's centre pixel lie inside one of its boxes? (A map that always
    points at the centre wins the pointing game on exactly these images.)"""
    if not isinstance(shapes, Shapes):
        raise TypeError(f"shapes must be a Shapes, got {describe(shapes)}")
    centre = shapes.size // 2
    return np.array([bool(np.any((b[:, 0] <= centre) & (centre < b[:, 2]) & (b[:, 1] <= centre) & (centre < b[:, 3])))
                     for b in (np.asarray(b, np.float64).reshape(-1, 4) for b in shapes.boxes)])


def evaluate_pointing_game(methods: dict, shapes: Shapes, *, batch_size: int = 100, classes: str = "true",
                           model: nn.Module | None = None) -> dict[str, dict]:
    """Run each method on every image of ``shapes`` and score it with the pointing game.

    methods: {name: fn(images, labels) -> (N, h, w) maps}; classes: "true" (the labelled class) or
    "predicted" (the model's prediction; needs ``model``). Returns {name: {"hit_rate", "off_centre",
    "seconds", "hits"}} where "off_centre" is the hit rate on the images whose box does not contain the
    image centre (NaN if there are none); a method that raises gets {"error": message}.
    """
    images, labels = classification_data(shapes)
    if classes == "predicted":
        labels = predict(require_module("model", model), images).argmax(1)
    elif classes != "true":
        raise ValueError(f"classes must be 'true' or 'predicted', got {classes!r}")
    results, off_centre = {}, ~centre_in_box(shapes)

    def all_maps(fn):
        return torch.cat([torch.as_tensor(fn(images[i:i + batch_size], labels[i:i + batch_size])).detach()
                          for i in range(0, len(images), batch_size)])

    for name, fn in methods.items():
        require_callable(f"methods[{name!r}]", fn)
        start = time.perf_counter()
        maps, error = call_student(all_maps, fn, what=name)
        if error:
            results[name] = {"error": error}
            continue
        hits = pointing_game(maps, shapes.boxes, shapes.size)
        results[name] = {"hit_rate": float(hits.mean()),
                         "off_centre": float(hits[off_centre].mean()) if off_centre.any() else float("nan"),
                         "seconds": time.perf_counter() - start, "hits": hits}
    return results


# ------------------------------------------------------------------------------------------------
# Guided backprop
# ------------------------------------------------------------------------------------------------
class _GuidedReLU(torch.autograd.Function):
    """ReLU forward; backward passes only positive gradients through positive inputs."""

    @staticmethod
    def forward(ctx, x):
        positive = x > 0
        ctx.save_for_backward(positive)
        return x * positive

    @staticmethod
    def backward(ctx, grad):
        (positive,) = ctx.saved_tensors
        return grad * positive * (grad > 0)


@contextlib.contextmanager
def guided_relus(model: nn.Module):
    """Inside the block every nn.ReLU module of ``model`` back-propagates the guided way
    (Springenberg et al.): gradient kept only where both the input and the gradient are positive.
    Functional ``F.relu`` calls are not changed (as in captum). Restored on exit, also on error."""
    relus = [m for m in require_module("model", model).modules() if isinstance(m, nn.ReLU)]
    for relu in relus:
        relu.forward = _GuidedReLU.apply  # an instance attribute shadows the class's forward
    try:
        yield model
    finally:
        for relu in relus:
            del relu.forward


def guided_backprop(model: nn.Module, images: torch.Tensor, labels) -> torch.Tensor:
    """(N, C, H, W) guided-backprop gradient of each image's class score (model run in eval mode)."""
    require_module("model", model)
    require_tensor("images", images, ndim=4, floating=True)
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1).expand(len(images))
    with eval_mode(model):
        with guided_relus(model), torch.enable_grad():
            x = images.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(model(x).gather(1, labels[:, None]).sum(), x)
        return grad


def guided_grad_cam(model: nn.Module, target_layer: nn.Module, images: torch.Tensor, labels,
                    grad_cam: Callable) -> torch.Tensor:
    """Guided Grad-CAM: guided backprop (N, C, H, W) times the Grad-CAM map upsampled to (H, W)
    and normalised to [0, 1] per image. ``grad_cam`` is your function (or the reference)."""
    require_callable("grad_cam", grad_cam)
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1).expand(len(images))
    cam = upsample_maps(grad_cam(model, target_layer, images, labels), images.shape[-2:])
    return guided_backprop(model, images, labels) * cam[:, None].to(images.dtype)


# ------------------------------------------------------------------------------------------------
# Sanity check: randomise the weights, the maps must change (Adebayo et al., 2018)
# ------------------------------------------------------------------------------------------------
def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` whose layers are re-initialised with random weights (same architecture).
    BatchNorm statistics are reset too. The original model is not touched."""
    twin = copy.deepcopy(require_module("model", model))
    state = torch.random.get_rng_state()
    torch.manual_seed(require_int("seed", seed, minimum=0))
    try:
        for module in twin.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
    finally:
        torch.random.set_rng_state(state)
    return twin.eval()


def _ranks(x: torch.Tensor) -> torch.Tensor:
    return x.argsort(dim=1).argsort(dim=1).double()


def rank_correlation(a, b) -> torch.Tensor:
    """(N,) Spearman rank correlation between map a[n] and map b[n] (same shape, flattened)."""
    a, b = torch.as_tensor(a).flatten(1), torch.as_tensor(b).flatten(1)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)


def randomization_check(model: nn.Module, images: torch.Tensor, labels, methods: dict, seed: int = 0) -> dict:
    """Maps of the trained model vs the same architecture with random weights.

    methods: {name: fn(model, images, labels) -> (N, h, w) maps}. Returns {name: {"correlation": mean
    Spearman rank correlation of the upsampled maps, "trained": maps, "random": maps}} (or {"error"}).
    A method whose maps barely change (correlation near 1) does not explain what the model learned.
    """
    random_model = randomized_copy(model, seed)
    size = images.shape[-2:]
    results = {}

    def both_maps(fn):
        return [upsample_maps(fn(m, images, labels), size) for m in (model, random_model)]

    for name, fn in methods.items():
        maps, error = call_student(both_maps, fn, what=name)
        if error:
            results[name] = {"error": error}
            continue
        trained, random = maps
        results[name] = {"correlation": float(rank_correlation(trained, random).mean()),
                         "trained": trained, "random": random}
    return results


# ------------------------------------------------------------------------------------------------
# Grad-CAM = CAM / (h * w) at the last layer of a GAP + linear model
# ------------------------------------------------------------------------------------------------
def gradcam_cam_identity(model: ShapesClassifier, images: torch.Tensor, classes, grad_cam: Callable,
                         class_activation_map: Callable) -> dict:
    """Compare Grad-CAM at the last conv block with ReLU(CAM) / (h * w), both computed by the given
    functions (yours). Returns the maps, their largest difference and the ratio of their sums."""
    if not isinstance(model, ShapesClassifier):
        raise TypeError(f"model must be a ShapesClassifier, got {describe(model)}")
    classes = torch.as_tensor(classes, dtype=torch.long).reshape(-1).expand(len(images))
    last = list(model.blocks().values())[-1]
    gc = torch.as_tensor(grad_cam(model, last, images, classes)).detach()
    with torch.no_grad(), eval_mode(model):      # as grad_cam computes: the caller's modes are restored
        features = model.forward_features(images)
    cam = torch.as_tensor(class_activation_map(features, model.fc.weight.detach(), classes)).detach()
    hw = features.shape[2] * features.shape[3]
    scaled = F.relu(cam) / hw
    return {"grad_cam": gc, "cam": cam, "relu_cam_over_hw": scaled, "hw": hw,
            "max_abs_difference": float((gc - scaled).abs().max()),
            "ratio": float(F.relu(cam).sum() / gc.sum().clamp_min(1e-30))}


# ------------------------------------------------------------------------------------------------
# ViT attention maps
# ------------------------------------------------------------------------------------------------
def _attentions(vit: TinyViT, images: torch.Tensor) -> list[torch.Tensor]:
    """Each block's attention (N, heads, T, T), computed in eval mode; the model's mode is restored."""
    if not isinstance(vit, TinyViT):
        raise TypeError(f"vit must be a TinyViT, got {describe(vit)}")
    with eval_mode(vit):
        return vit(images, return_attention=True)[1]


@torch.no_grad()
def attention_maps(vit: TinyViT, images: torch.Tensor) -> torch.Tensor:
    """(N, depth, heads, g, g): how much the class token attends to each patch, per block and head."""
    attentions = _attentions(vit, images)
    stacked = torch.stack(attentions, dim=1)  # (N, depth, heads, T, T)
    g = vit.grid
    return stacked[:, :, :, 0, 1:].reshape(len(images), len(attentions), -1, g, g)


@torch.no_grad()
def attention_rollout(vit: TinyViT, images: torch.Tensor) -> torch.Tensor:
    """(N, g, g) attention rollout (Abnar & Zuidema, 2020): the head-averaged attention of each block,
    mixed with the identity for the residual connection (0.5 A + 0.5 I, rows renormalised), multiplied
    through the blocks; the class token's row over the patches."""
    attentions = _attentions(vit, images)
    t = attentions[0].shape[-1]
    rollout = torch.eye(t).expand(len(images), t, t)
    for attention in attentions:
        mixed = 0.5 * attention.mean(1) + 0.5 * torch.eye(t)
        mixed = mixed / mixed.sum(-1, keepdim=True)
        rollout = mixed @ rollout
    return rollout[:, 0, 1:].reshape(len(images), vit.grid, vit.grid)


# ------------------------------------------------------------------------------------------------
# Explanations side by side, and the widgets
# ------------------------------------------------------------------------------------------------
def explain(model: nn.Module, image: torch.Tensor, class_idx: int, layer: str, *, grad_cam: Callable | None = None,
            saliency_map: Callable | None = None, occlusion_map: Callable | None = None, patch: int = 16,
            stride: int = 4) -> dict:
    """Grad-CAM (at block ``layer``), saliency and occlusion of one image (3, H, W) for one class.

    Pure computation for the widget: returns {"image", "class_idx", "probabilities", "maps":
    {name: (H, W) in [0, 1]}, "errors": {name: message}}. A function left as None is skipped.
    """
    require_module("model", model)
    image = require_tensor("image", image, ndim=3, floating=True)
    class_idx = require_int("class_idx", class_idx, minimum=0)
    blocks = model.blocks() if isinstance(model, ShapesClassifier) else {}
    if grad_cam is not None and layer not in blocks:
        raise ValueError(f"layer must be one of {tuple(blocks)}, got {layer!r}")
    batch, labels, size = image[None], torch.tensor([class_idx]), image.shape[-2:]
    calls = {}                                  # panel title: (the student's function's name, the call)
    if grad_cam is not None:
        calls[f"Grad-CAM ({layer})"] = ("grad_cam", lambda: grad_cam(model, blocks[layer], batch, labels))
    if saliency_map is not None:
        calls["saliency"] = ("saliency_map", lambda: saliency_map(model, batch, labels))
    if occlusion_map is not None:
        calls[f"occlusion (patch {patch})"] = ("occlusion_map",
                                               lambda: occlusion_map(model, batch, labels, patch, stride))
    maps, errors = {}, {}

    def heat_map(call):
        return upsample_maps(torch.as_tensor(call()).detach(), size)[0].numpy()

    for name, (what, call) in calls.items():
        heat, error = call_student(heat_map, call, what=what)
        if error:
            errors[name] = error
        else:
            maps[name] = heat
    probabilities = predict(model, batch).softmax(1)[0].numpy()
    return {"image": image, "class_idx": class_idx, "probabilities": probabilities, "maps": maps, "errors": errors}


@display_only
def plot_explanations(result: dict, alpha: float = 0.5, fig=None):
    """Draw an :func:`explain` result: the image, then each map overlaid with opacity ``alpha``."""
    import matplotlib.pyplot as plt

    from .plot import overlay_heatmap, to_display

    alpha = require_float("alpha", alpha, minimum=0, maximum=1)
    panels = [("image", to_display(result["image"]))]
    panels += [(name, overlay_heatmap(result["image"], heat, alpha=alpha)) for name, heat in result["maps"].items()]
    panels += [(name, None) for name in result["errors"]]
    if fig is None:
        fig = plt.figure(figsize=(2.6 * len(panels), 3.0))
    fig.clear()
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, picture) in zip(axes, panels):
        if picture is None:
            ax.text(0.5, 0.5, f"{name}:\n{result['errors'][name]}", ha="center", va="center", wrap=True,
                    fontsize=8, color="crimson", transform=ax.transAxes)
        else:
            ax.imshow(picture)
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    probs = ", ".join(f"{c} {p:.2f}" for c, p in zip(CLASS_NAMES, result["probabilities"]))
    fig.suptitle(f"class '{CLASS_NAMES[result['class_idx']]}'   (model: {probs})", fontsize=9)
    fig.set_layout_engine("tight")
    return fig


@display_only
def explanation_widget(model: ShapesClassifier, shapes: Shapes, *, grad_cam: Callable | None = None,
                       saliency_map: Callable | None = None, occlusion_map: Callable | None = None):
    """Pick an image, a class and a layer; see Grad-CAM, saliency and occlusion side by side, with an
    overlay-opacity slider and an occlusion patch-size slider. Pass your own functions.
    Returns the ipywidgets box (display it as a cell's last expression); ``box.interactive.result`` holds
    the last :func:`explain` result."""
    import ipywidgets as widgets

    if not isinstance(model, ShapesClassifier):
        raise TypeError(f"model must be a ShapesClassifier, got {describe(model)}")
    images, targets = classification_data(shapes)
    blocks = list(model.blocks())
    controls = {
        "index": widgets.IntSlider(0, 0, len(images) - 1, description="image"),
        "class_idx": widgets.Dropdown(options=[(n, i) for i, n in enumerate(CLASS_NAMES)], value=int(targets[0]),
                                      description="class"),
        "layer": widgets.Dropdown(options=blocks, value=blocks[-1], description="layer"),
        "alpha": widgets.FloatSlider(0.5, min=0.0, max=1.0, step=0.05, description="opacity"),
        "patch": widgets.IntSlider(16, 4, 32, step=4, description="patch"),
    }

    def follow_image(change):
        controls["class_idx"].value = int(targets[change["new"]])

    controls["index"].observe(follow_image, names="value")

    def view(index, class_idx, layer, alpha, patch):
        result = explain(model, images[index], class_idx, layer, grad_cam=grad_cam, saliency_map=saliency_map,
                         occlusion_map=occlusion_map, patch=patch, stride=max(patch // 4, 1))
        return {**result, "alpha": alpha}

    return explorer(controls, view, lambda result: plot_explanations(result, result["alpha"]),
                    arrange=[["index", "class_idx", "layer"], ["alpha", "patch"]])


@display_only
def occlusion_patch_widget(model: nn.Module, image: torch.Tensor, label: int, occlusion_map: Callable):
    """Occlusion maps of one image for a patch-size slider (stride = patch / 4). Returns the box."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from .plot import overlay_heatmap

    require_callable("occlusion_map", occlusion_map)
    slider = widgets.IntSlider(16, 4, 48, step=4, description="patch")

    def view(patch):
        drops, error = call_student(occlusion_map, model, image[None], torch.tensor([label]), patch,
                                    max(patch // 4, 1), what="occlusion_map")
        if error:
            return {"patch": patch, "error": error}
        return {"patch": patch, "drops": torch.as_tensor(drops).detach()[0]}

    def draw(view):
        fig, axes = plt.subplots(1, 2, figsize=(6, 3))
        if "error" in view:
            axes[0].text(0.1, 0.5, view["error"], color="crimson")
        else:
            axes[0].imshow(view["drops"].numpy(), cmap="coolwarm")
            axes[0].set_title(f"score drop, {tuple(view['drops'].shape)} positions", fontsize=9)
            axes[1].imshow(overlay_heatmap(image, upsample_maps(view["drops"], image.shape[-2:])[0].numpy()))
            axes[1].set_title("overlay", fontsize=9)
        for ax in axes:
            ax.set_axis_off()
        fig.set_layout_engine("tight")
        return fig

    return explorer({"patch": slider}, view, draw)
