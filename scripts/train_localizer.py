"""Recipe of the one-object localizer's weights (localizer_shapes.pt): ``python scripts/train_weights.py localizer``.

The second model of the detection topic: classification + localization with two heads and a multitask loss
(``lecturelib.localization``). Deterministic (seeded, 2 threads): trains one Localizer per box-loss weight of
``BOX_WEIGHTS`` on make_classification(N, seed=0) with the same seed and epochs, measures each on
make_classification(1000, seed=1) (accuracy, mean IoU, share with IoU >= 0.5), and writes the model of ``SHIPPED``
to lecturelib/weights/localizer_shapes.pt with the whole sweep in its metadata, which the notebook prints.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from lecturelib import data, localization
from lecturelib.train import WEIGHTS_DIR, save_weights

TOPIC = "detection"
THREADS = 2
BOX_WEIGHTS = (0.0, 1.0, 10.0, 100.0)
SHIPPED = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=localization.EPOCHS)
    parser.add_argument("--train-size", type=int, default=localization.TRAIN_SIZE)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR / "localizer_shapes.pt")


def train(args) -> list[dict]:
    start = time.perf_counter()
    train_set = data.make_classification(args.train_size, seed=0)
    test_set = data.make_classification(1000, seed=1)
    rows, shipped = [], None
    for weight in BOX_WEIGHTS:
        model = localization.train_localizer(train_set, box_weight=weight, epochs=args.epochs)
        scores = localization.evaluate_localizer(model, test_set)
        rows.append({"box_weight": weight, **{k: round(v, 4) for k, v in scores.items()}})
        print(f"box weight {weight:g}: {rows[-1]}")
        shipped = model if weight == SHIPPED else shipped
    seconds = time.perf_counter() - start
    print(f"{len(rows)} models in {seconds:.0f} s")
    if not args.dry_run:
        save_weights(shipped, args.out, command=args.command, seed=0, epochs=args.epochs,
                     train=f"make_classification({args.train_size}, seed=0)", test="make_classification(1000, seed=1)",
                     threads=args.threads, box_weight=SHIPPED, sweep=rows, sweep_seconds=round(seconds))
    return rows
