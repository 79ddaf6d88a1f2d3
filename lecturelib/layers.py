"""Building blocks shared by the models of several topics.

* :func:`conv_bn_relu`: 3x3 convolution (no bias), BatchNorm, ReLU: the backbones of the detector, DETR and
  the Mask R-CNN head (``detection_models``, ``detr_models``, ``instance_segmentation_models``);
* :class:`Attention`: multi-head self-attention that returns its weights, used by the ViT
  (``visualization_models``) and the pre-/post-norm blocks (``transformers``).

Each topic's own models live in ``<topic>_models.py``; a block moves here when a second topic uses it.
Changing a block's submodules changes the state-dict keys of the shipped weights.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["conv_bn_relu", "Attention"]


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """Conv2d(3x3, padding = dilation: same size at stride 1, no bias) -> BatchNorm2d -> ReLU(inplace)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation,
                                   bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class Attention(nn.Module):
    """Multi-head self-attention that can return its attention weights (N, heads, T, T).

    forward(x, mask=None): x (N, T, dim) -> (output (N, T, dim), attention (N, heads, T, T)).
    ``mask``: optional boolean (T, T), True where token i may attend to token j (a causal decoder passes the
    lower triangle, ``torch.ones(T, T, dtype=torch.bool).tril()``); a ViT encoder passes none: every token
    attends to every token.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)
        if mask is not None:
            if mask.dtype != torch.bool or tuple(mask.shape) != (t, t):
                raise ValueError(f"mask must be a boolean ({t}, {t}) tensor, got {mask.dtype} {tuple(mask.shape)}")
            scores = scores.masked_fill(~mask, float("-inf"))
        attention = scores.softmax(dim=-1)
        out = (attention @ v).transpose(1, 2).reshape(n, t, d)
        return self.proj(out), attention
