"""Reference solutions of the visualization exercises: saliency, CAM, Grad-CAM and occlusion.

Conventions shared by the four functions (the notebook states them):

* class scores are the model's unnormalised outputs (logits), never softmax probabilities;
* ``labels`` / ``class_idx`` hold one class per image: an (N,) integer tensor (an int means the same
  class for every image);
* maps are returned at their natural resolution (pixels for saliency, the layer's grid for CAM and
  Grad-CAM, the patch grid for occlusion), unnormalised; upsampling and normalising for display is
  done by :func:`lecturelib.visualization.upsample_maps`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import describe, require_int, require_module, require_tensor
from ..train import eval_mode

__all__ = ["saliency_map", "class_activation_map", "grad_cam", "occlusion_map"]


# ------------------------------------------------------------------------------------------------
# Argument checks
# ------------------------------------------------------------------------------------------------
def _check_images(images) -> torch.Tensor:
    images = require_tensor("images", images, ndim=4, floating=True)
    if images.shape[0] == 0:
        raise ValueError("images must hold at least one image, got an empty batch")
    return images


def _check_classes(name: str, classes, n: int) -> torch.Tensor:
    """(N,) int64 class ids from an (N,) integer tensor or one int for every image."""
    if isinstance(classes, int) and not isinstance(classes, bool):
        return torch.full((n,), require_int(name, classes, minimum=0), dtype=torch.long)
    classes = require_tensor(name, classes, integer=True)
    if classes.ndim == 0:
        classes = classes.expand(n)
    if classes.shape != (n,):
        raise ValueError(f"{name} must hold one class per image, shape ({n},), got {tuple(classes.shape)}")
    if classes.numel() and int(classes.min()) < 0:
        raise ValueError(f"{name} must hold class indices >= 0, got {classes.tolist()}")
    return classes.long()


def _class_scores(logits: torch.Tensor, classes: torch.Tensor, name: str) -> torch.Tensor:
    """(N,) score of each image's own class: logits[n, classes[n]]."""
    if logits.ndim != 2 or logits.shape[0] != classes.shape[0]:
        raise ValueError(f"the model must return class scores (N, C), got shape {tuple(logits.shape)}")
    if int(classes.max()) >= logits.shape[1]:
        raise ValueError(f"{name} must be < the number of classes {logits.shape[1]}, got {classes.tolist()}")
    return logits.gather(1, classes.to(logits.device)[:, None])[:, 0]


# ------------------------------------------------------------------------------------------------
# Saliency
# ------------------------------------------------------------------------------------------------
def saliency_map(model: nn.Module, images: torch.Tensor, labels) -> torch.Tensor:
    """Simonyan et al.'s saliency: max over colour channels of |d S_y / d x|.

    images: (N, C, H, W) float; labels: (N,) integer class per image (or an int).
    Returns (N, H, W), dtype of ``images``. ``S_y`` is the unnormalised score of class ``labels[n]``
    for image n. The parameters' ``.grad`` are left untouched (``torch.autograd.grad``).
    """
    model = require_module("model", model)
    images = _check_images(images)
    labels = _check_classes("labels", labels, images.shape[0])
    with torch.enable_grad():
        x = images.detach().clone().requires_grad_(True)
        scores = _class_scores(model(x), labels, "labels")
        (grad,) = torch.autograd.grad(scores.sum(), x)  # image n's score depends on image n only
    return grad.abs().amax(dim=1).detach()


# ------------------------------------------------------------------------------------------------
# CAM
# ------------------------------------------------------------------------------------------------
def class_activation_map(features: torch.Tensor, fc_weight: torch.Tensor, class_idx) -> torch.Tensor:
    """CAM of a GAP + linear classifier: M_c(x, y) = sum_k w[c, k] f_k(x, y).

    features: (N, K, h, w) last conv feature maps; fc_weight: (C, K) weight of the linear layer
    (row c holds class c's weights); class_idx: (N,) integer class per image (or an int).
    Returns (N, h, w) in the dtype of ``features``, unnormalised, without ReLU.
    """
    features = require_tensor("features", features, ndim=4, floating=True)
    fc_weight = require_tensor("fc_weight", fc_weight, ndim=2, floating=True)
    if fc_weight.shape[1] != features.shape[1]:
        raise ValueError(f"fc_weight must be (C, K) with K = {features.shape[1]} feature channels, "
                         f"got shape {tuple(fc_weight.shape)}")
    class_idx = _check_classes("class_idx", class_idx, features.shape[0])
    if int(class_idx.max()) >= fc_weight.shape[0]:
        raise ValueError(f"class_idx must be < the number of classes {fc_weight.shape[0]}, "
                         f"got {class_idx.tolist()}")
    weights = fc_weight[class_idx.to(fc_weight.device)].to(features.dtype)  # (N, K)
    return torch.einsum("nk,nkhw->nhw", weights, features)


# ------------------------------------------------------------------------------------------------
# Grad-CAM
# ------------------------------------------------------------------------------------------------
def _layer_in(model: nn.Module, target_layer) -> nn.Module:
    if not isinstance(target_layer, nn.Module):
        raise TypeError(f"target_layer must be an nn.Module inside model, got {describe(target_layer)}")
    if not any(m is target_layer for m in model.modules()):
        raise ValueError(f"target_layer ({type(target_layer).__name__}) is not a submodule of the model")
    return target_layer


def grad_cam(model: nn.Module, target_layer: nn.Module, images: torch.Tensor, class_idx) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al.) at any layer whose output is (N, K, h, w).

    images: (N, C, H, W) float; class_idx: (N,) integer class per image (or an int).
    A = target_layer's output, S_c = unnormalised score of class c, alpha_k = spatial mean of
    dS_c/dA_k; returns ReLU(sum_k alpha_k A_k), (N, h, w), at the layer's resolution, unnormalised.

    The model is left as it was: computed in eval mode and the caller's modes restored, the hook
    removed (also on error), parameters' ``requires_grad`` and ``.grad`` untouched.
    """
    model = require_module("model", model)
    target_layer = _layer_in(model, target_layer)
    images = _check_images(images)
    class_idx = _check_classes("class_idx", class_idx, images.shape[0])
    captured = {}

    def keep_output(module, inputs, output):
        captured["A"] = output
        if not isinstance(output, torch.Tensor):
            return None
        # Give the rest of the network a copy: an in-place op after the layer (ReLU(inplace=True))
        # would otherwise overwrite A and the graph through it.
        return output.clone()

    with eval_mode(model), torch.enable_grad():
        handle = target_layer.register_forward_hook(keep_output)
        try:
            # The input requires gradients, so A does even when every parameter is frozen.
            logits = model(images.detach().requires_grad_(True))
        finally:
            handle.remove()
        if "A" not in captured:
            raise ValueError("target_layer did not run during the forward pass")
        A = captured["A"]
        if not isinstance(A, torch.Tensor) or A.ndim != 4:
            raise ValueError(f"target_layer must output a (N, K, h, w) tensor, got {describe(A)}")
        scores = _class_scores(logits, class_idx, "class_idx")
        (grads,) = torch.autograd.grad(scores.sum(), A)  # leaves every .grad alone
    alpha = grads.mean(dim=(2, 3), keepdim=True)         # (N, K, 1, 1)
    return F.relu((alpha * A).sum(dim=1)).detach()


# ------------------------------------------------------------------------------------------------
# Occlusion
# ------------------------------------------------------------------------------------------------
def occlusion_map(model: nn.Module, images: torch.Tensor, labels, patch: int, stride: int) -> torch.Tensor:
    """Zeiler & Fergus occlusion: drop of the class score when a patch of zeros covers the image.

    images: (N, C, H, W) float; labels: (N,) integer class per image (or an int);
    patch: side of the square patch; stride: step between patch positions.
    Returns (N, (H - patch) // stride + 1, (W - patch) // stride + 1): entry [n, i, j] is
    S(x_n) - S(x_n with rows i*stride : i*stride + patch and columns j*stride : j*stride + patch
    set to 0), S the unnormalised score of class labels[n]. The model is evaluated as it is.
    """
    model = require_module("model", model)
    images = _check_images(images)
    n, c, h, w = images.shape
    labels = _check_classes("labels", labels, n)
    patch = require_int("patch", patch, minimum=1)
    stride = require_int("stride", stride, minimum=1)
    if patch > min(h, w):
        raise ValueError(f"patch must fit in the image ({h}x{w}), got {patch}")
    rows, cols = (h - patch) // stride + 1, (w - patch) // stride + 1
    # One mask per patch position: (P, 1, H, W) with zeros under the patch.
    masks = images.new_ones(rows * cols, 1, h, w)
    for p in range(rows * cols):
        i, j = divmod(p, cols)
        masks[p, :, i * stride: i * stride + patch, j * stride: j * stride + patch] = 0
    drops = []
    with torch.no_grad():
        for image, label in zip(images, labels):
            batch = torch.cat([image[None], image[None] * masks])  # unoccluded first
            scores = _class_scores(model(batch), label.expand(len(batch)), "labels")
            drops.append(scores[0] - scores[1:])
    return torch.stack(drops).reshape(n, rows, cols)
