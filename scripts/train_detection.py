"""Recipe of the anchor-based detector's weights (detector_shapes.pt): ``python scripts/train_weights.py detection``.

Deterministic (seeded, 2 threads): trains TinyDetector (8 x 8 grid, 3 square anchors per cell,
``lecturelib.detection.DETECTOR_ANCHORS``) on make_shapes(5000, seed=0, occlusion=False), labelling anchors
and encoding boxes with the reference functions (lecturelib.reference: positive IoU >= 0.5 plus each object's
best anchors, negative < 0.3), then evaluates on make_shapes(1000, seed=1, occlusion=False) with the reference
decode_boxes and nms (IoU 0.4) and writes lecturelib/weights/detector_shapes.pt with the scores in its metadata.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from lecturelib import data, detection
from lecturelib import reference as ref
from lecturelib.train import WEIGHTS_DIR, save_weights, seed_everything

THREADS = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR / "detector_shapes.pt")


def train(args) -> dict:
    seed_everything(args.seed)
    start = time.perf_counter()
    train_set = data.make_shapes(args.train_size, seed=0, occlusion=False)
    test = data.make_shapes(args.test_size, seed=1, occlusion=False)
    model = detection.TinyDetector(num_anchors=len(detection.DETECTOR_ANCHORS["sizes"])
                                   * len(detection.DETECTOR_ANCHORS["ratios"]))
    model.anchors.copy_(ref.generate_anchors(**detection.DETECTOR_ANCHORS))
    losses = detection.train_detector(model, train_set, label_fn=ref.label_anchors, encode_fn=ref.encode_boxes,
                                      epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                                      progress=args.progress)
    seconds = time.perf_counter() - start
    model.eval()
    scores = detection.evaluate(model, test, ref.decode_boxes, ref.nms)
    print(f"trained {args.epochs} epochs in {seconds:.0f} s; held-out mAP@0.5 {scores['map'][0.5]:.3f}, "
          f"mAP@0.75 {scores['map'][0.75]:.3f}; final loss {losses[-1]:.3f}")
    if not args.dry_run:
        save_weights(model, args.out, command=args.command, seed=args.seed,
                     epochs=args.epochs, train="make_shapes(%d, seed=0, occlusion=False)" % args.train_size,
                     test="make_shapes(%d, seed=1, occlusion=False)" % args.test_size, lr=args.lr,
                     batch_size=args.batch_size,
                     threads=args.threads, anchors={k: list(v) if isinstance(v, tuple) else v
                                                    for k, v in detection.DETECTOR_ANCHORS.items()},
                     box_weights=list(detection.BOX_WEIGHTS), positive_iou=0.5, negative_iou=0.3, nms_iou=0.4,
                     map50=round(scores["map"][0.5], 4), map75=round(scores["map"][0.75], 4),
                     train_seconds=round(seconds), losses=[round(x, 4) for x in losses])
    return scores
