"""Recipe of the DETR-style set predictor's weights (detr_shapes.pt): ``python scripts/train_weights.py detr``.

Deterministic (seeded, 1 thread: on 2 shared cores a second torch thread slowed training down several times):
trains TinyDETR on the data set's default, make_shapes(N, seed=0) (occlusion on; queries matched to objects less
than 25% visible, ``Shapes.ignore``, are left out of the loss), with the reference matcher (lecturelib.reference:
Hungarian algorithm, DETR's cost with weights 1, 5, 2) and the auxiliary loss on every decoder layer. As DETR
starts from a pretrained ResNet, the backbone (the anchor detector's layout: width 128, one extra block) starts
from the shipped anchor detector, lecturelib/weights/detector_shapes.pt (``make weights`` trains ``detection``
first), and its first 2 blocks stay frozen; the transformer (d_model 64) is trained from scratch. Then evaluates
on make_shapes(1000, seed=1) and on the unoccluded make_shapes(1000, seed=1, occlusion=False): all-point AP@0.5
(PASCAL VOC 2010+), COCO's 101-point AP@[.5:.95] and the object-count accuracy, and writes
lecturelib/weights/detr_shapes.pt with the scores in its metadata.
"""
from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

from lecturelib import data, detection, detr
from lecturelib import reference as ref
from lecturelib.train import WEIGHTS_DIR, save_weights, seed_everything

THREADS = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--aux", action=argparse.BooleanOptionalAction, default=True,
                        help="also match and supervise the earlier decoder layers")
    parser.add_argument("--d-model", type=int, default=64, help="width of the transformer")
    parser.add_argument("--ffn", type=int, default=128, help="hidden width of the transformer's MLPs")
    parser.add_argument("--enc-layers", type=int, default=1)
    parser.add_argument("--dec-layers", type=int, default=2)
    parser.add_argument("--backbone-width", type=int, default=128, help="channels of the last backbone blocks; "
                        "128 with --extra-blocks 1 is the anchor detector's layout (needed by --init detector)")
    parser.add_argument("--extra-blocks", type=int, default=1, help="backbone blocks after the fifth")
    parser.add_argument("--init", choices=("detector", "none"), default="detector",
                        help="detector: start the backbone from the shipped anchor detector "
                             "(lecturelib/weights/detector_shapes.pt, trained first by `make weights`)")
    parser.add_argument("--freeze", type=int, default=2, help="backbone blocks left frozen (BatchNorm in eval mode)")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR / "detr_shapes.pt")


def train(args) -> dict:
    seed_everything(args.seed)
    start = time.perf_counter()
    train_set = data.make_shapes(args.train_size, seed=0)
    cost_fn = functools.partial(ref.detr_matching_cost, **detr.DEFAULT_WEIGHTS)
    matcher = detr.make_matcher(ref.match_batch, cost_fn, ref.hungarian_match)
    model = detr.TinyDETR(d_model=args.d_model, ffn=args.ffn, enc_layers=args.enc_layers, dec_layers=args.dec_layers,
                          backbone_width=args.backbone_width, extra_blocks=args.extra_blocks)
    init = None
    if args.init == "detector":
        detector = detection.load_pretrained()
        model.init_from_detector(detector)
        init = f"backbone from detector_shapes.pt ({detector.metadata['command']}, map50 {detector.metadata['map50']})"
    if args.freeze:
        model.freeze_backbone(args.freeze)
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
                     batch_size=args.batch_size, aux_loss=args.aux, init=init, frozen_blocks=args.freeze,
                     threads=args.threads, no_object_weight=0.1,
                     cost_weights=dict(detr.DEFAULT_WEIGHTS),
                     ap="all-point (PASCAL VOC 2010+); coco: 101-point AP@[.5:.95]", **numbers,
                     train_seconds=round(seconds), losses=[round(x, 4) for x in losses])
    return scores[""]
