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


def _binary_targets(box_fn=None, aligned=True):
    """A mask_targets(masks, boxes, matched, M) -> (R, M, M) float64 in {0, 1}, possibly a wrong variant."""
    def targets(masks, boxes, matched, M):
        return (_soft_targets(masks, boxes, matched, M, box_fn, aligned) >= 0.5).astype(np.float64)
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
    (lambda masks, boxes, matched, M: _binary_targets()(masks, boxes, matched, M).transpose(0, 2, 1),
     "each target is transposed: rows of the M x M target must follow y, columns x"),
    (_binary_targets(aligned=False),
     "the samples are half a pixel off: use aligned=True (pixel j's centre is j + 0.5)"),
    (lambda masks, boxes, matched, M: _binary_targets()(masks, boxes, np.arange(len(boxes)) % len(masks), M),
     "RoI r was given ground-truth mask r: use gt_masks[matched_idx[r]]"),
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
        soft = _soft_targets(masks, boxes, matched, M)
        data = {"expected": torch.from_numpy((soft >= 0.5).astype(np.float64)), "decided": _decided(soft, 0.5),
                "mistakes": mistake_outputs(_TARGET_MISTAKES, masks, boxes, matched, M) if r else []}
        gt = torch.from_numpy(masks) if spec.get("mask_dtype", "bool") == "bool" else torch.from_numpy(masks).float()
        name = (f"{g} masks of {height}x{width}, {r} RoIs, M = {M}"
                + (" (boxes reach over the image border)" if spec.get("outside") else "")
                + (", float masks" if spec.get("mask_dtype") == "float" else ""))
        call = Call(gt, torch.from_numpy(boxes).float(), torch.from_numpy(matched).long(), M)
        yield Case(name, [call], "mask_targets", data, about=spec.get("about", ""))


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
        yield Case(name, [call], "paste_masks", data, about=spec.get("about", ""))


BUILDERS = {
    "mask_targets": _mask_targets_cases,
    "mask_loss": _mask_loss_cases,
    "paste_masks": _paste_cases,
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
}
