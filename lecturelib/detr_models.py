"""The tiny DETR-style set predictor of the DETR notebook (lecture topic 04).

The model maps images to a fixed set of query predictions (class logits with "no object" at index 0,
normalised cxcywh boxes); matching, the set loss, training and evaluation are in ``lecturelib.detr``.
"""
from __future__ import annotations

import torch
from torch import nn

from ._validate import require_int, require_tensor
from .data import NUM_CLASSES
from .layers import conv_bn_relu

__all__ = ["TinyDETR"]


class _EncoderLayer(nn.Module):
    """Self-attention among the image positions (position added to queries and keys), then an MLP."""

    def __init__(self, d_model: int, heads: int, ffn: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, ffn), nn.ReLU(), nn.Linear(ffn, d_model))
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attn(x + pos, x + pos, x, need_weights=False)[0])
        return self.norm2(x + self.mlp(x))


class _DecoderLayer(nn.Module):
    """DETR's decoder layer: self-attention among the queries (they can agree who predicts what), then
    cross-attention from the queries to the encoded image; query and image positions are added to the
    attention queries and keys at every layer."""

    def __init__(self, d_model: int, heads: int, ffn: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, ffn), nn.ReLU(), nn.Linear(ffn, d_model))

    def forward(self, x, query_pos, memory, pos, need_weights: bool = False):
        x = self.norm1(x + self.self_attn(x + query_pos, x + query_pos, x, need_weights=False)[0])
        attended, weights = self.cross_attn(x + query_pos, memory + pos, memory, need_weights=need_weights)
        x = self.norm2(x + attended)
        return self.norm3(x + self.mlp(x)), weights


class TinyDETR(nn.Module):
    """A DETR-style set predictor small enough to train on a CPU in minutes.

    images (B, 3, 64, 64) float in [0, 1] -> {"pred_logits": (B, Q, num_classes), "pred_boxes":
    (B, Q, 4) normalised cxcywh in (0, 1)}. Logit 0 is "no object".

    * backbone: 5 conv blocks (widths 16-32-64-64-w, three of stride 2, w = ``backbone_width``, by default
      ``d_model``) and ``extra_blocks`` more of width w to a (w, 8, 8) feature map, then DETR's input projection
      (a 1x1 convolution from w to ``d_model`` channels, when they differ). The shipped model's backbone (w = 128,
      one extra block) has the layout of the anchor detector's backbone and head (``TinyDetector``) and starts
      from its weights, as DETR starts from a pretrained ResNet (:meth:`init_from_detector`); its transformer
      has d_model = 64 (``python scripts/train_weights.py detr``; the config is stored with the weights);
    * a learned positional embedding (row + column) for the 64 positions;
    * a transformer encoder (``enc_layers``) lets the 64 positions exchange information;
    * ``num_queries`` learned query embeddings drive a transformer decoder (``dec_layers``) whose slots
      start at zero and attend to each other and to the encoded image; every slot ends as one
      prediction (a class and a box).
    No anchors, no non-maximum suppression: the set loss teaches the queries not to duplicate.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, num_queries: int = 5, d_model: int = 64,
                 heads: int = 4, enc_layers: int = 1, dec_layers: int = 2, ffn: int = 128, grid: int = 8,
                 extra_blocks: int = 0, backbone_width: int | None = None):
        super().__init__()
        num_classes = require_int("num_classes", num_classes, minimum=2)
        num_queries = require_int("num_queries", num_queries, minimum=1)
        d_model = require_int("d_model", d_model, minimum=4)
        heads = require_int("heads", heads, minimum=1)
        if d_model % heads:
            raise ValueError(f"d_model must be divisible by heads, got d_model={d_model} and heads={heads}")
        enc_layers = require_int("enc_layers", enc_layers, minimum=0)
        dec_layers = require_int("dec_layers", dec_layers, minimum=1)
        ffn = require_int("ffn", ffn, minimum=1)
        grid = require_int("grid", grid, minimum=1)
        extra_blocks = require_int("extra_blocks", extra_blocks, minimum=0)
        width = d_model if backbone_width is None else require_int("backbone_width", backbone_width, minimum=4)
        self.config = {"num_classes": num_classes, "num_queries": num_queries, "d_model": d_model,
                       "heads": heads, "enc_layers": enc_layers, "dec_layers": dec_layers, "ffn": ffn,
                       "grid": grid, "extra_blocks": extra_blocks, "backbone_width": width}
        self.backbone = nn.Sequential(
            conv_bn_relu(3, 16), conv_bn_relu(16, 32, 2), conv_bn_relu(32, 64, 2),
            conv_bn_relu(64, 64, 2), conv_bn_relu(64, width),
            *(conv_bn_relu(width, width) for _ in range(extra_blocks)))
        # DETR's input projection: a 1x1 convolution from the backbone's channels to the transformer's width
        self.input_proj = nn.Conv2d(width, d_model, 1) if width != d_model else nn.Identity()
        self.row_embed = nn.Parameter(torch.randn(grid, d_model) * 0.1)
        self.col_embed = nn.Parameter(torch.randn(grid, d_model) * 0.1)
        self.encoder = nn.ModuleList(_EncoderLayer(d_model, heads, ffn) for _ in range(enc_layers))
        self.decoder = nn.ModuleList(_DecoderLayer(d_model, heads, ffn) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(d_model)
        self.queries = nn.Parameter(torch.randn(num_queries, d_model))
        self.class_head = nn.Linear(d_model, num_classes)
        self.box_head = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, 4))

    def init_from_detector(self, detector: nn.Module) -> "TinyDETR":
        """Copy a ``TinyDetector``'s backbone (and its head conv block into the first extra block) into this
        model's backbone; the transformer and the prediction heads stay as initialised. Returns the model."""
        state = {f"backbone.{k}": v for k, v in detector.backbone.state_dict().items()}
        if self.config["extra_blocks"]:
            state.update({f"backbone.5.{k}": v for k, v in detector.head.state_dict().items()})
        own = self.state_dict()
        wrong = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
        if wrong:
            raise ValueError(f"the detector's backbone does not fit this TinyDETR (d_model "
                             f"{self.config['d_model']}): {', '.join(wrong[:3])}")
        self.load_state_dict(state, strict=False)
        return self

    def freeze_backbone(self, blocks: int) -> "TinyDETR":
        """Train without the first ``blocks`` backbone blocks: no gradients, BatchNorm kept in eval mode (as DETR
        freezes the stem and first stage of its ResNet). Returns the model."""
        blocks = require_int("blocks", blocks, minimum=0)
        if blocks > len(self.backbone):
            raise ValueError(f"blocks must be at most {len(self.backbone)}, got {blocks}")
        self.frozen_blocks = blocks
        for block in list(self.backbone)[:self.frozen_blocks]:
            for parameter in block.parameters():
                parameter.requires_grad_(False)
        return self.train(self.training)

    def train(self, mode: bool = True) -> "TinyDETR":
        super().train(mode)
        for block in list(self.backbone)[:getattr(self, "frozen_blocks", 0)]:
            block.eval()
        return self

    def forward(self, images: torch.Tensor, *, all_layers: bool = False, attention: bool = False) -> dict:
        """Predictions of the last decoder layer; with ``all_layers`` also "aux" (one dict per earlier layer);
        with ``attention`` also "attention": (B, Q, h, w) cross-attention of the last layer's queries."""
        require_tensor("images", images, ndim=4, floating=True)
        features = self.input_proj(self.backbone(images))                  # (B, d, h, w)
        b, d, h, w = features.shape
        if (h, w) != (self.row_embed.shape[0], self.col_embed.shape[0]):
            raise ValueError(f"images must give a {self.config['grid']}x{self.config['grid']} feature map "
                             f"(64 x 64 pixels), got {tuple(images.shape)}")
        pos = (self.row_embed[:, None, :] + self.col_embed[None, :, :]).reshape(1, h * w, d)
        memory = features.flatten(2).transpose(1, 2)                       # (B, h*w, d)
        for layer in self.encoder:
            memory = layer(memory, pos)
        query_pos = self.queries.expand(b, -1, -1)
        x = torch.zeros_like(query_pos)
        outputs, weights = [], None
        for i, layer in enumerate(self.decoder):
            x, weights = layer(x, query_pos, memory, pos, need_weights=attention and i == len(self.decoder) - 1)
            y = self.decoder_norm(x)
            outputs.append({"pred_logits": self.class_head(y), "pred_boxes": self.box_head(y).sigmoid()})
        result = dict(outputs[-1])
        if all_layers:
            result["aux"] = outputs[:-1]
        if attention:
            result["attention"] = weights.reshape(b, -1, h, w)
        return result
