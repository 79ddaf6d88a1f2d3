"""Mutant library of the visualization exercises (format: ``mutants/__init__``).

Each mutant is a whole function the way a student would write it, with one realistic bug; its ``cause`` is
the text the hidden suite's report must contain. Most are a student's implementation with one switch turned
(the ``_student_*`` functions below, correct with their defaults); the alternatives are correct
implementations written differently from the reference (``lecturelib.reference.visualization``).
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from . import Alternative, Mutant


def _named(student, label: str, doc: str, **bug):
    """A module-level-style function ``student(*args, **bug)`` whose docstring says the bug."""
    def mutant(*args):
        return student(*args, **bug)
    mutant.__doc__ = doc
    mutant.__name__ = mutant.__qualname__ = label
    signature = inspect.signature(student)  # the argument names a "modified in place" message quotes
    mutant.__signature__ = signature.replace(parameters=[p for p in signature.parameters.values()
                                                         if p.kind is not p.KEYWORD_ONLY])
    return mutant


# ------------------------------------------------------------------------------------------------
# saliency_map(model, images (N, C, H, W), labels (N,)) -> (N, H, W), dtype of the images
# ------------------------------------------------------------------------------------------------
def _student_saliency(model, images, labels, *, reduce="max", absolute="before", score="logit", pick="gather",
                      times_input=False, copy=True, first_only=False, out_dtype=None):
    x = images.detach().clone().requires_grad_(True) if copy else images.requires_grad_(True)
    if first_only:
        x, labels = x[:1], labels[:1]
    logits = model(x)
    if score == "prob":
        logits = logits.softmax(1)
    elif score == "loss":
        logits = -F.cross_entropy(logits, labels, reduction="none")[:, None].expand(-1, logits.shape[1])
    if pick == "gather":
        s = logits.gather(1, labels[:, None]).sum()
    elif pick == "first":
        s = logits[:, labels[0]].sum()
    else:  # logits[:, labels]: an N x N matrix
        s = logits[:, labels].sum()
    (g,) = torch.autograd.grad(s, x)
    if times_input:
        g = g * x.detach()
    if absolute == "before":
        g = g.abs()
    if reduce is None:
        return g
    out = {"max": g.amax(1), "sum": g.sum(1), "mean": g.mean(1)}[reduce]
    out = out.abs() if absolute == "after" else out
    if first_only or out_dtype is not None:
        full = torch.zeros(images.shape[0], *images.shape[2:], dtype=out_dtype or images.dtype)
        full[: len(out)] = out
        return full
    return out


def saliency_by_rows(model, images, labels):
    """Correct: one image at a time, the gradient of logits[0, label], max of |g| over channels."""
    maps = []
    for image, label in zip(images, labels):
        x = image[None].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(x)[0, label], x)
        maps.append(g[0].abs().max(dim=0).values)
    return torch.stack(maps)


def saliency_one_hot_backward(model, images, labels):
    """Correct: backward of a one-hot weighted sum of the logits into a leaf copy of the images."""
    x = images.detach().clone().requires_grad_(True)
    logits = model(x)
    (F.one_hot(labels, logits.shape[1]).to(logits.dtype) * logits).sum().backward(inputs=[x])
    return x.grad.abs().amax(1)


# ------------------------------------------------------------------------------------------------
# class_activation_map(features (N, K, h, w), fc_weight (C, K), class_idx (N,)) -> (N, h, w)
# ------------------------------------------------------------------------------------------------
def _student_cam(features, fc_weight, class_idx, *, bug=None):
    w = fc_weight[class_idx]
    if bug == "transposed":
        w = fc_weight[:, class_idx].T
    if bug == "first":
        w = fc_weight[class_idx[:1]].expand(len(class_idx), -1)
    if bug == "all_classes":
        w = fc_weight.sum(0, keepdim=True).expand(len(class_idx), -1)
    cam = (w[:, :, None, None] * features).sum(1)
    if bug == "relu":
        cam = F.relu(cam)
    if bug == "mean":
        cam = cam / features.shape[1]
    if bug == "hw":
        cam = cam / (features.shape[2] * features.shape[3])
    if bug == "min_max":
        low = cam.flatten(1).min(1).values[:, None, None]
        high = cam.flatten(1).max(1).values[:, None, None]
        cam = (cam - low) / (high - low)
    return cam


def cam_float32_accumulator(features, fc_weight, class_idx):
    """Accumulates the weighted channels into torch.zeros(N, h, w) (float32, whatever the dtype of features)."""
    n, k, h, w = features.shape
    cam = torch.zeros(n, h, w)
    for channel in range(k):
        cam += fc_weight[class_idx, channel][:, None, None] * features[:, channel]
    return cam


def cam_weights_in_place(features, fc_weight, class_idx):
    """Multiplies the caller's features by the class weights in place (features.mul_), then sums the channels."""
    features.mul_(fc_weight[class_idx][:, :, None, None])
    return features.sum(1)


def cam_first_image(features, fc_weight, class_idx):
    """Computes the map of the first image and leaves the others at zero (code written for one image)."""
    cam = torch.zeros(features.shape[0], *features.shape[2:], dtype=features.dtype)
    cam[0] = torch.einsum("k,khw->hw", fc_weight[class_idx[0]], features[0])
    return cam


def cam_einsum(features, fc_weight, class_idx):
    """Correct: one einsum with the rows of each image's class."""
    return torch.einsum("nk,nkhw->nhw", fc_weight[class_idx].to(features.dtype), features)


def cam_bmm(features, fc_weight, class_idx):
    """Correct: a batched matrix product (N, 1, K) @ (N, K, h * w)."""
    n, k, h, w = features.shape
    return torch.bmm(fc_weight[class_idx][:, None, :], features.reshape(n, k, h * w)).reshape(n, h, w)


# ------------------------------------------------------------------------------------------------
# grad_cam(model, target_layer, images (N, C, H, W), class_idx (N,)) -> (N, h, w)
# ------------------------------------------------------------------------------------------------
def _student_grad_cam(model, target_layer, images, class_idx, *, relu=True, score="logit", weights="gradients",
                      remove="finally", mode="restore", grads="autograd", clone=True, pick="gather",
                      normalise=False, upsample=False, catch="output", flags=None, copy=True, first_only=False,
                      input_grad=True):
    store = {}

    def hook(module, inputs, output):
        store["A"] = inputs[0] if catch == "input" else output
        return output.clone() if clone else None

    was_training = model.training
    if mode != "ignore":
        model.eval()
    if flags is not None:
        for p in model.parameters():
            p.requires_grad_(flags)
    handle = target_layer.register_forward_hook(hook)
    try:
        x = images.detach().requires_grad_(input_grad) if copy else images.requires_grad_(True)
        if first_only:
            x, class_idx = x[:1], class_idx[:1]
        logits = model(x)
        if score == "prob":
            logits = logits.softmax(1)
        if pick == "gather":
            s = logits.gather(1, class_idx[:, None]).sum()
        elif pick == "first":
            s = logits[:, class_idx[0]].sum()
        else:  # logits[:, class_idx]: an N x N matrix
            s = logits[:, class_idx].sum()
        A = store["A"]
        if grads == "autograd":
            (G,) = torch.autograd.grad(s, A)
        else:
            A.retain_grad()
            s.backward()
            G = A.grad
            if grads == "zero_grad":
                model.zero_grad()
    finally:
        if remove == "finally":
            handle.remove()
        if mode == "restore":
            model.train(was_training)
    if remove == "end":
        handle.remove()
    A = A.detach()
    alpha = {"gradients": lambda: G.mean((2, 3), keepdim=True), "activations": lambda: A.mean((2, 3), keepdim=True),
             "elementwise": lambda: G, "sum": lambda: G.sum((2, 3), keepdim=True),
             "channels_too": lambda: G.mean((1, 2, 3), keepdim=True),
             "batch_too": lambda: G.mean((0, 2, 3), keepdim=True)}[weights]()
    cam = (alpha * A).sum(1)
    if relu:
        cam = F.relu(cam)
    if normalise:
        cam = cam / cam.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]
    if upsample:
        cam = F.interpolate(cam[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    if first_only:
        full = cam.new_zeros(images.shape[0], *cam.shape[1:])
        full[:1] = cam
        return full
    return cam


def grad_cam_tensor_hook(model, target_layer, images, class_idx):
    """Correct, in the style of pytorch-grad-cam: a tensor hook catches the gradient, the activations are stored
    as a copy, the graph runs back to a copy of the input, each module's mode is restored."""
    acts, grads = [], []

    def forward_hook(module, inputs, output):
        acts.append(output.detach().clone())
        output.register_hook(lambda g: grads.append(g.detach().clone()))

    modes = {m: m.training for m in model.modules()}
    model.eval()
    handle = target_layer.register_forward_hook(forward_hook)
    try:
        x = images.detach().clone().requires_grad_(True)
        logits = model(x)
        score = logits[torch.arange(len(images)), class_idx].sum()
        torch.autograd.grad(score, x)
    finally:
        handle.remove()
        for m, training in modes.items():
            m.training = training
    weights = grads[0].mean(dim=(2, 3), keepdim=True)
    return torch.clamp((weights * acts[0]).sum(dim=1), min=0)


def grad_cam_student(model, target_layer, images, class_idx):
    """Correct: a forward hook that returns output.clone(), torch.autograd.grad, modes restored in `finally`."""
    return _student_grad_cam(model, target_layer, images, class_idx)


# ------------------------------------------------------------------------------------------------
# occlusion_map(model, images (N, C, H, W), labels (N,), patch, stride) -> (N, rows, cols)
# ------------------------------------------------------------------------------------------------
def _student_occlusion(model, images, labels, patch, stride, *, sign=1, drop=True, score="logit",
                       baseline="zero", count="right", swap=False, pick="gather", step=None, copy=True,
                       first_only=False):
    n, _, h, w = images.shape
    rows = (h - patch) // stride + 1 if count == "right" else (h - patch) // stride
    cols = (w - patch) // stride + 1 if count == "right" else (w - patch) // stride
    if count == "ignore stride":
        rows, cols, stride = h - patch + 1, w - patch + 1, 1
    if count == "ceil":
        rows, cols = -(-h // stride), -(-w // stride)
    step = patch if step == "patch" else stride
    if pick == "first":
        labels = labels[:1].expand(n)

    def s(x):
        logits = model(x)
        return (logits.softmax(1) if score == "prob" else logits).gather(1, labels[: len(x), None])[:, 0]

    out = images.new_zeros(n, rows, cols)
    batch = images[:1] if first_only else images
    with torch.no_grad():
        base = s(batch)
        for i in range(rows):
            for j in range(cols):
                occ = batch.clone() if copy else batch
                region = (slice(None), slice(None), slice(i * step, i * step + patch),
                          slice(j * step, j * step + patch))
                occ[region] = 0.0 if baseline == "zero" else batch.mean()
                value = base - s(occ) if drop else s(occ)
                out[: len(batch), i, j] = sign * value
    return out.transpose(1, 2) if swap else out


def occlusion_mean_fill(model, images, labels, patch, stride):
    """Fills the patch with each image's per-channel mean instead of zeros."""
    n, _, h, w = images.shape
    rows, cols = (h - patch) // stride + 1, (w - patch) // stride + 1
    out = images.new_zeros(n, rows, cols)
    with torch.no_grad():
        base = model(images).gather(1, labels[:, None])[:, 0]
        for i in range(rows):
            for j in range(cols):
                occ = images.clone()
                region = (slice(None), slice(None), slice(i * stride, i * stride + patch),
                          slice(j * stride, j * stride + patch))
                occ[region] = images.mean(dim=(2, 3))[:, :, None, None].expand_as(occ)[region]
                out[:, i, j] = base - model(occ).gather(1, labels[:, None])[:, 0]
    return out


def occlusion_batched_masks(model, images, labels, patch, stride):
    """Correct: every patch position of one image in one forward pass, through a stack of 0/1 masks."""
    n, c, h, w = images.shape
    rows, cols = (h - patch) // stride + 1, (w - patch) // stride + 1
    masks = images.new_ones(rows, cols, 1, h, w)
    for i in range(rows):
        for j in range(cols):
            masks[i, j, :, i * stride: i * stride + patch, j * stride: j * stride + patch] = 0
    maps = []
    with torch.no_grad():
        for image, label in zip(images, labels):
            base = model(image[None])[0, label]
            occluded = model((image * masks).reshape(rows * cols, c, h, w))[:, label]
            maps.append((base - occluded).reshape(rows, cols))
    return torch.stack(maps)


def occlusion_student(model, images, labels, patch, stride):
    """Correct: two loops over the positions, the whole batch occluded at once."""
    return _student_occlusion(model, images, labels, patch, stride)


# ------------------------------------------------------------------------------------------------
# The library
# ------------------------------------------------------------------------------------------------
_S, _G, _O = _student_saliency, _student_grad_cam, _student_occlusion
_FIRST_CLASS = "class of the first image"
_MIXES = "mixes the images' classes"
_ONLY_FIRST = "only the first"
_DTYPE = "keep the dtype of the input"

MUTANTS = {
    "saliency_map": [
        Mutant("sum over channels", _named(_S, "saliency_sum", "Sums |gradient| over the channels.", reduce="sum"),
               "summed over the colour channels", rule="the maximum over the colour channels"),
        Mutant("mean over channels", _named(_S, "saliency_mean", "Averages |gradient| over the channels.",
                                            reduce="mean"), "averaged over the colour channels"),
        Mutant("no absolute value", _named(_S, "saliency_no_abs", "Takes the max of the signed gradient.",
                                           absolute="none"), "the absolute value is missing",
               rule="the absolute value of the gradient"),
        Mutant("abs after max", _named(_S, "saliency_abs_after", "Takes |max| instead of max |.|.",
                                       absolute="after"), "the absolute value came after the maximum"),
        Mutant("softmax probability", _named(_S, "saliency_prob", "Differentiates the softmax probability.",
                                             score="prob"), "gradient of the softmax probability",
               rule="the unnormalised class score (the logit)"),
        Mutant("log-probability", _named(_S, "saliency_loss", "Differentiates minus the cross-entropy loss.",
                                         score="loss"), "log-probability"),
        Mutant("first image's class", _named(_S, "saliency_first", "Uses labels[0] for every image.",
                                             pick="first"), _FIRST_CLASS, rule="one class per image"),
        Mutant("logits[:, labels]", _named(_S, "saliency_matrix", "Sums logits[:, labels] (an N x N matrix).",
                                           pick="matrix"), _MIXES),
        Mutant("gradient x input", _named(_S, "saliency_times_input", "Multiplies the gradient by the input.",
                                          times_input=True), "gradient x input"),
        Mutant("no channel reduction", _named(_S, "saliency_per_channel", "Returns |gradient| per channel.",
                                              reduce=None), "maximum of |gradient| over the colour channels"),
        Mutant("images.requires_grad_()", _named(_S, "saliency_in_place", "Calls requires_grad_ on the caller's "
                                                 "images.", copy=False), "modified its argument `images` in place",
               rule="let a copy of the images require gradients"),
        Mutant("float32 output", _named(_S, "saliency_float32", "Fills torch.zeros(N, H, W) (float32).",
                                        out_dtype=torch.float32), _DTYPE, rule="the dtype of images"),
        Mutant("first image only", _named(_S, "saliency_first_image", "Computes the first image only.",
                                          first_only=True), _ONLY_FIRST),
    ],
    "class_activation_map": [
        Mutant("ReLU", _named(_student_cam, "cam_relu", "Applies a ReLU to the map.", bug="relu"), "CAM has no ReLU",
               rule="no ReLU"),
        Mutant("mean over channels", _named(_student_cam, "cam_mean", "Averages over k instead of summing.",
                                            bug="mean"), "the channels were averaged"),
        Mutant("divided by h * w", _named(_student_cam, "cam_hw", "Divides the map by h * w.", bug="hw"),
               "divided by h * w", rule="no division by hw"),
        Mutant("column fc_weight[:, c]", _named(_student_cam, "cam_column", "Takes column c of fc_weight.",
                                                bug="transposed"), "row c holds the weights of class c",
               rule="row c of fc_weight holds class c's weights"),
        Mutant("first image's class", _named(_student_cam, "cam_first", "Uses class_idx[0] for every image.",
                                             bug="first"), _FIRST_CLASS, rule="each image's own class"),
        Mutant("all classes summed", _named(_student_cam, "cam_all", "Sums the weights of all classes.",
                                            bug="all_classes"), "the weights of all classes were summed"),
        Mutant("min-max normalised", _named(_student_cam, "cam_min_max", "Min-max normalises each map.",
                                            bug="min_max"), "min-max normalised", rule="unnormalised"),
        Mutant("float32 accumulator", cam_float32_accumulator, _DTYPE, rule="the dtype of features"),
        Mutant("features.mul_ in place", cam_weights_in_place, "modified its argument `features` in place"),
        Mutant("first image only", cam_first_image, _ONLY_FIRST),
    ],
    "grad_cam": [
        Mutant("ReLU missing", _named(_G, "gc_no_relu", "Leaves out the ReLU.", relu=False), "the ReLU is missing",
               rule="map = ReLU(sum_k alpha_k A_k)"),
        Mutant("softmax probability", _named(_G, "gc_prob", "Differentiates the softmax probability.", score="prob"),
               "gradients of the softmax probability", rule="the unnormalised logit"),
        Mutant("alpha from activations", _named(_G, "gc_alpha_acts", "Averages the activations, not the gradients.",
                                                weights="activations"), "alpha_k were computed from the activations"),
        Mutant("element-wise product", _named(_G, "gc_elementwise", "Multiplies G and A element-wise.",
                                              weights="elementwise"), "multiplied element-wise"),
        Mutant("alpha summed over space", _named(_G, "gc_alpha_sum", "Sums the gradients over space.",
                                                 weights="sum"), "alpha_k is the spatial MEAN",
               rule="alpha_k = (1 / hw) sum_xy dS/dA_k"),
        Mutant("alpha averaged over channels", _named(_G, "gc_alpha_channels", "Averages over dims (1, 2, 3).",
                                                      weights="channels_too"), "averaged over channels too"),
        Mutant("alpha averaged over the batch", _named(_G, "gc_alpha_batch", "Averages over dims (0, 2, 3).",
                                                       weights="batch_too"), "averaged over the batch too"),
        Mutant("hook never removed", _named(_G, "gc_hook_left", "Never removes the hook.", remove="never"),
               "hooks left registered after your function returned", rule="hooks removed"),
        Mutant("hook removed on success only", _named(_G, "gc_hook_not_finally", "Removes the hook after the "
                                                      "try block, not in finally.", remove="end"),
               "hooks left registered after your function raised", rule="hooks removed, also on error"),
        Mutant("train mode kept", _named(_G, "gc_no_eval", "Never switches to eval mode.", mode="ignore"),
               "computed in train mode", rule="BatchNorm must use its running statistics (eval mode)"),
        Mutant("eval mode not undone", _named(_G, "gc_eval_only", "Calls model.eval() and never restores the "
                                              "caller's mode.", mode="eval only"),
               "changed mode after your function returned", rule="the caller's mode back"),
        Mutant("backward() into .grad", _named(_G, "gc_backward", "Uses score.backward() and A.grad.",
                                               grads="backward"), "the parameters' .grad changed",
               rule=".grad untouched"),
        Mutant("zero_grad() afterwards", _named(_G, "gc_zero_grad", "Uses backward(), then model.zero_grad().",
                                                grads="zero_grad"), "the parameters' .grad changed"),
        Mutant("parameters unfrozen", _named(_G, "gc_unfreeze", "Sets requires_grad=True on every parameter.",
                                             flags=True), "requires_grad of the model's parameters changed",
               rule="requires_grad unchanged"),
        Mutant("parameters frozen", _named(_G, "gc_freeze", "Sets requires_grad=False on every parameter.",
                                           flags=False), "requires_grad of the model's parameters changed"),
        Mutant("no input gradients", _named(_G, "gc_no_input_grad", "Feeds the images as they are (nothing "
                                            "requires gradients in a frozen model).", input_grad=False),
               "requires_grad_(True)", rule="frozen models: let a copy of the input require gradients"),
        Mutant("output stored, not cloned", _named(_G, "gc_no_clone", "Stores output and returns nothing from the "
                                                   "hook.", clone=False), "overwritten by the in-place ReLU",
               rule="in-place ReLUs after the layer"),
        Mutant("layer input caught", _named(_G, "gc_layer_input", "Keeps inputs[0] of the hook, not output.",
                                            catch="input"), "the layer's INPUT"),
        Mutant("logits[:, class_idx]", _named(_G, "gc_matrix", "Sums logits[:, class_idx] (an N x N matrix).",
                                              pick="matrix"), _MIXES),
        Mutant("first image's class", _named(_G, "gc_first_class", "Uses class_idx[0] for every image.",
                                             pick="first"), _FIRST_CLASS, rule="one class per image"),
        Mutant("first image only", _named(_G, "gc_first_image", "Computes the first image only.", first_only=True),
               _ONLY_FIRST),
        Mutant("normalised", _named(_G, "gc_normalised", "Divides each map by its maximum.", normalise=True),
               "the map was normalised", rule="unnormalised"),
        Mutant("upsampled", _named(_G, "gc_upsampled", "Upsamples the map to the image size.", upsample=True),
               "return the map at the layer's resolution", rule="at the layer's resolution"),
        Mutant("images.requires_grad_()", _named(_G, "gc_in_place", "Calls requires_grad_ on the caller's images.",
                                                 copy=False), "modified its argument `images` in place"),
    ],
    "occlusion_map": [
        Mutant("sign flipped", _named(_O, "occ_sign", "Returns S(occluded) - S(original).", sign=-1),
               "the sign is flipped", rule="the drop S(x) - S(x with the patch)"),
        Mutant("occluded scores", _named(_O, "occ_scores", "Returns the occluded scores.", drop=False),
               "scores of the occluded images"),
        Mutant("softmax probability", _named(_O, "occ_prob", "Uses the softmax probability.", score="prob"),
               "drop of the softmax probability", rule="the logit of labels[n]"),
        Mutant("last position missing", _named(_O, "occ_short", "Counts (H - patch) // stride positions.",
                                               count="short"), "the last position is missing",
               rule="rows = (H - patch) // stride + 1"),
        Mutant("stride ignored", _named(_O, "occ_no_stride", "Slides the patch one pixel at a time.",
                                        count="ignore stride"), "the stride is ignored"),
        Mutant("H // stride positions", _named(_O, "occ_ceil", "Counts ceil(H / stride) positions.", count="ceil"),
               "the patch must stay inside the image", rule="as long as the patch fits"),
        Mutant("rows and columns swapped", _named(_O, "occ_swap", "Returns the map transposed.", swap=True),
               "rows and columns are swapped"),
        Mutant("mean fill", occlusion_mean_fill, "filled with the image's mean", rule="set to 0 in every channel"),
        Mutant("first image's label", _named(_O, "occ_first", "Uses labels[0] for every image.", pick="first"),
               _FIRST_CLASS),
        Mutant("positions at i * patch", _named(_O, "occ_step_patch", "Puts patch i at row i * patch.",
                                                step="patch"), "starts at row i * stride"),
        Mutant("images occluded in place", _named(_O, "occ_in_place", "Writes the zeros into the caller's images.",
                                                  copy=False), "modified its argument `images` in place"),
        Mutant("first image only", _named(_O, "occ_first_image", "Computes the first image only.", first_only=True),
               _ONLY_FIRST),
    ],
}

ALTERNATIVES = {
    "saliency_map": [Alternative("one image at a time", saliency_by_rows),
                     Alternative("one-hot backward into a copy", saliency_one_hot_backward)],
    "class_activation_map": [Alternative("einsum", cam_einsum), Alternative("bmm", cam_bmm)],
    "grad_cam": [Alternative("tensor hook (pytorch-grad-cam style)", grad_cam_tensor_hook),
                 Alternative("forward hook returning a clone", grad_cam_student)],
    "occlusion_map": [Alternative("batched masks", occlusion_batched_masks),
                      Alternative("loops over positions", occlusion_student)],
}
