"""The checkers of the instance-segmentation exercises: references and alternative correct implementations
pass, realistic bugs fail with their cause named."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from check_tools import fails
from lecturelib import reference as ref
from lecturelib.checks import EXERCISES, run_suite
from lecturelib.checks import instance_segmentation as checks
from lecturelib.detection import roi_align, roi_pool
from lecturelib.hidden import instance_segmentation as hidden

TOPIC = [name for name, ex in EXERCISES.items() if ex.topic == "instance_segmentation"]


def test_the_three_exercises_are_registered():
    assert set(TOPIC) == {"mask_targets", "mask_loss", "paste_masks"}


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
def targets_with_library_roi_align(gt_masks, boxes, matched_idx, M):
    """Alternative correct answer: lecturelib.detection.roi_align on a list of boxes, bool output."""
    masks = gt_masks[matched_idx].float()[:, None]
    if len(boxes) == 0:
        return torch.zeros(0, M, M, dtype=torch.bool)
    out = torch.stack([roi_align(masks[r:r + 1], [boxes[r:r + 1]], (M, M), 1.0, 2, True)[0, 0]
                       for r in range(len(boxes))])
    return out >= 0.5


def _targets(box_fn=lambda b, h, w: b, aligned=True, threshold=True, transpose=False, matched=None, pool=False):
    def fn(gt_masks, boxes, matched_idx, M):
        h, w = gt_masks.shape[1:]
        idx = matched_idx if matched is None else torch.arange(len(boxes)) % len(gt_masks)
        masks = gt_masks[idx].float()[:, None]
        b = torch.stack([box_fn(x, h, w) for x in boxes]) if len(boxes) else boxes
        rois = torch.cat([torch.arange(len(b), dtype=torch.float32)[:, None], b], 1)
        if pool:
            soft = roi_pool(masks, rois, (M, M), 1.0)[:, 0]
        else:
            soft = roi_align(masks, rois, (M, M), 1.0, 2, aligned)[:, 0]
        out = (soft >= 0.5).float() if threshold else soft
        return out.transpose(1, 2) if transpose else out
    return fn


TARGET_BUGS = [
    (_targets(box_fn=lambda b, h, w: torch.tensor([0.0, 0.0, w, h])), "the whole mask was resized"),
    (_targets(box_fn=lambda b, h, w: b.round()), "rounded to whole pixels"),
    (_targets(pool=True), "this is RoIPool"),
    (_targets(threshold=False), "values other than 0 and 1"),
    (_targets(box_fn=lambda b, h, w: b[[1, 0, 3, 2]]), "x and y are swapped"),
    (_targets(transpose=True), "transposed"),
    (_targets(aligned=False), "aligned=True"),
    (_targets(matched="arange"), "gt_masks[matched_idx[r]]"),
]


def test_targets_alternative_implementation_passes_both_suites():
    for suite in ("visible", "hidden"):
        assert run_suite("mask_targets", targets_with_library_roi_align, suite).passed


@pytest.mark.parametrize("bug,cause", TARGET_BUGS, ids=[c for _, c in TARGET_BUGS])
def test_targets_bugs_are_named(bug, cause):
    message = fails("mask_targets", bug)
    assert "likely cause" in message and cause in message, message


@pytest.mark.parametrize("bug,cause", TARGET_BUGS[:4], ids=[c for _, c in TARGET_BUGS[:4]])
def test_targets_bugs_fail_hidden_without_values(bug, cause):
    message = fails("mask_targets", bug, "hidden")
    assert "hidden case" in message and "expected" not in message.split("likely cause")[0].split("\n", 2)[-1]


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
def loss_with_softplus(mask_logits, labels, targets):
    """Alternative correct answer: softplus(x) - x * t, gathered with index_select-style indexing."""
    x = mask_logits.gather(1, labels[:, None, None, None].expand(-1, 1, *mask_logits.shape[2:]))[:, 0]
    if len(x) == 0:
        return mask_logits.sum() * 0
    return (F.softplus(x) - x * targets).mean()


def _pick(x, labels):
    return x[torch.arange(len(labels)), labels]


def _bce_probs(p, t):
    """Binary cross-entropy on probabilities, written out (F.binary_cross_entropy is refused by the check),
    logs clamped at -100 as torch does."""
    return (-(t * p.log().clamp(min=-100) + (1 - t) * (1 - p).log().clamp(min=-100))).mean()


LOSS_BUGS = [
    (lambda x, l, t: _bce_probs(_pick(x.softmax(1), l), t), "a softmax across the classes"),
    (lambda x, l, t: F.cross_entropy(x, torch.where(t >= 0.5, l[:, None, None], 0).long()),
     "per-pixel softmax cross-entropy"),
    (lambda x, l, t: loss_with_softplus(x.flatten(0, 1)[:, None], torch.zeros(x.shape[0] * x.shape[1]).long(),
                                        t.repeat_interleave(x.shape[1], 0)), "every class channel"),
    (lambda x, l, t: loss_with_softplus(x, x.mean((2, 3)).argmax(1), t), "chosen from the predictions"),
    (lambda x, l, t: (-(t * _pick(x, l).sigmoid().log() + (1 - t) * (1 - _pick(x, l).sigmoid()).log())).mean(),
     "not finite"),
    (lambda x, l, t: _bce_probs(_pick(x, l).sigmoid(), t), "sigmoid then log is unstable"),
    (lambda x, l, t: loss_with_softplus(x, l, t) * t.numel(), "summed"),
    (lambda x, l, t: loss_with_softplus(x, l - 1, t), "off by one"),
]


def test_loss_alternative_implementation_passes_both_suites():
    for suite in ("visible", "hidden"):
        assert run_suite("mask_loss", loss_with_softplus, suite).passed


@pytest.mark.parametrize("bug,cause", LOSS_BUGS, ids=[c for _, c in LOSS_BUGS])
def test_loss_bugs_are_named(bug, cause):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        message = fails("mask_loss", bug)
    assert cause in message, message


def test_library_bce_is_refused():
    def library(x, l, t):
        return F.binary_cross_entropy_with_logits(_pick(x, l), t)
    assert "binary_cross_entropy_with_logits" in fails("mask_loss", library)
    assert "nn.BCELoss" in fails("mask_loss", lambda x, l, t: torch.nn.BCELoss()(_pick(x, l).sigmoid(), t))


def test_sigmoid_then_log_is_finite_only_for_small_logits():
    """The lecture's point, computed: with logits of 150 the naive loss is inf, the stable one is not."""
    x = torch.tensor([[[[150.0]]], [[[-150.0]]]], dtype=torch.float64)
    t = torch.tensor([[[0.0]], [[1.0]]], dtype=torch.float64)
    naive = LOSS_BUGS[4][0](x, torch.zeros(2, dtype=torch.long), t)
    assert not torch.isfinite(naive)
    assert float(ref.mask_loss(x, torch.zeros(2, dtype=torch.long), t)) == pytest.approx(150.0)


# ---------------------------------------------------------------------------------------------
# paste_masks
# ---------------------------------------------------------------------------------------------
def paste_loop(masks, boxes, image_size, threshold=0.5):
    """Alternative correct answer: one grid_sample per mask over the pixels of the whole image."""
    h, w = image_size
    out = torch.zeros(len(masks), h, w, dtype=torch.bool)
    for r, (m, (x1, y1, x2, y2)) in enumerate(zip(masks, boxes.tolist())):
        xs = (torch.arange(w, dtype=m.dtype) + 0.5 - x1) / (x2 - x1) * 2 - 1
        ys = (torch.arange(h, dtype=m.dtype) + 0.5 - y1) / (y2 - y1) * 2 - 1
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None]
        out[r] = F.grid_sample(m[None, None], grid, align_corners=False)[0, 0] >= threshold
    return out


def _paste(centre=0.5, align_corners=False, plus=0.0, sigmoid=False, swap=False, pre_threshold=False,
           mode="bilinear", as_float=False):
    def fn(masks, boxes, image_size, threshold=0.5):
        h, w = image_size
        if sigmoid:
            masks = masks.sigmoid()
        if pre_threshold:
            masks, thr = (masks >= threshold).to(masks.dtype), 0.5
        else:
            thr = threshold
        out = torch.zeros(len(masks), h, w, dtype=torch.bool)
        for r, (m, box) in enumerate(zip(masks, boxes.tolist())):
            x1, y1, x2, y2 = [box[1], box[0], box[3], box[2]] if swap else box
            xs = (torch.arange(w, dtype=m.dtype) + centre - x1) / (x2 - x1 + plus) * 2 - 1
            ys = (torch.arange(h, dtype=m.dtype) + centre - y1) / (y2 - y1 + plus) * 2 - 1
            if align_corners:
                xs = (torch.arange(w, dtype=m.dtype) + 0.5 - x1) / (x2 - x1) * 2 - 1
                ys = (torch.arange(h, dtype=m.dtype) + 0.5 - y1) / (y2 - y1) * 2 - 1
            grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None]
            out[r] = F.grid_sample(m[None, None], grid, mode=mode, align_corners=align_corners)[0, 0] >= thr
        return out.float() if as_float else out
    return fn


def paste_without_resizing(masks, boxes, image_size, threshold=0.5):
    h, w = image_size
    out = torch.zeros(len(masks), h, w, dtype=torch.bool)
    for r, (m, box) in enumerate(zip(masks, boxes.tolist())):
        x0, y0 = round(box[0]), round(box[1])
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if 0 <= y0 + i < h and 0 <= x0 + j < w:
                    out[r, y0 + i, x0 + j] = bool(m[i, j] >= threshold)
    return out


PASTE_BUGS = [
    (_paste(centre=0.0), "half a pixel off"),
    (_paste(align_corners=True), "corners are aligned"),
    (_paste(plus=1.0), "x2 - x1 + 1"),
    (paste_without_resizing, "without resizing"),
    (_paste(sigmoid=True), "a sigmoid was applied"),
    (_paste(swap=True), "x and y are swapped"),
    (_paste(pre_threshold=True), "thresholded before resampling"),
    (_paste(mode="nearest"), "nearest-neighbour"),
]


def test_paste_alternative_implementation_passes_both_suites():
    for suite in ("visible", "hidden"):
        assert run_suite("paste_masks", paste_loop, suite).passed


@pytest.mark.parametrize("bug,cause", PASTE_BUGS, ids=[c for _, c in PASTE_BUGS])
def test_paste_bugs_are_named(bug, cause):
    message = fails("paste_masks", bug)
    assert "likely cause" in message and cause in message, message


@pytest.mark.parametrize("bug", [b for b, _ in PASTE_BUGS[:4]])
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
            expected = paste_loop(masks, boxes, size, threshold)
            assert torch.equal(ref.paste_masks(masks, boxes, size, threshold), expected)


def test_paste_float_output_is_named():
    assert "expected torch.bool" in fails("paste_masks", _paste(as_float=True))


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
