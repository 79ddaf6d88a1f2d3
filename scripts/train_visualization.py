"""Recipe of the visualization notebook's models (classifier_shapes.pt, vit_shapes.pt):
``python scripts/train_weights.py visualization`` (11 + 21 minutes on a busy 2-core machine).

    python scripts/train_weights.py visualization --models vit    # one of them
    python scripts/train_weights.py visualization --threads 2     # more threads on an idle machine

Deterministic: fixed seeds and a fixed thread count (one, THREADS: on a shared 2-core machine one thread per
training is faster than two); training data ``make_classification(TRAIN_SIZE, seed=0)``, held-out data
``make_classification(HELD_OUT_SIZE, seed=1)``. The held-out accuracy (and, for the classifier, the Grad-CAM
pointing game per block) is stored in the weights' metadata.
"""
from __future__ import annotations

import argparse
import time

import torch

from lecturelib import data, visualization
from lecturelib.reference import grad_cam
from lecturelib.train import save_weights, seed_everything
from lecturelib.visualization_models import WEIGHTS_DIR, ShapesClassifier, TinyViT

THREADS = 1
TRAIN_SIZE = 6000
HELD_OUT_SIZE = 1000
SETTINGS = {
    "classifier": {"epochs": 10, "lr": 3e-3, "batch_size": 64, "weight_decay": 1e-4},
    "vit": {"epochs": 30, "lr": 2e-3, "batch_size": 64, "weight_decay": 0.05},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="classifier,vit", help="comma-separated subset of classifier,vit")


def pointing_by_block(model, held_out) -> dict[str, float]:
    images, labels = visualization.classification_data(held_out)
    rates = {}
    for name, block in model.blocks().items():
        maps = torch.cat([grad_cam(model, block, images[i:i + 250], labels[i:i + 250])
                          for i in range(0, len(images), 250)])
        rates[name] = float(visualization.pointing_game(maps, held_out.boxes, held_out.size).mean())
    return rates


def train_one(which: str, train_set, held_out, args) -> float:
    settings = SETTINGS[which]
    seed_everything(0)
    model = ShapesClassifier() if which == "classifier" else TinyViT()
    start = time.perf_counter()
    losses = visualization.train_classifier(model, train_set, epochs=settings["epochs"], lr=settings["lr"],
                                            batch_size=settings["batch_size"],
                                            weight_decay=settings["weight_decay"], seed=0, progress=args.progress)
    seconds = time.perf_counter() - start
    model.eval()
    acc = visualization.accuracy(model, held_out)
    meta = {"command": args.command, "seed": 0, "train_size": TRAIN_SIZE,
            "held_out_size": HELD_OUT_SIZE, "held_out_accuracy": round(acc, 4), "train_seconds": round(seconds, 1),
            "final_loss": round(losses[-1], 4), "threads": args.threads, **settings}
    if which == "classifier":
        meta["pointing_game"] = {k: round(v, 4) for k, v in pointing_by_block(model, held_out).items()}
        print(f"  Grad-CAM pointing game per block: {meta['pointing_game']}")
    print(f"{which}: held-out accuracy {acc:.4f}, trained in {seconds:.0f} s")
    if not args.dry_run:
        path = WEIGHTS_DIR / f"{which}_shapes.pt"
        save_weights(model, path, **meta)
        print(f"  wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return acc


def train(args) -> dict:
    which = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(which) - set(SETTINGS)
    if unknown or not which:
        raise SystemExit(f"--models must be a comma-separated subset of {','.join(SETTINGS)}, got {args.models!r}")
    train_set = data.make_classification(TRAIN_SIZE, seed=0)
    held_out = data.make_classification(HELD_OUT_SIZE, seed=1)
    return {name: train_one(name, train_set, held_out, args) for name in which}
