"""Retrain the pretrained weights shipped in lecturelib/weights/, deterministically.

    python scripts/train_weights.py segmentation      # unet_shapes.pt and fcn_shapes.pt
    python scripts/train_weights.py segmentation --epochs-unet 2 --dry-run   # quick check, writes nothing

The shipped segmentation weights were made with ``--threads 1`` and ``--models unet`` / ``--models fcn``
in two processes (the shared machine was busy; results are deterministic for a given thread count).
Held-out mIoU: U-Net 0.939, FCN 0.857 (7 epochs each).

Each topic is a subcommand that trains its models on ``make_shapes(..., seed=0)``, evaluates them on
held-out data (``seed=1``), prints the scores and writes its weights files with ``save_weights``,
recording the command, seed, recipe and scores in the file's metadata.

To add a topic (e.g. ``detection``, ``detr``, ``classifier``), write ``def train_<topic>(args)`` and
``def add_<topic>_arguments(parser)`` and register them in ``TOPICS`` at the bottom of this file.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lecturelib.data import NUM_CLASSES, make_shapes  # noqa: E402
from lecturelib.segmentation_models import (FCN, WEIGHTS_DIR, UNet, confusion_matrix,  # noqa: E402
                                            predict_masks, train_segmenter)
from lecturelib.train import save_weights, seed_everything  # noqa: E402

TRAIN_SEED = 0
HELD_OUT_SEED = 1


def command_line() -> str:
    """The command that is running, as recorded in the weights' metadata."""
    return "python scripts/train_weights.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def per_class_iou(cm: torch.Tensor) -> list[float]:
    """IoU of each class from a confusion matrix (rows true, columns predicted)."""
    cm = cm.double()
    return (cm.diag() / (cm.sum(0) + cm.sum(1) - cm.diag()).clamp(min=1)).tolist()


# --------------------------------------------------------------------------------------------
# segmentation
# --------------------------------------------------------------------------------------------

def add_segmentation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--held-out-size", type=int, default=1000)
    parser.add_argument("--models", default="unet,fcn",
                        help="comma-separated subset of unet,fcn (e.g. to train them in two processes)")
    parser.add_argument("--epochs-unet", type=int, default=7)
    parser.add_argument("--epochs-fcn", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-3)


def train_segmentation(args) -> None:
    train = make_shapes(args.train_size, seed=TRAIN_SEED)
    held_out = make_shapes(args.held_out_size, seed=HELD_OUT_SEED)
    target = held_out.semantic_tensor()
    recipe = {"train": f"make_shapes({args.train_size}, seed={TRAIN_SEED})",
              "held_out": f"make_shapes({args.held_out_size}, seed={HELD_OUT_SEED})",
              "batch_size": args.batch_size, "lr": args.lr, "optimizer": "adamw",
              "schedule": "onecycle", "loss": "cross_entropy", "threads": args.threads}
    models = {"unet": ("unet_shapes", UNet, args.epochs_unet), "fcn": ("fcn_shapes", FCN, args.epochs_fcn)}
    chosen = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(chosen) - set(models)
    if unknown or not chosen:
        raise SystemExit(f"--models must be a comma-separated subset of {','.join(models)}, got {args.models!r}")
    for name, make_model, epochs in (models[m] for m in chosen):
        seed_everything(TRAIN_SEED)
        model = make_model()
        start = time.perf_counter()
        losses = train_segmenter(model, train, epochs=epochs, batch_size=args.batch_size, lr=args.lr,
                                 seed=TRAIN_SEED, progress=args.progress)
        seconds = time.perf_counter() - start
        ious = per_class_iou(confusion_matrix(predict_masks(model, held_out), target, NUM_CLASSES))
        miou = sum(ious) / len(ious)
        print(f"{name}: {epochs} epochs in {seconds:.0f} s, final loss {losses[-1]:.4f}, "
              f"held-out mIoU {miou:.4f} (per class {', '.join(f'{v:.3f}' for v in ious)})")
        if not args.dry_run:
            path = WEIGHTS_DIR / f"{name}.pt"
            save_weights(model, path, command=command_line(), seed=TRAIN_SEED, epochs=epochs,
                         recipe=recipe, train_seconds=round(seconds, 1),
                         epoch_losses=[round(v, 5) for v in losses], held_out_miou=round(miou, 4),
                         held_out_iou_per_class=[round(v, 4) for v in ious],
                         torch_version=str(torch.__version__))
            print(f"  wrote {path.relative_to(REPO)} ({path.stat().st_size / 1e6:.2f} MB)")


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------

# topic -> (add its arguments, train it, help text)
TOPICS = {
    "segmentation": (add_segmentation_arguments, train_segmentation,
                     "U-Net and FCN for semantic segmentation (unet_shapes.pt, fcn_shapes.pt)"),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    topics = parser.add_subparsers(dest="topic", required=True, metavar="TOPIC")
    for topic, (add_arguments, _, help_text) in TOPICS.items():
        sub = topics.add_parser(topic, help=help_text)
        sub.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
        sub.add_argument("--dry-run", action="store_true", help="train and evaluate, write nothing")
        sub.add_argument("--no-progress", dest="progress", action="store_false",
                         help="hide the progress bars")
        add_arguments(sub)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    TOPICS[args.topic][1](args)


if __name__ == "__main__":
    main()
