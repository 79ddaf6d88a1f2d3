"""Box utilities shared by the detection topics (not graded): format conversions, areas, plain IoU.

Two box formats are used in the lecture:

* ``xyxy``: (x1, y1, x2, y2) corners, as in ``lecturelib.data`` (pixels, x2 and y2 exclusive);
* ``cxcywh``: (cx, cy, w, h) centre and size, as DETR predicts them (normalised to [0, 1] by the
  image size).

Every function takes a torch tensor or a numpy array of shape (..., 4) and returns the same kind
(numpy in, numpy out). ``box_iou`` is the plain intersection over union used by the evaluator
(:mod:`lecturelib.evaluation`); a pair of boxes whose union has zero area gets IoU 0, never NaN.

``box_iou``, ``box_area`` and the two conversions compute exactly (bit for bit, in the boxes' dtype) what
``torchvision.ops.box_iou`` / ``box_area`` / ``box_convert`` compute, except that torchvision gives NaN where the
union is empty (tests/test_torchvision_parity.py).
"""
from __future__ import annotations

import numpy as np
import torch

from ._validate import describe, require_int

__all__ = [
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_area",
    "box_iou",
    "normalize_boxes",
    "denormalize_boxes",
]


def _as_boxes(name: str, boxes, *, ndim: int | None = None) -> tuple[torch.Tensor, bool]:
    """(tensor view of ``boxes``, was it numpy?) after checking the last dimension is 4."""
    was_numpy = isinstance(boxes, np.ndarray)
    if was_numpy:
        if boxes.dtype == object or not (np.issubdtype(boxes.dtype, np.number)):
            raise TypeError(f"{name} must hold numbers, got {describe(boxes)}")
        tensor = torch.from_numpy(np.ascontiguousarray(boxes))
    elif isinstance(boxes, torch.Tensor):
        tensor = boxes
    else:
        raise TypeError(f"{name} must be a torch.Tensor or np.ndarray of shape (..., 4), got {describe(boxes)}")
    if tensor.ndim == 0 or tensor.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (..., 4), got {tuple(tensor.shape)}")
    if ndim is not None and tensor.ndim != ndim:
        raise ValueError(f"{name} must have shape (N, 4), got {tuple(tensor.shape)}")
    return tensor, was_numpy


def _back(tensor: torch.Tensor, was_numpy: bool):
    return tensor.numpy() if was_numpy else tensor


def box_cxcywh_to_xyxy(boxes):
    """(..., 4) (cx, cy, w, h) -> (..., 4) (x1, y1, x2, y2)."""
    b, was_numpy = _as_boxes("boxes", boxes)
    cx, cy, w, h = b.unbind(-1)
    return _back(torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1), was_numpy)


def box_xyxy_to_cxcywh(boxes):
    """(..., 4) (x1, y1, x2, y2) -> (..., 4) (cx, cy, w, h)."""
    b, was_numpy = _as_boxes("boxes", boxes)
    x1, y1, x2, y2 = b.unbind(-1)
    return _back(torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1), was_numpy)


def _require_valid_xyxy(name: str, b: torch.Tensor) -> None:
    if b.numel() and bool(((b[..., 2] < b[..., 0]) | (b[..., 3] < b[..., 1])).any()):
        raise ValueError(f"{name} must be xyxy boxes with x2 >= x1 and y2 >= y1; some are not "
                         "(were cxcywh boxes passed? convert them with box_cxcywh_to_xyxy)")


def box_area(boxes):
    """(..., 4) xyxy -> (...) areas (x2 - x1) * (y2 - y1)."""
    b, was_numpy = _as_boxes("boxes", boxes)
    _require_valid_xyxy("boxes", b)
    return _back((b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]), was_numpy)


def box_iou(boxes1, boxes2):
    """Intersection over union of every pair: (N, 4) xyxy and (M, 4) xyxy -> (N, M).

    Pairs whose union has zero area (two degenerate boxes) get IoU 0. Both inputs must be the same
    kind (tensors or arrays); the result has their (promoted) floating dtype.
    """
    a, numpy_a = _as_boxes("boxes1", boxes1, ndim=2)
    b, numpy_b = _as_boxes("boxes2", boxes2, ndim=2)
    if numpy_a != numpy_b:
        raise TypeError("boxes1 and boxes2 must both be torch tensors or both numpy arrays, got "
                        f"{describe(boxes1)} and {describe(boxes2)}")
    _require_valid_xyxy("boxes1", a)
    _require_valid_xyxy("boxes2", b)
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    a, b = a.to(dtype), b.to(dtype)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    left_top = torch.maximum(a[:, None, :2], b[None, :, :2])
    right_bottom = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (right_bottom - left_top).clamp_min(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp_min(torch.finfo(dtype).tiny), torch.zeros_like(inter))
    return _back(iou, numpy_a)


def normalize_boxes(boxes, size: int):
    """Pixel xyxy boxes of a ``size`` x ``size`` image -> normalised cxcywh in [0, 1] (DETR's targets)."""
    size = require_int("size", size, minimum=1)
    b, was_numpy = _as_boxes("boxes", boxes)
    b = b.to(torch.promote_types(b.dtype, torch.float32))
    return box_xyxy_to_cxcywh(_back(b / size, was_numpy))


def denormalize_boxes(boxes, size: int):
    """Normalised cxcywh boxes -> pixel xyxy boxes of a ``size`` x ``size`` image."""
    size = require_int("size", size, minimum=1)
    xyxy = box_cxcywh_to_xyxy(boxes)
    return xyxy * size
