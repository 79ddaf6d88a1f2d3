"""Benchmarks of the detection topic."""
from __future__ import annotations

import time

import torch

from common import AP_DEFINITION, REPO, bench_checks, bench_notebook, emit, held_out_sets, timed

ORDER = 3  # the lecture's order of topics


def _python_loop_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    """Greedy NMS as a plain Python loop over lists (what one writes without vectorising)."""
    b, order = boxes.tolist(), sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    keep = []
    for i in order:
        x1, y1, x2, y2 = b[i]
        area = (x2 - x1) * (y2 - y1)
        for j in keep:
            u1, v1, u2, v2 = b[j]
            inter = max(0.0, min(x2, u2) - max(x1, u1)) * max(0.0, min(y2, v2) - max(y1, v1))
            union = area + (u2 - u1) * (v2 - v1) - inter
            if union > 0 and inter / union > threshold:
                break
        else:
            keep.append(i)
    return keep


def _matrix_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """The O(n^2)-memory "matrix" form: a box survives iff no KEPT higher-scored box overlaps it; solved by
    fixed-point iteration on the upper-triangular overlap matrix (one matrix-vector product per round)."""
    from lecturelib.boxes import box_iou
    order = torch.sort(scores, descending=True, stable=True).indices
    over = torch.triu(box_iou(boxes[order], boxes[order]) > threshold, diagonal=1).float()
    keep = torch.ones(len(order))
    while True:
        new = (keep @ over == 0).float()
        if torch.equal(new, keep):
            return order[keep.bool()]
        keep = new


def _boxes(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 600
    return torch.cat([xy, xy + 20 + torch.rand(n, 2, generator=g) * 100], 1), torch.rand(n, generator=g)


def run() -> None:
    from lecturelib import data, detection
    from lecturelib.reference import decode_boxes, generate_anchors, nms

    emit("== Detection: box deltas, anchors, NMS, RoI Align, a tiny anchor-based detector ==")
    bench_notebook(REPO / "notebooks" / "03_detection" / "detection.ipynb", 30)
    bench_checks("detection")

    emit("  nms, reference (IoU matrix + one pass over the sorted boxes) vs a plain Python loop and the matrix "
         "fixed-point form; torchvision is not installable here, so torchvision.ops.nms is not measured:")
    for n in (100, 1000, 5000):
        boxes, scores = _boxes(n)
        ours = timed(lambda: nms(boxes, scores, 0.5), repeat=3)
        loop = timed(lambda: _python_loop_nms(boxes, scores, 0.5), repeat=1 if n > 1000 else 3)
        matrix = timed(lambda: _matrix_nms(boxes, scores, 0.5), repeat=3)
        same = nms(boxes, scores, 0.5).tolist() == _python_loop_nms(boxes, scores, 0.5) \
            == _matrix_nms(boxes, scores, 0.5).tolist()
        emit(f"    n = {n:5d}: ours {ours * 1e3:8.2f} ms; Python loop {loop * 1e3:9.2f} ms ({loop / ours:4.1f}x the time "
             f"of ours); matrix form {matrix * 1e3:8.2f} ms ({matrix / ours:4.2f}x); kept {len(nms(boxes, scores, 0.5))}"
             f"{'' if same else '  DIFFERENT RESULTS'}")

    levels = [((200, 336), 4, (32,)), ((100, 168), 8, (64,)), ((50, 84), 16, (128,)), ((25, 42), 32, (256,)),
              ((13, 21), 64, (512,))]
    seconds = timed(lambda: [generate_anchors(f, s, z, (0.5, 1.0, 2.0)) for f, s, z in levels], repeat=5)
    count = sum(len(generate_anchors(f, s, z, (0.5, 1.0, 2.0))) for f, s, z in levels)
    emit(f"  generate_anchors, reference, FPN levels P2-P6 of an 800 x 1344 image (3 ratios): {count} anchors in "
         f"{seconds * 1e3:.1f} ms")

    model = detection.load_pretrained()
    meta = model.metadata
    emit(f"  detector_shapes, 1000 held-out images (seed 1); {AP_DEFINITION}:")
    for name, held_out in held_out_sets().items():
        start = time.perf_counter()
        scores = detection.evaluate(model, held_out, decode_boxes, nms, coco=True)
        eval_seconds = time.perf_counter() - start
        target = " (target at least 0.90)" if name.startswith("default") else ""
        emit(f"    {name:18s}: AP@0.5 {scores['map'][0.5]:.3f}{target}, AP@0.75 {scores['map'][0.75]:.3f}, "
             f"COCO AP@[.5:.95] {scores['coco']:.3f}; per class at 0.5 "
             + ", ".join(f"{data.CLASSES[c]} {ap:.2f}" for c, ap in scores["ap"][0.5].items())
             + f"; evaluation {eval_seconds:.1f} s")
    images = held_out.image_tensor()[:200]
    infer = timed(lambda: detection.predict(model, images, decode_boxes, nms), repeat=3) / len(images)
    one = timed(lambda: detection.predict(model, images[:1], decode_boxes, nms), repeat=20)
    emit(f"    trained by `{meta['command']}` on {meta.get('train', '?')}: {meta['epochs']} epochs, "
         f"{meta.get('train_seconds', '?')} s with {meta.get('threads', '?')} thread(s); inference incl. decode + NMS "
         f"{infer * 1e3:.2f} ms/image in batches of 200, {one * 1e3:.2f} ms for a single image")
