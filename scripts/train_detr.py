"""Recipe of the DETR-style set predictor's weights (detr_shapes.pt): ``python scripts/train_weights.py detr``.

Deterministic (seeded, 2 threads): trains TinyDETR on the data set's default, make_shapes(N, seed=0) (occlusion
on; queries matched to objects less than 25% visible, ``Shapes.ignore``, are left out of the loss), with the
reference matcher (lecturelib.reference: Hungarian algorithm, DETR's cost with weights 1, 5, 2), then evaluates
on make_shapes(1000, seed=1) and on the unoccluded make_shapes(1000, seed=1, occlusion=False): all-point AP@0.5
(PASCAL VOC 2010+), COCO's 101-point AP@[.5:.95] and the object-count accuracy, and writes
lecturelib/weights/detr_shapes.pt with the scores in its metadata.
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
    train_set = data.make_shapes(args.train_size, seed=0)
    cost_fn = functools.partial(ref.detr_matching_cost, **detr.DEFAULT_WEIGHTS)
    matcher = detr.make_matcher(ref.match_batch, cost_fn, ref.hungarian_match)
    model = detr.TinyDETR()
    losses = detr.train_detr(model, train_set, matcher=matcher, giou_fn=ref.generalized_box_iou,
                             epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                             aux_loss=args.aux, seed=args.seed, progress=args.progress)
    seconds = time.perf_counter() - start
    test = {"": "make_shapes(1000, seed=1)", "_unoccluded": "make_shapes(1000, seed=1, occlusion=False)"}
    scores, numbers = {}, {}
    for suffix in test:
        scores[suffix] = detr.evaluate(model, data.make_shapes(1000, seed=1, occlusion=not suffix), coco=True)
        numbers.update({f"map50{suffix}": round(scores[suffix]["map"], 4), f"coco{suffix}": round(scores[suffix]["coco"], 4),
                        f"count_accuracy{suffix}": round(scores[suffix]["count_accuracy"], 4)})
    print(f"trained {args.epochs} epochs in {seconds:.0f} s; final loss {losses[-1]:.3f}; held-out all-point AP@0.5 / "
          f"COCO AP@[.5:.95] / count accuracy: default (occluded) {numbers['map50']:.3f} / {numbers['coco']:.3f} / "
          f"{numbers['count_accuracy']:.3f}, unoccluded {numbers['map50_unoccluded']:.3f} / "
          f"{numbers['coco_unoccluded']:.3f} / {numbers['count_accuracy_unoccluded']:.3f}")
    if not args.dry_run:
        save_weights(model.eval(), args.out, command=args.command, seed=args.seed,
                     epochs=args.epochs, train=f"make_shapes({args.train_size}, seed=0)", test=test[""],
                     test_unoccluded=test["_unoccluded"], min_visibility=data.MIN_VISIBILITY, lr=args.lr,
                     batch_size=args.batch_size, aux_loss=args.aux, threads=args.threads, no_object_weight=0.1,
                     cost_weights=dict(detr.DEFAULT_WEIGHTS),
                     ap="all-point (PASCAL VOC 2010+); coco: 101-point AP@[.5:.95]", **numbers,
                     train_seconds=round(seconds), losses=[round(x, 4) for x in losses])
    return scores[""]
