"""Recipe of the visualization notebook's models (classifier_shapes.pt, vit_shapes.pt, filters_shapes.pt):
``python scripts/train_weights.py visualization`` (11 + 21 + 13 minutes on a busy 2-core machine).

    python scripts/train_weights.py visualization --models vit    # one of them
    python scripts/train_weights.py visualization --threads 2     # more threads on an idle machine

Deterministic: fixed seeds and a fixed thread count (one, THREADS: on a shared 2-core machine one thread per
training is faster than two); training data ``make_classification(TRAIN_SIZE, seed=0)``, held-out data
``make_classification(HELD_OUT_SIZE, seed=1)``. The held-out accuracy (and, for the classifier, the Grad-CAM
pointing game per block; for the filters model, the measured structure of its first-layer filters) is stored in the
weights' metadata.

``filters`` is the model of the notebook's first-layer-filters demo: ``FILTERS_BLOCKS``, a 7 x 7 stride-2 first
layer (as in AlexNet's and ResNet's stems). Its first layer starts at ``FILTERS_INIT_SCALE`` times PyTorch's default
initialisation (with BatchNorm after the layer the scale does not change what the layer computes): at full scale
the random initial weights were still most of each filter after training (about 60% of its energy after 10 epochs,
with weight decay 1e-4 or 0.05) and the filters looked like colour noise, as the 3 x 3 ones of the classifier do.
Scaled down, they become smooth, and AdamW's weight decay of 0.05 (rather than 1e-4) left more of them oriented
(69% vs 56% of the 16 filters, measured by ``visualization.filter_structure``).
"""
from __future__ import annotations

import argparse
import time

import torch

from lecturelib import data, visualization
from lecturelib.reference import grad_cam
from lecturelib.train import save_weights, seed_everything
from lecturelib.visualization_models import FILTERS_BLOCKS, WEIGHTS_DIR, ShapesClassifier, TinyViT

THREADS = 1
TRAIN_SIZE = 6000
HELD_OUT_SIZE = 1000
SETTINGS = {
    "classifier": {"epochs": 10, "lr": 3e-3, "batch_size": 64, "weight_decay": 1e-4},
    "vit": {"epochs": 30, "lr": 2e-3, "batch_size": 64, "weight_decay": 0.05},
    "filters": {"epochs": 20, "lr": 3e-3, "batch_size": 64, "weight_decay": 0.05},
}
FILTERS_INIT_SCALE = 0.02


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="classifier,vit,filters",
                        help="comma-separated subset of classifier,vit,filters")


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
    if which == "filters":
        model = ShapesClassifier(blocks=FILTERS_BLOCKS)
        with torch.no_grad():
            model.blocks()["block1"][0].weight.mul_(FILTERS_INIT_SCALE)   # the first Conv2d
    else:
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
    if which == "filters":
        structure = visualization.filter_structure(visualization.first_layer_filters(model))
        meta["init_scale"] = FILTERS_INIT_SCALE
        meta["filter_structure"] = {"smoothness_median": round(float(structure["smoothness"].median()), 4),
                                    "shuffled_smoothness_median": round(structure["shuffled_smoothness"], 4),
                                    "oriented_share": round(structure["oriented_share"], 4)}
        print(f"  first-layer filters: {meta['filter_structure']}")
    print(f"{which}: held-out accuracy {acc:.4f}, trained in {seconds:.0f} s")
    if not args.dry_run:
        path = WEIGHTS_DIR / f"{which}_shapes.pt"      # classifier_shapes.pt, vit_shapes.pt, filters_shapes.pt
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
