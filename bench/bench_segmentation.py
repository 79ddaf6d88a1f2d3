"""Benchmarks of the semantic-segmentation topic."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from common import REPO, bench_checks, bench_notebook, emit, timed

ORDER = 2  # the lecture's order of topics


def run() -> None:
    from lecturelib import data, segmentation
    from lecturelib.reference import conv_transpose2d, mean_iou

    emit("== semantic segmentation ==")
    bench_notebook(REPO / "notebooks" / "02_segmentation" / "segmentation.ipynb", 60)
    bench_checks("segmentation")

    emit("  conv_transpose2d, reference (einsum + fold) vs torch.nn.functional.conv_transpose2d:")
    for n, c_in, c_out, size, k, s, p in [(8, 32, 16, 32, 4, 2, 1), (16, 64, 32, 16, 3, 2, 1), (1, 3, 3, 64, 3, 1, 1)]:
        x = torch.randn(n, c_in, size, size)
        w = torch.randn(c_in, c_out, k, k)
        ours = timed(lambda: conv_transpose2d(x, w, stride=s, padding=p))
        theirs = timed(lambda: F.conv_transpose2d(x, w, stride=s, padding=p))
        emit(f"    x {n}x{c_in}x{size}x{size}, w {c_in}x{c_out}x{k}x{k}, s{s} p{p}: ours {ours * 1e3:7.2f} ms, "
             f"torch {theirs * 1e3:7.2f} ms, ratio {ours / theirs:5.2f}x")

    held_out = data.make_shapes(1000, seed=1)
    images, truth = held_out.image_tensor(), held_out.semantic_tensor()
    for name, target in (("unet_shapes", 0.93), ("fcn_shapes", None)):
        model = segmentation.load_pretrained(name)
        start = time.perf_counter()
        pred = segmentation.predict_masks(model, images)
        seconds = time.perf_counter() - start
        _, miou = mean_iou(pred, truth, len(data.CLASSES))
        goal = f" (target at least {target})" if target else ""
        emit(f"  {name}: held-out mIoU {miou:.3f}{goal} on 1000 images (seed 1); "
             f"inference {seconds / len(images) * 1e3:.2f} ms/image")


