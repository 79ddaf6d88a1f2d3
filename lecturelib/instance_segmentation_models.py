"""The tiny Mask R-CNN-style predictors of the instance segmentation notebook (lecture topic 05): the mask branch
and the keypoint branch, each on RoIAlign crops of boxes given from outside.

Both share one design (``_RoIHeadModel``): a small CNN backbone (stride 2), RoIAlign of each box, and Mask R-CNN's
FCN head scaled down (3x3 convs, a 2x2 stride-2 transposed conv, a 1x1 conv to one M x M map per output channel).
The mask model's channels are the classes (a sigmoid each); the keypoint model's are the keypoint slots (a softmax
over the cells of each). Training, inference with DETR's boxes and evaluation are in
``lecturelib.instance_segmentation``.
"""
from __future__ import annotations

import torch
from torch import nn

from .data import MAX_KEYPOINTS, NUM_CLASSES
from .layers import conv_bn_relu
from .rois import roi_align

__all__ = ["TinyMaskRCNN", "TinyKeypointRCNN"]


def _backbone(width: int) -> nn.Sequential:
    """4 conv-BN-ReLU layers (the first with stride 2 and width / 2, the last dilated):
    (3, H, W) -> (width, H / 2, W / 2)."""
    return nn.Sequential(conv_bn_relu(3, width // 2, stride=2), conv_bn_relu(width // 2, width),
                         conv_bn_relu(width, width), conv_bn_relu(width, width, dilation=2))


def _fcn_head(in_channels: int, width: int, outputs: int, convs: int) -> nn.Sequential:
    """Mask R-CNN's FCN head in miniature: ``convs`` x (3x3 conv + ReLU), a 2x2 stride-2 transposed conv + ReLU
    (doubles the size), a 1x1 conv to ``outputs`` maps."""
    layers, c = [], in_channels
    for _ in range(convs):
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(inplace=True)]
        c = width
    layers += [nn.ConvTranspose2d(width, width, 2, stride=2), nn.ReLU(inplace=True), nn.Conv2d(width, outputs, 1)]
    return nn.Sequential(*layers)


class _RoIHeadModel(nn.Module):
    """Backbone (stride 2) -> RoIAlign of each box (``roi_size`` x ``roi_size``, 2 x 2 samples per bin, aligned)
    -> an FCN head whose output is 2 * roi_size on a side. Subclasses name the head's attribute."""
    stride = 2
    head_name = "head"

    def _build(self, width: int, head_width: int, outputs: int, convs: int) -> None:
        self.backbone = _backbone(width)
        setattr(self, self.head_name, _fcn_head(width, head_width, outputs, convs))

    def rois(self, boxes):
        """The RoIs cropped for ``boxes`` (the boxes themselves here; see ``TinyKeypointRCNN``)."""
        return boxes

    def forward(self, images: torch.Tensor, boxes) -> torch.Tensor:
        """images: (N, 3, H, W); boxes: list of N (K_i, 4) xyxy pixel boxes (the mask model also takes (K, 5)
        RoIs). Returns the head's logits (sum K_i, outputs, M, M), RoIs in the order given."""
        features = self.backbone(images)
        crops = roi_align(features, self.rois(boxes), self.config["roi_size"], 1.0 / self.stride, 2)
        return getattr(self, self.head_name)(crops)


class TinyMaskRCNN(_RoIHeadModel):
    """Backbone (stride 2) + RoIAlign + Mask R-CNN's FCN mask head, for boxes given from outside.

    backbone: 4 conv-BN-ReLU layers (the first with stride 2 and width / 2, the last dilated) turn a
    (3, 64, 64) image into a (width, 32, 32) feature map; RoIAlign crops ``roi_size`` x ``roi_size`` per
    box (2 x 2 samples per bin, aligned); the head is 3 convs 3x3 + ReLU, a 2x2 stride-2 transposed conv
    + ReLU and a 1x1 conv to ``num_classes`` mask logits of M x M (M = 2 * roi_size), one per class.
    Mask R-CNN crops 14 x 14 and predicts 28 x 28; objects here are at most 40 pixels wide, so 8 -> 16.
    """
    head_name = "mask_head"

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 48, head_width: int = 32, roi_size: int = 8):
        super().__init__()
        self.config = {"num_classes": num_classes, "width": width, "head_width": head_width, "roi_size": roi_size}
        self._build(width, head_width, num_classes, convs=3)

    @property
    def mask_size(self) -> int:
        return 2 * self.config["roi_size"]


class TinyKeypointRCNN(_RoIHeadModel):
    """Mask R-CNN's keypoint branch in miniature, for boxes given from outside: the mask model's backbone and
    RoIAlign, and an FCN head with one S x S heatmap of logits per keypoint slot (S = 2 * roi_size).

    Each box is grown by ``margin`` pixels on every side before RoIAlign (``rois``): the data's boxes are tight
    around the painted pixels, and a sharp corner lies up to about 2 pixels beyond them. The heatmaps are over
    those grown RoIs: decode them with ``model.rois(boxes)``. The head is class-agnostic (as Mask R-CNN's, which
    has one class): slot k is "the k-th keypoint clockwise from the topmost" whatever the shape, and the head
    tells the shapes apart from the crop. Mask R-CNN's head has 8 convs of 512 channels on 14 x 14 crops and
    predicts 56 x 56; here 4 convs of ``head_width`` on 8 x 8 crops predict 16 x 16.
    """
    head_name = "keypoint_head"

    def __init__(self, num_keypoints: int = MAX_KEYPOINTS, width: int = 48, head_width: int = 48, roi_size: int = 8,
                 convs: int = 4, margin: float = 2.0):
        super().__init__()
        self.config = {"num_keypoints": num_keypoints, "width": width, "head_width": head_width,
                       "roi_size": roi_size, "convs": convs, "margin": margin}
        self._build(width, head_width, num_keypoints, convs=convs)

    @property
    def heatmap_size(self) -> int:
        return 2 * self.config["roi_size"]

    def rois(self, boxes):
        """``boxes`` (a (K, 4) tensor or a list of them) grown by ``margin`` pixels on each side."""
        grow = torch.tensor([-1.0, -1.0, 1.0, 1.0]) * self.config["margin"]
        if isinstance(boxes, torch.Tensor):
            return boxes + grow.to(boxes.dtype)
        return [b + grow.to(b.dtype) for b in boxes]
