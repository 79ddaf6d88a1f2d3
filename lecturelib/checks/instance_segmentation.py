"""Checks of the instance-segmentation (Mask R-CNN) exercises (student side: verifiers only): mask targets,
the mask loss, pasting masks.

Each case's data (built grader-side in ``lecturelib.hidden.instance_segmentation``) holds the expected
output, the pixels whose side of the threshold is unambiguous (``decided``: a binary mask's edge often gives
exactly 0.5, and float32 may fall on either side of it, so only decided pixels count) and the outputs that
known mistakes give on the same inputs. The verifiers compare, name the mistake a wrong answer matches, and
check properties that need no answer (binary targets, a finite loss, something pasted at all).
"""
from __future__ import annotations

import numpy as np
import torch

from .core import Exercise, ForbiddenOp, Mismatch, compare, expect_tensor, register, verifier


def _decided_mistake(got: np.ndarray, data) -> str | None:
    """The cause of the first known mistake whose output equals ``got`` on the decided pixels."""
    decided = data["decided"].numpy()
    return next((cause for output, cause in data["mistakes"]
                 if output.shape == got.shape and np.array_equal(output[decided], got[decided])), None)


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
    return next((cause for value, cause in data["mistakes"] if np.isclose(got, value, rtol=1e-5, atol=1e-7)),
                None)


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
