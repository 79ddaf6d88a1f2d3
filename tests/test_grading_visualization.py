"""06_visualization through nbgrader: release, submit correct / blank / wrong-but-passing-visible, autograde,
exact per-cell scores."""
from __future__ import annotations

import nbformat
import pytest

from notebook_tools import REPO, run_blank_release, solved_release, submit_and_autograde, text

pytestmark = pytest.mark.slow

ASSIGNMENT = "06_visualization"
SOURCE = REPO / "notebooks" / ASSIGNMENT / "visualization.ipynb"
POINTS = {"test_saliency_map": 2, "test_class_activation_map": 2, "test_grad_cam": 5, "test_occlusion_map": 2}

# Passes every visible grad_cam case, fails a hidden one: a frozen model is handled by letting the TARGET
# LAYER's parameters require gradients (and restoring them), which fails for a layer without parameters
# (a ReLU) in a frozen model. The visible frozen case targets conv1, which has parameters.
SNEAKY_GRAD_CAM = '''
def grad_cam(model, target_layer, images, class_idx):
    store = {}

    def hook(module, inputs, output):
        store["A"] = output
        return output.clone()

    flags = [(p, p.requires_grad) for p in target_layer.parameters()]
    for p, _ in flags:
        p.requires_grad_(True)
    was_training = model.training
    model.eval()
    handle = target_layer.register_forward_hook(hook)
    try:
        logits = model(images)
        scores = logits.gather(1, class_idx[:, None]).sum()
        (grads,) = torch.autograd.grad(scores, store["A"])
    finally:
        handle.remove()
        model.train(was_training)
        for p, flag in flags:
            p.requires_grad_(flag)
    alpha = grads.mean(dim=(2, 3), keepdim=True)
    return F.relu((alpha * store["A"]).sum(dim=1)).detach()
'''


def _released(course):
    return course / "release" / ASSIGNMENT / "visualization.ipynb"


def _variants(course) -> dict[str, nbformat.NotebookNode]:
    return {"vis_correct": solved_release(_released(course), SOURCE),
            "vis_blank": nbformat.read(_released(course), as_version=4),
            "vis_sneaky": solved_release(_released(course), SOURCE, {"grad_cam": SNEAKY_GRAD_CAM})}


EXPECTED = {
    "vis_correct": POINTS,
    "vis_blank": {k: 0 for k in POINTS},
    "vis_sneaky": {**POINTS, "test_grad_cam": 0},
}


def test_sneaky_grad_cam_passes_visible_and_fails_hidden():
    namespace: dict = {}
    exec("import torch\nimport torch.nn.functional as F\n" + SNEAKY_GRAD_CAM, namespace)
    from lecturelib.checks import run_suite
    assert run_suite("grad_cam", namespace["grad_cam"], "visible").passed
    hidden = run_suite("grad_cam", namespace["grad_cam"], "hidden")
    assert not hidden.passed
    assert any("frozen" in case.message for case in hidden.failures)


def test_blank_release_runs_clean_with_the_student_package(course):
    """Only the four test cells fail (not implemented yet); every demo and widget cell runs on the stubs."""
    nb = run_blank_release(_released(course), course)
    assert any("Implement grad_cam above" in text(c) for c in nb.cells)


@pytest.fixture(scope="module")
def graded(course):
    return submit_and_autograde(course, ASSIGNMENT, _variants(course), "visualization")


def test_autograde_scores_every_cell_exactly(graded):
    for student, expected in EXPECTED.items():
        assert {k: v for k, v in graded[student].items() if k in POINTS} == expected, student
