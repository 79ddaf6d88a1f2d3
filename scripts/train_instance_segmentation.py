"""Recipe of the Mask R-CNN-style mask predictor's weights (maskrcnn_shapes.pt):
``python scripts/train_weights.py instance_segmentation``.

Deterministic (seeded, 1 thread, as DETR's recipe): trains TinyMaskRCNN on the data set's default, make_shapes(N, seed=0)
(occlusion on; objects less than 25% visible, ``Shapes.ignore``, give no RoI) with jittered ground-truth boxes and
the reference mask_targets / mask_loss (lecturelib.reference), then evaluates it with the shipped DETR's boxes on
make_shapes(1000, seed=1) and on the unoccluded make_shapes(1000, seed=1, occlusion=False): all-point mask and
box AP@0.5 (PASCAL VOC 2010+) and COCO's 101-point AP@[.5:.95], and writes lecturelib/weights/maskrcnn_shapes.pt
with the scores in its metadata.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from lecturelib import data
from lecturelib import instance_segmentation as inst
from lecturelib import reference as ref
from lecturelib.train import WEIGHTS_DIR, save_weights, seed_everything

THREADS = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--copies", type=int, default=2, help="jittered RoIs per ground-truth box")
    parser.add_argument("--jitter", type=float, default=0.08, help="std of each box side's shift, x box size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR / "maskrcnn_shapes.pt")


def train(args) -> dict:
    seed_everything(args.seed)
    start = time.perf_counter()
    train_set = data.make_shapes(args.train_size, seed=0)
    model = inst.TinyMaskRCNN()
    losses = inst.train_mask_head(model, train_set, mask_targets_fn=ref.mask_targets, mask_loss_fn=ref.mask_loss,
                                  epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, copies=args.copies,
                                  jitter=args.jitter, seed=args.seed, progress=args.progress)
    seconds = time.perf_counter() - start
    model.eval()
    test = {"": "make_shapes(1000, seed=1)", "_unoccluded": "make_shapes(1000, seed=1, occlusion=False)"}
    scores, numbers = {}, {}
    for suffix in test:
        scores[suffix] = inst.evaluate(model, data.make_shapes(1000, seed=1, occlusion=not suffix), ref.paste_masks,
                                       coco=True)
        numbers.update({f"mask_map50{suffix}": round(scores[suffix]["mask_map"], 4),
                        f"mask_coco{suffix}": round(scores[suffix]["mask_coco"], 4),
                        f"box_map50{suffix}": round(scores[suffix]["box_map"], 4),
                        f"box_coco{suffix}": round(scores[suffix]["box_coco"], 4)})
    print(f"trained {args.epochs} epochs in {seconds:.0f} s; final loss {losses[-1]:.3f}; held-out with DETR's boxes, "
          f"all-point mask AP@0.5 / mask COCO AP@[.5:.95] / box AP@0.5: default (occluded) {numbers['mask_map50']:.3f} / "
          f"{numbers['mask_coco']:.3f} / {numbers['box_map50']:.3f}, unoccluded {numbers['mask_map50_unoccluded']:.3f} / "
          f"{numbers['mask_coco_unoccluded']:.3f} / {numbers['box_map50_unoccluded']:.3f}")
    if not args.dry_run:
        save_weights(model, args.out, command=args.command, seed=args.seed,
                     epochs=args.epochs, train=f"make_shapes({args.train_size}, seed=0)", test=test[""],
                     test_unoccluded=test["_unoccluded"], min_visibility=data.MIN_VISIBILITY, lr=args.lr,
                     batch_size=args.batch_size, copies=args.copies, jitter=args.jitter, threads=args.threads,
                     mask_size=model.mask_size,
                     boxes="training: ground truth with jitter; evaluation: detr_shapes (all 5 queries)",
                     ap="all-point (PASCAL VOC 2010+); coco: 101-point AP@[.5:.95]", **numbers,
                     train_seconds=round(seconds), losses=[round(x, 4) for x in losses])
    return scores[""]
