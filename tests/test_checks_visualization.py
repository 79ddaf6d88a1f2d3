"""The checkers of the visualization exercises: what the mutant library (lecturelib/hidden/mutants/visualization.py,
run by tests/test_audit.py) does not measure: messages' format, what hidden failures reveal, the model's state seen
through the isolated grader."""
import pytest
import torch
import torch.nn.functional as F

from check_tools import fails
from lecturelib import reference as ref
from lecturelib.checks import EXERCISES
from lecturelib.checks.visualization import TinyCNN, model_state
from lecturelib.hidden.mutants.visualization import _student_cam as student_cam
from lecturelib.hidden.mutants.visualization import _student_grad_cam as student_grad_cam

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
# Grad-CAM (the realistic wrong implementations and the alternatives are in the mutant library,
# lecturelib/hidden/mutants/visualization.py, which tests/test_audit.py runs)
# ---------------------------------------------------------------------------------------------
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
# CAM
# ---------------------------------------------------------------------------------------------
def test_cam_gap_identity_message():
    message = fails("class_activation_map", lambda f, w, c: student_cam(f, w, c, bug="relu"))
    assert "spatial mean of the map plus the bias is not the class score" in message


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
