"""Recipe of the anchor-based detector's weights (detector_shapes.pt): ``python scripts/train_weights.py detection``.

Deterministic (seeded, 2 threads): trains TinyDetector (8 x 8 grid, ``lecturelib.detection.DETECTOR_ANCHORS``) on
the data set's default, make_shapes(N, seed=0) (occlusion on; objects less than 25% visible, ``Shapes.ignore``,
are left out of the loss), labelling anchors and encoding boxes with the reference functions
(lecturelib.reference: positive IoU >= 0.5 plus each object's best anchors, negative < 0.3), then evaluates on
make_shapes(1000, seed=1) and on the unoccluded make_shapes(1000, seed=1, occlusion=False) with the reference
decode_boxes and nms (per class, IoU 0.5): all-point AP@0.5 and AP@0.75 (PASCAL VOC 2010+) and COCO's 101-point
AP@[.5:.95], and writes lecturelib/weights/detector_shapes.pt with the scores in its metadata.
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
    parser.add_argument("--epochs", type=int, default=13)
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--width", type=int, default=128, help="channels of the last backbone block and the head")
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR / "detector_shapes.pt")


def train(args) -> dict:
    seed_everything(args.seed)
    start = time.perf_counter()
    train_set = data.make_shapes(args.train_size, seed=0)
    model = detection.TinyDetector(num_anchors=len(detection.DETECTOR_ANCHORS["sizes"])
                                   * len(detection.DETECTOR_ANCHORS["ratios"]), width=args.width)
    model.anchors.copy_(ref.generate_anchors(**detection.DETECTOR_ANCHORS))
    losses = detection.train_detector(model, train_set, label_fn=ref.label_anchors, encode_fn=ref.encode_boxes,
                                      epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                                      progress=args.progress)
    seconds = time.perf_counter() - start
    model.eval()
    test = {"": f"make_shapes({args.test_size}, seed=1)",
            "_unoccluded": f"make_shapes({args.test_size}, seed=1, occlusion=False)"}
    scores, numbers = {}, {}
    for suffix, call in test.items():
        held_out = data.make_shapes(args.test_size, seed=1, occlusion=not suffix)
        scores[suffix] = detection.evaluate(model, held_out, ref.decode_boxes, ref.nms, coco=True)
        numbers.update({f"map50{suffix}": round(scores[suffix]["map"][0.5], 4),
                        f"map75{suffix}": round(scores[suffix]["map"][0.75], 4),
                        f"coco{suffix}": round(scores[suffix]["coco"], 4)})
    print(f"trained {args.epochs} epochs in {seconds:.0f} s; final loss {losses[-1]:.3f}; held-out all-point "
          f"AP@0.5 / AP@0.75 / COCO AP@[.5:.95]: default (occluded) {numbers['map50']:.3f} / {numbers['map75']:.3f} / "
          f"{numbers['coco']:.3f}, unoccluded {numbers['map50_unoccluded']:.3f} / {numbers['map75_unoccluded']:.3f} / "
          f"{numbers['coco_unoccluded']:.3f}")
    if not args.dry_run:
        save_weights(model, args.out, command=args.command, seed=args.seed,
                     epochs=args.epochs, train=f"make_shapes({args.train_size}, seed=0)", test=test[""],
                     test_unoccluded=test["_unoccluded"], min_visibility=data.MIN_VISIBILITY, lr=args.lr,
                     batch_size=args.batch_size,
                     threads=args.threads, anchors={k: list(v) if isinstance(v, tuple) else v
                                                    for k, v in detection.DETECTOR_ANCHORS.items()},
                     box_weights=list(detection.BOX_WEIGHTS), positive_iou=0.5, negative_iou=0.3,
                     nms_iou=detection.NMS_IOU, nms="per class",
                     ap="all-point (PASCAL VOC 2010+); coco: 101-point AP@[.5:.95]", **numbers,
                     train_seconds=round(seconds), losses=[round(x, 4) for x in losses])
    return scores[""]
