"""Recipe of the tiny keypoint head's weights (keypoints_shapes.pt): ``python scripts/train_weights.py keypoints``.

The second model of the instance segmentation topic (Mask R-CNN's keypoint branch in miniature). Deterministic
(seeded, 2 threads): trains TinyKeypointRCNN on the data set's default, make_shapes(N, seed=0) (occlusion on;
objects less than 25% visible, ``Shapes.ignore``, give no RoI), with jittered ground-truth boxes, the reference
keypoint_targets (lecturelib.reference) and Mask R-CNN's softmax cross-entropy over each heatmap's cells; then
measures PCK@0.1 (lecturelib.evaluation.pck: a visible keypoint is correct within 0.1 x the longer side of its
object's box) on make_shapes(1000, seed=1), heatmaps decoded by the reference decode_keypoints, with the
ground-truth boxes and with the shipped DETR's boxes, and writes lecturelib/weights/keypoints_shapes.pt with the
scores in its metadata.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from lecturelib import data
from lecturelib import instance_segmentation as inst
from lecturelib import reference as ref
from lecturelib.train import WEIGHTS_DIR, save_weights, seed_everything

TOPIC = "instance_segmentation"
THREADS = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-size", type=int, default=2500)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--copies", type=int, default=2, help="jittered RoIs per ground-truth box")
    parser.add_argument("--jitter", type=float, default=0.08, help="std of each box side's shift, x box size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-detr", dest="detr", action="store_false", help="skip the PCK with DETR's boxes")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR / "keypoints_shapes.pt")


def train(args) -> dict:
    seed_everything(args.seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    train_set = data.make_shapes(args.train_size, seed=0)
    model = inst.TinyKeypointRCNN()
    losses = inst.train_keypoint_head(model, train_set, keypoint_targets_fn=ref.keypoint_targets, epochs=args.epochs,
                                      lr=args.lr, batch_size=args.batch_size, copies=args.copies, jitter=args.jitter,
                                      seed=args.seed, progress=args.progress)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    model.eval()
    test_name = f"make_shapes({args.test_size}, seed=1)"
    test = data.make_shapes(args.test_size, seed=1)
    scores = inst.evaluate_keypoints(model, test, ref.decode_keypoints)
    numbers = {"pck": round(scores["pck"], 4), "pck_labelled": round(scores["pck_labelled"], 4),
               "pck_any_order": round(scores["pck_any_order"], 4), "test_keypoints": scores["keypoints"]}
    line = (f"trained {args.epochs} epochs in {seconds:.0f} s ({cpu_seconds:.0f} s of CPU time); final loss "
            f"{losses[-1]:.3f}; held-out PCK@0.1 with the ground-truth boxes: visible keypoints {numbers['pck']:.3f} "
            f"(any slot order {numbers['pck_any_order']:.3f}), "
            f"labelled (occluded too) {numbers['pck_labelled']:.3f}")
    if args.detr:
        with_detr = inst.evaluate_keypoints(model, test, ref.decode_keypoints, inst.detr_detections(test))
        numbers.update(pck_detr=round(with_detr["pck"], 4), matched_detr=round(with_detr["matched"], 4))
        line += f"; with DETR's boxes {numbers['pck_detr']:.3f} ({numbers['matched_detr']:.1%} of the objects matched)"
    print(line)
    if not args.dry_run:
        save_weights(model, args.out, command=args.command, seed=args.seed, epochs=args.epochs,
                     train=f"make_shapes({args.train_size}, seed=0)", test=test_name,
                     min_visibility=data.MIN_VISIBILITY, lr=args.lr, batch_size=args.batch_size, copies=args.copies,
                     jitter=args.jitter, threads=args.threads, heatmap_size=model.heatmap_size,
                     boxes="training: ground truth with jitter, grown by the model's margin; evaluation: ground truth"
                           + (" and detr_shapes (kept queries matched one-to-one at IoU >= 0.5)" if args.detr else ""),
                     metric="PCK@0.1: correct within 0.1 x the longer side of the object's ground-truth box; "
                            "visible keypoints (v = 2) of the objects not ignored", **numbers,
                     train_seconds=round(seconds), train_cpu_seconds=round(cpu_seconds),
                     losses=[round(x, 4) for x in losses])
    return scores
