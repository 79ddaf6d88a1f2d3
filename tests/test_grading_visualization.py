"""06_visualization through nbgrader: release, submit correct / blank / wrong-but-passing-visible, autograde,
exact per-cell scores."""
from __future__ import annotations

import nbformat
import pytest

from notebook_tools import REPO, answers as _answers, errors, execute, replace_solution, strip_markers, text

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
    answers = {gid: strip_markers(src) for gid, src in _answers(nbformat.read(SOURCE, as_version=4)).items()}

    def student_copy():
        nb = nbformat.read(_released(course), as_version=4)
        for gid, answer in answers.items():
            replace_solution(nb, gid, answer)
        return nb

    sneaky = student_copy()
    replace_solution(sneaky, "grad_cam", SNEAKY_GRAD_CAM)
    return {"vis_correct": student_copy(), "vis_blank": nbformat.read(_released(course), as_version=4),
            "vis_sneaky": sneaky}


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


def test_release_hides_solutions_and_keeps_the_stub(course):
    body = _released(course).read_text()
    assert "BEGIN SOLUTION" not in body and "BEGIN HIDDEN TESTS" not in body
    assert "lecturelib.reference" not in body and ".register_forward_hook(hook)\\n" not in body
    nb = nbformat.read(_released(course), as_version=4)
    stubs = [c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert len(stubs) == 4 and all("raise NotImplementedError()" in source for source in stubs)


def test_blank_release_runs_clean_with_the_student_package(course):
    """Only the four test cells fail (not implemented yet); every demo and widget cell runs on the stubs."""
    student_pkg = course / "release" / "student_package"
    nb = execute(_released(course), env={"PYTHONPATH": str(student_pkg), "NBGRADER_EXECUTION": "autograde"})
    graded = {i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade")}
    failures = errors(nb)
    assert {i for i, _, _ in failures} == graded, failures
    for _, ename, evalue in failures:
        assert ename == "CheckFailed" and "not implemented yet" in evalue
    assert any("Implement grad_cam above" in text(c) for c in nb.cells)


@pytest.fixture(scope="module")
def graded(course):
    from lecturelib import course as tool
    for student, nb in _variants(course).items():
        folder = course / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / "visualization.ipynb")
        (folder / "timestamp.txt").write_text("2026-11-20 12:00:00.000000 UTC")
    return tool.autograde(ASSIGNMENT)


def test_autograde_scores_every_cell_exactly(graded, course):
    assert all(ok for (student, _), ok in graded.items() if student in EXPECTED), graded
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for student, expected in EXPECTED.items():
            scores = {g.name: g.score for g in gb.find_submission_notebook(
                "visualization", ASSIGNMENT, student).grades if g.cell_type == "code"}
            assert {k: v for k, v in scores.items() if k in POINTS} == expected, student
