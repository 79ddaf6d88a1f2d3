"""Train the visualization notebook's models and write lecturelib/weights/{classifier,vit}_shapes.pt.

    python scripts/train_visualization.py             # both models (11 + 21 minutes on a busy 2-core machine)
    python scripts/train_visualization.py classifier  # or: vit
    python scripts/train_visualization.py --threads 2 # more threads on an idle machine

Deterministic: fixed seeds and a fixed thread count (``--threads 1``, the default: on a shared 2-core
machine one thread per training is faster than two); training data ``make_classification(TRAIN_SIZE,
seed=0)``, held-out data ``make_classification(HELD_OUT_SIZE, seed=1)``. The held-out accuracy (and, for
the classifier, the Grad-CAM pointing game per block) is stored in the weights' metadata.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lecturelib import data, visualization  # noqa: E402
from lecturelib.reference import grad_cam  # noqa: E402
from lecturelib.train import save_weights, seed_everything  # noqa: E402
from lecturelib.visualization_models import WEIGHTS_DIR, ShapesClassifier, TinyViT  # noqa: E402

TRAIN_SIZE = 6000
HELD_OUT_SIZE = 1000
SETTINGS = {
    "classifier": {"epochs": 10, "lr": 3e-3, "batch_size": 64, "weight_decay": 1e-4},
    "vit": {"epochs": 30, "lr": 2e-3, "batch_size": 64, "weight_decay": 0.05},
}


def pointing_by_block(model, held_out) -> dict[str, float]:
    images, labels = visualization.classification_data(held_out)
    rates = {}
    for name, block in model.blocks().items():
        maps = torch.cat([grad_cam(model, block, images[i:i + 250], labels[i:i + 250])
                          for i in range(0, len(images), 250)])
        rates[name] = float(visualization.pointing_game(maps, held_out.boxes, held_out.size).mean())
    return rates


def train(which: str, train_set, held_out) -> None:
    settings = SETTINGS[which]
    seed_everything(0)
    model = ShapesClassifier() if which == "classifier" else TinyViT()
    start = time.perf_counter()
    losses = visualization.train_classifier(model, train_set, epochs=settings["epochs"], lr=settings["lr"],
                                            batch_size=settings["batch_size"],
                                            weight_decay=settings["weight_decay"], seed=0)
    seconds = time.perf_counter() - start
    model.eval()
    acc = visualization.accuracy(model, held_out)
    meta = {"command": f"python scripts/train_visualization.py {which}", "seed": 0, "train_size": TRAIN_SIZE,
            "held_out_size": HELD_OUT_SIZE, "held_out_accuracy": round(acc, 4), "train_seconds": round(seconds, 1),
            "final_loss": round(losses[-1], 4), "threads": torch.get_num_threads(), **settings}
    if which == "classifier":
        meta["pointing_game"] = {k: round(v, 4) for k, v in pointing_by_block(model, held_out).items()}
    path = WEIGHTS_DIR / f"{which}_shapes.pt"
    save_weights(model, path, **meta)
    print(f"{which}: held-out accuracy {acc:.4f}, trained in {seconds:.0f} s -> {path} "
          f"({path.stat().st_size / 1e6:.2f} MB)")
    if "pointing_game" in meta:
        print(f"  Grad-CAM pointing game per block: {meta['pointing_game']}")


def main(argv: list[str]) -> None:
    threads = 1
    if "--threads" in argv:
        at = argv.index("--threads")
        threads = int(argv[at + 1])
        argv = argv[:at] + argv[at + 2:]
    torch.set_num_threads(threads)
    which = argv or ["classifier", "vit"]
    unknown = set(which) - set(SETTINGS)
    if unknown:
        raise SystemExit(f"unknown model(s) {sorted(unknown)}; choose from {sorted(SETTINGS)}")
    train_set = data.make_classification(TRAIN_SIZE, seed=0)
    held_out = data.make_classification(HELD_OUT_SIZE, seed=1)
    for name in which:
        train(name, train_set, held_out)


if __name__ == "__main__":
    main(sys.argv[1:])
