"""Detection of a single object: classification and localization as one network with two heads.

One backbone feeds a class head (C logits) and a box head (4 numbers: the box's centre, width and height
as fractions of the image, ``(cx, cy, w, h)`` in [0, 1]). Training minimises a multitask loss::

    L = L_cls + lambda * L_box
    L_cls = cross-entropy(logits, class)                           softmax over the C classes
    L_box = smooth-L1(predicted box, true box), averaged over the 4 coordinates

``lambda`` (``box_weight``) trades the two tasks: the two terms have different scales (a cross-entropy starts
near ln C = 1.39, a smooth-L1 on fractions of the image near 0.02). :func:`loss_weight_sweep` trains one model per
weight and measures both tasks; the shipped sweep (``load_pretrained().metadata["sweep"]``, 4,000 training and 1,000
held-out images) measured: lambda 0, accuracy 98.6% but boxes untrained (21% with IoU >= 0.5); lambda 1, 98.8% and
98.1%; lambda 10, 99.4% and 99.3% (shipped); lambda 100, the tightest boxes (mean IoU 0.862) but 78.7% accuracy.

The output has a fixed size: one class and one box. An image with several objects has no single right
answer for it, which is why detectors predict a set (anchors, queries).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import require_float, require_int, require_module, require_tensor
from .boxes import box_cxcywh_to_xyxy, box_iou, box_xyxy_to_cxcywh
from .data import Shapes, image_batch, make_classification
from .layers import conv_bn_relu
from .train import eval_mode, fit, load_pretrained_model, seed_everything

__all__ = ["Localizer", "multitask_loss", "train_localizer", "evaluate_localizer", "loss_weight_sweep",
           "load_pretrained", "one_box_for_many"]

#: The shipped localizer's recipe (scripts/train_detection.py): training images and epochs.
TRAIN_SIZE, EPOCHS = 4000, 10


class Localizer(nn.Module):
    """A backbone with a class head and a box head.

    forward(x): x (N, 3, H, W) float in [0, 1] -> {"logits": (N, num_classes), "boxes": (N, 4) cxcywh in [0, 1]}.
    The backbone pools (conv-BN-ReLU then 2x2 max-pool, four times): with stride-2 convolutions instead, the class
    head over-fitted (measured: 94% training, 39% held-out accuracy on 2,000 images), with max-pools it reached
    97.6% held-out. The class head reads the features averaged over positions (what, wherever it is); the box
    head reads the flattened map (a global average would throw away where things are).
    """

    def __init__(self, num_classes: int = 4, width: int = 16, image_size: int = 64):
        super().__init__()
        num_classes = require_int("num_classes", num_classes, minimum=2)
        width = require_int("width", width, minimum=1)
        image_size = require_int("image_size", image_size, minimum=16)
        self.config = {"num_classes": num_classes, "width": width, "image_size": image_size}
        widths = (3, width, 2 * width, 4 * width, 4 * width)
        self.backbone = nn.Sequential(*[layer for c_in, c_out in zip(widths, widths[1:])
                                        for layer in (conv_bn_relu(c_in, c_out), nn.MaxPool2d(2))])
        features = widths[-1] * (image_size // 16) ** 2
        self.classify = nn.Linear(widths[-1], num_classes)
        self.localize = nn.Sequential(nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, 4))

    def forward(self, x: torch.Tensor) -> dict:
        h = self.backbone(x)
        return {"logits": self.classify(h.mean((2, 3))), "boxes": self.localize(h.flatten(1)).sigmoid()}


def multitask_loss(outputs: dict, labels: torch.Tensor, boxes: torch.Tensor, box_weight: float = 1.0) -> dict:
    """The two terms and their weighted sum.

    outputs: {"logits": (N, C), "boxes": (N, 4) cxcywh in [0, 1]}; labels: (N,) int64 class ids 0..C-1;
    boxes: (N, 4) true cxcywh in [0, 1]. Returns {"loss", "cls", "box"} (scalars; "loss" = cls + box_weight * box).
    """
    box_weight = require_float("box_weight", box_weight, minimum=0.0)
    labels = require_tensor("labels", labels, ndim=1)
    boxes = require_tensor("boxes", boxes, ndim=2)
    cls = F.cross_entropy(outputs["logits"], labels)
    box = F.smooth_l1_loss(outputs["boxes"], boxes, beta=0.1)
    return {"loss": cls + box_weight * box, "cls": cls, "box": box}


def _targets(shapes: Shapes) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (N, 3, H, W), labels (N,) 0..C-1 and boxes (N, 4) cxcywh in [0, 1] of one-object images."""
    if any(len(b) != 1 for b in shapes.boxes):
        raise ValueError("shapes must hold exactly one object per image (data.make_classification)")
    size = shapes.images.shape[1]
    boxes = box_xyxy_to_cxcywh(torch.cat([torch.as_tensor(b) for b in shapes.boxes]) / size)
    labels = torch.as_tensor(shapes.class_labels()) - 1
    return image_batch(shapes.images), labels, boxes


def train_localizer(shapes: Shapes, *, box_weight: float = 1.0, epochs: int = EPOCHS, seed: int = 0,
                    lr: float = 3e-3) -> Localizer:
    """Train a fresh :class:`Localizer` on one-object images with ``multitask_loss(..., box_weight)``."""
    box_weight = require_float("box_weight", box_weight, minimum=0.0)
    epochs = require_int("epochs", epochs, minimum=1)
    images, labels, boxes = _targets(shapes)
    seed_everything(seed)
    model = Localizer(image_size=images.shape[-1])
    dataset = torch.utils.data.TensorDataset(images, torch.stack([labels.double(), *boxes.double().T], 1))
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))

    def loss_fn(outputs, target):
        return multitask_loss(outputs, target[:, 0].long(), target[:, 1:].float(), box_weight)["loss"]

    fit(model, loader, loss_fn, epochs=epochs, lr=lr, progress=False)
    return model.eval()


def evaluate_localizer(model: nn.Module, shapes: Shapes) -> dict:
    """Held-out accuracy, mean IoU of the predicted box with the true one, and the share with IoU >= 0.5."""
    require_module("model", model)
    images, labels, boxes = _targets(shapes)
    with eval_mode(model), torch.no_grad():
        out = model(images)
    iou = box_iou(box_cxcywh_to_xyxy(out["boxes"]), box_cxcywh_to_xyxy(boxes)).diagonal()
    return {"accuracy": float((out["logits"].argmax(1) == labels).float().mean()),
            "mean_iou": float(iou.mean()), "iou_at_0.5": float((iou >= 0.5).float().mean())}


def loss_weight_sweep(box_weights=(0.0, 1.0, 10.0, 100.0), *, train: Shapes | None = None,
                      test: Shapes | None = None, epochs: int = EPOCHS) -> list[dict]:
    """Train one localizer per ``box_weight`` on the same data and seed; their held-out scores (the shipped
    sweep, ``load_pretrained().metadata["sweep"]``, is this on 4,000 training and 1,000 held-out images)."""
    train = train if train is not None else make_classification(TRAIN_SIZE, seed=0)
    test = test if test is not None else make_classification(1000, seed=1)
    rows = []
    for weight in box_weights:
        model = train_localizer(train, box_weight=weight, epochs=epochs)
        rows.append({"box_weight": float(weight), **evaluate_localizer(model, test)})
    return rows


def load_pretrained(name: str = "localizer_shapes") -> Localizer:
    """The shipped Localizer (eval mode, CPU), trained by ``python scripts/train_weights.py detection``.

    ``model.metadata["sweep"]`` holds the box-loss-weight sweep it comes from: one model per weight, each with
    its held-out accuracy, mean IoU and share of boxes with IoU >= 0.5 (``model.metadata["box_weight"]`` is its own).
    """
    return load_pretrained_model(name, {"localizer_shapes": Localizer}, "python scripts/train_weights.py detection")


@torch.no_grad()
def one_box_for_many(model: nn.Module, shapes: Shapes) -> dict:
    """What a fixed-size output (one class, one box) does on images with several objects.

    Returns "objects" (total), "found" (share of objects with IoU >= 0.5 to the image's one predicted box: at most
    one per image, so at most 1/K on K-object images), "best_iou" (mean over images of the predicted box's IoU with
    the object it overlaps most) and "boxes" ((N, 4) xyxy pixels, the predictions).
    """
    require_module("model", model)
    if not isinstance(shapes, Shapes):
        raise TypeError(f"shapes must be a Shapes (from make_shapes), got {type(shapes).__name__}")
    size = shapes.images.shape[1]
    with eval_mode(model):
        predicted = box_cxcywh_to_xyxy(model(image_batch(shapes.images))["boxes"]) * size
    found, best = 0, []
    for box, truth in zip(predicted, shapes.boxes):
        iou = box_iou(box[None], torch.as_tensor(truth, dtype=predicted.dtype))[0]
        found += int((iou >= 0.5).sum())
        best.append(float(iou.max()) if len(iou) else 0.0)
    objects = sum(len(b) for b in shapes.boxes)
    return {"objects": objects, "found": found / max(objects, 1), "best_iou": sum(best) / max(len(best), 1),
            "boxes": predicted}
