"""Grader side of the instance-segmentation (Mask R-CNN) checks: oracles, known mistakes, case builders,
visible and hidden specs (grader copy only).

Oracles are written here in float64 NumPy, independently of the references: RoIAlign on a binary mask as
torchvision's CPU kernel computes it (aligned=True, 2 x 2 samples per bin), the stable binary cross-entropy
with logits, and bilinear resampling with zero padding at pixel centres (what
``F.grid_sample(align_corners=False)`` computes). Where a value lies within a hair of the threshold (a binary
mask's edge gives exactly 0.5 often), either side is accepted: the data marks the pixels that are *decided*,
and only those count. Each known mistake (the whole image instead of the box, a rounded box as in RoIPool, x
and y swapped, aligned=False; a softmax over classes, every channel, predicted labels, sigmoid then log; pixel
corners instead of centres, align_corners=True, no resizing, a sigmoid on probabilities...) is run here on the
case's inputs; its output goes into the case's data, so the student package can name the cause without
holding the code that made the mistake.

Keypoints: the oracle is detectron2's ``keypoints_to_heatmap`` rule in float64 NumPy (floor of the scaled
position, x == x2 in the last cell, valid = v > 0 and inside) and the argmax decoding to cell centres. Random
keypoints are kept away from cell boundaries (float32 may round either way there); the exact boundaries are
tested on constructed cases whose RoIs lie on a quarter-pixel grid with sizes S / 2, S or 2 S and S a power of
two, so every boundary is exact in float32 whatever the order of the operations.
"""
from __future__ import annotations

import numpy as np
import torch

from ..checks.core import Call, Case
from ..rois import roi_pool
from . import mistake_outputs

_AMBIGUOUS = 1e-4  # values closer than this to the threshold may fall on either side (float32 vs float64)


def _decided(soft: np.ndarray, threshold: float) -> torch.Tensor:
    """The pixels whose side of the threshold is unambiguous: the only ones a verifier compares."""
    return torch.from_numpy(np.abs(soft - threshold) >= _AMBIGUOUS)


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------
def _random_masks(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
    """(count, H, W) bool: rotated ellipses and squares of random size and place, never empty."""
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    masks = np.zeros((count, height, width), dtype=bool)
    for k in range(count):
        while not masks[k].any():
            cy, cx = rng.uniform(0.15, 0.85) * height, rng.uniform(0.15, 0.85) * width
            ry, rx = rng.uniform(0.1, 0.3) * height, rng.uniform(0.1, 0.3) * width
            angle = rng.uniform(0, np.pi)
            dy, dx = yy - cy, xx - cx
            u = (dx * np.cos(angle) + dy * np.sin(angle)) / rx
            v = (-dx * np.sin(angle) + dy * np.cos(angle)) / ry
            masks[k] = (u ** 2 + v ** 2 <= 1) if k % 3 != 2 else ((np.abs(u) <= 0.8) & (np.abs(v) <= 0.8))
    return masks


def _tight_box(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)


def _jittered_boxes(rng, masks, matched, jitter: float, outside: bool) -> np.ndarray:
    """A box per RoI around its matched mask, each side moved by up to ``jitter`` x the box size, fractional."""
    boxes = []
    for g in matched:
        x1, y1, x2, y2 = _tight_box(masks[g])
        w, h = x2 - x1, y2 - y1
        box = np.array([x1, y1, x2, y2]) + rng.uniform(-jitter, jitter, 4) * np.array([w, h, w, h])
        box += rng.uniform(0.05, 0.95, 4) * 0.5 - 0.25          # never on whole pixels
        if outside:                                              # reach over the image border
            box[[0, 2]] -= box[0] + rng.uniform(0.5, 4.0)
        box[2], box[3] = max(box[2], box[0] + 1.5), max(box[3], box[1] + 1.5)
        boxes.append(box)
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def _smooth_masks(rng, count: int, M: int, kind: str) -> np.ndarray:
    """(count, M, M) probabilities: blurred random blobs, or all ones ("full")."""
    if kind == "full":
        return np.ones((count, M, M))
    yy, xx = np.mgrid[0:M, 0:M] + 0.5
    out = np.zeros((count, M, M))
    for k in range(count):
        cy, cx = rng.uniform(0.3, 0.7, 2) * M
        ry, rx = rng.uniform(0.25, 0.45, 2) * M
        d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        out[k] = 1 / (1 + np.exp(4 * (d - 1) + rng.normal(0, 0.6, (M, M))))
    return out


# ------------------------------------------------------------------------------------------------
# mask_targets
# ------------------------------------------------------------------------------------------------
def _bilinear_torchvision(f: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """f (H, W) sampled at rows y (P,) x columns x (Q,) -> (P, Q) with torchvision's RoIAlign rules:
    zero beyond one pixel outside, clamped to the border within it."""
    h, w = f.shape
    valid = ((y >= -1) & (y <= h))[:, None] & ((x >= -1) & (x <= w))[None, :]
    y, x = np.maximum(y, 0.0), np.maximum(x, 0.0)
    y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    edge_y, edge_x = y0 >= h - 1, x0 >= w - 1
    y0, x0 = np.where(edge_y, h - 1, y0), np.where(edge_x, w - 1, x0)
    y1, x1 = np.where(edge_y, h - 1, y0 + 1), np.where(edge_x, w - 1, x0 + 1)
    y, x = np.where(edge_y, y0, y), np.where(edge_x, x0, x)
    ly, lx = (y - y0)[:, None], (x - x0)[None, :]
    value = ((1 - ly) * (1 - lx) * f[np.ix_(y0, x0)] + (1 - ly) * lx * f[np.ix_(y0, x1)]
             + ly * (1 - lx) * f[np.ix_(y1, x0)] + ly * lx * f[np.ix_(y1, x1)])
    return value * valid


def _roi_align_mask(mask: np.ndarray, box, M: int, aligned: bool = True, ratio: int = 2) -> np.ndarray:
    """RoIAlign of one (H, W) mask over one box: (M, M) float64 (torchvision's CPU kernel, one channel)."""
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (float(v) - offset for v in box)
    w, h = x2 - x1, y2 - y1
    if not aligned:
        w, h = max(w, 1.0), max(h, 1.0)
    steps = (np.arange(M * ratio) + 0.5) / (M * ratio)
    samples = _bilinear_torchvision(mask.astype(np.float64), y1 + h * steps, x1 + w * steps)
    return samples.reshape(M, ratio, M, ratio).mean(axis=(1, 3))


def _soft_targets(masks, boxes, matched, M, box_fn=None, aligned=True) -> np.ndarray:
    """(R, M, M) float64: RoIAlign of each RoI's matched mask over its box (``box_fn(box, mask)`` moves the box)."""
    out = np.zeros((len(boxes), M, M))
    for r, (box, g) in enumerate(zip(boxes, matched)):
        out[r] = _roi_align_mask(masks[g], box if box_fn is None else box_fn(box, masks[g]), M, aligned)
    return out


def _binary_targets(box_fn=None, aligned=True, transpose=False, matched_fn=None):
    """A wrong mask_targets(masks, boxes, matched, M) -> ((R, M, M) float64 in {0, 1}, (R, M, M) bool sure): the
    targets of a variant, and where its own resampled value is not within a hair of 0.5 (a rounded box samples
    a binary mask at exactly 0.5 often; float32 may fall on either side there, so those pixels do not count)."""
    def targets(masks, boxes, matched, M):
        matched = matched if matched_fn is None else matched_fn(len(boxes), len(masks))
        soft = _soft_targets(masks, boxes, matched, M, box_fn, aligned)
        if transpose:
            soft = soft.transpose(0, 2, 1)
        return (soft >= 0.5).astype(np.float64), np.abs(soft - 0.5) >= _AMBIGUOUS
    return targets


def _whole_image(box, mask):
    return np.array([0.0, 0.0, mask.shape[1], mask.shape[0]])


def _roi_pool_targets(masks, boxes, matched, M) -> np.ndarray:
    rois = torch.cat([torch.arange(len(boxes), dtype=torch.float64)[:, None], torch.from_numpy(boxes)], 1)
    feats = torch.from_numpy(masks[np.asarray(matched)].astype(np.float64))[:, None]
    return roi_pool(feats, rois, (M, M), 1.0)[:, 0].numpy()


_TARGET_MISTAKES = [
    (_binary_targets(box_fn=_whole_image),
     "the whole mask was resized to M x M: crop it to the RoI first (RoIAlign over the box, not the image)"),
    (_binary_targets(box_fn=lambda box, _: np.round(box)),
     "the box was rounded to whole pixels (RoIPool's quantisation): keep the real-valued coordinates"),
    (_roi_pool_targets,
     "this is RoIPool (rounded box, max per bin): Mask R-CNN samples the mask with RoIAlign (bilinear, "
     "no rounding), which keeps the target aligned with the box"),
    (_binary_targets(box_fn=lambda box, _: box[[1, 0, 3, 2]]),
     "x and y are swapped: boxes are (x1, y1, x2, y2) with x the column, y the row"),
    (_binary_targets(transpose=True),
     "each target is transposed: rows of the M x M target must follow y, columns x"),
    (_binary_targets(aligned=False),
     "the samples are half a pixel off: use aligned=True (pixel j's centre is j + 0.5)"),
    (_binary_targets(matched_fn=lambda r, g: np.arange(r) % g),
     "RoI r was given ground-truth mask r: use gt_masks[matched_idx[r]]"),
    (_binary_targets(matched_fn=lambda r, g: np.zeros(r, np.int64)),
     "every RoI was given the first ground-truth mask: use gt_masks[matched_idx[r]]"),
]


def _mask_targets_inputs(spec):
    """Ground-truth masks (G, H, W) bool, RoI boxes (R, 4) float64 and matched indices (R,) of a spec."""
    rng = np.random.default_rng(spec["seed"])
    g, r = spec["gt"], spec["rois"]
    masks = _random_masks(rng, g, *spec["image"])
    matched = rng.integers(0, g, r) if r else np.zeros(0, dtype=np.int64)
    if r >= g:
        matched[:g] = rng.permutation(g)
    boxes = _jittered_boxes(rng, masks, matched, spec.get("jitter", 0.2), spec.get("outside", False))
    return masks, boxes, matched


def _mask_targets_cases(specs, reveal):
    for spec in specs:
        (height, width), g, r, M = spec["image"], spec["gt"], spec["rois"], spec["M"]
        masks, boxes, matched = _mask_targets_inputs(spec)
        boxes = boxes.astype(np.float32).astype(np.float64)   # the values the student's function sees
        soft = _soft_targets(masks, boxes, matched, M)
        data = {"expected": torch.from_numpy((soft >= 0.5).astype(np.float64)), "decided": _decided(soft, 0.5),
                "mistakes": mistake_outputs(_TARGET_MISTAKES, masks, boxes, matched, M) if r else []}
        gt = torch.from_numpy(masks) if spec.get("mask_dtype", "bool") == "bool" else torch.from_numpy(masks).float()
        name = (f"{g} masks of {height}x{width}, {r} RoIs, M = {M}"
                + (" (boxes reach over the image border)" if spec.get("outside") else "")
                + (", float masks" if spec.get("mask_dtype") == "float" else ""))
        call = Call(gt, torch.from_numpy(boxes).float(), torch.from_numpy(matched).long(), M)
        yield Case(name, [call], "mask_targets", data, explain="mask_targets", about=spec.get("about", ""))


# ------------------------------------------------------------------------------------------------
# mask_loss
# ------------------------------------------------------------------------------------------------
def _bce_logits(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Stable elementwise binary cross-entropy with logits."""
    return np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))


def _bce_probs(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """F.binary_cross_entropy on probabilities (logs clamped at -100, as torch does)."""
    with np.errstate(divide="ignore"):
        return -(t * np.maximum(np.log(p), -100) + (1 - t) * np.maximum(np.log1p(-p), -100))


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def _own_channel(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(R, K, M, M) -> (R, M, M): each RoI's channel of its label."""
    return x[np.arange(len(labels)), labels]


def _mask_loss_oracle(x, labels, t) -> float:
    """The mean stable BCE of each RoI's ground-truth-class channel (0 without RoIs)."""
    return float(_bce_logits(_own_channel(x, labels), t).mean()) if len(x) else 0.0


def _sigmoid_then_bce(x, labels, t) -> float:
    sig = 1 / (1 + np.exp(-np.clip(_own_channel(x, labels), -700, 700)))
    return float(_bce_probs(sig, t).mean())


def _pixel_softmax_ce(x, labels, t) -> float:
    pixel_class = np.where(t >= 0.5, labels[:, None, None], 0)
    return float(-np.log(np.take_along_axis(_softmax(x, 1), pixel_class[:, None], 1)[:, 0]).mean())


_LOSS_MISTAKES = [
    (lambda x, labels, t: float(_bce_probs(_own_channel(_softmax(x, 1), labels), t).mean()),
     "a softmax across the classes makes them compete; Mask R-CNN decouples mask and class: a sigmoid "
     "per class, and only the ground-truth class's channel is trained"),
    (_pixel_softmax_ce,
     "this is a per-pixel softmax cross-entropy over the classes (semantic segmentation's loss); Mask "
     "R-CNN uses a binary cross-entropy on the ground-truth class's channel only"),
    (lambda x, labels, t: float(_bce_logits(x, t[:, None]).mean()),
     "every class channel was trained against the target: only the channel of each RoI's ground-truth "
     "class (labels[r]) contributes"),
    (lambda x, labels, t: float(_bce_logits(_own_channel(x, x.mean(axis=(2, 3)).argmax(1)), t).mean()),
     "the channel was chosen from the predictions: use the ground-truth labels"),
    (lambda x, labels, t: float(_bce_logits(x.max(axis=1), t).mean()),
     "the channel was chosen per pixel from the predictions: use the ground-truth label of each RoI"),
    (_sigmoid_then_bce,
     "sigmoid then log is unstable: for large logits sigmoid rounds to exactly 0 or 1 and the log to "
     "-inf (torch clamps it at -100). Use the logits directly: max(x, 0) - x * t + log(1 + exp(-|x|))"),
    (lambda x, labels, t: float(_bce_logits(_own_channel(x, labels), t).sum()),
     "the loss is summed: take the mean over RoIs and pixels"),
    (lambda x, labels, t: float(_bce_logits(_own_channel(x, labels), t).mean(axis=(1, 2)).sum()),
     "per-RoI means were summed: take the mean over all RoIs and pixels"),
]
_EPS_CAUSE = ("an epsilon inside the log (log(p + eps)) caps the loss of a confidently wrong pixel at -log(eps); "
              "the exercise's formula needs none: max(x, 0) - x * t + log(1 + exp(-|x|)) from the logits")


def _log_eps(eps: float):
    def loss(x, labels, t):
        p = 1 / (1 + np.exp(-np.clip(_own_channel(x, labels), -700, 700)))
        return float(-(t * np.log(p + eps) + (1 - t) * np.log(1 - p + eps)).mean())
    return loss


# the epsilons students write (one known mistake each: the loss depends on its value)
_LOSS_MISTAKES += [(_log_eps(eps), _EPS_CAUSE) for eps in (1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10, 1e-12)]
_OFF_BY_ONE = (lambda x, labels, t: float(_bce_logits(_own_channel(x, labels - 1), t).mean()),
               "off by one: labels index the channels directly (channel labels[r], not labels[r] - 1)")


def _mask_loss_mistakes(x, labels, t) -> list[tuple[float, str]]:
    """(loss, cause) of the known mistakes whose loss is finite (a non-finite loss has its own diagnosis)."""
    # With one class, labels - 1 = -1 picks the same (only) channel: not a mistake there.
    mistakes = _LOSS_MISTAKES + ([_OFF_BY_ONE] if x.shape[1] > 1 else [])
    return [(value, cause) for value, cause in mistake_outputs(mistakes, x, labels, t) if np.isfinite(value)]


def _mask_loss_cases(specs, reveal):
    for spec in specs:
        rng = np.random.default_rng(spec["seed"])
        r, k, M = spec["rois"], spec["classes"], spec["M"]
        dtype = getattr(torch, spec.get("dtype", "float64"))
        x = rng.normal(size=(r, k, M, M)) * spec.get("scale", 3.0)
        labels = rng.integers(1 if k > 1 else 0, k, r)   # label 0 is the background when there are classes
        t = (rng.random((r, M, M)) < 0.5).astype(np.float64)
        if spec.get("soft"):
            t = rng.random((r, M, M))
        logits = torch.from_numpy(x).to(dtype)
        x = logits.double().numpy()                       # the values the student's function actually sees
        data = {"expected": _mask_loss_oracle(x, labels, t), "dtype": dtype,
                "mistakes": _mask_loss_mistakes(x, labels, t)}
        name = (f"{r} RoIs, {k} classes, M = {M}, {spec.get('dtype', 'float64')}"
                + (f", logits up to |{np.abs(x).max():.0f}|" if spec.get("scale", 3.0) > 50 else "")
                + (", soft targets" if spec.get("soft") else ""))
        call = Call(logits, torch.from_numpy(labels).long(), torch.from_numpy(t).to(dtype))
        yield Case(name, [call], "mask_loss", data, about=spec.get("about", ""))


# ------------------------------------------------------------------------------------------------
# paste_masks
# ------------------------------------------------------------------------------------------------
def _bilinear_zero(mask: np.ndarray, v: np.ndarray, u: np.ndarray) -> np.ndarray:
    """mask (M, N) sampled at rows v (H,) x columns u (W,) (cell centres at integers), zero outside."""
    rows, cols = mask.shape
    v0, u0 = np.floor(v).astype(np.int64), np.floor(u).astype(np.int64)
    dv, du = (v - v0)[:, None], (u - u0)[None, :]

    def at(vi, ui):
        ok = ((vi >= 0) & (vi < rows))[:, None] & ((ui >= 0) & (ui < cols))[None, :]
        return np.where(ok, mask[np.ix_(np.clip(vi, 0, rows - 1), np.clip(ui, 0, cols - 1))], 0.0)
    return ((1 - dv) * (1 - du) * at(v0, u0) + (1 - dv) * du * at(v0, u0 + 1)
            + dv * (1 - du) * at(v0 + 1, u0) + dv * du * at(v0 + 1, u0 + 1))


def _paste_soft(mask: np.ndarray, box, height: int, width: int, variant: str = "") -> np.ndarray:
    """The pasted probabilities of one mask: (H, W) float64; ``variant`` names a known mistake."""
    M = mask.shape[0]
    x1, y1, x2, y2 = (float(b) for b in box)
    centre = 0.0 if variant == "corner" else 0.5
    xs, ys = np.arange(width) + centre, np.arange(height) + centre
    if variant == "align_corners":
        u = (xs - x1) / (x2 - x1) * (M - 1)
        v = (ys - y1) / (y2 - y1) * (M - 1)
    elif variant == "plus_one":
        u = (xs - x1) / (x2 - x1 + 1) * M - 0.5
        v = (ys - y1) / (y2 - y1 + 1) * M - 0.5
    else:
        u = (xs - x1) / (x2 - x1) * M - 0.5
        v = (ys - y1) / (y2 - y1) * M - 0.5
    if variant == "nearest":
        u, v = np.floor(u + 0.5), np.floor(v + 0.5)
    return _bilinear_zero(mask, v, u)


def _pasted(variant=""):
    """A paste_masks(masks (R, M, M), boxes (R, 4), H, W, threshold) -> (R, H, W) bool, possibly a wrong variant."""
    def paste(masks, boxes, height, width, threshold):
        return np.stack([_paste_soft(m, b, height, width, variant) >= threshold for m, b in zip(masks, boxes)])
    return paste


def _unresized(masks, boxes, height, width, threshold) -> np.ndarray:
    """Each M x M mask copied into the image at its box's rounded corner, without resizing."""
    out = np.zeros((len(boxes), height, width), dtype=bool)
    for r, (m, b) in enumerate(zip(masks, boxes)):
        x0, y0 = int(round(b[0])), int(round(b[1]))
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if 0 <= y0 + i < height and 0 <= x0 + j < width:
                    out[r, y0 + i, x0 + j] = m[i, j] >= threshold
    return out


_PASTE_MISTAKES = [
    (_pasted("corner"), "the pixel grid is half a pixel off: sample at pixel centres (j + 0.5, i + 0.5), "
                        "and map the box's left edge x1 to the mask's left edge"),
    (_pasted("align_corners"), "corners are aligned (align_corners=True or a (M - 1) / (w - 1) scale): with "
                               "pixel-centre coordinates use align_corners=False"),
    (_pasted("plus_one"), "the box size is taken as x2 - x1 + 1 (the old '+1' pixel convention): here boxes "
                          "are real-valued and the width is x2 - x1"),
    (_unresized, "the M x M mask was copied into the image without resizing it to the box"),
    (lambda masks, boxes, h, w, thr: _pasted()(1 / (1 + np.exp(-masks)), boxes, h, w, thr),
     "a sigmoid was applied to masks that are already probabilities (threshold the probabilities; a sigmoid "
     "makes every value >= 0.5)"),
    (lambda masks, boxes, h, w, thr: _pasted()(masks, boxes[:, [1, 0, 3, 2]], h, w, thr),
     "x and y are swapped: boxes are (x1, y1, x2, y2) with x the column"),
    (lambda masks, boxes, h, w, thr: _pasted()(masks.transpose(0, 2, 1), boxes, h, w, thr),
     "each mask is transposed: mask rows follow y, columns x"),
    (lambda masks, boxes, h, w, thr: _pasted()((masks >= thr).astype(np.float64), boxes, h, w, 0.5),
     "the mask was thresholded before resampling: resample the probabilities, then threshold"),
    (_pasted("nearest"), "nearest-neighbour resampling: Mask R-CNN resamples bilinearly"),
    (lambda masks, boxes, h, w, thr: _pasted()(masks, boxes, h, w, 0.5),
     "the threshold argument was ignored (0.5 used): compare with `threshold`"),
]


def _paste_inputs(spec):
    """Masks (R, M, M) and boxes (R, 4) of a spec, in the spec's dtype (float32 unless said)."""
    rng = np.random.default_rng(spec["seed"])
    height, width = spec["image"]
    r, M = spec["rois"], spec["M"]
    dtype = getattr(torch, spec.get("dtype", "float32"))
    masks = torch.from_numpy(_smooth_masks(rng, r, M, spec.get("masks", "blobs"))).to(dtype)
    sizes = rng.uniform(*spec.get("sizes", (0.3, 0.7)), (r, 2)) * np.array([width, height])
    corners = rng.uniform(-0.15, 0.9, (r, 2)) * np.array([width, height]) if spec.get("outside") else \
        rng.uniform(0, 1, (r, 2)) * (np.array([width, height]) - sizes)
    boxes = torch.from_numpy(np.round(np.concatenate([corners, corners + sizes], 1), 2) + 0.013).to(dtype)
    return masks, boxes


def _paste_cases(specs, reveal):
    for spec in specs:
        (height, width), r, M = spec["image"], spec["rois"], spec["M"]
        threshold = spec.get("threshold", 0.5)
        masks, boxes = _paste_inputs(spec)
        m64, b64 = masks.double().numpy(), boxes.double().numpy()  # the values the student's function sees
        soft = (np.stack([_paste_soft(m, b, height, width) for m, b in zip(m64, b64)]) if r
                else np.zeros((0, height, width)))
        data = {"expected": torch.from_numpy(soft >= threshold), "decided": _decided(soft, threshold),
                "mistakes": mistake_outputs(_PASTE_MISTAKES, m64, b64, height, width, threshold) if r else []}
        call = Call(masks, boxes, (height, width), threshold) if "threshold" in spec else \
            Call(masks, boxes, (height, width))
        name = (f"{r} masks of {M}x{M} into a {height}x{width} image"
                + (f", threshold {threshold}" if "threshold" in spec else "")
                + (" (boxes over the border)" if spec.get("outside") else "")
                + (", all-ones masks: each must fill exactly the pixels whose centres lie in its box"
                   if spec.get("masks") == "full" else "") + (f", {spec['dtype']}" if "dtype" in spec else ""))
        yield Case(name, [call], "paste_masks", data, explain="paste_masks", about=spec.get("about", ""))


# ------------------------------------------------------------------------------------------------
# keypoint_targets
# ------------------------------------------------------------------------------------------------
def _kp_cells(kp, rois, S, *, rounding=np.floor, scale_minus_one=False, offset=True, width_for_y=False,
              edge_rule=True):
    """(col, row) float64 cell indices of every keypoint, (R, P) each, by the oracle's rule or a variant."""
    x, y = kp[..., 0], kp[..., 1]
    x1, y1, x2, y2 = (rois[:, i:i + 1] for i in range(4))
    cells = S - 1 if scale_minus_one else S
    w, h = x2 - x1, y2 - y1
    col = rounding(((x - x1) if offset else x) * (cells / w))
    row = rounding(((y - y1) if offset else y) * (cells / (w if width_for_y else h)))
    if edge_rule:
        col, row = np.where(x == x2, S - 1, col), np.where(y == y2, S - 1, row)
    return col, row


def _kp_targets(labelled=lambda v: v > 0, inclusive=False, zero_invalid=True, flat=lambda row, col, S: row * S + col,
                **cells):
    """A keypoint_targets(kp (R, P, 3), rois (R, 4), S) -> (targets int64, valid bool), possibly a wrong variant."""
    def targets(kp, rois, S):
        col, row = _kp_cells(kp, rois, S, **cells)
        top = S + 1 if inclusive else S
        valid = labelled(kp[..., 2]) & (col >= 0) & (row >= 0) & (col < top) & (row < top)
        index = flat(row, col, S).astype(np.int64)
        return (np.where(valid, index, 0) if zero_invalid else index), valid
    return targets


def _truncate(u):
    return np.trunc(u)


_KP_TARGET_MISTAKES = [
    (_kp_targets(rounding=np.round),
     "the position was rounded to the nearest cell: Mask R-CNN takes the floor (the cell that holds the point)"),
    (_kp_targets(rounding=_truncate),
     "the position was truncated toward zero (.long() / int() without floor): a keypoint just left of or above "
     "the RoI lands in cell 0 instead of outside; take floor() first"),
    (_kp_targets(flat=lambda row, col, S: col * S + row),
     "the flat index is column * heatmap_size + row: cell (row, column) has index row * heatmap_size + column"),
    (_kp_targets(offset=False),
     "the keypoint was not shifted to the RoI: subtract the RoI's corner (x1, y1) before scaling"),
    (_kp_targets(scale_minus_one=True),
     "scaled by (heatmap_size - 1) / width: the RoI's width spans heatmap_size cells, scale by heatmap_size / width"),
    (_kp_targets(width_for_y=True),
     "y was scaled by the RoI's width: rows use heatmap_size / (y2 - y1), columns heatmap_size / (x2 - x1)"),
    (_kp_targets(labelled=lambda v: v == 2),
     "only visible keypoints (v = 2) got a target: every labelled keypoint (v > 0), occluded ones (v = 1) "
     "included, is valid, as in detectron2"),
    (_kp_targets(labelled=lambda v: np.ones_like(v, dtype=bool)),
     "keypoints with v = 0 (not labelled) were counted as valid: valid needs v > 0"),
    (_kp_targets(edge_rule=False),
     "a keypoint exactly on the RoI's right or bottom edge (x == x2 or y == y2) belongs to the last cell "
     "(heatmap_size - 1), as in detectron2; without that rule it falls outside"),
    (_kp_targets(inclusive=True),
     "a cell index equal to heatmap_size was counted as inside: valid cells are 0 .. heatmap_size - 1"),
    (_kp_targets(zero_invalid=False),
     "where a keypoint is not valid its target index must be 0 (the index is masked by valid)"),
]


def _kp_rois(rng, r, edges: bool, S: int) -> np.ndarray:
    """(R, 4) float64 RoIs: fractional, or (edges) on a quarter-pixel grid with width and height S / 2, S or 2 S
    (then every cell boundary is exact in float32, and the exact-edge rules are tested without rounding doubt)."""
    if edges:
        x1, y1 = rng.integers(0, 120, (2, r)) / 4
        w, h = S * rng.choice([0.5, 1.0, 2.0], (2, r))
    else:
        x1, y1 = rng.uniform(0, 40, (2, r))
        w, h = rng.uniform(4, 30, (2, r))
    return np.stack([x1, y1, x1 + w, y1 + h], 1)


def _kp_points(rng, rois, P, S, spec) -> np.ndarray:
    """(R, P, 3) keypoints around each RoI (up to 25% beyond each side), none within a hair of a cell boundary,
    except the constructed exact ones (spec "edges": on x1, x2, y1, y2 and inner cell boundaries)."""
    r = len(rois)
    kp = np.zeros((r, P, 3))
    x1, y1, x2, y2 = (rois[:, i:i + 1] for i in range(4))
    w, h = x2 - x1, y2 - y1
    for _ in range(100):
        u, t = rng.uniform(-0.25, 1.25, (2, r, P))
        kp[..., 0], kp[..., 1] = x1 + u * w, y1 + t * h
        su, st = u * S, t * S
        if (np.abs(su - np.round(su)) > 1e-3).all() and (np.abs(st - np.round(st)) > 1e-3).all():
            break
    if spec.get("outside"):                      # just beyond each side: truncation and <= S mistakes show
        k = min(P, 4)
        kp[:, 0, 0] = (x1 - 0.3 * w / S)[:, 0]
        kp[:, 1 % k, 1] = (y1 - 0.4 * h / S)[:, 0]
        kp[:, 2 % k, 0] = (x2 + 0.3 * w / S)[:, 0]
        kp[:, 3 % k, 1] = (y2 + 0.2 * h / S)[:, 0]
    if spec.get("edges"):                        # exact: left/top edges, right/bottom edges, inner boundaries
        cell = rng.integers(1, S, (r, P))
        side = rng.integers(0, 5, (r, P))
        inner_x, inner_y = x1 + cell * w / S, y1 + cell * h / S
        kp[..., 0] = np.select([side == 0, side == 1, side == 2], [x1, x2, inner_x], kp[..., 0])
        kp[..., 1] = np.select([side == 0, side == 3, side == 4], [y1, y2, inner_y], kp[..., 1])
    kp[..., 2] = rng.choice([0, 1, 2], (r, P), p=[0.2, 0.3, 0.5])
    if r and P >= 3:                             # every flag present
        kp[0, :3, 2] = [0, 1, 2]
    return kp


def _kp_targets_cases(specs, reveal):
    for spec in specs:
        rng = np.random.default_rng(spec["seed"])
        r, P, S = spec["rois"], spec["points"], spec["S"]
        dtype = getattr(torch, spec.get("dtype", "float32"))
        rois = _kp_rois(rng, r, spec.get("edges", False), S)
        kp = _kp_points(rng, rois, P, S, spec)
        kp_t, rois_t = torch.from_numpy(kp).to(dtype), torch.from_numpy(rois).to(dtype)
        kp, rois = kp_t.double().numpy(), rois_t.double().numpy()      # the values the student's function sees
        targets, valid = _kp_targets()(kp, rois, S)
        data = {"expected": (torch.from_numpy(targets), torch.from_numpy(valid)),
                "mistakes": mistake_outputs(_KP_TARGET_MISTAKES, kp, rois, S) if r else []}
        name = (f"{r} RoIs x {P} keypoints, heatmap_size {S}" + (f", {spec['dtype']}" if "dtype" in spec else "")
                + (", keypoints exactly on RoI edges and cell boundaries" if spec.get("edges") else "")
                + (", keypoints just outside each side" if spec.get("outside") else ""))
        yield Case(name, [Call(kp_t, rois_t, S)], "keypoint_targets", data, explain="keypoint_targets",
                   about=spec.get("about", ""))


# ------------------------------------------------------------------------------------------------
# decode_keypoints
# ------------------------------------------------------------------------------------------------
def _kp_decode(corner=False, align_corners=False, swap_rc=False, offset=True, width_for_y=False, last=False,
               score=lambda m: m, xy_swapped=False):
    """A decode_keypoints(heatmaps (R, P, S, S), rois (R, 4)) -> (R, P, 3) float64, possibly a wrong variant."""
    def decode(heat, rois):
        r, p, S, _ = heat.shape
        flat = heat.reshape(r, p, S * S)
        index = (S * S - 1 - flat[..., ::-1].argmax(-1)) if last else flat.argmax(-1)
        row, col = (index % S, index // S) if swap_rc else (index // S, index % S)
        x1, y1, x2, y2 = (rois[:, i:i + 1] for i in range(4))
        w, h = x2 - x1, y2 - y1
        centre = 0.0 if corner else 0.5
        cells = S - 1 if align_corners else S
        if align_corners:
            centre = 0.0
        x = (x1 if offset else 0) + (col + centre) * w / cells
        y = (y1 if offset else 0) + (row + centre) * (w if width_for_y else h) / cells
        out = [y, x] if xy_swapped else [x, y]
        return np.stack(out + [score(flat.max(-1))], -1)
    return decode


_KP_DECODE_MISTAKES = [
    (_kp_decode(corner=True),
     "the point is the cell's top-left corner: decode to the cell's centre, x1 + (column + 0.5) * (x2 - x1) / S"),
    (_kp_decode(align_corners=True),
     "scaled by (x2 - x1) / (S - 1) (corners aligned): the RoI spans S cells, and cell centres are at "
     "x1 + (column + 0.5) * (x2 - x1) / S"),
    (_kp_decode(swap_rc=True),
     "row and column are swapped: the flat index of cell (row, column) is row * S + column (row = index // S)"),
    (_kp_decode(offset=False),
     "the RoI's corner (x1, y1) was not added: the heatmap covers the RoI, not the image's top-left corner"),
    (_kp_decode(width_for_y=True),
     "y was scaled by the RoI's width: rows use (y2 - y1) / S, columns (x2 - x1) / S"),
    (_kp_decode(last=True),
     "on ties the last maximum was taken: take the first one in row-major order (what torch.argmax of the "
     "flattened heatmap returns)"),
    (_kp_decode(score=lambda m: 1 / (1 + np.exp(-m))),
     "the score is a sigmoid of the maximum: return the maximum value of the heatmap itself"),
    (_kp_decode(xy_swapped=True),
     "the output holds (y, x, score): each keypoint is (x, y, score), x first"),
]


def _kp_decode_cases(specs, reveal):
    for spec in specs:
        rng = np.random.default_rng(spec["seed"])
        r, P, S = spec["rois"], spec["points"], spec["S"]
        dtype = getattr(torch, spec.get("dtype", "float32"))
        heat = rng.normal(size=(r, P, S, S)) * 2
        if spec.get("ties") and r:               # two cells share the maximum: the first in row-major order wins
            for i in range(r):
                for k in range(P):
                    a, b = sorted(rng.choice(S * S, 2, replace=False))
                    top = heat[i, k].max() + 1.0
                    heat[i, k].flat[a] = heat[i, k].flat[b] = top
        rois = _kp_rois(rng, r, False, S)
        heat_t, rois_t = torch.from_numpy(heat).to(dtype), torch.from_numpy(rois).to(dtype)
        heat, rois = heat_t.double().numpy(), rois_t.double().numpy()
        data = {"expected": torch.from_numpy(_kp_decode()(heat, rois)) if r else torch.zeros(0, P, 3, dtype=torch.float64),
                "dtype": dtype,
                "mistakes": mistake_outputs(_KP_DECODE_MISTAKES, heat, rois) if r else []}
        name = (f"{r} RoIs x {P} heatmaps of {S}x{S}" + (f", {spec['dtype']}" if "dtype" in spec else "")
                + (", ties: two cells share each maximum" if spec.get("ties") else ""))
        yield Case(name, [Call(heat_t, rois_t)], "decode_keypoints", data, explain="decode_keypoints",
                   about=spec.get("about", ""))


BUILDERS = {
    "mask_targets": _mask_targets_cases,
    "mask_loss": _mask_loss_cases,
    "paste_masks": _paste_cases,
    "keypoint_targets": _kp_targets_cases,
    "decode_keypoints": _kp_decode_cases,
}

VISIBLE = {
    "mask_targets": [{"image": (40, 56), "gt": 3, "rois": 5, "M": 7, "seed": 1},
                     {"image": (64, 64), "gt": 2, "rois": 4, "M": 14, "seed": 2, "jitter": 0.35},
                     {"image": (48, 40), "gt": 2, "rois": 3, "M": 10, "seed": 3, "outside": True}],
    "mask_loss": [{"rois": 4, "classes": 5, "M": 6, "seed": 11},
                  {"rois": 3, "classes": 3, "M": 4, "seed": 12, "scale": 150.0}],
    "paste_masks": [{"image": (24, 32), "rois": 2, "M": 8, "seed": 21, "masks": "full"},
                    {"image": (40, 56), "rois": 3, "M": 14, "seed": 22},
                    {"image": (48, 36), "rois": 2, "M": 6, "seed": 23, "threshold": 0.3, "outside": True,
                     "sizes": (0.5, 0.9)}],
    "keypoint_targets": [{"rois": 3, "points": 5, "S": 8, "seed": 31},
                         {"rois": 4, "points": 4, "S": 8, "seed": 32, "edges": True},
                         {"rois": 2, "points": 5, "S": 6, "seed": 33, "outside": True}],
    "decode_keypoints": [{"rois": 3, "points": 5, "S": 8, "seed": 41},
                         {"rois": 2, "points": 3, "S": 6, "seed": 42, "ties": True}],
}

SPECS = {
    "mask_targets": [
        {"image": (50, 70), "gt": 4, "rois": 9, "M": 28, "seed": 101, "about": "M = 28, many RoIs"},
        {"image": (33, 45), "gt": 1, "rois": 1, "M": 5, "seed": 102, "about": "a single RoI"},
        {"image": (60, 44), "gt": 3, "rois": 6, "M": 12, "seed": 103, "jitter": 0.5, "about": "loose boxes"},
        {"image": (44, 60), "gt": 2, "rois": 4, "M": 9, "seed": 104, "outside": True,
         "about": "boxes over the image border"},
        {"image": (36, 36), "gt": 3, "rois": 5, "M": 8, "seed": 105, "mask_dtype": "float",
         "about": "float ground-truth masks"},
        {"image": (30, 40), "gt": 2, "rois": 0, "M": 7, "seed": 106, "about": "no RoIs"},
    ],
    "mask_loss": [
        {"rois": 6, "classes": 5, "M": 8, "seed": 111, "dtype": "float32", "about": "float32"},
        {"rois": 1, "classes": 2, "M": 3, "seed": 112, "about": "a single RoI"},
        {"rois": 5, "classes": 4, "M": 5, "seed": 113, "scale": 300.0, "about": "very large logits"},
        {"rois": 4, "classes": 3, "M": 7, "seed": 114, "soft": True, "about": "soft targets"},
        {"rois": 3, "classes": 1, "M": 4, "seed": 115, "about": "one class"},
    ],
    "paste_masks": [
        {"image": (50, 38), "rois": 4, "M": 28, "seed": 121, "about": "M = 28"},
        {"image": (30, 44), "rois": 3, "M": 5, "seed": 122, "sizes": (0.6, 0.95), "about": "large boxes"},
        {"image": (64, 64), "rois": 3, "M": 16, "seed": 123, "sizes": (0.05, 0.15), "about": "small boxes"},
        {"image": (40, 52), "rois": 3, "M": 10, "seed": 124, "threshold": 0.7, "outside": True,
         "about": "threshold 0.7, boxes over the border"},
        {"image": (26, 34), "rois": 2, "M": 7, "seed": 125, "masks": "full", "dtype": "float64",
         "about": "all-ones masks, float64"},
        {"image": (20, 24), "rois": 0, "M": 6, "seed": 126, "about": "no masks"},
    ],
    "keypoint_targets": [
        {"rois": 6, "points": 5, "S": 14, "seed": 131, "about": "heatmap_size 14"},
        {"rois": 5, "points": 5, "S": 8, "seed": 132, "edges": True, "about": "keypoints exactly on the edges"},
        {"rois": 4, "points": 4, "S": 16, "seed": 133, "edges": True, "dtype": "float64",
         "about": "exact edges, float64"},
        {"rois": 5, "points": 4, "S": 7, "seed": 134, "outside": True, "about": "keypoints just outside the RoI"},
        {"rois": 1, "points": 3, "S": 5, "seed": 135, "about": "a single RoI"},
        {"rois": 0, "points": 5, "S": 8, "seed": 136, "about": "no RoIs"},
    ],
    "decode_keypoints": [
        {"rois": 5, "points": 5, "S": 14, "seed": 141, "about": "14 x 14 heatmaps"},
        {"rois": 4, "points": 4, "S": 7, "seed": 142, "ties": True, "about": "ties"},
        {"rois": 3, "points": 3, "S": 9, "seed": 143, "dtype": "float64", "about": "float64"},
        {"rois": 1, "points": 5, "S": 5, "seed": 144, "ties": True, "dtype": "float64", "about": "ties, float64"},
        {"rois": 0, "points": 5, "S": 8, "seed": 145, "about": "no RoIs"},
    ],
}
