"""Checks of the instance-segmentation (Mask R-CNN) exercises (student side: verifiers only): mask targets,
the mask loss, pasting masks, keypoint targets and keypoint decoding (exact integer answers: no decided pixels).

Each case's data (built grader-side in ``lecturelib.hidden.instance_segmentation``) holds the expected
output, the pixels whose side of the threshold is unambiguous (``decided``: a binary mask's edge often gives
exactly 0.5, and float32 may fall on either side of it, so only decided pixels count) and the outputs that
known mistakes give on the same inputs. The verifiers compare, name the mistake a wrong answer matches, and
check properties that need no answer (binary targets, a finite loss, something pasted at all).
"""
from __future__ import annotations

import numpy as np
import torch

from .core import (Exercise, ForbiddenOp, Mismatch, compare, expect_tensor, explainer, known_mistake, register,
                   verifier)

_EMPTY = ("with {what} the result is an empty {shape} tensor, but torch.stack / torch.cat of an empty list raises: "
          "work on whole tensors, or handle the empty case first")


@explainer("mask_targets")
def _explain_targets_error(raised, data):
    if data["expected"].shape[0] == 0:
        return _EMPTY.format(what="no RoIs (R = 0)", shape="(0, M, M)")
    return None


@explainer("paste_masks")
def _explain_paste_error(raised, data):
    if data["expected"].shape[0] == 0:
        return _EMPTY.format(what="no masks (R = 0)", shape="(0, H, W) bool")
    return None


def _decided_mistake(got: np.ndarray, data) -> str | None:
    """The cause of the first known mistake whose output equals ``got`` on the decided pixels (a mistake given as
    ``(output, sure)`` counts only where its own value is unambiguous too)."""
    decided = data["decided"].numpy()
    for output, cause in data["mistakes"]:
        sure = decided
        if isinstance(output, tuple):
            output, own = output
            sure = decided & own
        if output.shape == got.shape and np.array_equal(output[sure], got[sure]):
            return cause
    return None


def _compare_decided(got: np.ndarray, data, name: str, diagnose, **tolerance) -> None:
    """Compare ``got`` with the expected output on the decided pixels only (elsewhere either side is right)."""
    expected = data["expected"]
    shown = np.where(data["decided"].numpy(), got, expected.numpy())
    compare(torch.from_numpy(shown), expected, name=name, diagnose=lambda _: diagnose(got, data), **tolerance)


# ------------------------------------------------------------------------------------------------
# mask_targets
# ------------------------------------------------------------------------------------------------
def _targets_cause(got: np.ndarray, data) -> str | None:
    if got.size and not np.isin(got, (0.0, 1.0)).all():
        return ("the target holds values other than 0 and 1: threshold the resampled mask (>= 0.5) to get "
                "binary targets, as Mask R-CNN does")
    return _decided_mistake(got, data)


@verifier("mask_targets")
def _verify_mask_targets(outcomes, data, reveal):
    got = expect_tensor(outcomes[0], shape=data["expected"].shape)
    if not (got.dtype == torch.bool or got.is_floating_point()):
        raise Mismatch(f"output has dtype {got.dtype}; expected float (0.0 / 1.0) or bool targets")
    _compare_decided(got.double().numpy(), data, "targets", _targets_cause, atol=1e-6, rtol=0)


register(Exercise(
    "mask_targets", topic="instance_segmentation",
    summary="each RoI's matched mask cropped to its box with RoIAlign (aligned, 2 x 2 samples per bin) and "
            "thresholded at 0.5: fractional boxes, boxes over the border, repeated matches, several M",
))


# ------------------------------------------------------------------------------------------------
# mask_loss
# ------------------------------------------------------------------------------------------------
def _loss_cause(got: float, data) -> str | None:
    if not np.isfinite(got):
        return ("the loss is not finite: sigmoid then log overflows for large logits (log(0) = -inf). Use "
                "the logits directly: max(x, 0) - x * t + log(1 + exp(-|x|))")
    # The closest known mistake, and only one that explains the deviation: with small logits sigmoid-then-log
    # equals the right loss to 1e-12, and an epsilon in the log moves it by 1e-6; either would otherwise name
    # any answer that is slightly off.
    off = abs(got - data["expected"])
    near = [(abs(got - value), cause) for value, cause in data["mistakes"]
            if np.isclose(got, value, rtol=1e-5, atol=1e-7) and abs(got - value) < 0.1 * off]
    return min(near)[1] if near else None


@verifier("mask_loss")
def _verify_mask_loss(outcomes, data, reveal):
    got, dtype = expect_tensor(outcomes[0], shape=(), name="loss"), data["dtype"]
    if got.dtype != dtype:
        raise Mismatch(f"loss has dtype {got.dtype}; expected {dtype} (the dtype of mask_logits)" if reveal
                       else f"loss has the wrong dtype ({got.dtype}); keep the dtype of mask_logits")
    compare(got, torch.tensor(data["expected"], dtype=torch.float64), name="loss",
            diagnose=lambda g: _loss_cause(float(g), data),
            **({"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {}))


register(Exercise(
    "mask_loss", topic="instance_segmentation",
    summary="mean binary cross-entropy with logits of each RoI's ground-truth-class channel (float32 and "
            "float64, logits up to |300| stay finite, other channels ignored)",
    forbidden=(ForbiddenOp("binary_cross_entropy_with_logits",
                           "F.binary_cross_entropy_with_logits / nn.BCEWithLogitsLoss (write the stable formula)"),
               ForbiddenOp("binary_cross_entropy", "F.binary_cross_entropy / nn.BCELoss")),
))


# ------------------------------------------------------------------------------------------------
# paste_masks
# ------------------------------------------------------------------------------------------------
def _paste_cause(got: np.ndarray, data) -> str | None:
    cause = _decided_mistake(got, data)
    if cause is None and got.size and not got[data["decided"].numpy()].any() and bool(data["expected"].any()):
        return "nothing was pasted: pixels inside each box must take the resampled mask value"
    return cause


@verifier("paste_masks")
def _verify_paste_masks(outcomes, data, reveal):
    got = expect_tensor(outcomes[0], shape=data["expected"].shape, name="masks")
    if got.dtype != torch.bool:
        raise Mismatch(f"masks have dtype {got.dtype}; expected torch.bool (compare with the threshold: "
                       "probs >= threshold)")
    _compare_decided(got.numpy(), data, "masks", _paste_cause)


register(Exercise(
    "paste_masks", topic="instance_segmentation",
    summary="bilinear value of each box's mask at every pixel centre (zero outside the mask), >= threshold, as "
            "grid_sample(align_corners=False) computes it: fractional boxes, boxes over the border, other thresholds",
))


# ------------------------------------------------------------------------------------------------
# keypoint_targets
# ------------------------------------------------------------------------------------------------
@explainer("keypoint_targets")
def _explain_kp_targets_error(raised, data):
    if data["expected"][0].shape[0] == 0:
        return _EMPTY.format(what="no RoIs (R = 0)", shape="(0, P) int64 and (0, P) bool")
    return None


@verifier("keypoint_targets")
def _verify_keypoint_targets(outcomes, data, reveal):
    got = outcomes[0]
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise Mismatch(f"returned a {type(got).__name__}; expected a tuple (targets, valid)")
    expected_targets, expected_valid = data["expected"]
    targets = expect_tensor(got[0], shape=expected_targets.shape, name="targets")
    valid = expect_tensor(got[1], shape=expected_valid.shape, name="valid")
    if targets.dtype != torch.int64:
        raise Mismatch(f"targets have dtype {targets.dtype}; expected torch.int64 (flat cell indices, "
                       "as cross_entropy takes them)")
    if valid.dtype != torch.bool:
        raise Mismatch(f"valid has dtype {valid.dtype}; expected torch.bool")
    diagnose = lambda _: known_mistake((targets, valid), data["mistakes"], tol=0)  # noqa: E731
    compare(valid, expected_valid, name="valid", diagnose=diagnose, atol=0, rtol=0)
    compare(targets, expected_targets, name="targets", diagnose=diagnose, atol=0, rtol=0)


register(Exercise(
    "keypoint_targets", topic="instance_segmentation",
    summary="each keypoint's cell floor((x - x1) * S / (x2 - x1)) in its RoI's S x S heatmap as a flat index "
            "row * S + column (0 where not valid), a point on the right/bottom edge in the last cell, valid = "
            "labelled (v > 0) and inside: exact edges and cell boundaries, points just outside, float64, no RoIs",
))


# ------------------------------------------------------------------------------------------------
# decode_keypoints
# ------------------------------------------------------------------------------------------------
@explainer("decode_keypoints")
def _explain_decode_error(raised, data):
    if data["expected"].shape[0] == 0:
        return _EMPTY.format(what="no RoIs (R = 0)", shape="(0, P, 3)")
    return None


@verifier("decode_keypoints")
def _verify_decode_keypoints(outcomes, data, reveal):
    got = expect_tensor(outcomes[0], shape=data["expected"].shape, name="keypoints")
    dtype = data["dtype"]
    if got.dtype != dtype:
        raise Mismatch(f"keypoints have dtype {got.dtype}; expected {dtype} (keep the dtype of heatmaps)" if reveal
                       else f"keypoints have the wrong dtype ({got.dtype}); keep the dtype of heatmaps")
    tolerance = {"atol": 1e-4, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-9, "rtol": 1e-9}
    compare(got, data["expected"], name="keypoints",
            diagnose=lambda g: known_mistake(g, data["mistakes"], tol=tolerance["atol"]), **tolerance)


register(Exercise(
    "decode_keypoints", topic="instance_segmentation",
    summary="the argmax of each S x S heatmap (the first on ties) decoded to its cell's centre in the image, "
            "x1 + (column + 0.5) * (x2 - x1) / S, and its maximum value as the score: ties, float64, no RoIs",
))
