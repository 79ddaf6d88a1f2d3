"""The tiny anchor-based detector of the detection notebook (a one-level RPN with a class head).

The model only maps images to raw per-anchor outputs; everything that turns them into boxes (anchors,
decoding, NMS) is done by functions passed in by the caller (``lecturelib.detection.predict``), so the
notebook runs the student's own ``decode_boxes`` and ``nms``.
"""
from __future__ import annotations

import torch
from torch import nn

from ._validate import require_int, require_tensor
from .data import NUM_CLASSES
from .layers import conv_bn_relu

__all__ = ["TinyDetector"]


class TinyDetector(nn.Module):
    """5 conv blocks (16-32-64-64-``width``, three of stride 2) and a conv head to an 8 x 8 grid, then per anchor
    an objectness logit, 4 box deltas and class logits (one per shape, no background: objectness decides that).
    The defaults are the shipped detector's: 9 anchors per cell (3 sizes x 3 ratios), width 128.

    images (B, 3, 64, 64) in [0, 1] -> {"objectness": (B, N), "deltas": (B, N, 4),
    "class_logits": (B, N, num_classes - 1)} with N = H W A anchors in the order of
    ``generate_anchors``: index (y W + x) A + a. ``anchors`` (N, 4) is a buffer holding the anchors the
    model was trained with (set by scripts/train_detection.py; saved with the weights).
    """

    def __init__(self, num_classes: int = NUM_CLASSES, num_anchors: int = 9, width: int = 128, grid: int = 8):
        super().__init__()
        self.config = {"num_classes": require_int("num_classes", num_classes, minimum=2),
                       "num_anchors": require_int("num_anchors", num_anchors, minimum=1),
                       "width": require_int("width", width, minimum=4), "grid": require_int("grid", grid, minimum=1)}
        self.backbone = nn.Sequential(
            conv_bn_relu(3, 16), conv_bn_relu(16, 32, 2), conv_bn_relu(32, 64, 2),
            conv_bn_relu(64, 64, 2), conv_bn_relu(64, width))
        self.head = conv_bn_relu(width, width)
        self.objectness = nn.Conv2d(width, num_anchors, 1)
        self.deltas = nn.Conv2d(width, num_anchors * 4, 1)
        self.classes = nn.Conv2d(width, num_anchors * (num_classes - 1), 1)
        self.register_buffer("anchors", torch.zeros(grid * grid * num_anchors, 4))

    @staticmethod
    def _per_anchor(x: torch.Tensor, a: int) -> torch.Tensor:
        """(B, A k, H, W) -> (B, H W A, k), anchor index (y W + x) A + a."""
        b, ak, h, w = x.shape
        return x.view(b, a, ak // a, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * a, ak // a)

    def forward(self, images: torch.Tensor) -> dict:
        require_tensor("images", images, ndim=4, floating=True)
        features = self.head(self.backbone(images))
        a = self.config["num_anchors"]
        if features.shape[-2:] != (self.config["grid"],) * 2:
            raise ValueError(f"images must give a {self.config['grid']}x{self.config['grid']} feature map "
                             f"(64 x 64 pixels), got {tuple(images.shape)}")
        return {"objectness": self._per_anchor(self.objectness(features), a)[..., 0],
                "deltas": self._per_anchor(self.deltas(features), a),
                "class_logits": self._per_anchor(self.classes(features), a)}
