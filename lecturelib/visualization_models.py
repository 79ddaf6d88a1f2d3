"""Models of the visualization notebook, their training, and their pretrained weights.

* ``ShapesClassifier``: conv blocks -> global average pooling (GAP) -> one linear layer, the
  architecture for which CAM is defined. Classifies single-shape images (``make_classification``)
  into ``CLASS_NAMES`` (circle, square, triangle, star: class id - 1 of ``lecturelib.data``).
* ``LinearClassifier``: scores = W (x - mean) + b on the flattened input; row c of W, reshaped to the
  input's shape, is class c's **template** (fitted by ``fit_linear_classifier`` in about a second).
* ``TinyViT``: a small vision transformer (8 x 8 patches, a class token, pre-norm blocks) whose
  attention weights can be returned for visualization.

``load_pretrained("classifier_shapes")`` / ``"vit_shapes"`` / ``"filters_shapes"`` give models trained by
``python scripts/train_weights.py visualization`` on ``make_classification(TRAIN_SIZE, seed=0)``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ._validate import describe, require_float, require_int, require_module, require_tensor
from .data import CLASSES, Shapes
from .layers import Attention
from .train import WEIGHTS_DIR, eval_mode, fit, load_pretrained_model, shuffled_loader

__all__ = [
    "CLASS_NAMES",
    "ShapesClassifier",
    "LinearClassifier",
    "fit_linear_classifier",
    "TinyViT",
    "classification_data",
    "train_classifier",
    "predict",
    "accuracy",
    "load_pretrained",
    "PRETRAINED",
    "WEIGHTS_DIR",
    "FILTERS_BLOCKS",
]

#: The classifier's classes: output k is class id k + 1 of lecturelib.data.CLASSES.
CLASS_NAMES = tuple(CLASSES[1:])

#: Default blocks of ShapesClassifier: (out_channels, dilation, max-pool after). Two poolings take a
#: 64 x 64 image to 16 x 16; two convolutions with dilation 2 at 16 x 16 grow the receptive field (to
#: 50 pixels) without lowering the resolution of the last layer, where CAM and Grad-CAM are read. (In trials
#: with an 8 x 8 last layer, or with dilation 4 in the last block, the maximum of Grad-CAM at the last
#: layer fell inside the object's box in only 72-84% of held-out images; 98% with these blocks.)
DEFAULT_BLOCKS = ((16, 1, True), (32, 1, True), (64, 1, False), (64, 2, False), (64, 2, False))
#: Blocks of the first-layer-filters model ("filters_shapes"): a 7 x 7 stride-2 first layer, as in AlexNet's and
#: ResNet's stems, whose filters are large enough to show a pattern (the default model's are 3 x 3), then the
#: default model's blocks 2-5 at the same resolutions (16 x 16 after the first max-pool).
FILTERS_BLOCKS = ((16, 1, True, 7, 2), (32, 1, False), (64, 1, False), (64, 2, False))


def _check_images(name: str, x) -> torch.Tensor:
    require_tensor(name, x, ndim=4, floating=True)
    if x.shape[1] != 3:
        raise ValueError(f"{name} must have 3 channels (N, 3, H, W), got shape {tuple(x.shape)}")
    return x


class ShapesClassifier(nn.Module):
    """conv blocks -> global average pooling -> linear: logits (N, num_classes) for (N, 3, H, W) images.

    Each block is Conv2d(3x3, optional dilation) + BatchNorm + ReLU (in place), optionally followed by
    2x2 max-pooling. ``features`` is an ``nn.Sequential`` of the blocks (``features[i]`` for Grad-CAM at
    block i; ``model.blocks()`` lists the conv blocks by name); ``fc`` is the linear layer whose weight
    (num_classes, K) CAM uses. ``forward_features`` returns the last feature maps (N, K, h, w).

    ``blocks``: one ``(channels, dilation, pool)`` per block, or ``(channels, dilation, pool, kernel, stride)``
    for another kernel size or stride (e.g. ``(16, 1, True, 7, 2)``: a 7 x 7 stride-2 first layer, as in
    AlexNet's or ResNet's stem; padding keeps ``size / stride``).
    """

    def __init__(self, num_classes: int = len(CLASS_NAMES), blocks=DEFAULT_BLOCKS):
        super().__init__()
        num_classes = require_int("num_classes", num_classes, minimum=2)
        if (not isinstance(blocks, (tuple, list)) or not blocks
                or not all(isinstance(b, (tuple, list)) and len(b) in (3, 5) for b in blocks)):
            raise ValueError("blocks must be a non-empty list of (channels, dilation, pool) or "
                             f"(channels, dilation, pool, kernel, stride), got {blocks!r}")
        blocks = [(require_int("channels", int(b[0]), minimum=1), require_int("dilation", int(b[1]), minimum=1),
                   bool(b[2]), *(require_int(name, int(v), minimum=1) for name, v in zip(("kernel", "stride"), b[3:])))
                  for b in blocks]
        self.config = {"num_classes": num_classes, "blocks": [list(b) for b in blocks]}
        layers, in_channels = [], 3
        for out_channels, dilation, pool, *rest in blocks:
            kernel, stride = rest or (3, 1)
            layers.append(nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=dilation * (kernel // 2),
                          dilation=dilation, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True)))
            if pool:
                layers.append(nn.MaxPool2d(2))
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(in_channels, num_classes)

    def blocks(self) -> dict[str, nn.Module]:
        """The conv blocks by name, {"block1": ..., "block5": ...}, in order (Grad-CAM target layers)."""
        convs = [m for m in self.features if isinstance(m, nn.Sequential)]
        return {f"block{i + 1}": m for i, m in enumerate(convs)}

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """The last feature maps f_k, (N, K, h, w), right before global average pooling."""
        return self.features(_check_images("images", images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(images).mean(dim=(2, 3)))


# ------------------------------------------------------------------------------------------------
# A linear classifier: one template per class
# ------------------------------------------------------------------------------------------------
class LinearClassifier(nn.Module):
    """Scores ``W (x - mean) + b`` for inputs of shape (N, *input_shape), flattened: logits (N, num_classes).

    ``mean`` (a buffer, the training inputs' mean) only centres the inputs; ``templates()`` returns W's rows
    reshaped to ``input_shape``: the score of class c is the inner product of its template with the
    centred input, plus b_c.
    """

    def __init__(self, input_shape, num_classes: int = len(CLASS_NAMES)):
        super().__init__()
        if not isinstance(input_shape, (tuple, list, torch.Size)) or not input_shape:
            raise ValueError(f"input_shape must be a non-empty tuple of ints, got {input_shape!r}")
        self.input_shape = tuple(require_int("input_shape", int(s), minimum=1) for s in input_shape)
        num_classes = require_int("num_classes", num_classes, minimum=2)
        self.config = {"input_shape": list(self.input_shape), "num_classes": num_classes}
        self.register_buffer("mean", torch.zeros(self.input_shape))
        self.linear = nn.Linear(int(np.prod(self.input_shape)), num_classes)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        require_tensor("inputs", inputs, floating=True)
        if tuple(inputs.shape[1:]) != self.input_shape:
            raise ValueError(f"inputs must have shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(inputs.shape)}")
        return self.linear((inputs - self.mean).flatten(1))

    def templates(self) -> torch.Tensor:
        """(num_classes, *input_shape): each class's row of W, shaped like an input."""
        return self.linear.weight.detach().reshape(-1, *self.input_shape).clone()


def fit_linear_classifier(inputs: torch.Tensor, labels: torch.Tensor, *, weight_decay: float = 0.1,
                          max_iter: int = 100) -> LinearClassifier:
    """Softmax regression: minimise mean cross-entropy + weight_decay / 2 * ||W||^2 by full-batch L-BFGS.

    inputs: (N, ...) float; labels: (N,) int64 in 0..C-1 (C = 4 classes, or more if the labels say so).
    The weights start at 0; the problem is convex, so the result does not depend on a seed. Returns the
    fitted :class:`LinearClassifier` in eval mode.
    """
    inputs = require_tensor("inputs", inputs, floating=True)
    labels = require_tensor("labels", labels, ndim=1, integer=True)
    if inputs.ndim < 2 or len(inputs) != len(labels):
        raise ValueError(f"inputs (N, ...) and labels (N,) must have the same N, got {tuple(inputs.shape)} "
                         f"and {tuple(labels.shape)}")
    weight_decay = require_float("weight_decay", weight_decay, minimum=0)
    max_iter = require_int("max_iter", max_iter, minimum=1)
    labels = labels.long()
    model = LinearClassifier(inputs.shape[1:], max(len(CLASS_NAMES), int(labels.max()) + 1))
    inputs = inputs.detach().float()
    with torch.no_grad():
        model.mean.copy_(inputs.mean(0))
        nn.init.zeros_(model.linear.weight)
        nn.init.zeros_(model.linear.bias)
    optimizer = torch.optim.LBFGS(model.linear.parameters(), max_iter=max_iter, history_size=20,
                                  line_search_fn="strong_wolfe")
    centred = (inputs - model.mean).flatten(1)

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(model.linear(centred), labels) + weight_decay / 2 * model.linear.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return model.eval()


# ------------------------------------------------------------------------------------------------
# A tiny vision transformer
# ------------------------------------------------------------------------------------------------
class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x):
        out, attention = self.attn(self.norm1(x))
        x = x + out
        return x + self.mlp(self.norm2(x)), attention


class TinyViT(nn.Module):
    """A small ViT: (N, 3, H, W) -> logits (N, num_classes).

    Each ``patch x patch`` patch becomes one token: with ``stem="linear"`` by a strided convolution
    (the original ViT's linear patch embedding), with ``stem="conv"`` by three stride-2 3x3 convolutions
    (a convolutional stem, Xiao et al. 2021: trains far faster on small data; the tokens still form a
    grid of patches). A learned class token and position embeddings are added, ``depth`` pre-norm
    blocks follow, and the class token's final state is classified.
    ``forward(images, return_attention=True)`` also returns the attention weights
    of every block: a list of ``depth`` tensors (N, heads, 1 + P, 1 + P), token 0 the class token.
    """

    def __init__(self, num_classes: int = len(CLASS_NAMES), image_size: int = 64, patch: int = 8, dim: int = 64,
                 depth: int = 4, heads: int = 4, mlp_dim: int = 128, stem: str = "conv"):
        super().__init__()
        image_size = require_int("image_size", image_size, minimum=1)
        patch = require_int("patch", patch, minimum=1)
        if image_size % patch:
            raise ValueError(f"image_size ({image_size}) must be divisible by patch ({patch})")
        if stem not in ("linear", "conv"):
            raise ValueError(f"stem must be 'linear' or 'conv', got {stem!r}")
        if stem == "conv" and patch != 8:
            raise ValueError(f"the convolutional stem makes 8 x 8 patches, got patch={patch}")
        self.config = {"num_classes": num_classes, "image_size": image_size, "patch": patch, "dim": dim,
                       "depth": depth, "heads": heads, "mlp_dim": mlp_dim, "stem": stem}
        self.grid = image_size // patch
        if stem == "linear":
            self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        else:
            self.embed = nn.Sequential(
                nn.Conv2d(3, dim // 2, 3, stride=2, padding=1), nn.BatchNorm2d(dim // 2), nn.ReLU(),
                nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1), nn.BatchNorm2d(dim), nn.ReLU(),
                nn.Conv2d(dim, dim, 3, stride=2, padding=1))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 1 + self.grid ** 2, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: torch.Tensor, return_attention: bool = False):
        _check_images("images", images)
        side = self.grid * self.config["patch"]
        if tuple(images.shape[2:]) != (side, side):
            raise ValueError(f"images must be {side}x{side}, got shape {tuple(images.shape)}")
        tokens = self.embed(images).flatten(2).transpose(1, 2)             # (N, P, dim)
        x = torch.cat([self.cls_token.expand(len(images), -1, -1), tokens], dim=1) + self.pos
        attentions = []
        for block in self.blocks:
            x, attention = block(x)
            attentions.append(attention)
        logits = self.head(self.norm(x[:, 0]))
        return (logits, attentions) if return_attention else logits


# ------------------------------------------------------------------------------------------------
# Data, training, evaluation
# ------------------------------------------------------------------------------------------------
def classification_data(shapes: Shapes) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 3, H, W) float in [0, 1], targets (N,) int64 in 0..3) from one-shape images."""
    if not isinstance(shapes, Shapes):
        raise TypeError(f"shapes must be a Shapes (from make_classification), got {describe(shapes)}")
    return shapes.image_tensor(), torch.from_numpy(shapes.class_labels() - 1)


class _Augmented(torch.utils.data.Dataset):
    """Random flips and 90-degree rotations: the classes do not depend on orientation. With ``colours``,
    also a random order of the RGB channels and, half of the time, inverted colours (1 - x): the classes do
    not depend on the colours either."""

    def __init__(self, images, targets, seed, colours: bool = False):
        self.images, self.targets, self.colours = images, targets, colours
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = self.images[i]
        k, flip = self.rng.integers(4), self.rng.integers(2)
        image = torch.rot90(image, int(k), dims=(1, 2))
        image = image.flip(2) if flip else image
        if self.colours:
            order, invert = self.rng.permutation(3), self.rng.integers(2)
            image = image[torch.from_numpy(order)]
            image = 1 - image if invert else image
        return image, self.targets[i]


def train_classifier(model: nn.Module, train: Shapes, *, epochs: int, batch_size: int = 64, lr: float = 3e-3,
                     weight_decay: float = 1e-4, augment: bool = True, colour_augment: bool = False,
                     seed: int = 0, progress: bool = True) -> list[float]:
    """Train ``model`` (ShapesClassifier or TinyViT) with cross-entropy on ``train``; epoch losses.

    AdamW with a one-cycle schedule peaking at ``lr``; batches shuffled with ``seed``; ``augment``
    applies random flips and 90-degree rotations; ``colour_augment`` also permutes the colour channels and
    inverts the colours of half of the images.
    """
    require_module("model", model)
    epochs = require_int("epochs", epochs, minimum=1)
    batch_size = require_int("batch_size", batch_size, minimum=1)
    lr = require_float("lr", lr, minimum=0)
    seed = require_int("seed", seed, minimum=0)
    images, targets = classification_data(train)
    dataset = (_Augmented(images, targets, seed, colours=colour_augment) if augment
               else torch.utils.data.TensorDataset(images, targets))
    loader = shuffled_loader(dataset, batch_size, seed)
    return fit(model, loader, F.cross_entropy, epochs=epochs, lr=lr, weight_decay=weight_decay,
               progress=progress)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """(N, num_classes) logits, computed in eval mode (the model's mode is restored)."""
    require_module("model", model)
    _check_images("images", images)
    with eval_mode(model):
        return torch.cat([model(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def accuracy(model: nn.Module, shapes: Shapes) -> float:
    """Fraction of one-shape images whose class the model predicts correctly."""
    images, targets = classification_data(shapes)
    return float((predict(model, images).argmax(1) == targets).float().mean())


# ------------------------------------------------------------------------------------------------
# Pretrained weights
# ------------------------------------------------------------------------------------------------
PRETRAINED = {"classifier_shapes": ShapesClassifier, "vit_shapes": TinyViT, "filters_shapes": ShapesClassifier}


def load_pretrained(name: str) -> nn.Module:
    """A pretrained model in eval mode on the CPU: "classifier_shapes", "vit_shapes" or "filters_shapes" (a
    ShapesClassifier with ``FILTERS_BLOCKS``, for the first-layer-filters demo).

    ``model.metadata`` holds how the weights were made (command, seed, epochs, held-out accuracy...).
    """
    return load_pretrained_model(name, PRETRAINED, "python scripts/train_weights.py visualization")

