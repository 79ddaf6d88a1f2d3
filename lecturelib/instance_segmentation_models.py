"""The tiny Mask R-CNN-style mask predictor of the instance segmentation notebook (lecture topic 05).

It crops RoIAlign features for boxes given from outside and predicts one M x M mask per class for each
box; training, inference with DETR's boxes and evaluation are in ``lecturelib.instance_segmentation``.
"""
from __future__ import annotations

import torch
from torch import nn

from .data import NUM_CLASSES
from .layers import conv_bn_relu
from .rois import roi_align

__all__ = ["TinyMaskRCNN"]


class TinyMaskRCNN(nn.Module):
    """Backbone (stride 2) + RoIAlign + Mask R-CNN's FCN mask head, for boxes given from outside.

    backbone: 4 conv-BN-ReLU layers (the first with stride 2 and width / 2, the last dilated) turn a
    (3, 64, 64) image into a (width, 32, 32) feature map; RoIAlign crops ``roi_size`` x ``roi_size`` per
    box (2 x 2 samples per bin, aligned); the head is 3 convs 3x3 + ReLU, a 2x2 stride-2 transposed conv
    + ReLU and a 1x1 conv to ``num_classes`` mask logits of M x M (M = 2 * roi_size), one per class.
    Mask R-CNN crops 14 x 14 and predicts 28 x 28; objects here are at most 40 pixels wide, so 8 -> 16.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 48, head_width: int = 32, roi_size: int = 8):
        super().__init__()
        self.config = {"num_classes": num_classes, "width": width, "head_width": head_width, "roi_size": roi_size}
        self.stride = 2
        self.backbone = nn.Sequential(conv_bn_relu(3, width // 2, stride=2), conv_bn_relu(width // 2, width),
                                      conv_bn_relu(width, width), conv_bn_relu(width, width, dilation=2))
        layers, c = [], width
        for _ in range(3):
            layers += [nn.Conv2d(c, head_width, 3, padding=1), nn.ReLU(inplace=True)]
            c = head_width
        layers += [nn.ConvTranspose2d(head_width, head_width, 2, stride=2), nn.ReLU(inplace=True),
                   nn.Conv2d(head_width, num_classes, 1)]
        self.mask_head = nn.Sequential(*layers)

    @property
    def mask_size(self) -> int:
        return 2 * self.config["roi_size"]

    def forward(self, images: torch.Tensor, boxes) -> torch.Tensor:
        """images: (N, 3, H, W); boxes: list of N (K_i, 4) xyxy pixel boxes (or (K, 5) RoIs).
        Returns mask logits (sum K_i, num_classes, M, M), RoIs in the order given."""
        features = self.backbone(images)
        crops = roi_align(features, boxes, self.config["roi_size"], 1.0 / self.stride, 2)
        return self.mask_head(crops)
