"""Benchmarks of the instance-segmentation topic."""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from common import AP_DEFINITION, REPO, bench_checks, bench_notebook, emit, held_out_sets, timed

ORDER = 5  # the lecture's order of topics


def _paste_interpolate_loop(masks, boxes, image_size, threshold=0.5):
    """What one would otherwise write: resize each mask to its rounded box with F.interpolate, paste, threshold
    (torchvision's old paste_masks_in_image without its padding; misaligned by up to a pixel)."""
    h, w = image_size
    out = torch.zeros(len(masks), h, w, dtype=torch.bool)
    for r, (m, box) in enumerate(zip(masks, boxes.tolist())):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(max(x2, x1 + 1), w), min(max(y2, y1 + 1), h)
        if x2 <= x1 or y2 <= y1:
            continue
        resized = F.interpolate(m[None, None], size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False)[0, 0]
        out[r, y1:y2, x1:x2] = resized >= threshold
    return out


def _roi_align_loop(features, rois, size, scale):
    """The same RoIAlign (aligned, 2 x 2 samples per bin) as one F.grid_sample per RoI."""
    n, c, h, w = features.shape
    steps = (torch.arange(2 * size, dtype=features.dtype) + 0.5) / (2 * size)
    out = []
    for b, x1, y1, x2, y2 in rois.tolist():
        x1, y1, x2, y2 = (v * scale - 0.5 for v in (x1, y1, x2, y2))
        xs, ys = x1 + (x2 - x1) * steps, y1 + (y2 - y1) * steps
        valid = (((ys >= -1) & (ys <= h))[:, None] & ((xs >= -1) & (xs <= w))[None, :]).to(features.dtype)
        grid = torch.stack(torch.meshgrid((xs + 0.5) / w * 2 - 1, (ys + 0.5) / h * 2 - 1, indexing="xy"), dim=-1)
        sampled = F.grid_sample(features[int(b):int(b) + 1], grid[None], padding_mode="border", align_corners=False)
        out.append((sampled[0] * valid).reshape(c, size, 2, size, 2).mean(dim=(2, 4)))
    return torch.stack(out)


def run() -> None:
    from lecturelib import data
    from lecturelib import instance_segmentation as inst
    from lecturelib.evaluation import pck
    from lecturelib.reference import decode_keypoints, paste_masks
    from lecturelib.rois import roi_align

    emit("== Instance segmentation: Mask R-CNN's mask branch ==")
    bench_notebook(REPO / "notebooks" / "05_instance_segmentation" / "instance_segmentation.ipynb", 30)
    bench_checks("instance_segmentation")

    gen = torch.Generator().manual_seed(0)
    emit("  paste_masks, reference (batched F.grid_sample; per mask near its box above 128 x 128) vs a per-mask "
         "F.interpolate loop, 100 masks of 28x28 (target: within 2x of the loop, which is misaligned):")
    masks = torch.rand(100, 28, 28, generator=gen)
    for size in (64, 512):
        corner = torch.rand(100, 2, generator=gen) * size * 0.6
        boxes = torch.cat([corner, corner + torch.rand(100, 2, generator=gen) * size * 0.35 + 2], 1)
        ours = timed(lambda: paste_masks(masks, boxes, (size, size)), repeat=5)
        loop = timed(lambda: _paste_interpolate_loop(masks, boxes, (size, size)), repeat=5)
        emit(f"    {size:3d} x {size:3d} image: reference {ours * 1e3:8.2f} ms, F.interpolate loop "
             f"{loop * 1e3:8.2f} ms, ratio {ours / loop:5.2f}x")

    emit("  RoIAlign (aligned, 2 x 2 samples per bin) of 256 RoIs on a (8, 48, 32, 32) feature map to 8 x 8, "
         "stride 2: lecturelib.rois.roi_align (one batched grid_sample) vs a per-RoI F.grid_sample loop "
         "(torchvision.ops.roi_align is not installable here; target: no slower than the loop):")
    features = torch.randn(8, 48, 32, 32, generator=gen)
    corner = torch.rand(256, 2, generator=gen) * 40
    rois = torch.cat([torch.randint(0, 8, (256, 1), generator=gen).float(), corner,
                      corner + torch.rand(256, 2, generator=gen) * 20 + 4], 1)
    same = torch.allclose(_roi_align_loop(features, rois, 8, 0.5), roi_align(features, rois, 8, 0.5),
                          atol=1e-5)
    ours = timed(lambda: roi_align(features, rois, 8, 0.5, 2, True), repeat=5)
    loop = timed(lambda: _roi_align_loop(features, rois, 8, 0.5), repeat=5)
    emit(f"    roi_align {ours * 1e3:7.2f} ms; per-RoI loop {loop * 1e3:7.2f} ms; ratio {ours / loop:4.2f}x"
         f"{'' if same else '  RESULTS DIFFER'}")

    model = inst.load_pretrained()
    meta = model.metadata
    emit(f"  maskrcnn_shapes with DETR's boxes, 1000 held-out images (seed 1); {AP_DEFINITION}; mask AP uses mask IoU:")
    for name, held_out in held_out_sets().items():
        detections = inst.detr_detections(held_out)
        start = time.perf_counter()
        scores = inst.evaluate(model, held_out, paste_masks, detections, coco=True)
        seconds = time.perf_counter() - start
        target = " (target at least 0.85)" if name.startswith("default") else ""
        emit(f"    {name:18s}: mask AP@0.5 {scores['mask_map']:.3f}{target}, mask COCO AP@[.5:.95] "
             f"{scores['mask_coco']:.3f}; box AP@0.5 {scores['box_map']:.3f}, box COCO {scores['box_coco']:.3f}; "
             "per class mask AP " + ", ".join(f"{data.CLASSES[c]} {ap:.2f}" for c, ap in scores["mask_ap"].items())
             + f"; masks + pasting + evaluation {seconds / len(held_out) * 1e3:.2f} ms/image (DETR's boxes computed before)")
    emit(f"    trained by `{meta['command']}` on {meta.get('train', '?')}: {meta['epochs']} epochs, "
         f"{meta.get('train_seconds', '?')} s with {meta.get('threads', '?')} thread(s)")

    emit("  keypoint head (keypoints_shapes), 1000 held-out images (seed 1), reference decode_keypoints; PCK@0.1 = share "
         "of the visible keypoints within 0.1 x the longer side of the object's box (objects under 25% visible left out):")
    kp_model = inst.load_pretrained("keypoints_shapes")
    kp_meta = kp_model.metadata
    held_out = data.make_shapes(1000, seed=1)
    start = time.perf_counter()
    scores = inst.evaluate_keypoints(kp_model, held_out, decode_keypoints)
    seconds = time.perf_counter() - start
    with_detr = inst.evaluate_keypoints(kp_model, held_out, decode_keypoints, inst.detr_detections(held_out))
    rng = np.random.default_rng(0)
    rois = np.concatenate(held_out.boxes) + np.array([-2.0, -2.0, 2.0, 2.0])   # the head's RoIs (grown by 2 px)
    guess = rois[:, None, :2] + rng.random((len(rois), data.MAX_KEYPOINTS, 2)) * (rois[:, None, 2:] - rois[:, None, :2])
    keep = ~np.concatenate(held_out.ignore)
    chance = pck(guess[keep], np.concatenate(held_out.keypoints)[keep], np.concatenate(held_out.boxes)[keep])
    emit(f"    ground-truth boxes: PCK@0.1 {scores['pck']:.3f} (target at least 0.6; a point drawn uniformly in the "
         f"RoI: {chance:.3f}), {scores['pck_any_order']:.3f} with each object's slots permuted at best, "
         f"{scores['pck_labelled']:.3f} counting occluded keypoints too; {seconds / len(held_out) * 1e3:.2f} ms/image")
    emit(f"    DETR's boxes (matched one-to-one at IoU >= 0.5, {with_detr['matched']:.1%} of the objects): PCK@0.1 "
         f"{with_detr['pck']:.3f}")
    emit(f"    trained by `{kp_meta['command']}` on {kp_meta.get('train', '?')}: {kp_meta['epochs']} epochs, "
         f"{kp_meta.get('train_seconds', '?')} s with {kp_meta.get('threads', '?')} thread(s)")
