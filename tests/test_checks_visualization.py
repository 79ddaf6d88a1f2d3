"""The checkers of the visualization exercises: references pass, realistic bugs fail with their cause."""
import pytest
import torch
import torch.nn.functional as F

from check_tools import fails
from lecturelib import reference as ref
from lecturelib.checks import EXERCISES, check
from lecturelib.checks.visualization import TinyCNN, model_state

VISUALIZATION = [name for name, ex in EXERCISES.items() if ex.topic == "visualization"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The checks use tiny tensors: with one thread they run 10-50x faster on a busy 2-core machine
    (two threads per process oversubscribe the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_four_exercises_are_registered():
    assert sorted(VISUALIZATION) == ["class_activation_map", "grad_cam", "occlusion_map", "saliency_map"]


# ---------------------------------------------------------------------------------------------
# Grad-CAM: a student-style implementation with switches for the classic bugs
# ---------------------------------------------------------------------------------------------
def student_grad_cam(model, target_layer, images, class_idx, *, relu=True, score="logit", weights="gradients",
                     remove="finally", mode="restore", grads="autograd", clone=True, pick="gather",
                     normalise=False, upsample=False):
    store = {}

    def hook(module, inputs, output):
        store["A"] = output
        return output.clone() if clone else None

    was_training = model.training
    if mode != "ignore":
        model.eval()
    handle = target_layer.register_forward_hook(hook)
    try:
        x = images.detach().requires_grad_(True)
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
    finally:
        if remove == "finally":
            handle.remove()
        if mode == "restore":
            model.train(was_training)
    if remove == "end":
        handle.remove()
    A = A.detach()
    if weights == "gradients":
        cam = (G.mean((2, 3), keepdim=True) * A).sum(1)
    elif weights == "activations":
        cam = (A.mean((2, 3), keepdim=True) * A).sum(1)
    else:  # element-wise
        cam = (G * A).sum(1)
    if relu:
        cam = F.relu(cam)
    if normalise:
        cam = cam / cam.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]
    if upsample:
        cam = F.interpolate(cam[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return cam


def tensor_hook_grad_cam(model, target_layer, images, class_idx):
    """An alternative correct implementation in the style of pytorch-grad-cam: a tensor hook catches
    the gradient, the activations are stored as a copy, the graph runs back to a copy of the input."""
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
        for m, mode in modes.items():
            m.train(mode) if False else setattr(m, "training", mode)
    weights = grads[0].mean(dim=(2, 3), keepdim=True)
    return torch.clamp((weights * acts[0]).sum(dim=1), min=0)


def test_student_style_implementation_without_bugs_passes_both_suites():
    check("grad_cam", student_grad_cam, verbose=False)
    check("grad_cam", student_grad_cam, suite="hidden", verbose=False)


def test_tensor_hook_implementation_passes_both_suites():
    check("grad_cam", tensor_hook_grad_cam, verbose=False)
    check("grad_cam", tensor_hook_grad_cam, suite="hidden", verbose=False)


GRAD_CAM_BUGS = [
    (dict(relu=False), "the ReLU is missing"),
    (dict(score="prob"), "gradients of the softmax probability"),
    (dict(weights="activations"), "alpha_k were computed from the activations"),
    (dict(weights="elementwise"), "multiplied element-wise"),
    (dict(remove="never"), "hooks left registered after your function returned"),
    (dict(remove="end"), "hooks left registered after your function raised"),
    (dict(mode="ignore"), "computed in train mode"),
    (dict(mode="eval only"), "changed mode after your function returned"),
    (dict(grads="backward"), "the parameters' .grad changed"),
    (dict(clone=False), "overwritten by the in-place ReLU"),
    (dict(pick="matrix"), "mixes the images' classes"),
    (dict(pick="first"), "class of the first image"),
    (dict(normalise=True), "normalised"),
    (dict(upsample=True), "return the map at the layer's resolution"),
]


@pytest.mark.parametrize("bug, cause", GRAD_CAM_BUGS, ids=[c for _, c in GRAD_CAM_BUGS])
@pytest.mark.parametrize("suite", ["visible", "hidden"])
def test_grad_cam_bugs_are_named(bug, cause, suite):
    def buggy(model, target_layer, images, class_idx):
        return student_grad_cam(model, target_layer, images, class_idx, **bug)

    message = fails("grad_cam", buggy, suite)
    assert cause in message, message


def test_hooks_left_registered_is_named_with_the_layer():
    message = fails("grad_cam", lambda *a: student_grad_cam(*a, remove="never"))
    assert "forward hook on" in message and "finally" in message


def test_full_backward_hook_with_in_place_relu_is_explained():
    def full_backward_hook_cam(model, target_layer, images, class_idx):
        store = {}
        h1 = target_layer.register_forward_hook(lambda m, i, o: store.__setitem__("A", o.detach().clone()))
        h2 = target_layer.register_full_backward_hook(lambda m, gi, go: store.__setitem__("G", go[0]))
        was = model.training
        model.eval()
        try:
            x = images.detach().requires_grad_(True)
            s = model(x).gather(1, class_idx[:, None]).sum()
            torch.autograd.grad(s, x)
        finally:
            h1.remove()
            h2.remove()
            model.train(was)
        return F.relu((store["G"].mean((2, 3), keepdim=True) * store["A"]).sum(1))

    message = fails("grad_cam", full_backward_hook_cam)
    assert "register_full_backward_hook" in message and "in-place ReLU" in message


def test_frozen_model_without_input_gradients_is_explained():
    def no_input_grad(model, target_layer, images, class_idx):
        store = {}
        h = target_layer.register_forward_hook(lambda m, i, o: (store.__setitem__("A", o), o.clone())[1])
        was = model.training
        model.eval()
        try:
            s = model(images).gather(1, class_idx[:, None]).sum()
            (G,) = torch.autograd.grad(s, store["A"])
        finally:
            h.remove()
            model.train(was)
        return F.relu((G.mean((2, 3), keepdim=True) * store["A"].detach()).sum(1))

    message = fails("grad_cam", no_input_grad)
    assert "frozen" in message and "requires_grad_(True)" in message


def test_unfreezing_parameters_is_named():
    def unfreeze(model, target_layer, images, class_idx):
        for p in model.parameters():
            p.requires_grad_(True)
        return student_grad_cam(model, target_layer, images, class_idx)

    message = fails("grad_cam", unfreeze)
    assert "requires_grad of the model's parameters changed" in message


def test_global_hooks_left_registered_are_seen():
    from torch.nn.modules.module import register_module_forward_hook
    model = TinyCNN(0)
    before = model_state(model)
    handle = register_module_forward_hook(lambda m, i, o: None)
    try:
        after = model_state(model)
    finally:
        handle.remove()
    assert after["hooks"] != before["hooks"]


def test_grad_cam_hidden_failure_reveals_no_values():
    message = fails("grad_cam", lambda *a: student_grad_cam(*a, relu=False), "hidden")
    assert "hidden case" in message and "first mismatch" not in message and "rel_error" not in message


def test_grad_cam_visible_failure_shows_values():
    message = fails("grad_cam", lambda *a: student_grad_cam(*a, relu=False))
    assert "first mismatch at index (" in message and "expected" in message


def test_reference_leaves_the_caller_state_alone_when_called_in_no_grad():
    model = TinyCNN(3, bn=True).train()
    images = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    before = model_state(model)
    with torch.no_grad():
        cam = ref.grad_cam(model, model.conv2, images, torch.tensor([0, 1]))
    assert cam.shape == (2, 4, 4) and cam.abs().sum() > 0
    after = model_state(model)
    assert before["training"] == after["training"] and before["hooks"] == after["hooks"]


# ---------------------------------------------------------------------------------------------
# Saliency
# ---------------------------------------------------------------------------------------------
def student_saliency(model, images, labels, *, reduce="max", absolute="before", score="logit", pick="gather"):
    x = images.detach().clone().requires_grad_(True)
    logits = model(x)
    if score == "prob":
        logits = logits.softmax(1)
    elif score == "loss":
        logits = -F.cross_entropy(logits, labels, reduction="none")[:, None].expand(-1, logits.shape[1])
    if pick == "gather":
        s = logits.gather(1, labels[:, None]).sum()
    else:
        s = logits[:, labels[0]].sum()
    (g,) = torch.autograd.grad(s, x)
    if absolute == "before":
        g = g.abs()
    out = {"max": g.amax(1), "sum": g.sum(1), "mean": g.mean(1)}[reduce]
    return out.abs() if absolute == "after" else out


def test_saliency_student_style_passes_both_suites():
    check("saliency_map", student_saliency, verbose=False)
    check("saliency_map", student_saliency, suite="hidden", verbose=False)


@pytest.mark.parametrize("bug, cause", [
    (dict(reduce="sum"), "summed over the colour channels"),
    (dict(reduce="mean"), "averaged over the colour channels"),
    (dict(absolute="none"), "the absolute value is missing"),
    (dict(absolute="after"), "the absolute value came after the maximum"),
    (dict(score="prob"), "gradient of the softmax probability"),
    (dict(score="loss"), "log-probability"),
    (dict(pick="first"), "class of the first image"),
])
def test_saliency_bugs_are_named(bug, cause):
    message = fails("saliency_map", lambda m, x, y: student_saliency(m, x, y, **bug))
    assert cause in message, message


def test_saliency_without_channel_reduction_is_named():
    def per_channel(model, images, labels):
        x = images.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(x).gather(1, labels[:, None]).sum(), x)
        return g.abs()

    assert "maximum of |gradient| over the colour channels" in fails("saliency_map", per_channel)


# ---------------------------------------------------------------------------------------------
# CAM
# ---------------------------------------------------------------------------------------------
def student_cam(features, fc_weight, class_idx, *, bug=None):
    w = fc_weight[class_idx]
    if bug == "transposed":
        w = fc_weight[:, class_idx].T
    if bug == "first":
        w = fc_weight[class_idx[:1]].expand(len(class_idx), -1)
    cam = (w[:, :, None, None] * features).sum(1)
    if bug == "relu":
        cam = F.relu(cam)
    if bug == "mean":
        cam = cam / features.shape[1]
    if bug == "hw":
        cam = cam / (features.shape[2] * features.shape[3])
    return cam


def test_cam_student_style_passes_both_suites():
    check("class_activation_map", student_cam, verbose=False)
    check("class_activation_map", student_cam, suite="hidden", verbose=False)


@pytest.mark.parametrize("bug, cause", [
    ("relu", "CAM has no ReLU"),
    ("mean", "the channels were averaged"),
    ("hw", "divided by h * w"),
    ("transposed", "row c holds the weights of class c"),
    ("first", "class of the first image"),
])
def test_cam_bugs_are_named(bug, cause):
    message = fails("class_activation_map", lambda f, w, c: student_cam(f, w, c, bug=bug))
    assert cause in message, message


def test_cam_gap_identity_message():
    message = fails("class_activation_map", lambda f, w, c: student_cam(f, w, c, bug="relu"))
    assert "spatial mean of the map plus the bias is not the class score" in message


# ---------------------------------------------------------------------------------------------
# Occlusion
# ---------------------------------------------------------------------------------------------
def student_occlusion(model, images, labels, patch, stride, *, sign=1, drop=True, score="logit",
                      baseline="zero", count="right", swap=False):
    n, _, h, w = images.shape
    rows = (h - patch) // stride + 1 if count == "right" else (h - patch) // stride
    cols = (w - patch) // stride + 1 if count == "right" else (w - patch) // stride
    if count == "ignore stride":
        rows, cols, stride = h - patch + 1, w - patch + 1, 1

    def s(x):
        logits = model(x)
        return (logits.softmax(1) if score == "prob" else logits).gather(1, labels[:, None])[:, 0]

    out = images.new_zeros(n, rows, cols)
    with torch.no_grad():
        base = s(images)
        for i in range(rows):
            for j in range(cols):
                occ = images.clone()
                fill = 0.0 if baseline == "zero" else images.mean()
                occ[:, :, i * stride: i * stride + patch, j * stride: j * stride + patch] = fill
                value = base - s(occ) if drop else s(occ)
                out[:, i, j] = sign * value
    return out.transpose(1, 2) if swap else out


def test_occlusion_student_style_passes_both_suites():
    check("occlusion_map", student_occlusion, verbose=False)
    check("occlusion_map", student_occlusion, suite="hidden", verbose=False)


@pytest.mark.parametrize("bug, cause", [
    (dict(sign=-1), "the sign is flipped"),
    (dict(drop=False), "scores of the occluded images"),
    (dict(score="prob"), "drop of the softmax probability"),
    (dict(count="short"), "the last position is missing"),
    (dict(count="ignore stride"), "the stride is ignored"),
    (dict(swap=True), "rows and columns are swapped"),
])
def test_occlusion_bugs_are_named(bug, cause):
    message = fails("occlusion_map", lambda m, x, y, p, s: student_occlusion(m, x, y, p, s, **bug))
    assert cause in message, message


def test_occlusion_mean_baseline_is_named():
    def mean_fill(model, images, labels, patch, stride):
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

    assert "filled with the image's mean" in fails("occlusion_map", mean_fill)


# ---------------------------------------------------------------------------------------------
# Facts from the notes, checked on the reference
# ---------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------
# The isolated grader: calls run on unpickled copies, the verdict comes from plain outcomes only
# ---------------------------------------------------------------------------------------------
def _isolated_verdicts(fn, suite="visible"):
    """What lecturelib.grading does: the calls go to the grader's own copy of the runner as a payload
    (torch.save, so the models are unpickled copies), the outcomes come back as a JSON reply of plain data,
    and are verified against freshly built cases."""
    from lecturelib.checks.core import build_cases, verify_case
    from lecturelib.grading import protocol

    _, cases = build_cases("grad_cam", suite)
    payload, nonces = protocol.request(cases, EXERCISES["grad_cam"].forbidden)
    reply = eval(protocol.collector_expression("fn", payload, "n0"), {"fn": fn})
    outcomes, forbidden, problems = protocol.read_reply(repr(reply), nonces, [len(c.calls) for c in cases])
    assert not problems
    return [verify_case(case, outcome, used) for case, outcome, used in zip(cases, outcomes, forbidden)]


def test_isolated_grading_passes_the_reference_and_keeps_the_callers_grads():
    assert all(r.passed for r in _isolated_verdicts(ref.grad_cam)), "pickled models must keep .grad"


def test_isolated_grading_sees_hooks_left_registered():
    results = _isolated_verdicts(lambda *a: student_grad_cam(*a, remove="never"))
    assert not any(r.passed for r in results)
    assert "hooks left registered" in results[0].message
