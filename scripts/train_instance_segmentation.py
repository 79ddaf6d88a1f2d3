"""Recipe of the Mask R-CNN-style mask predictor's weights (maskrcnn_shapes.pt):
``python scripts/train_weights.py instance_segmentation``.

Deterministic (seeded, 2 threads): trains TinyMaskRCNN on make_shapes(N, seed=0, occlusion=False) with
jittered ground-truth boxes and the reference mask_targets / mask_loss (lecturelib.reference), then
evaluates it with the shipped DETR's boxes on make_shapes(1000, seed=1, occlusion=False) (mask AP@0.5 and
box AP@0.5) and writes lecturelib/weights/maskrcnn_shapes.pt with the scores in its metadata.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from lecturelib import data
from lecturelib import instance_segmentation as inst
from lecturelib import reference as ref
from lecturelib.train import WEIGHTS_DIR, save_weights, seed_everything

THREADS = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-size", type=int, default=2500)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--copies", type=int, default=2, help="jittered RoIs per ground-truth box")
    parser.add_argument("--jitter", type=float, default=0.08, help="std of each box side's shift, x box size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR / "maskrcnn_shapes.pt")


def train(args) -> dict:
    seed_everything(args.seed)
    start = time.perf_counter()
    train_set = data.make_shapes(args.train_size, seed=0, occlusion=False)
    test = data.make_shapes(1000, seed=1, occlusion=False)
    model = inst.TinyMaskRCNN()
    losses = inst.train_mask_head(model, train_set, mask_targets_fn=ref.mask_targets, mask_loss_fn=ref.mask_loss,
                                  epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, copies=args.copies,
                                  jitter=args.jitter, seed=args.seed, progress=args.progress)
    seconds = time.perf_counter() - start
    model.eval()
    scores = inst.evaluate(model, test, ref.paste_masks)
    print(f"trained {args.epochs} epochs in {seconds:.0f} s; held-out mask AP@0.5 {scores['mask_map']:.3f}, "
          f"box AP@0.5 {scores['box_map']:.3f} (DETR's boxes); final loss {losses[-1]:.3f}")
    if not args.dry_run:
        save_weights(model, args.out, command=args.command, seed=args.seed,
                     epochs=args.epochs, train="make_shapes(%d, seed=0, occlusion=False)" % args.train_size,
                     test="make_shapes(1000, seed=1, occlusion=False)", lr=args.lr, batch_size=args.batch_size,
                     copies=args.copies, jitter=args.jitter, threads=args.threads, mask_size=model.mask_size,
                     boxes="training: ground truth with jitter; evaluation: detr_shapes (all 5 queries)",
                     mask_map50=round(scores["mask_map"], 4), box_map50=round(scores["box_map"], 4),
                     train_seconds=round(seconds), losses=[round(x, 4) for x in losses])
    return scores
