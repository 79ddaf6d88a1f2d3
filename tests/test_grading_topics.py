"""Each topic's notebook through nbgrader (segmentation's is tests/test_grading.py): the blank release runs clean on
the student package, and after autograding every test cell scores exactly: full points for the instructor's
answers, 0 for the release as handed out, and 0 for exactly the cells whose exercise a realistic bug breaks.

The points are read from the source notebook's nbgrader metadata; a topic here is only its bugs.
"""
from __future__ import annotations

import dataclasses

import nbformat
import pytest

from notebook_tools import (REPO, answers, graded_cells, run_blank_release, solved_release, strip_markers,
                            submit_and_autograde, text)

pytestmark = pytest.mark.slow


@dataclasses.dataclass(frozen=True)
class Topic:
    """A notebook and one submission with bugs: ``replace`` swaps whole answers, ``edits`` applies (old, new)
    replacements to the instructor's answers; ``broken`` lists the exercises whose test cells must score 0.

    ``sneaky`` names an exercise whose bug passes the visible suite: its hidden suite must fail exactly the cases
    ``hidden_failures`` (or, if None, some case whose message mentions ``hidden_message``).
    """

    assignment: str
    notebook: str
    student: str
    replace: dict = dataclasses.field(default_factory=dict)
    edits: dict = dataclasses.field(default_factory=dict)
    broken: tuple = ()
    sneaky: str | None = None
    hidden_failures: tuple | None = None
    hidden_message: str | None = None
    blank_output: str | None = None      # a line the blank release prints instead of a result

    @property
    def source(self):
        return REPO / "notebooks" / self.assignment / f"{self.notebook}.ipynb"

    def released(self, course):
        return course / "release" / self.assignment / f"{self.notebook}.ipynb"

    def points(self) -> dict[str, float]:
        return {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"]["points"]
                for c in graded_cells(nbformat.read(self.source, as_version=4))}

    def buggy_answer(self, exercise: str) -> str:
        """The answer of ``exercise`` in the submission with bugs."""
        if exercise in self.replace:
            return self.replace[exercise]
        answer = strip_markers(answers(nbformat.read(self.source, as_version=4))[exercise])
        for old, new in self.edits.get(exercise, ()):
            assert old in answer, (exercise, old)
            answer = answer.replace(old, new)
        return answer


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

# Stacks one RoIAlign per RoI: right whenever there is a RoI (every visible case), a crash for R = 0 (hidden).
SNEAKY_MASK_TARGETS = '''def mask_targets(gt_masks, boxes, matched_idx, M):
    crops = [roi_align(gt_masks[matched_idx[r]].float()[None, None], [boxes[r:r + 1].float()], (M, M),
                       1.0, 2, True)[0, 0] for r in range(len(boxes))]
    return (torch.stack(crops) >= 0.5).float()
'''

TOPICS = [
    # patchify checks only the height (the visible error case), not the width (a hidden case): with W not divisible
    # the reshape raises a RuntimeError instead of the ValueError the exercise asks for. top_k_routing takes the
    # softmax over all experts, then the top k, not renormalised (Switch's k = 1 choice applied to k > 1).
    Topic("01_transformers", "transformers", "tf_two_bugs",
          edits={"patchify": [("    if h % p or w % p:\n", "    if h % p:\n")],
                 "top_k_routing": [("""    values, indices = router_logits.topk(k, dim=-1)
    return indices, values.softmax(dim=-1)""", """    values, indices = router_logits.softmax(dim=-1).topk(k, dim=-1)
    return indices, values""")]},
          broken=("patchify", "top_k_routing"), sneaky="patchify",
          hidden_failures=("hidden case 7 (W not divisible: must raise ValueError)",)),
    # Two realistic slips: NMS suppressing at IoU == threshold, and the zero-IoU trap of low-quality matching;
    # rpn_proposals calls the student's own nms (an allowed building block), so the NMS slip costs its points too.
    Topic("03_detection", "detection", "detection_slips",
          edits={"nms": [("suppressed |= iou[i] > iou_threshold", "suppressed |= iou[i] >= iou_threshold")],
                 "label_anchors": [("ties = (iou == best_per_box) & (best_per_box > 0)",
                                    "ties = iou == best_per_box")]},
          broken=("nms", "label_anchors", "rpn_proposals")),
    # Detects infeasibility only when a whole row is +inf (the visible case), not when two rows compete for one
    # column (a hidden case): the search then runs out of finite paths and the assignment it returns is wrong.
    Topic("04_detr", "detr", "detr_sneaky",
          edits={"hungarian_match": [
              ('''            if reached == np.inf:
                raise ValueError("cost matrix is infeasible: no complete assignment avoids the +inf entries")
''', '''            if reached == np.inf:
                break
'''),
              ("    if cost.shape[0] > cost.shape[1]:", '''    if cost.size and np.isinf(cost).all(axis=1).any():
        raise ValueError("cost matrix is infeasible: a row has only forbidden entries")
    if cost.shape[0] > cost.shape[1]:''')]},
          broken=("hungarian_match",), sneaky="hungarian_match",
          hidden_failures=("hidden case 15 (no complete assignment: must raise ValueError)",)),
    Topic("05_instance_segmentation", "instance_segmentation", "inst_partial",
          replace={"mask_targets": SNEAKY_MASK_TARGETS},
          edits={"paste_masks": [("align_corners=False)\n    return pasted[:, 0] >= threshold",
                                  "align_corners=True)\n    return pasted[:, 0] >= threshold")],
                 "decode_keypoints": [("x = x1 + (col + 0.5) * (x2 - x1) / S", "x = x1 + col * (x2 - x1) / S")]},
          broken=("mask_targets", "paste_masks", "decode_keypoints"), sneaky="mask_targets",
          hidden_failures=("hidden case 6 (no RoIs)",)),
    Topic("06_visualization", "visualization", "vis_sneaky", replace={"grad_cam": SNEAKY_GRAD_CAM},
          broken=("grad_cam",), sneaky="grad_cam", hidden_message="frozen",
          blank_output="Implement grad_cam above"),
]


@pytest.fixture(scope="module", params=TOPICS, ids=lambda t: t.assignment)
def topic(request) -> Topic:
    return request.param


@pytest.mark.parametrize("topic", [t for t in TOPICS if t.sneaky], ids=lambda t: t.assignment)
def test_sneaky_submission_passes_visible_but_not_hidden(topic):
    from lecturelib.checks import run_suite
    namespace: dict = {}
    exec("import numpy as np\nimport torch\nimport torch.nn.functional as F\nfrom lecturelib.rois import roi_align\n"
         + topic.buggy_answer(topic.sneaky), namespace)
    fn = namespace[topic.sneaky]
    assert run_suite(topic.sneaky, fn, "visible").passed
    hidden = run_suite(topic.sneaky, fn, "hidden")
    if topic.hidden_failures is not None:
        assert tuple(c.name for c in hidden.failures) == topic.hidden_failures
    else:
        assert not hidden.passed
        assert any(topic.hidden_message in case.message for case in hidden.failures)


def test_blank_release_runs_clean_with_the_student_package(course, topic):
    """Only the test cells fail ('not implemented yet'); demos, widgets and the model cells run on the stubs."""
    nb = run_blank_release(topic.released(course), course)
    if topic.blank_output:
        assert any(topic.blank_output in text(c) for c in nb.cells)


@pytest.fixture(scope="module")
def graded(course, topic):
    released = topic.released(course)
    prefix = topic.student.split("_")[0]
    submissions = {f"{prefix}_correct": solved_release(released, topic.source),
                   f"{prefix}_blank": nbformat.read(released, as_version=4),
                   topic.student: solved_release(released, topic.source, topic.replace, topic.edits)}
    return submit_and_autograde(course, topic.assignment, submissions, topic.notebook)


def test_autograde_scores_every_cell_exactly(topic, graded):
    points = topic.points()
    prefix = topic.student.split("_")[0]
    expected = {f"{prefix}_correct": points, f"{prefix}_blank": {k: 0 for k in points},
                topic.student: {k: 0 if k.removeprefix("test_") in topic.broken else v for k, v in points.items()}}
    for student, want in expected.items():
        assert {k: v for k, v in graded[student].items() if k in points} == want, student
