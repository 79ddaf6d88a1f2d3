"""The checkers of the instance-segmentation exercises: the oracles against the library operations, and what the
mutant library (lecturelib/hidden/mutants/instance_segmentation.py, run by tests/test_audit.py) does not pin."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from check_tools import fails
from lecturelib import reference as ref
from lecturelib.checks import EXERCISES, run_suite
from lecturelib.checks import instance_segmentation as checks
from lecturelib.detection import roi_align
from lecturelib.hidden import instance_segmentation as hidden
from lecturelib.hidden.mutants import instance_segmentation as library

TOPIC = [name for name, ex in EXERCISES.items() if ex.topic == "instance_segmentation"]


def test_the_five_exercises_are_registered():
    assert set(TOPIC) == {"mask_targets", "mask_loss", "paste_masks", "keypoint_targets", "decode_keypoints"}


# ---------------------------------------------------------------------------------------------
# The oracles against the library operations they stand in for
# ---------------------------------------------------------------------------------------------
def test_mask_oracle_is_roi_align_of_lecturelib_detection():
    rng = np.random.default_rng(0)
    masks = hidden._random_masks(rng, 3, 30, 41)
    for aligned in (True, False):
        for box in ([2.3, 4.1, 20.7, 17.2], [-3.4, -2.2, 10.1, 35.6], [30.2, 1.7, 44.9, 9.3]):
            lib = roi_align(torch.from_numpy(masks[1:2, None].astype(np.float64)),
                            torch.tensor([[0.0, *box]], dtype=torch.float64), (9, 9), 1.0, 2, aligned)[0, 0]
            assert np.allclose(hidden._roi_align_mask(masks[1], np.array(box), 9, aligned), lib.numpy(), atol=1e-12)


def test_paste_oracle_is_grid_sample_with_pixel_centres():
    rng = np.random.default_rng(1)
    mask = rng.random((7, 7))
    box = (3.3, -2.1, 17.6, 9.8)
    h, w = 13, 21
    xs = (torch.arange(w, dtype=torch.float64) + 0.5 - box[0]) / (box[2] - box[0]) * 2 - 1
    ys = (torch.arange(h, dtype=torch.float64) + 0.5 - box[1]) / (box[3] - box[1]) * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None]
    lib = F.grid_sample(torch.from_numpy(mask)[None, None], grid, align_corners=False)[0, 0]
    assert np.allclose(hidden._paste_soft(mask, box, h, w), lib.numpy(), atol=1e-12)


# ---------------------------------------------------------------------------------------------
# mask_targets
# ---------------------------------------------------------------------------------------------
TARGET_BUGS = [library.targets_whole_mask, library.targets_rounded_box, library.targets_roi_pool,
               library.targets_not_thresholded]


@pytest.mark.parametrize("bug", TARGET_BUGS, ids=[b.__name__ for b in TARGET_BUGS])
def test_targets_bugs_fail_hidden_without_values(bug):
    message = fails("mask_targets", bug, "hidden")
    assert "hidden case" in message and "expected" not in message.split("likely cause")[0].split("\n", 2)[-1]


def test_a_rounded_box_is_named_despite_values_at_exactly_one_half():
    """A box rounded to whole pixels samples a binary mask at exactly 0.5 often, where float32 falls on either
    side: the known mistake counts only the pixels where its own value is unambiguous."""
    assert "likely cause: the box was rounded to whole pixels" in fails("mask_targets", library.targets_rounded_box,
                                                                       "hidden")


def test_the_checkers_oracles_are_not_in_the_student_package():
    """The oracles live grader-side only: nothing in checks/instance_segmentation.py, plugged in as the
    student's function, passes a suite."""
    assert not any(hasattr(checks, name) for name in ("_soft_targets", "_roi_align_mask", "_bce_logits",
                                                       "_paste_soft", "_bilinear_zero"))
    candidates = [value for value in vars(checks).values()
                  if callable(value) and getattr(value, "__module__", None) == checks.__name__]
    assert candidates
    for name in TOPIC:
        for suite in ("visible", "hidden"):
            for fn in candidates:
                assert not run_suite(name, fn, suite).passed, (name, suite, fn)


# ---------------------------------------------------------------------------------------------
# mask_loss
# ---------------------------------------------------------------------------------------------
def _pick(x, labels):
    return x[torch.arange(len(labels)), labels]


def test_library_bce_is_refused():
    def with_library(x, l, t):
        return F.binary_cross_entropy_with_logits(_pick(x, l), t)
    assert "binary_cross_entropy_with_logits" in fails("mask_loss", with_library)
    assert "nn.BCELoss" in fails("mask_loss", lambda x, l, t: torch.nn.BCELoss()(_pick(x, l).sigmoid(), t))


def test_sigmoid_then_log_is_finite_only_for_small_logits():
    """The lecture's point, computed: with logits of 150 the naive loss is inf, the stable one is not."""
    x = torch.tensor([[[[150.0]]], [[[-150.0]]]], dtype=torch.float64)
    t = torch.tensor([[[0.0]], [[1.0]]], dtype=torch.float64)
    naive = library.loss_naive_log(x, torch.zeros(2, dtype=torch.long), t)
    assert not torch.isfinite(naive)
    assert float(ref.mask_loss(x, torch.zeros(2, dtype=torch.long), t)) == pytest.approx(150.0)


# ---------------------------------------------------------------------------------------------
# paste_masks
# ---------------------------------------------------------------------------------------------
PASTE_BUGS = [library.paste_pixel_corners, library.paste_align_corners, library.paste_plus_one,
              library.paste_not_resized]


@pytest.mark.parametrize("bug", PASTE_BUGS, ids=[b.__name__ for b in PASTE_BUGS])
def test_paste_bugs_fail_hidden(bug):
    assert "hidden case" in fails("paste_masks", bug, "hidden")


def test_windowed_reference_equals_the_full_image_computation():
    """The reference resamples only near each box; over the whole image the values must be the same."""
    gen = torch.Generator().manual_seed(3)
    masks = torch.rand(30, 12, 12, generator=gen, dtype=torch.float64)
    corner = torch.rand(30, 2, generator=gen, dtype=torch.float64) * 140 - 20
    boxes = torch.cat([corner, corner + torch.rand(30, 2, generator=gen, dtype=torch.float64) * 90 + 0.5], 1)
    for size in ((100, 130), (150, 170)):                   # whole-image and windowed paths
        for threshold in (0.2, 0.5, 0.8):
            expected = library.paste_loop(masks, boxes, size, threshold)
            assert torch.equal(ref.paste_masks(masks, boxes, size, threshold), expected)


def test_full_mask_fills_exactly_the_pixels_whose_centres_lie_in_the_box():
    """The property behind the visible all-ones case, checked on the reference directly."""
    box = torch.tensor([[2.3, 1.6, 9.7, 7.2]])
    pasted = ref.paste_masks(torch.ones(1, 9, 9), box, (10, 12))[0]
    centres_x, centres_y = torch.arange(12) + 0.5, torch.arange(10) + 0.5
    inside = ((centres_y >= 1.6) & (centres_y <= 7.2))[:, None] & ((centres_x >= 2.3) & (centres_x <= 9.7))[None]
    assert torch.equal(pasted, inside)


def test_reference_rejects_bad_input_with_the_argument_named():
    with pytest.raises(ValueError, match="matched_idx"):
        ref.mask_targets(torch.zeros(2, 5, 5, dtype=torch.bool), torch.zeros(3, 4) + 1, torch.tensor([0, 1, 2]), 4)
    with pytest.raises(ValueError, match="labels"):
        ref.mask_loss(torch.zeros(2, 3, 4, 4), torch.tensor([0, 3]), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="x2 > x1"):
        ref.paste_masks(torch.ones(1, 4, 4), torch.tensor([[3.0, 1.0, 3.0, 5.0]]), (8, 8))
    with pytest.raises(TypeError, match="masks"):
        ref.paste_masks(np.ones((1, 4, 4)), torch.tensor([[0.0, 1.0, 3.0, 5.0]]), (8, 8))


# ---------------------------------------------------------------------------------------------
# keypoint_targets and decode_keypoints (issue 15)
# ---------------------------------------------------------------------------------------------
def test_keypoint_oracle_is_detectron2s_keypoints_to_heatmap():
    """The numpy oracle against a transcription of detectron2's keypoints_to_heatmap (mutants' alternative), on
    random points and on the exact edges of the edge cases."""
    for spec in (hidden.SPECS["keypoint_targets"] + hidden.VISIBLE["keypoint_targets"]):
        rng = np.random.default_rng(spec["seed"])
        rois = hidden._kp_rois(rng, spec["rois"], spec.get("edges", False), spec["S"])
        kp = hidden._kp_points(rng, rois, spec["points"], spec["S"], spec)
        targets, valid = hidden._kp_targets()(kp, rois, spec["S"])
        lib_t, lib_v = library.kp_targets_detectron2(torch.from_numpy(kp), torch.from_numpy(rois), spec["S"])
        assert np.array_equal(lib_v.numpy(), valid) and np.array_equal(lib_t.numpy(), targets), spec


def test_keypoint_edge_cases_hit_every_rule():
    """The edge specs put keypoints exactly on x1, x2, y1, y2 and inner cell boundaries; the outside specs just
    beyond each side: every boundary rule of the spec is decided by at least one keypoint."""
    spec = next(s for s in hidden.SPECS["keypoint_targets"] if s.get("edges"))
    rng = np.random.default_rng(spec["seed"])
    rois = hidden._kp_rois(rng, spec["rois"], True, spec["S"])
    kp = hidden._kp_points(rng, rois, spec["points"], spec["S"], spec)
    assert (kp[..., 0] == rois[:, 2:3]).any() and (kp[..., 1] == rois[:, 3:4]).any()
    assert (kp[..., 0] == rois[:, 0:1]).any() and (kp[..., 1] == rois[:, 1:2]).any()
    assert set(np.unique(kp[..., 2])) == {0.0, 1.0, 2.0}


def test_decode_keypoints_round_trip_of_one_hot_targets():
    """A one-hot heatmap at a keypoint's target cell decodes to within half a cell diagonal of the keypoint."""
    from lecturelib.data import make_shapes
    shapes = make_shapes(40, seed=1)
    kp = torch.from_numpy(np.concatenate(shapes.keypoints))
    rois = torch.from_numpy(np.concatenate(shapes.boxes)) + torch.tensor([-2.0, -2.0, 2.0, 2.0])
    for S in (7, 14):
        targets, valid = ref.keypoint_targets(kp, rois, S)
        onehot = torch.zeros(len(kp), kp.shape[1], S * S).scatter_(2, targets[..., None], 1.0)
        decoded = ref.decode_keypoints(onehot.reshape(len(kp), -1, S, S), rois)
        cell = ((rois[:, 2:] - rois[:, :2]) / S).norm(dim=1)[:, None].expand_as(valid)
        error = (decoded[..., :2] - kp[..., :2]).norm(dim=-1)
        assert (error[valid] <= 0.5 * cell[valid] + 1e-4).all()


KP_BUGS = [library.kp_targets_round, library.kp_targets_no_edge_rule, library.kp_targets_visible_only]


@pytest.mark.parametrize("bug", KP_BUGS, ids=[b.__name__ for b in KP_BUGS])
def test_keypoint_bugs_fail_hidden_without_values(bug):
    message = fails("keypoint_targets", bug, "hidden")
    assert "hidden case" in message and "likely cause" in message and "expected (" not in message


def test_decode_visible_failure_names_the_cause():
    message = fails("decode_keypoints", library.decode_corner)
    assert "likely cause: the point is the cell's top-left corner" in message


def test_keypoint_targets_must_return_a_pair():
    message = fails("keypoint_targets", lambda kp, rois, s: ref.keypoint_targets(kp, rois, s)[0])
    assert "expected a tuple (targets, valid)" in message


def test_keypoint_widget_uses_the_students_functions():
    """The explorer's view calls the functions it is given: a decoder that returns the RoI's corner shows there."""
    import matplotlib
    matplotlib.use("Agg")
    from lecturelib import instance_segmentation as inst
    box = inst.keypoint_explorer(ref.decode_keypoints, ref.keypoint_targets)
    view = box.interactive.result
    assert view["errors"] == [] and view["target"] is not None
    (x1, y1, x2, y2), S = view["box"], view["S"]
    assert abs(view["decoded"][0] - view["point"][0]) <= 0.5 * (x2 - x1) / S * 1.5 + 0.5

    def corner(heatmaps, rois):
        return torch.cat([rois[:, None, :2].expand(-1, heatmaps.shape[1], -1),
                          torch.zeros(len(rois), heatmaps.shape[1], 1)], -1)
    view = inst.keypoint_explorer(corner, ref.keypoint_targets).interactive.result
    assert view["decoded"] == [view["box"][0], view["box"][1]]

    def stub(*args):
        raise NotImplementedError
    view = inst.keypoint_explorer(stub, stub).interactive.result
    assert view["errors"] == ["implement decode_keypoints above", "implement keypoint_targets above"]
