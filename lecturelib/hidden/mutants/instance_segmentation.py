"""Mutant library of the instance-segmentation (Mask R-CNN) exercises (format: ``mutants/__init__``).

Each mutant is a whole function the way a student would write it, with one realistic bug; its ``cause`` is
the text the hidden suite's report must contain. The alternatives are correct implementations written
differently from the reference (``lecturelib.reference.instance_segmentation``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...rois import roi_align, roi_pool
from . import Alternative, Mutant


# ------------------------------------------------------------------------------------------------
# mask_targets(gt_masks (G, H, W), boxes (R, 4), matched_idx (R,), M) -> (R, M, M) in {0, 1}
# ------------------------------------------------------------------------------------------------
def _rois(boxes):
    """(R, 5) RoIs (image index r, box r): one image per RoI."""
    return torch.cat([torch.arange(len(boxes), dtype=boxes.dtype)[:, None], boxes], 1)


def _aligned_targets(gt_masks, boxes, matched_idx, M, aligned=True, sampling_ratio=2):
    masks = gt_masks[matched_idx].float()[:, None]
    return roi_align(masks, _rois(boxes.float()), (M, M), 1.0, sampling_ratio, aligned)[:, 0]


def targets_whole_mask(gt_masks, boxes, matched_idx, M):
    """Resizes the whole mask to M x M (box ignored)."""
    h, w = gt_masks.shape[1:]
    whole = torch.tensor([[0.0, 0.0, w, h]]).expand(len(boxes), 4)
    return (_aligned_targets(gt_masks, whole, matched_idx, M) >= 0.5).float()


def targets_rounded_box(gt_masks, boxes, matched_idx, M):
    """Rounds the box to whole pixels first."""
    return (_aligned_targets(gt_masks, boxes.round(), matched_idx, M) >= 0.5).float()


def targets_roi_pool(gt_masks, boxes, matched_idx, M):
    """Uses RoIPool (rounded box, max per bin)."""
    masks = gt_masks[matched_idx].float()[:, None]
    return roi_pool(masks, _rois(boxes.float()), (M, M), 1.0)[:, 0]


def targets_not_thresholded(gt_masks, boxes, matched_idx, M):
    """Returns the soft RoIAlign values."""
    return _aligned_targets(gt_masks, boxes, matched_idx, M)


def targets_xy_swapped(gt_masks, boxes, matched_idx, M):
    """Reads boxes as (y1, x1, y2, x2)."""
    return (_aligned_targets(gt_masks, boxes[:, [1, 0, 3, 2]], matched_idx, M) >= 0.5).float()


def targets_transposed(gt_masks, boxes, matched_idx, M):
    """Returns each target transposed (M x M with x along the rows)."""
    return (_aligned_targets(gt_masks, boxes, matched_idx, M) >= 0.5).float().transpose(1, 2)


def targets_not_aligned(gt_masks, boxes, matched_idx, M):
    """roi_align with aligned=False (samples half a pixel off)."""
    return (_aligned_targets(gt_masks, boxes, matched_idx, M, aligned=False) >= 0.5).float()


def targets_mask_r(gt_masks, boxes, matched_idx, M):
    """Gives RoI r the ground-truth mask r."""
    idx = torch.arange(len(boxes)) % len(gt_masks)
    return (_aligned_targets(gt_masks, boxes, idx, M) >= 0.5).float()


def targets_stacked(gt_masks, boxes, matched_idx, M):
    """One roi_align per RoI, torch.stack of the list: fails without RoIs."""
    out = []
    for r in range(len(boxes)):
        mask = gt_masks[matched_idx[r]].float()[None, None]
        out.append(roi_align(mask, [boxes[r:r + 1].float()], (M, M), 1.0, 2, True)[0, 0] >= 0.5)
    return torch.stack(out).float()


def targets_shift_in_place(gt_masks, boxes, matched_idx, M):
    """Does the half-pixel shift by hand on the caller's boxes (boxes -= 0.5), then aligned=False."""
    boxes -= 0.5
    return (_aligned_targets(gt_masks, boxes, matched_idx, M, aligned=False) >= 0.5).float()


def targets_first_mask(gt_masks, boxes, matched_idx, M):
    """Crops gt_masks[0] for every RoI (code written for one object)."""
    return (_aligned_targets(gt_masks, boxes, torch.zeros_like(matched_idx), M) >= 0.5).float()


def targets_per_roi(gt_masks, boxes, matched_idx, M):
    """Correct: one roi_align per RoI with a list of boxes, a bool result."""
    if len(boxes) == 0:
        return torch.zeros(0, M, M, dtype=torch.bool)
    masks = gt_masks[matched_idx].float()[:, None]
    return torch.stack([roi_align(masks[r:r + 1], [boxes[r:r + 1]], (M, M), 1.0, 2, True)[0, 0]
                        for r in range(len(boxes))]) >= 0.5


# ------------------------------------------------------------------------------------------------
# mask_loss(mask_logits (R, K, M, M), labels (R,), targets (R, M, M)) -> 0-d loss
# ------------------------------------------------------------------------------------------------
def _pick(x, labels):
    return x[torch.arange(len(labels)), labels]


def _bce_probs(p, t):
    """Binary cross-entropy on probabilities, written out, logs clamped at -100 (as torch does)."""
    return (-(t * p.log().clamp(min=-100) + (1 - t) * (1 - p).log().clamp(min=-100))).mean()


def _stable(x, t):
    return (x.clamp(min=0) - x * t + torch.log1p(torch.exp(-x.abs()))).mean()


def loss_softmax_over_classes(mask_logits, labels, targets):
    """Softmax across the class channels, then BCE on the label's channel."""
    return _bce_probs(_pick(mask_logits.softmax(1), labels), targets)


def loss_pixel_cross_entropy(mask_logits, labels, targets):
    """Per-pixel softmax cross-entropy (semantic segmentation's loss)."""
    return F.cross_entropy(mask_logits, torch.where(targets >= 0.5, labels[:, None, None], 0).long())


def loss_every_channel(mask_logits, labels, targets):
    """Trains every class channel against the target."""
    return _stable(mask_logits, targets[:, None])


def loss_predicted_channel(mask_logits, labels, targets):
    """Takes the channel the network predicts (argmax of the mean logit)."""
    return _stable(_pick(mask_logits, mask_logits.mean((2, 3)).argmax(1)), targets)


def loss_naive_log(mask_logits, labels, targets):
    """sigmoid then log, without the clamp: inf for large logits."""
    p = _pick(mask_logits, labels).sigmoid()
    return (-(targets * p.log() + (1 - targets) * (1 - p).log())).mean()


def loss_sigmoid_then_bce(mask_logits, labels, targets):
    """sigmoid then a clamped log (what F.binary_cross_entropy computes)."""
    return _bce_probs(_pick(mask_logits, labels).sigmoid(), targets)


def loss_log_eps(mask_logits, labels, targets):
    """sigmoid, then log(p + 1e-7) against log(0)."""
    p = _pick(mask_logits, labels).sigmoid()
    return (-(targets * torch.log(p + 1e-7) + (1 - targets) * torch.log(1 - p + 1e-7))).mean()


def loss_summed(mask_logits, labels, targets):
    """Sums instead of averaging."""
    x = _pick(mask_logits, labels)
    return (x.clamp(min=0) - x * targets + torch.log1p(torch.exp(-x.abs()))).sum()


def loss_label_minus_one(mask_logits, labels, targets):
    """Channel labels - 1 (as if the background had no channel)."""
    return _stable(_pick(mask_logits, labels - 1), targets)


def loss_float32(mask_logits, labels, targets):
    """Casts everything to float32 (.float())."""
    return _stable(_pick(mask_logits, labels).float(), targets.float())


def loss_logits_clamped_in_place(mask_logits, labels, targets):
    """Clamps the caller's logits in place (against overflow), then the naive formula."""
    mask_logits.clamp_(-30, 30)
    p = _pick(mask_logits, labels).sigmoid()
    return (-(targets * p.log() + (1 - targets) * (1 - p).log())).mean()


def loss_softplus(mask_logits, labels, targets):
    """Correct: softplus(x) - x * t, the channel gathered with gather."""
    x = mask_logits.gather(1, labels[:, None, None, None].expand(-1, 1, *mask_logits.shape[2:]))[:, 0]
    if len(x) == 0:
        return mask_logits.sum() * 0
    return (F.softplus(x) - x * targets).mean()


def loss_logsigmoid(mask_logits, labels, targets):
    """Correct: -(t log sigmoid(x) + (1 - t) log sigmoid(-x)) with F.logsigmoid."""
    if len(labels) == 0:
        return mask_logits.sum() * 0
    x = _pick(mask_logits, labels)
    return -(targets * F.logsigmoid(x) + (1 - targets) * F.logsigmoid(-x)).mean()


# ------------------------------------------------------------------------------------------------
# paste_masks(masks (R, M, M), boxes (R, 4), image_size (H, W), threshold) -> (R, H, W) bool
# ------------------------------------------------------------------------------------------------
def _grid_paste(masks, boxes, image_size, threshold, centre=0.5, plus=0.0, align_corners=False, mode="bilinear"):
    """One grid_sample per mask over the whole image."""
    h, w = image_size
    out = torch.zeros(len(masks), h, w, dtype=torch.bool)
    for r, (m, (x1, y1, x2, y2)) in enumerate(zip(masks, boxes.tolist())):
        xs = (torch.arange(w, dtype=m.dtype) + centre - x1) / (x2 - x1 + plus) * 2 - 1
        ys = (torch.arange(h, dtype=m.dtype) + centre - y1) / (y2 - y1 + plus) * 2 - 1
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None]
        out[r] = F.grid_sample(m[None, None], grid, mode=mode, align_corners=align_corners)[0, 0] >= threshold
    return out


def paste_pixel_corners(masks, boxes, image_size, threshold=0.5):
    """Samples at pixel corners (j, i) instead of centres."""
    return _grid_paste(masks, boxes, image_size, threshold, centre=0.0)


def paste_align_corners(masks, boxes, image_size, threshold=0.5):
    """grid_sample with align_corners=True."""
    return _grid_paste(masks, boxes, image_size, threshold, align_corners=True)


def paste_plus_one(masks, boxes, image_size, threshold=0.5):
    """Box size x2 - x1 + 1."""
    return _grid_paste(masks, boxes, image_size, threshold, plus=1.0)


def paste_not_resized(masks, boxes, image_size, threshold=0.5):
    """Copies the M x M mask at the box's corner without resizing."""
    h, w = image_size
    out = torch.zeros(len(masks), h, w, dtype=torch.bool)
    for r, (m, box) in enumerate(zip(masks, boxes.tolist())):
        x0, y0 = round(box[0]), round(box[1])
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if 0 <= y0 + i < h and 0 <= x0 + j < w:
                    out[r, y0 + i, x0 + j] = bool(m[i, j] >= threshold)
    return out


def paste_sigmoid(masks, boxes, image_size, threshold=0.5):
    """Applies a sigmoid to masks that are already probabilities."""
    return _grid_paste(masks.sigmoid(), boxes, image_size, threshold)


def paste_xy_swapped(masks, boxes, image_size, threshold=0.5):
    """Reads boxes as (y1, x1, y2, x2)."""
    return _grid_paste(masks, boxes[:, [1, 0, 3, 2]], image_size, threshold)


def paste_thresholded_first(masks, boxes, image_size, threshold=0.5):
    """Thresholds the M x M mask, then resamples the 0/1 mask."""
    return _grid_paste((masks >= threshold).to(masks.dtype), boxes, image_size, 0.5)


def paste_nearest(masks, boxes, image_size, threshold=0.5):
    """Nearest-neighbour resampling."""
    return _grid_paste(masks, boxes, image_size, threshold, mode="nearest")


def paste_float_output(masks, boxes, image_size, threshold=0.5):
    """Returns 0.0 / 1.0 floats."""
    return _grid_paste(masks, boxes, image_size, threshold).float()


def paste_transposed(masks, boxes, image_size, threshold=0.5):
    """Transposes each mask (rows taken as x)."""
    return _grid_paste(masks.transpose(1, 2), boxes, image_size, threshold)


def paste_fixed_threshold(masks, boxes, image_size, threshold=0.5):
    """Compares with 0.5 whatever the threshold argument says."""
    return _grid_paste(masks, boxes, image_size, 0.5)


def paste_stacked(masks, boxes, image_size, threshold=0.5):
    """A list of pasted masks, torch.stack: fails without masks."""
    return torch.stack([_grid_paste(masks[r:r + 1], boxes[r:r + 1], image_size, threshold)[0]
                        for r in range(len(masks))])


def paste_loop(masks, boxes, image_size, threshold=0.5):
    """Correct: one grid_sample per mask over the pixels of the whole image."""
    return _grid_paste(masks, boxes, image_size, threshold)


def paste_batched(masks, boxes, image_size, threshold=0.5):
    """Correct: one grid_sample for all masks, the grid built by broadcasting."""
    h, w = image_size
    if len(masks) == 0:
        return torch.zeros(0, h, w, dtype=torch.bool)
    dtype = masks.dtype
    b = boxes.to(dtype)
    xs = (torch.arange(w, dtype=dtype)[None] + 0.5 - b[:, :1]) / (b[:, 2:3] - b[:, :1]) * 2 - 1     # (R, W)
    ys = (torch.arange(h, dtype=dtype)[None] + 0.5 - b[:, 1:2]) / (b[:, 3:4] - b[:, 1:2]) * 2 - 1   # (R, H)
    grid = torch.stack([xs[:, None, :].expand(-1, h, -1), ys[:, :, None].expand(-1, -1, w)], dim=-1)
    return F.grid_sample(masks[:, None], grid, align_corners=False)[:, 0] >= threshold


# ------------------------------------------------------------------------------------------------
# keypoint_targets(keypoints (R, P, 3), rois (R, 4), heatmap_size) -> (targets (R, P) int64, valid (R, P) bool)
# ------------------------------------------------------------------------------------------------
def _kp_student(keypoints, rois, heatmap_size, *, floor=torch.floor, cells=None, offset=True, width_for_y=False,
                edge=True, labelled=lambda v: v > 0, top=None, zero=True, flat=lambda row, col, s: row * s + col):
    """A student's keypoint_targets written out, with one of its steps swapped for a variant."""
    s = heatmap_size
    x, y, v = keypoints[..., 0], keypoints[..., 1], keypoints[..., 2]
    x1, y1, x2, y2 = rois[:, 0:1], rois[:, 1:2], rois[:, 2:3], rois[:, 3:4]
    n = s if cells is None else cells
    col = floor(((x - x1) if offset else x) * n / (x2 - x1)).long()
    row = floor(((y - y1) if offset else y) * n / ((x2 - x1) if width_for_y else (y2 - y1))).long()
    if edge:
        col[x == x2] = s - 1
        row[y == y2] = s - 1
    limit = s if top is None else top
    valid = labelled(v) & (col >= 0) & (row >= 0) & (col < limit) & (row < limit)
    index = flat(row, col, s)
    return (index * valid if zero else index), valid


def kp_targets_round(keypoints, rois, heatmap_size):
    """Rounds to the nearest cell instead of taking the floor."""
    return _kp_student(keypoints, rois, heatmap_size, floor=torch.round)


def kp_targets_truncate(keypoints, rois, heatmap_size):
    """.long() without floor: truncates toward zero."""
    return _kp_student(keypoints, rois, heatmap_size, floor=lambda u: u)


def kp_targets_col_major(keypoints, rois, heatmap_size):
    """Flat index column * S + row."""
    return _kp_student(keypoints, rois, heatmap_size, flat=lambda row, col, s: col * s + row)


def kp_targets_no_offset(keypoints, rois, heatmap_size):
    """Scales the image coordinates without subtracting the RoI's corner."""
    return _kp_student(keypoints, rois, heatmap_size, offset=False)


def kp_targets_minus_one(keypoints, rois, heatmap_size):
    """Scales by (S - 1) / width."""
    return _kp_student(keypoints, rois, heatmap_size, cells=heatmap_size - 1)


def kp_targets_width_for_y(keypoints, rois, heatmap_size):
    """Scales y by the width too (a square RoI assumed)."""
    return _kp_student(keypoints, rois, heatmap_size, width_for_y=True)


def kp_targets_visible_only(keypoints, rois, heatmap_size):
    """Only v == 2 keypoints are valid (occluded ones dropped)."""
    return _kp_student(keypoints, rois, heatmap_size, labelled=lambda v: v == 2)


def kp_targets_ignore_v(keypoints, rois, heatmap_size):
    """Never looks at v."""
    return _kp_student(keypoints, rois, heatmap_size, labelled=lambda v: torch.ones_like(v, dtype=torch.bool))


def kp_targets_no_edge_rule(keypoints, rois, heatmap_size):
    """A keypoint on x == x2 falls in cell S (outside)."""
    return _kp_student(keypoints, rois, heatmap_size, edge=False)


def kp_targets_inclusive(keypoints, rois, heatmap_size):
    """col <= S counted as inside."""
    return _kp_student(keypoints, rois, heatmap_size, top=heatmap_size + 1)


def kp_targets_not_zeroed(keypoints, rois, heatmap_size):
    """Leaves the computed index where the keypoint is not valid."""
    return _kp_student(keypoints, rois, heatmap_size, zero=False)


def kp_targets_valid_long(keypoints, rois, heatmap_size):
    """Returns valid as 0/1 int64 (as detectron2 does)."""
    targets, valid = _kp_student(keypoints, rois, heatmap_size)
    return targets, valid.long()


def kp_targets_in_place(keypoints, rois, heatmap_size):
    """Shifts the caller's keypoints into the RoI in place."""
    keypoints[..., 0] -= rois[:, 0:1]
    keypoints[..., 1] -= rois[:, 1:2]
    zero = torch.zeros_like(rois)
    zero[:, 2:] = rois[:, 2:] - rois[:, :2]
    return _kp_student(keypoints, zero, heatmap_size)


def kp_targets_stacked(keypoints, rois, heatmap_size):
    """One RoI at a time, torch.stack of the lists: fails without RoIs."""
    outs = [_kp_student(keypoints[r:r + 1], rois[r:r + 1], heatmap_size) for r in range(len(rois))]
    return torch.stack([t[0] for t, _ in outs]), torch.stack([v[0] for _, v in outs])


def kp_targets_loop(keypoints, rois, heatmap_size):
    """Correct: plain Python loops with math.floor, one keypoint at a time."""
    import math
    r, p = keypoints.shape[:2]
    targets = torch.zeros(r, p, dtype=torch.int64)
    valid = torch.zeros(r, p, dtype=torch.bool)
    for i in range(r):
        x1, y1, x2, y2 = rois[i].tolist()
        for k in range(p):
            x, y, v = keypoints[i, k].tolist()
            col = heatmap_size - 1 if x == x2 else math.floor((x - x1) * heatmap_size / (x2 - x1))
            row = heatmap_size - 1 if y == y2 else math.floor((y - y1) * heatmap_size / (y2 - y1))
            if v > 0 and 0 <= col < heatmap_size and 0 <= row < heatmap_size:
                targets[i, k], valid[i, k] = row * heatmap_size + col, True
    return targets, valid


def kp_targets_detectron2(keypoints, rois, heatmap_size):
    """Correct: detectron2's keypoints_to_heatmap, valid turned into bool."""
    offset_x, offset_y = rois[:, 0], rois[:, 1]
    scale_x = heatmap_size / (rois[:, 2] - rois[:, 0])
    scale_y = heatmap_size / (rois[:, 3] - rois[:, 1])
    offset_x, offset_y, scale_x, scale_y = (t[:, None] for t in (offset_x, offset_y, scale_x, scale_y))
    x, y = keypoints[..., 0], keypoints[..., 1]
    x_boundary = x == rois[:, 2][:, None]
    y_boundary = y == rois[:, 3][:, None]
    x = ((x - offset_x) * scale_x).floor().long()
    y = ((y - offset_y) * scale_y).floor().long()
    x[x_boundary] = heatmap_size - 1
    y[y_boundary] = heatmap_size - 1
    valid = (x >= 0) & (y >= 0) & (x < heatmap_size) & (y < heatmap_size) & (keypoints[..., 2] > 0)
    return (y * heatmap_size + x) * valid, valid


# ------------------------------------------------------------------------------------------------
# decode_keypoints(heatmaps (R, P, S, S), rois (R, 4)) -> (R, P, 3) (x, y, score)
# ------------------------------------------------------------------------------------------------
def _decode_student(heatmaps, rois, *, centre=0.5, cells=None, swap=False, offset=True, width_for_y=False,
                    last=False, score=lambda m: m, yx=False):
    r, p, s, _ = heatmaps.shape
    flat = heatmaps.reshape(r, p, s * s)
    if last:
        index = s * s - 1 - flat.flip(-1).argmax(-1)
    else:
        index = flat.argmax(-1)
    row, col = (index % s, index // s) if swap else (index // s, index % s)
    n = s if cells is None else cells
    x1, y1, x2, y2 = rois[:, 0:1], rois[:, 1:2], rois[:, 2:3], rois[:, 3:4]
    x = (x1 if offset else 0) + (col + centre) * (x2 - x1) / n
    y = (y1 if offset else 0) + (row + centre) * ((x2 - x1) if width_for_y else (y2 - y1)) / n
    parts = [y, x] if yx else [x, y]
    return torch.stack(parts + [score(flat.amax(-1))], -1).to(heatmaps.dtype)


def decode_corner(heatmaps, rois):
    """The cell's top-left corner (no + 0.5)."""
    return _decode_student(heatmaps, rois, centre=0.0)


def decode_align_corners(heatmaps, rois):
    """x1 + column * (x2 - x1) / (S - 1)."""
    return _decode_student(heatmaps, rois, centre=0.0, cells=heatmaps.shape[-1] - 1)


def decode_row_col_swapped(heatmaps, rois):
    """row = index % S, column = index // S."""
    return _decode_student(heatmaps, rois, swap=True)


def decode_no_offset(heatmaps, rois):
    """Forgets to add the RoI's corner."""
    return _decode_student(heatmaps, rois, offset=False)


def decode_width_for_y(heatmaps, rois):
    """Scales rows by the RoI's width."""
    return _decode_student(heatmaps, rois, width_for_y=True)


def decode_last_maximum(heatmaps, rois):
    """(heatmap == max).nonzero()[-1]: the last maximum on ties."""
    return _decode_student(heatmaps, rois, last=True)


def decode_sigmoid_score(heatmaps, rois):
    """Returns sigmoid(max) as the score."""
    return _decode_student(heatmaps, rois, score=torch.sigmoid)


def decode_yx(heatmaps, rois):
    """Stacks (y, x, score)."""
    return _decode_student(heatmaps, rois, yx=True)


def decode_float32(heatmaps, rois):
    """Builds the output with torch.tensor(..., dtype=torch.float32)."""
    return _decode_student(heatmaps, rois).float()


def decode_softmax_in_place(heatmaps, rois):
    """Normalises the caller's heatmaps in place (subtracts the max), then decodes: the score is 0."""
    heatmaps -= heatmaps.amax((2, 3), keepdim=True)
    return _decode_student(heatmaps, rois)


def decode_stacked(heatmaps, rois):
    """One RoI at a time, torch.stack of the list: fails without RoIs."""
    return torch.stack([_decode_student(heatmaps[r:r + 1], rois[r:r + 1])[0] for r in range(len(rois))])


def decode_unravel(heatmaps, rois):
    """Correct: torch.unravel_index on the flat argmax, cell size computed first."""
    r, p, s, _ = heatmaps.shape
    flat = heatmaps.flatten(2)
    row, col = torch.unravel_index(flat.argmax(-1), (s, s))
    cell_w = ((rois[:, 2] - rois[:, 0]) / s)[:, None]
    cell_h = ((rois[:, 3] - rois[:, 1]) / s)[:, None]
    x = rois[:, 0:1] + (col.to(heatmaps.dtype) + 0.5) * cell_w
    y = rois[:, 1:2] + (row.to(heatmaps.dtype) + 0.5) * cell_h
    return torch.stack([x, y, flat.max(-1).values], -1)


# ------------------------------------------------------------------------------------------------
# The library
# ------------------------------------------------------------------------------------------------
_IN_PLACE = "the inputs stay unchanged"

MUTANTS = {
    "mask_targets": [
        Mutant("whole mask resized", targets_whole_mask, "the whole mask was resized"),
        Mutant("box rounded", targets_rounded_box, "rounded to whole pixels", rule="RoIAlign, no rounding"),
        Mutant("RoIPool", targets_roi_pool, "this is RoIPool", rule="RoIAlign, no rounding"),
        Mutant("not thresholded", targets_not_thresholded, "values other than 0 and 1", rule="thresholded at 0.5"),
        Mutant("x and y swapped", targets_xy_swapped, "x and y are swapped"),
        Mutant("transposed", targets_transposed, "each target is transposed"),
        Mutant("aligned=False", targets_not_aligned, "aligned=True", rule="aligned=True (half-pixel centres)"),
        Mutant("mask r for RoI r", targets_mask_r, "gt_masks[matched_idx[r]]"),
        Mutant("torch.stack of the list", targets_stacked, "R = 0", rule="no RoIs gives (0, M, M)"),
        Mutant("boxes -= 0.5 in place", targets_shift_in_place, "modified its argument `boxes` in place",
               rule=_IN_PLACE),
        Mutant("first mask for every RoI", targets_first_mask, "gt_masks[matched_idx[r]]"),
    ],
    "mask_loss": [
        Mutant("softmax over the classes", loss_softmax_over_classes, "a softmax across the classes",
               rule="one sigmoid per class"),
        Mutant("per-pixel cross-entropy", loss_pixel_cross_entropy, "per-pixel softmax cross-entropy"),
        Mutant("every channel", loss_every_channel, "every class channel", rule="only the label's channel"),
        Mutant("predicted channel", loss_predicted_channel, "chosen from the predictions"),
        Mutant("sigmoid then log", loss_naive_log, "not finite", rule="computed stably from the logits"),
        Mutant("sigmoid then clamped log", loss_sigmoid_then_bce, "sigmoid then log is unstable",
               rule="computed stably from the logits"),
        Mutant("log(p + 1e-7)", loss_log_eps, "an epsilon inside the log",
               rule="computed stably from the logits, no epsilon"),
        Mutant("summed", loss_summed, "the loss is summed", rule="the mean over RoIs and pixels"),
        Mutant("labels - 1", loss_label_minus_one, "off by one"),
        Mutant("float32 loss", loss_float32, "keep the dtype of mask_logits", rule="the dtype of mask_logits"),
        Mutant("logits clamped in place", loss_logits_clamped_in_place, "modified its argument `mask_logits` in place",
               rule=_IN_PLACE),
    ],
    "paste_masks": [
        Mutant("pixel corners", paste_pixel_corners, "half a pixel off", rule="sampled at pixel centres"),
        Mutant("align_corners=True", paste_align_corners, "corners are aligned", rule="align_corners=False"),
        Mutant("+1 box size", paste_plus_one, "x2 - x1 + 1"),
        Mutant("not resized", paste_not_resized, "without resizing"),
        Mutant("sigmoid on probabilities", paste_sigmoid, "a sigmoid was applied"),
        Mutant("x and y swapped", paste_xy_swapped, "x and y are swapped"),
        Mutant("thresholded before resampling", paste_thresholded_first, "thresholded before resampling"),
        Mutant("nearest", paste_nearest, "nearest-neighbour", rule="bilinear"),
        Mutant("float output", paste_float_output, "expected torch.bool", rule="returns bool"),
        Mutant("transposed", paste_transposed, "each mask is transposed"),
        Mutant("threshold argument ignored", paste_fixed_threshold, "threshold argument",
               rule="value >= threshold (the argument)"),
        Mutant("torch.stack of the list", paste_stacked, "R = 0", rule="no masks gives (0, H, W)"),
    ],
    "keypoint_targets": [
        Mutant("rounded", kp_targets_round, "rounded to the nearest cell", rule="floor"),
        Mutant("truncated toward zero", kp_targets_truncate, "truncated toward zero", rule="floor"),
        Mutant("column-major index", kp_targets_col_major, "column * heatmap_size + row",
               rule="flat index row * S + column"),
        Mutant("no RoI offset", kp_targets_no_offset, "subtract the RoI's corner"),
        Mutant("(S - 1) / width", kp_targets_minus_one, "(heatmap_size - 1) / width"),
        Mutant("width for y", kp_targets_width_for_y, "y was scaled by the RoI's width"),
        Mutant("v == 2 only", kp_targets_visible_only, "occluded ones (v = 1)", rule="valid: labelled, v > 0"),
        Mutant("v ignored", kp_targets_ignore_v, "valid needs v > 0", rule="valid: labelled, v > 0"),
        Mutant("no right/bottom edge rule", kp_targets_no_edge_rule, "belongs to the last cell",
               rule="x == x2 goes to the last cell S - 1"),
        Mutant("cell == S inside", kp_targets_inclusive, "equal to heatmap_size", rule="0 <= cell < S"),
        Mutant("index kept where not valid", kp_targets_not_zeroed, "must be 0", rule="0 where not valid"),
        Mutant("valid as int64", kp_targets_valid_long, "expected torch.bool", rule="valid is bool"),
        Mutant("keypoints shifted in place", kp_targets_in_place, "modified its argument `keypoints` in place",
               rule=_IN_PLACE),
        Mutant("torch.stack of the list", kp_targets_stacked, "R = 0", rule="no RoIs gives (0, P)"),
    ],
    "decode_keypoints": [
        Mutant("cell corner", decode_corner, "top-left corner", rule="the cell's centre (+ 0.5)"),
        Mutant("(S - 1) scale", decode_align_corners, "(x2 - x1) / (S - 1)", rule="scaled by (x2 - x1) / S"),
        Mutant("row and column swapped", decode_row_col_swapped, "row and column are swapped"),
        Mutant("no RoI offset", decode_no_offset, "corner (x1, y1) was not added"),
        Mutant("width for y", decode_width_for_y, "y was scaled by the RoI's width"),
        Mutant("last maximum on ties", decode_last_maximum, "the last maximum", rule="the first maximum on ties"),
        Mutant("sigmoid score", decode_sigmoid_score, "sigmoid of the maximum", rule="score: the maximum value"),
        Mutant("(y, x, score)", decode_yx, "x first", rule="(x, y, score)"),
        Mutant("float32 output", decode_float32, "keep the dtype of heatmaps", rule="the dtype of heatmaps"),
        Mutant("heatmaps normalised in place", decode_softmax_in_place, "modified its argument `heatmaps` in place",
               rule=_IN_PLACE),
        Mutant("torch.stack of the list", decode_stacked, "R = 0", rule="no RoIs gives (0, P, 3)"),
    ],
}

ALTERNATIVES = {
    "mask_targets": [Alternative("roi_align per RoI, bool", targets_per_roi)],
    "mask_loss": [Alternative("softplus and gather", loss_softplus), Alternative("logsigmoid", loss_logsigmoid)],
    "paste_masks": [Alternative("grid_sample per mask", paste_loop),
                    Alternative("one batched grid_sample", paste_batched)],
    "keypoint_targets": [Alternative("Python loops with math.floor", kp_targets_loop),
                         Alternative("detectron2's keypoints_to_heatmap", kp_targets_detectron2)],
    "decode_keypoints": [Alternative("unravel_index", decode_unravel)],
}
