"""Recipe of the segmentation weights (unet_shapes.pt, fcn_shapes.pt): ``python scripts/train_weights.py segmentation``.

U-Net and FCN trained on make_shapes(5000, seed=0) (7 epochs each, batch 16, AdamW, one-cycle to 5e-3),
each after seed_everything(0), evaluated on make_shapes(1000, seed=1). Held-out mIoU: U-Net 0.939, FCN 0.857.
The shipped weights were made with one thread (``--models unet`` and ``--models fcn`` in two processes: the
shared machine was busy); results are deterministic for a given thread count.
"""
from __future__ import annotations

import argparse
import time

import torch

from lecturelib.data import NUM_CLASSES, make_shapes
from lecturelib.segmentation_models import FCN, WEIGHTS_DIR, UNet, confusion_matrix, predict_masks, train_segmenter
from lecturelib.train import save_weights, seed_everything

THREADS = 1
TRAIN_SEED = 0
HELD_OUT_SEED = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--held-out-size", type=int, default=1000)
    parser.add_argument("--models", default="unet,fcn",
                        help="comma-separated subset of unet,fcn (e.g. to train them in two processes)")
    parser.add_argument("--epochs-unet", type=int, default=7)
    parser.add_argument("--epochs-fcn", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-3)


def per_class_iou(cm: torch.Tensor) -> list[float]:
    """IoU of each class from a confusion matrix (rows true, columns predicted)."""
    cm = cm.double()
    return (cm.diag() / (cm.sum(0) + cm.sum(1) - cm.diag()).clamp(min=1)).tolist()


def train(args) -> dict:
    models = {"unet": ("unet_shapes", UNet, args.epochs_unet), "fcn": ("fcn_shapes", FCN, args.epochs_fcn)}
    chosen = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(chosen) - set(models)
    if unknown or not chosen:
        raise SystemExit(f"--models must be a comma-separated subset of {','.join(models)}, got {args.models!r}")
    train_set = make_shapes(args.train_size, seed=TRAIN_SEED)
    held_out = make_shapes(args.held_out_size, seed=HELD_OUT_SEED)
    target = held_out.semantic_tensor()
    recipe = {"train": f"make_shapes({args.train_size}, seed={TRAIN_SEED})",
              "held_out": f"make_shapes({args.held_out_size}, seed={HELD_OUT_SEED})",
              "batch_size": args.batch_size, "lr": args.lr, "optimizer": "adamw",
              "schedule": "onecycle", "loss": "cross_entropy", "threads": args.threads}
    scores = {}
    for name, make_model, epochs in (models[m] for m in chosen):
        seed_everything(TRAIN_SEED)
        model = make_model()
        start = time.perf_counter()
        losses = train_segmenter(model, train_set, epochs=epochs, batch_size=args.batch_size, lr=args.lr,
                                 seed=TRAIN_SEED, progress=args.progress)
        seconds = time.perf_counter() - start
        ious = per_class_iou(confusion_matrix(predict_masks(model, held_out), target, NUM_CLASSES))
        scores[name] = miou = sum(ious) / len(ious)
        print(f"{name}: {epochs} epochs in {seconds:.0f} s, final loss {losses[-1]:.4f}, "
              f"held-out mIoU {miou:.4f} (per class {', '.join(f'{v:.3f}' for v in ious)})")
        if not args.dry_run:
            path = WEIGHTS_DIR / f"{name}.pt"
            save_weights(model, path, command=args.command, seed=TRAIN_SEED, epochs=epochs,
                         recipe=recipe, train_seconds=round(seconds, 1),
                         epoch_losses=[round(v, 5) for v in losses], held_out_miou=round(miou, 4),
                         held_out_iou_per_class=[round(v, 4) for v in ious],
                         torch_version=str(torch.__version__))
            print(f"  wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return scores
