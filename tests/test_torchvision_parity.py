"""Where lecturelib says it matches torchvision, it does: outputs against scalar ports of torchvision's CPU kernels.

torchvision cannot be installed beside the pinned torch, so each kernel of ``torchvision/csrc/ops/cpu/`` that a
docstring claims parity with is ported here line by line, with plain Python loops and the kernel's scalar type
(``np.float32`` scalars for float tensors: each operation rounded to float32, as the C++ does):
``nms_kernel.cpp`` (the reference ``nms``), ``roi_pool_kernel.cpp`` and ``roi_align_kernel.cpp`` with
``roi_align_common.h`` (``lecturelib.rois``), and ``torchvision/ops/boxes.py``'s ``box_iou`` / ``box_area`` /
``box_convert`` (``lecturelib.boxes``). Random cases plus the boundary cases: half-pixel coordinates, .5 rounding,
boxes on and over the border, empty boxes, IoU exactly at the threshold.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lecturelib import reference as ref
from lecturelib.boxes import box_area, box_cxcywh_to_xyxy, box_iou, box_xyxy_to_cxcywh
from lecturelib.rois import roi_align, roi_pool, roi_pool_cells

FLT_MAX = float(np.finfo(np.float32).max)


def _scalar(dtype: torch.dtype):
    """The kernel's ``scalar_t``: numpy scalars round every operation to that precision."""
    return np.float32 if dtype == torch.float32 else np.float64


def _c_round(v: float) -> int:
    """C's round(): halves away from zero, exact for every double."""
    a = abs(v)
    whole = math.floor(a)
    return int(math.copysign(whole + (1 if a - whole >= 0.5 else 0), v))


# ------------------------------------------------------------------------------------------------
# nms_kernel.cpp
# ------------------------------------------------------------------------------------------------
def nms_port(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> list[int]:
    """torchvision's nms_kernel_impl<scalar_t>: stable descending sort, float IoU compared with a double."""
    T = _scalar(dets.dtype)
    if dets.numel() == 0:
        return []
    x1, y1, x2, y2 = ([T(v) for v in dets[:, k].tolist()] for k in range(4))
    areas = [(x2[i] - x1[i]) * (y2[i] - y1[i]) for i in range(len(x1))]
    order = torch.sort(scores, stable=True, dim=0, descending=True).indices.tolist()
    ndets = len(order)
    suppressed = [0] * ndets
    keep = []
    for _i in range(ndets):
        i = order[_i]
        if suppressed[i] == 1:
            continue
        keep.append(i)
        ix1, iy1, ix2, iy2, iarea = x1[i], y1[i], x2[i], y2[i], areas[i]
        for _j in range(_i + 1, ndets):
            j = order[_j]
            if suppressed[j] == 1:
                continue
            xx1, yy1 = max(ix1, x1[j]), max(iy1, y1[j])
            xx2, yy2 = min(ix2, x2[j]), min(iy2, y2[j])
            w = max(T(0), xx2 - xx1)
            h = max(T(0), yy2 - yy1)
            inter = w * h
            with np.errstate(invalid="ignore", divide="ignore"):
                ovr = inter / (iarea + areas[j] - inter)
            if float(ovr) > iou_threshold:          # float promoted to double, as in C++
                suppressed[j] = 1
    return keep


def _random_boxes(gen, n, dtype, span=60.0, integer=False):
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * span
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 25 + 0.5
    boxes = torch.cat([xy, xy + wh], 1)
    return (boxes.round() if integer else boxes).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(6))
def test_nms_matches_the_kernel_on_random_boxes(dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    n = 60
    boxes = _random_boxes(gen, n, dtype, integer=seed % 2 == 0)
    scores = (torch.randint(0, 5, (n,), generator=gen) / 4.0 if seed % 3 == 0
              else torch.rand(n, generator=gen, dtype=torch.float64)).to(dtype)       # many equal scores, or none
    for threshold in (0.0, 0.25, 0.3, 0.5, 0.7, 1.0):
        assert ref.nms(boxes, scores, threshold).tolist() == nms_port(boxes, scores, threshold), threshold


# IoU exactly at the threshold (inter 10 t, union 100), in float32 above (0.3, 0.4, 0.6) or below (0.7) the
# double threshold, and in float64 equal to it.
@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.4, 0.5, 0.6, 0.7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nms_at_an_iou_exactly_at_the_threshold(threshold, dtype):
    t = round(10 * threshold)
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, t, 10], [20, 20, 30, 20 + t], [20, 20, 30, 30]], dtype=dtype)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6], dtype=dtype)
    expected = nms_port(boxes, scores, threshold)
    assert ref.nms(boxes, scores, threshold).tolist() == expected
    suppressed = dtype == torch.float32 and float(np.float32(threshold)) > threshold
    assert expected == ([0, 2] if suppressed else [0, 1, 2, 3])


def test_nms_boundary_cases():
    """Empty input, boxes touching along an edge (IoU 0), identical boxes (IoU 1), zero-area boxes (torchvision:
    NaN for two of them, 0 here; both keep them for every threshold >= 0), half-pixel coordinates."""
    cases = [
        (torch.zeros(0, 4), torch.zeros(0)),
        (torch.tensor([[0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 10, 20.0]]), torch.tensor([0.5, 0.5, 0.5])),
        (torch.tensor([[0, 0, 10, 10.0]] * 4), torch.tensor([0.1, 0.9, 0.9, 0.3])),
        (torch.tensor([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10], [5, 0, 5, 10.0]]),
         torch.tensor([0.9, 0.8, 0.7, 0.6])),
        (torch.tensor([[0.5, 0.5, 10.5, 10.5], [1.5, 0.5, 11.5, 10.5], [0.25, 0.75, 9.75, 10.25]]),
         torch.tensor([0.3, 0.9, 0.6])),
    ]
    for boxes, scores in cases:
        for dtype in (torch.float32, torch.float64):
            b, s = boxes.to(dtype), scores.to(dtype)
            for threshold in (0.0, 0.5, 0.9, 1.0):
                assert ref.nms(b, s, threshold).tolist() == nms_port(b, s, threshold), (boxes, threshold)


# ------------------------------------------------------------------------------------------------
# roi_pool_kernel.cpp
# ------------------------------------------------------------------------------------------------
def roi_pool_port(input: torch.Tensor, rois: torch.Tensor, spatial_scale: float, pooled_height: int,
                  pooled_width: int) -> torch.Tensor:
    """torchvision's roi_pool_forward_kernel_impl<T> (the output; argmax left out)."""
    T = _scalar(input.dtype)
    num_rois, (_, channels, height, width) = len(rois), input.shape
    x = input.tolist()
    spatial_scale = T(spatial_scale)
    output = torch.zeros(num_rois, channels, pooled_height, pooled_width, dtype=input.dtype)
    for n in range(num_rois):
        offset_rois = [T(v) for v in rois[n].tolist()]
        roi_batch_ind = int(offset_rois[0])
        roi_start_w = _c_round(float(offset_rois[1] * spatial_scale))
        roi_start_h = _c_round(float(offset_rois[2] * spatial_scale))
        roi_end_w = _c_round(float(offset_rois[3] * spatial_scale))
        roi_end_h = _c_round(float(offset_rois[4] * spatial_scale))
        roi_width = max(roi_end_w - roi_start_w + 1, 1)
        roi_height = max(roi_end_h - roi_start_h + 1, 1)
        bin_size_h = T(roi_height) / T(pooled_height)
        bin_size_w = T(roi_width) / T(pooled_width)
        for ph in range(pooled_height):
            for pw in range(pooled_width):
                hstart = int(math.floor(T(ph) * bin_size_h))
                wstart = int(math.floor(T(pw) * bin_size_w))
                hend = int(math.ceil(T(ph + 1) * bin_size_h))
                wend = int(math.ceil(T(pw + 1) * bin_size_w))
                hstart = min(max(hstart + roi_start_h, 0), height)
                hend = min(max(hend + roi_start_h, 0), height)
                wstart = min(max(wstart + roi_start_w, 0), width)
                wend = min(max(wend + roi_start_w, 0), width)
                is_empty = (hend <= hstart) or (wend <= wstart)
                for c in range(channels):
                    maxval = 0.0 if is_empty else -FLT_MAX
                    for h in range(hstart, hend):
                        for w in range(wstart, wend):
                            if x[roi_batch_ind][c][h][w] > maxval:
                                maxval = x[roi_batch_ind][c][h][w]
                    output[n, c, ph, pw] = maxval
    return output


def _random_rois(gen, k, n_images, height, width, dtype, over=6.0):
    """(k, 5) RoIs with corners up to ``over`` pixels outside a height x width map, some reversed or empty."""
    x = torch.rand(k, 2, generator=gen, dtype=torch.float64) * (width + 2 * over) - over
    y = torch.rand(k, 2, generator=gen, dtype=torch.float64) * (height + 2 * over) - over
    x, y = x.sort(dim=1).values, y.sort(dim=1).values
    index = torch.randint(0, n_images, (k, 1), generator=gen).to(torch.float64)
    rois = torch.cat([index, x[:, :1], y[:, :1], x[:, 1:], y[:, 1:]], 1)
    rois[::7, 3] = rois[::7, 1]                          # zero width
    rois[3::11, [2, 4]] = rois[3::11, [4, 2]]            # y2 < y1
    return rois.to(dtype)


# .5 rounding (also after the scale), half-pixel corners, boxes on the border and beyond it, empty boxes
_BOUNDARY_ROIS = [
    [0, 1.5, 1.5, 2.5, 2.5], [0, 0.5, -0.5, 3.5, 2.5], [0, -0.5, -0.5, 0.5, 0.5], [0, 2.5, 0.5, 2.5, 3.5],
    [0, 0, 0, 4, 4], [0, 0, 0, 3, 3], [0, 3, 3, 3, 3], [0, 3.5, 3.5, 4.5, 4.5], [0, -3, -3, -1, -1],
    [0, 4, 4, 7, 7], [0, 0.49999997, 1.5000001, 2.4999998, 3.5], [1, 0.25, 0.75, 2.75, 3.25],
    [1, 1, 0, 3, 4], [0, 2, 1, 1, 3],
]


def _boundary_rois(scale: float) -> torch.Tensor:
    """The boundary RoIs in image coordinates for ``spatial_scale`` (on the feature map they are as listed)."""
    rois = torch.tensor(_BOUNDARY_ROIS, dtype=torch.float64)
    rois[:, 1:] /= scale
    return rois


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale, output_size", [(1.0, (1, 1)), (1.0, (2, 3)), (0.5, (3, 3)), (1 / 3, (2, 2)),
                                                (0.3, (3, 2)), (1 / 7, (7, 7))])
def test_roi_pool_matches_the_kernel(dtype, scale, output_size):
    gen = torch.Generator().manual_seed(int(scale * 100) + output_size[0])
    features = torch.randn(2, 2, 5, 6, generator=gen, dtype=torch.float64).to(dtype)
    rois = torch.cat([_boundary_rois(scale),
                      _random_rois(gen, 30, 2, 5 / scale, 6 / scale, torch.float64)]).to(dtype)
    got = roi_pool(features, rois, output_size, scale)
    assert torch.equal(got, roi_pool_port(features, rois, scale, *output_size))


def test_roi_pool_bin_edges_in_float32():
    """A 29-row box in 7 bins: the last bin ends at ceil(7 * (29 / 7)), 29 in float32 (the kernel) but
    29.000000000000004 -> 30 in float64, one row more. With float32 features the edge is float32's."""
    features = torch.zeros(1, 1, 32, 4)
    features[0, 0, 29, 1] = 5.0                                  # just below the box's last row (28)
    rois = torch.tensor([[0.0, 0.0, 0.0, 3.0, 28.0]])
    assert float(roi_pool_port(features, rois, 1.0, 7, 1)[0, 0, 6, 0]) == 0.0
    assert torch.equal(roi_pool(features, rois, (7, 1)), roi_pool_port(features, rois, 1.0, 7, 1))
    assert float(roi_pool(features.double(), rois.double(), (7, 1))[0, 0, 6, 0]) == 5.0     # float64: one row more


def test_roi_pool_rounds_halves_away_from_zero():
    """issue 12's example: torchvision rounds 1.5 and 2.5 up (C's round), Python's round() would take 2 and 2."""
    features = torch.arange(16.0).reshape(1, 1, 4, 4)
    rois = torch.tensor([[0, 1.5, 1.5, 2.5, 2.5]])
    assert float(roi_pool(features, rois, (1, 1))) == 15.0 == float(roi_pool_port(features, rois, 1.0, 1, 1))
    assert roi_pool_cells((1.5, 2.5, -0.5, 0.49999999999999994)) == (2, 3, -1, 0)


# ------------------------------------------------------------------------------------------------
# roi_align_kernel.cpp, roi_align_common.h
# ------------------------------------------------------------------------------------------------
def _bilinear_precalc(height, width, y, x, T):
    """pre_calc_for_bilinear_interpolate for one sample: (positions, weights), zero weights outside."""
    if not (y >= -1.0 and y <= height and x >= -1.0 and x <= width):
        return (0, 0, 0, 0), (T(0), T(0), T(0), T(0))
    if y <= 0:
        y = T(0)
    if x <= 0:
        x = T(0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = T(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = T(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - T(y_low), x - T(x_low)
    hy, hx = T(1.0 - float(ly)), T(1.0 - float(lx))
    positions = (y_low * width + x_low, y_low * width + x_high, y_high * width + x_low, y_high * width + x_high)
    return positions, (hy * hx, hy * lx, ly * hx, ly * lx)


def roi_align_port(input: torch.Tensor, rois: torch.Tensor, spatial_scale: float, pooled_height: int,
                   pooled_width: int, sampling_ratio: int, aligned: bool) -> torch.Tensor:
    """torchvision's roi_align_forward_kernel_impl<T>."""
    T = _scalar(input.dtype)
    _, channels, height, width = input.shape
    flat = input.reshape(input.shape[0], channels, -1).tolist()
    spatial_scale = T(spatial_scale)
    output = torch.zeros(len(rois), channels, pooled_height, pooled_width, dtype=input.dtype)
    for n in range(len(rois)):
        offset_rois = [T(v) for v in rois[n].tolist()]
        roi_batch_ind = int(offset_rois[0])
        offset = T(0.5) if aligned else T(0.0)
        roi_start_w = offset_rois[1] * spatial_scale - offset
        roi_start_h = offset_rois[2] * spatial_scale - offset
        roi_end_w = offset_rois[3] * spatial_scale - offset
        roi_end_h = offset_rois[4] * spatial_scale - offset
        roi_width = roi_end_w - roi_start_w
        roi_height = roi_end_h - roi_start_h
        if not aligned:
            roi_width, roi_height = max(roi_width, T(1.0)), max(roi_height, T(1.0))
        bin_size_h = roi_height / T(pooled_height)
        bin_size_w = roi_width / T(pooled_width)
        grid_h = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_height / T(pooled_height)))
        grid_w = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_width / T(pooled_width)))
        count = T(max(grid_h * grid_w, 1))
        pre_calc = []
        for ph in range(pooled_height):
            for pw in range(pooled_width):
                for iy in range(grid_h):
                    yy = roi_start_h + T(ph) * bin_size_h + T(iy + 0.5) * bin_size_h / T(grid_h)
                    for ix in range(grid_w):
                        xx = roi_start_w + T(pw) * bin_size_w + T(ix + 0.5) * bin_size_w / T(grid_w)
                        pre_calc.append(_bilinear_precalc(height, width, yy, xx, T))
        for c in range(channels):
            values = [T(v) for v in flat[roi_batch_ind][c]]
            index = 0
            for ph in range(pooled_height):
                for pw in range(pooled_width):
                    output_val = T(0.0)
                    for _ in range(max(grid_h, 0) * max(grid_w, 0)):
                        (p1, p2, p3, p4), (w1, w2, w3, w4) = pre_calc[index]
                        output_val += w1 * values[p1] + w2 * values[p2] + w3 * values[p3] + w4 * values[p4]
                        index += 1
                    output[n, c, ph, pw] = float(output_val / count)
    return output


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("scale, output_size, sampling_ratio", [(1.0, (2, 2), 2), (1.0, (3, 2), 0), (0.5, (2, 3), 1),
                                                                (1 / 3, (2, 2), -1), (0.3, (1, 1), 3)])
def test_roi_align_matches_the_kernel(dtype, aligned, scale, output_size, sampling_ratio):
    gen = torch.Generator().manual_seed(int(scale * 100) + sampling_ratio + 5 * aligned)
    features = torch.randn(2, 2, 5, 6, generator=gen, dtype=torch.float64).to(dtype)
    rois = torch.cat([_boundary_rois(scale),
                      _random_rois(gen, 25, 2, 5 / scale, 6 / scale, torch.float64)]).to(dtype)
    got = roi_align(features, rois, output_size, scale, sampling_ratio, aligned)
    expected = roi_align_port(features, rois, scale, *output_size, sampling_ratio, aligned)
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-12, "rtol": 1e-12}
    torch.testing.assert_close(got, expected, **tol)


def test_roi_align_sample_count_in_float32():
    """sampling_ratio <= 0: ceil(roi_h / ph) of the float32 box (the kernel's) differs from the float64 one for
    these boxes at spatial_scale 1/3 (found by search: one sample more or less per bin, outputs off by up to 0.17)."""
    features = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    rois = torch.tensor([[0, 1.4, -0.5, 3.3, 8.5], [0, 0.1, 2.8, 6.5, 8.8]])
    for aligned in (True, False):
        for ph in (1, 2, 3):
            torch.testing.assert_close(roi_align(features, rois, (ph, 2), 1 / 3, 0, aligned),
                                       roi_align_port(features, rois, 1 / 3, ph, 2, 0, aligned), atol=1e-5, rtol=1e-5)


def test_roi_align_samples_exactly_on_the_border_count():
    """A sample at y = -1 or y = H is inside (clamped to the border row), a hair beyond it outside: the sample
    positions must be the kernel's to the last bit. Boxes whose samples land exactly on -1 and H."""
    features = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    rois = torch.tensor([[0, -1.5, -1.5, 0.5, 0.5], [0, 3.5, 3.5, 5.5, 5.5], [0, -0.5, -2.0, 4.5, 6.0],
                         [0, -2.0, 0.0, 2.0, 4.0]])
    for aligned in (True, False):
        for ratio in (1, 2, 0):
            got = roi_align(features, rois, (2, 2), 1.0, ratio, aligned)
            torch.testing.assert_close(got, roi_align_port(features, rois, 1.0, 2, 2, ratio, aligned),
                                       atol=1e-6, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# torchvision/ops/boxes.py: box_area, box_iou, box_convert
# ------------------------------------------------------------------------------------------------
def box_iou_port(boxes1: torch.Tensor, boxes2: torch.Tensor) -> list[list[float]]:
    """torchvision.ops.box_iou (_box_inter_union) one pair at a time in the boxes' dtype; 0/0 gives NaN."""
    T = _scalar(boxes1.dtype)
    a, b = [[T(v) for v in row] for row in boxes1.tolist()], [[T(v) for v in row] for row in boxes2.tolist()]
    out = []
    for p in a:
        row = []
        for q in b:
            area1, area2 = (p[2] - p[0]) * (p[3] - p[1]), (q[2] - q[0]) * (q[3] - q[1])
            w = max(min(p[2], q[2]) - max(p[0], q[0]), T(0))
            h = max(min(p[3], q[3]) - max(p[1], q[1]), T(0))
            inter = w * h
            with np.errstate(invalid="ignore", divide="ignore"):
                row.append(float(inter / (area1 + area2 - inter)))
        out.append(row)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_iou_area_and_conversions_match_torchvision(dtype):
    gen = torch.Generator().manual_seed(5)
    boxes = torch.cat([_random_boxes(gen, 20, torch.float64), _random_boxes(gen, 10, torch.float64, integer=True),
                       torch.tensor([[0.5, 0.5, 10.5, 10.5], [10.5, 0.5, 20.5, 10.5], [0, 0, 0, 10], [3, 3, 3, 3]],
                                    dtype=torch.float64)]).to(dtype)
    expected = torch.tensor(box_iou_port(boxes, boxes), dtype=dtype)
    got = box_iou(boxes, boxes)
    both_degenerate = torch.isnan(expected)      # 0/0: torchvision NaN, lecturelib 0 (documented in boxes.py)
    assert torch.equal(got[both_degenerate], torch.zeros_like(got[both_degenerate]))
    assert torch.equal(got[~both_degenerate], expected[~both_degenerate])
    assert both_degenerate.any()                 # the point [3, 3, 3, 3] and the line [0, 0, 0, 10]
    assert torch.equal(box_area(boxes), (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    cx, cy, w, h = ((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2, boxes[:, 2] - boxes[:, 0],
                    boxes[:, 3] - boxes[:, 1])                       # torchvision's _box_xyxy_to_cxcywh
    assert torch.equal(box_xyxy_to_cxcywh(boxes), torch.stack([cx, cy, w, h], -1))
    back = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)   # _box_cxcywh_to_xyxy
    assert torch.equal(box_cxcywh_to_xyxy(torch.stack([cx, cy, w, h], -1)), back)
