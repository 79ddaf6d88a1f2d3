"""Recipe of the DETR-style set predictor's weights (detr_shapes.pt): ``python scripts/train_weights.py detr``.

Deterministic (seeded, 2 threads): trains TinyDETR on make_shapes(5000, seed=0, occlusion=False) with
the reference matcher (lecturelib.reference: Hungarian algorithm, DETR's cost with weights 1, 5, 2), then
evaluates on make_shapes(1000, seed=1, occlusion=False) and writes lecturelib/weights/detr_shapes.pt with
the scores in its metadata.
"""
from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

from lecturelib import data, detr
from lecturelib import reference as ref
from lecturelib.train import WEIGHTS_DIR, save_weights, seed_everything

THREADS = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=28)
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--aux", action="store_true", help="also match and supervise the earlier decoder layer")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR / "detr_shapes.pt")


def train(args) -> dict:
    seed_everything(args.seed)
    start = time.perf_counter()
    train_set = data.make_shapes(args.train_size, seed=0, occlusion=False)
    test = data.make_shapes(1000, seed=1, occlusion=False)
    cost_fn = functools.partial(ref.detr_matching_cost, **detr.DEFAULT_WEIGHTS)
    matcher = detr.make_matcher(ref.match_batch, cost_fn, ref.hungarian_match)
    model = detr.TinyDETR()
    losses = detr.train_detr(model, train_set, matcher=matcher, giou_fn=ref.generalized_box_iou,
                             epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                             aux_loss=args.aux, seed=args.seed, progress=args.progress)
    seconds = time.perf_counter() - start
    scores = detr.evaluate(model, test)
    print(f"trained {args.epochs} epochs in {seconds:.0f} s; held-out mAP@0.5 {scores['map']:.3f}, "
          f"count accuracy {scores['count_accuracy']:.3f}; final loss {losses[-1]:.3f}")
    if not args.dry_run:
        save_weights(model.eval(), args.out, command=args.command, seed=args.seed,
                     epochs=args.epochs, train="make_shapes(%d, seed=0, occlusion=False)" % args.train_size,
                     test="make_shapes(1000, seed=1, occlusion=False)", lr=args.lr, batch_size=args.batch_size,
                     aux_loss=args.aux, threads=args.threads, no_object_weight=0.1,
                     cost_weights=dict(detr.DEFAULT_WEIGHTS), map50=round(scores["map"], 4),
                     count_accuracy=round(scores["count_accuracy"], 4), train_seconds=round(seconds),
                     losses=[round(x, 4) for x in losses])
    return scores
