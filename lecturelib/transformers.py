"""Transformers recap: three ways of processing sequences, ViT patches, positions, pooling and masking,
pre-norm vs post-norm, and a mixture-of-experts layer.

Demos and widgets of the transformers notebook. The graded operations (``patchify``, ``rms_norm``,
``swiglu``, ``top_k_routing``, ``load_balancing_loss``) are NOT here: every function that needs one
takes it as an argument, so the notebook runs them with the student's code and scripts/tests with
``lecturelib.reference`` (see ``lecturelib._student``).

Conventions: images are (N, C, H, W); ``patchify(images, p)`` returns (N, L, C*p*p) with patches in
row-major order (left to right, then top to bottom) and each patch flattened channel first, the
layout of a ``Conv2d(C, D, kernel_size=p, stride=p)`` weight reshaped to (D, C*p*p). Tokens are
(T, D) or (N, T, D); router logits (T, E); a routing function ``routing_fn(logits, k)`` returns
(expert indices (T, k) int64, gate weights (T, k)).
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._student import call_student, function_or_reference
from ._validate import describe, require_callable, require_float, require_int, require_module, require_tensor
from .layers import Attention
from .plot import display_only, explorer

__all__ = [
    "RecurrentLayer", "ConvolutionLayer", "SelfAttentionLayer", "SEQUENCE_LAYERS", "sequence_layer",
    "measure_sequence_layer",
    "sequence_costs", "sequence_cost_table", "plot_sequence_layers", "plot_sequence_costs",
    "vit_tokens", "shuffle_patches", "causal_mask", "linear_probe_accuracy", "position_similarity",
    "plot_position_similarity", "plot_attention_masks",
    "conv_patch_embedding", "patch_view", "plot_patches", "patch_explorer",
    "NormBlock", "depth_profile", "plot_depth_profiles",
    "MoELayer", "dense_mlp", "routing_problem", "routing_view", "plot_routing", "routing_explorer",
]


# ------------------------------------------------------------------------------------------------
# Three ways of processing a sequence: recurrence, convolution, self-attention
# ------------------------------------------------------------------------------------------------
class RecurrentLayer(nn.Module):
    """An Elman RNN written as a loop: h_t = tanh(x_t W_x + b + h_{t-1} W_h), output h_t at every position.

    x (N, L, dim) -> (N, L, dim). The input projection runs on all positions at once; the recurrent
    projection ``step`` runs L times, each call waiting for the previous one (L sequential steps).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.inp = nn.Linear(dim, dim)
        self.step = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.inp(x)
        h = x.new_zeros(x.shape[0], x.shape[2])
        outputs = []
        for u_t in u.unbind(dim=1):          # unbind, not u[:, t]: one slice's gradient would cost O(L) each
            h = torch.tanh(u_t + self.step(h))
            outputs.append(h)
        return torch.stack(outputs, dim=1)


class ConvolutionLayer(nn.Module):
    """A 1-D convolution over the positions (kernel k, padding k // 2: same length), one call for all of them.

    x (N, L, dim) -> (N, L, dim); ``step`` is the ``nn.Conv1d``.
    """

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__()
        k = require_int("kernel_size", kernel_size, minimum=1)
        if k % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-length output), got {k}")
        self.step = nn.Conv1d(dim, dim, k, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.step(x.transpose(1, 2)).transpose(1, 2)


class SelfAttentionLayer(nn.Module):
    """Multi-head self-attention (``lecturelib.layers.Attention``), no mask: every position sees every position.

    x (N, L, dim) -> (N, L, dim); ``step`` is the attention module (one call for all positions).
    """

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.step = Attention(dim, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.step(x)[0]


SEQUENCE_LAYERS = {"RNN": RecurrentLayer, "convolution": ConvolutionLayer, "self-attention": SelfAttentionLayer}


def sequence_layer(kind: str, dim: int = 64, seed: int = 0) -> nn.Module:
    """A freshly initialised layer of one of the three kinds: "RNN", "convolution" (k = 3), "self-attention"."""
    if kind not in SEQUENCE_LAYERS:
        raise ValueError(f"kind must be one of {list(SEQUENCE_LAYERS)}, got {kind!r}")
    with torch.random.fork_rng():
        torch.manual_seed(require_int("seed", seed, minimum=0))
        return SEQUENCE_LAYERS[kind](require_int("dim", dim, minimum=4))


def _saved_activation_bytes(layer: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for the backward pass (each storage once, parameters left out)."""
    params = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x.detach().requires_grad_())
    return int(sum(storages.values()))


def _one_layer_reach(layer: nn.Module, x: torch.Tensor) -> int:
    """How many input positions the LAST output position depends on after one layer (nonzero gradient)."""
    x = x.detach().requires_grad_()
    layer(x)[:, -1].sum().backward()
    return int((x.grad.abs().sum(dim=(0, 2)) > 0).sum())


def measure_sequence_layer(kind: str, length: int, dim: int = 64, batch: int = 1, repeats: int = 3,
                           seed: int = 0) -> dict:
    """Measure one layer of ``kind`` on a random (batch, length, dim) sequence.

    Returns a dict with "kind", "length", "flops" (counted by ``torch.utils.flop_counter.FlopCounterMode``,
    multiply and add counted apart), "activation_bytes" (kept for the backward pass), "sequential_steps" (calls of
    the layer's ``step`` module in one forward pass: each recurrent call waits for the previous one), "reach"
    (input positions the last output depends on after one layer), "path_length" (layers or steps from the first
    input to the last output) with "path_unit", and "seconds" (the fastest of ``repeats`` forward passes).
    """
    from torch.utils.flop_counter import FlopCounterMode

    length = require_int("length", length, minimum=2)
    layer = sequence_layer(kind, dim, seed)
    x = torch.randn(require_int("batch", batch, minimum=1), length, dim,
                    generator=torch.Generator().manual_seed(seed))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        layer(x)
    calls = []
    handle = layer.step.register_forward_hook(lambda *args: calls.append(1))
    try:
        with torch.no_grad():
            layer(x)
    finally:
        handle.remove()
    seconds = []
    with torch.no_grad():
        for _ in range(require_int("repeats", repeats, minimum=1)):
            start = time.perf_counter()
            layer(x)
            seconds.append(time.perf_counter() - start)
    reach = _one_layer_reach(layer, x)
    if kind == "RNN":         # one layer reaches every earlier input, through one recurrent step per position
        path, unit = length - 1, "recurrent steps"
    else:                     # stacked layers: the last output sees reach - 1 more earlier positions per layer
        path, unit = (1 if reach >= length else math.ceil((length - 1) / max(reach - 1, 1))), "layers"
    return {"kind": kind, "length": length, "flops": int(counter.get_total_flops()),
            "activation_bytes": _saved_activation_bytes(layer, x), "sequential_steps": len(calls), "reach": reach,
            "path_length": path, "path_unit": unit, "seconds": min(seconds)}


def sequence_costs(lengths=(64, 256, 1024), dim: int = 64, repeats: int = 3) -> list[dict]:
    """:func:`measure_sequence_layer` for each kind and length (a list of rows), on one CPU thread: the times
    compare the layers, not how a busy machine's thread pool copes with small operations."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [measure_sequence_layer(kind, length, dim, repeats=repeats)
                for length in lengths for kind in SEQUENCE_LAYERS]
    finally:
        torch.set_num_threads(threads)


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f} "


def _path(row: dict) -> str:
    unit = row["path_unit"] if row["path_length"] != 1 else row["path_unit"].removesuffix("s")
    return f"{row['path_length']} {unit}"


def sequence_cost_table(rows: list[dict]) -> str:
    """The measurements of :func:`sequence_costs` as a text table."""
    lines = [f"{'layer':>14} {'L':>5} {'FLOPs':>9} {'activations':>12} {'sequential':>10} {'path x_0 -> y_L-1':>24}"
             f" {'time':>9}"]
    for r in rows:
        lines.append(f"{r['kind']:>14} {r['length']:>5} {_si(r['flops']):>9} {_si(r['activation_bytes']) + 'B':>12}"
                     f" {r['sequential_steps']:>10} {_path(r):>24}"
                     f" {r['seconds'] * 1000:>6.1f} ms")
    return "\n".join(lines)


@display_only
def plot_sequence_layers(length: int = 8, kernel_size: int = 3, fig=None):
    """Which inputs each output sees, for an RNN, a 1-D convolution and self-attention (one layer each).

    The highlighted paths lead from the first input x_0 to the last output: through L - 1 recurrent steps,
    through ceil((L - 1) / (k // 2)) stacked convolutions (only one layer is drawn), or in one attention step.
    """
    import matplotlib.pyplot as plt

    n = require_int("length", length, minimum=2)
    r = require_int("kernel_size", kernel_size, minimum=1) // 2
    if fig is None:
        fig = plt.figure(figsize=(13, 3.2))
    fig.clear()
    axes = fig.subplots(1, 3)
    grey, hot = "0.75", "crimson"
    for ax, kind in zip(axes, SEQUENCE_LAYERS):
        ax.scatter(range(n), [0] * n, s=140, color="tab:blue", zorder=3)
        ax.scatter(range(n), [1] * n, s=140, color="tab:orange", zorder=3)
        for i in range(n):
            ax.text(i, -0.32, f"x{i}", ha="center", fontsize=8)
            ax.text(i, 1.22, f"y{i}", ha="center", fontsize=8)
        if kind == "RNN":
            for i in range(n):
                ax.plot([i, i], [0, 1], color=hot if i == 0 else grey, zorder=1)
            for i in range(n - 1):
                ax.annotate("", (i + 1, 1), (i, 1), arrowprops=dict(arrowstyle="->", color=hot, lw=1.5))
            title = f"RNN: {n - 1} sequential steps from x0 to y{n - 1}"
        elif kind == "convolution":
            for i in range(n):
                for j in range(max(0, i - r), min(n, i + r + 1)):
                    ax.plot([j, i], [0, 1], color=grey, zorder=1)
            layers = math.ceil((n - 1) / max(r, 1))
            title = (f"1-D convolution, k = {kernel_size}: all outputs at once;\n"
                     f"y{n - 1} needs {layers} layers to see x0")
        else:
            for i in range(n):
                for j in range(n):
                    ax.plot([j, i], [0, 1], color=hot if (j, i) == (0, n - 1) else grey, lw=1.5 if j == 0 and
                            i == n - 1 else 0.6, zorder=2 if (j, i) == (0, n - 1) else 1)
            title = "self-attention: all outputs at once;\nevery pair one step apart"
        ax.set_title(title, fontsize=9)
        ax.set_xlim(-0.6, n - 0.4)
        ax.set_ylim(-0.5, 1.45)
        ax.set_axis_off()
    fig.set_layout_engine("tight")
    return fig


@display_only
def plot_sequence_costs(rows: list[dict], fig=None):
    """FLOPs, activation memory and time against the sequence length L (log-log), one line per layer kind."""
    import matplotlib.pyplot as plt

    if fig is None:
        fig = plt.figure(figsize=(13, 3.4))
    fig.clear()
    axes = fig.subplots(1, 3)
    panels = (("flops", "FLOPs of one layer"), ("activation_bytes", "bytes kept for the backward pass"),
              ("seconds", "forward time (s), one thread of this machine"))
    for ax, (key, title) in zip(axes, panels):
        for kind in SEQUENCE_LAYERS:
            mine = [r for r in rows if r["kind"] == kind]
            ax.plot([r["length"] for r in mine], [r[key] for r in mine], marker="o", label=kind)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.set_layout_engine("tight")
    return fig


# ------------------------------------------------------------------------------------------------
# ViT: positions, pooling, no mask
# ------------------------------------------------------------------------------------------------
def causal_mask(length: int) -> torch.Tensor:
    """(L, L) boolean, True on and below the diagonal: token i may attend to tokens 0..i (a causal decoder)."""
    n = require_int("length", length, minimum=1)
    return torch.ones(n, n, dtype=torch.bool).tril()


def shuffle_patches(images: torch.Tensor, patch: int, order: torch.Tensor) -> torch.Tensor:
    """The images with their ``patch x patch`` patches rearranged: patch ``order[t]`` goes to place t
    (row-major). For display: what a token-shuffled ViT input corresponds to in pixels."""
    images = require_tensor("images", images, ndim=4)
    n, c, h, w = images.shape
    p = require_int("patch", patch, minimum=1)
    rows, cols = h // p, w // p
    blocks = images[:, :, :rows * p, :cols * p].reshape(n, c, rows, p, cols, p).permute(0, 2, 4, 1, 3, 5)
    blocks = blocks.reshape(n, rows * cols, c, p, p)[:, order]
    return blocks.reshape(n, rows, cols, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(n, c, rows * p, cols * p)


@torch.no_grad()
def vit_tokens(model: nn.Module, images: torch.Tensor, *, order: torch.Tensor | None = None,
               positions: bool = True, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Run a ``visualization_models.TinyViT`` step by step, with what the lecture takes away or adds.

    ``order``: a permutation of the P patch tokens, applied after the patch embedding and before the position
    embedding (token t becomes the embedding of patch order[t]: the patches are shuffled, their positions not);
    ``positions=False``: no position embedding at all; ``mask``: a boolean (1 + P, 1 + P) attention mask for every
    block (token 0 is the class token). Returns the final, normalised tokens (N, 1 + P, dim); the model's head reads
    token 0: ``model.head(tokens[:, 0])``.
    """
    require_module("model", model)
    tokens = model.embed(images).flatten(2).transpose(1, 2)                # (N, P, dim)
    if order is not None:
        order = torch.as_tensor(order, dtype=torch.long)
        if sorted(order.tolist()) != list(range(tokens.shape[1])):
            raise ValueError(f"order must be a permutation of the {tokens.shape[1]} patch tokens")
        tokens = tokens[:, order]
    x = torch.cat([model.cls_token.expand(len(images), -1, -1), tokens], dim=1)
    if positions:
        x = x + model.pos
    for block in model.blocks:
        out, _ = block.attn(block.norm1(x), mask=mask)
        x = x + out
        x = x + block.mlp(block.norm2(x))
    return model.norm(x)


def linear_probe_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                          test_labels: torch.Tensor, ridge: float = 1e-2) -> float:
    """Accuracy of a linear classifier fitted in closed form (ridge regression on one-hot labels) on features
    (N, D): how much of the class a pooled representation carries, without training the network."""
    def design(f):
        f = require_tensor("features", f, ndim=2, floating=True).double()
        return torch.cat([f, torch.ones(len(f), 1, dtype=f.dtype)], dim=1)

    a, b = design(train_features), design(test_features)
    targets = F.one_hot(train_labels.long(), int(max(train_labels.max(), test_labels.max())) + 1).double()
    weights = torch.linalg.solve(a.T @ a + ridge * torch.eye(a.shape[1], dtype=a.dtype), a.T @ targets)
    return float(((b @ weights).argmax(1) == test_labels).double().mean())


def position_similarity(model: nn.Module) -> dict:
    """Cosine similarity between the learned position embeddings of a TinyViT's patch positions.

    Returns "similarity" (P, P) and "by_distance" {d: mean similarity of the pairs d grid steps apart (Manhattan
    distance)}, for d = 1 .. 2 * (grid - 1).
    """
    pos = F.normalize(model.pos[0, 1:].detach(), dim=1)
    similarity = (pos @ pos.T).numpy()
    grid = model.grid
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    distance = np.abs(rows[:, None] - rows[None]) + np.abs(cols[:, None] - cols[None])
    return {"similarity": similarity, "grid": grid,
            "by_distance": {int(d): float(similarity[distance == d].mean()) for d in range(1, 2 * grid - 1)}}


@display_only
def plot_position_similarity(model: nn.Module, fig=None):
    """For every patch position, the cosine similarity of its position embedding with all the others, drawn at
    the patches' places (as in the ViT paper's figure 7), and the mean similarity against the grid distance."""
    import matplotlib.pyplot as plt

    sim = position_similarity(model)
    g = sim["grid"]
    if fig is None:
        fig = plt.figure(figsize=(11, 4.6))
    fig.clear()
    ax_maps, ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.3, 1]})
    tiles = np.full((g * (g + 1) - 1, g * (g + 1) - 1), np.nan)     # one small map per position, a gap between
    for t in range(g * g):
        r, c = divmod(t, g)
        tiles[r * (g + 1): r * (g + 1) + g, c * (g + 1): c * (g + 1) + g] = sim["similarity"][t].reshape(g, g)
    image = ax_maps.imshow(tiles, cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax_maps, fraction=0.04)
    ax_maps.set_axis_off()
    ax_maps.set_title("each small map: one position's similarity with every other position", fontsize=9)
    distances = sorted(sim["by_distance"])
    ax.plot(distances, [sim["by_distance"][d] for d in distances], marker="o")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xlabel("distance between the two patches (grid steps, |dr| + |dc|)")
    ax.set_ylabel("mean cosine similarity")
    ax.set_title("nearby positions learned similar embeddings", fontsize=9)
    ax.grid(alpha=0.3)
    fig.set_layout_engine("tight")
    return fig


@display_only
def plot_attention_masks(attention: torch.Tensor, length: int = 12, fig=None):
    """A ViT's attention weights over its first ``length`` tokens (no mask: every entry may be nonzero) beside
    the pattern a causal decoder allows (nothing above the diagonal). attention: (T, T) one head's weights."""
    import matplotlib.pyplot as plt

    attention = require_tensor("attention", attention, ndim=2)
    n = min(require_int("length", length, minimum=1), attention.shape[0])
    if fig is None:
        fig = plt.figure(figsize=(9, 4))
    fig.clear()
    axes = fig.subplots(1, 2)
    shown = attention[:n, :n].detach().numpy()
    axes[0].imshow(shown, cmap="magma")
    axes[0].set_title(f"ViT encoder: no mask\n({int((shown[np.triu_indices(n, 1)] > 0).sum())} of "
                      f"{n * (n - 1) // 2} entries above the diagonal are nonzero)", fontsize=9)
    axes[1].imshow(causal_mask(n).numpy(), cmap="Greys", vmin=0, vmax=1.5)
    axes[1].set_title("causal decoder (GPT): token i sees 0..i only\n(grey: allowed, white: masked)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("attends to token j (0 = class token)")
        ax.set_ylabel("token i")
    fig.set_layout_engine("tight")
    return fig


# ------------------------------------------------------------------------------------------------
# ViT patches
# ------------------------------------------------------------------------------------------------
def conv_patch_embedding(linear: nn.Linear, in_channels: int, patch_size: int) -> nn.Conv2d:
    """The Conv2d(kernel_size=p, stride=p) that computes what ``linear`` does on patchified images.

    linear: nn.Linear(C*p*p, D) applied to channel-first flattened patches. Its weight (D, C*p*p) is
    reshaped to (D, C, p, p); the bias is copied.
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"linear must be an nn.Linear, got {describe(linear)}")
    c = require_int("in_channels", in_channels, minimum=1)
    p = require_int("patch_size", patch_size, minimum=1)
    if linear.in_features != c * p * p:
        raise ValueError(f"linear must take in_channels * patch_size ** 2 = {c * p * p} features, "
                         f"got in_features = {linear.in_features}")
    conv = nn.Conv2d(c, linear.out_features, p, stride=p, bias=linear.bias is not None, dtype=linear.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.reshape(linear.out_features, c, p, p))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def _photo_tensor(image) -> torch.Tensor:
    """(H, W, 3) uint8 photo -> (1, 3, H, W) float in [0, 1]."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image must be an (H, W, 3) array, got shape {array.shape}")
    scale = 255.0 if array.dtype == np.uint8 else 1.0
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].float() / scale


def patch_view(patchify_fn: Callable, image, patch_size: int) -> dict:
    """Patchify a photo with ``patchify_fn`` and rebuild it from the tokens, assuming the stated layout.

    image: (H, W, 3) array; it is cropped to the largest multiple of patch_size. Returns a dict with
    "image" (h, w, 3) the crop, "grid" (rows, cols), "tokens" (L, 3*p*p) your output for the crop,
    "rebuilt" (h, w, 3) the image put back together from your tokens (patch t at row t // cols,
    column t % cols, features read as (C, p, p)), "first_patches" (n, p, p, 3) the first tokens read
    as patches, and "correct" (whether "rebuilt" equals the crop); or "error" if your function failed.
    """
    p = require_int("patch_size", patch_size, minimum=1)
    photo = _photo_tensor(image)
    h, w = (photo.shape[2] // p) * p, (photo.shape[3] // p) * p
    if h == 0 or w == 0:
        raise ValueError(f"patch_size {p} is larger than the image ({photo.shape[2]} x {photo.shape[3]})")
    crop = photo[:, :, :h, :w]
    rows, cols = h // p, w // p
    view = {"patch_size": p, "grid": (rows, cols), "image": crop[0].permute(1, 2, 0).numpy()}
    tokens, error = call_student(patchify_fn, crop, p, what="patchify")
    if error:
        view["error"] = error
        return view
    tokens = torch.as_tensor(tokens).detach()
    want = (1, rows * cols, 3 * p * p)
    if tuple(tokens.shape) != want:
        view["error"] = f"your patchify returned shape {tuple(tokens.shape)}; expected {want}"
        return view
    tokens = tokens.to(torch.float32)
    rebuilt = F.fold(tokens.transpose(1, 2), (h, w), p, stride=p)          # the inverse of the stated layout
    view["tokens"] = tokens[0].numpy()
    view["rebuilt"] = rebuilt[0].permute(1, 2, 0).clamp(0, 1).numpy()
    view["first_patches"] = tokens[0, :min(8, rows * cols)].reshape(-1, 3, p, p).permute(0, 2, 3, 1).clamp(0, 1).numpy()
    view["correct"] = bool(torch.allclose(rebuilt, crop, atol=1e-6))
    return view


@display_only
def plot_patches(view: dict, fig=None):
    """Draw a :func:`patch_view`: the photo with its patch grid, the photo rebuilt from the tokens, and the
    first tokens read back as patches (in token order)."""
    import matplotlib.pyplot as plt

    if fig is None:
        fig = plt.figure(figsize=(12, 4.2))
    fig.clear()
    grid = fig.add_gridspec(2, 8, height_ratios=[3, 1])
    ax_image, ax_rebuilt = fig.add_subplot(grid[0, :4]), fig.add_subplot(grid[0, 4:])
    p, (rows, cols) = view["patch_size"], view["grid"]
    ax_image.imshow(view["image"])
    for r in range(rows + 1):
        ax_image.axhline(r * p - 0.5, color="white", linewidth=0.6)
    for c in range(cols + 1):
        ax_image.axvline(c * p - 0.5, color="white", linewidth=0.6)
    for t in range(min(8, rows * cols)):
        ax_image.text((t % cols) * p + p / 2, (t // cols) * p + p / 2, str(t), color="yellow", ha="center",
                      va="center", fontsize=7 if p >= 24 else 5)
    ax_image.set_title(f"patch {p} x {p}: {rows} x {cols} = {rows * cols} tokens of {3 * p * p} numbers",
                       fontsize=9)
    if "error" in view:
        ax_rebuilt.text(0.02, 0.5, view["error"], wrap=True, color="crimson", fontsize=10,
                        transform=ax_rebuilt.transAxes)
    else:
        ax_rebuilt.imshow(view["rebuilt"])
        verdict = "matches the photo" if view["correct"] else "DOES NOT match: check the layout"
        ax_rebuilt.set_title(f"rebuilt from your tokens (row-major, (C, p, p)): {verdict}", fontsize=9,
                             color="black" if view["correct"] else "crimson")
        for t, patch in enumerate(view["first_patches"]):
            ax = fig.add_subplot(grid[1, t])
            ax.imshow(patch)
            ax.set_title(f"token {t}", fontsize=8)
            ax.set_axis_off()
    for ax in (ax_image, ax_rebuilt):
        ax.set_axis_off()
    fig.set_layout_engine("tight")
    return fig


@display_only
def patch_explorer(patchify_fn: Callable | None = None, image_name: str = "cat"):
    """A patch-size slider over a real photo (``lecturelib.data.sample_image``) running ``patchify_fn``.

    Pass your ``patchify``; without it the reference is used where it ships (instructor copy).
    Returns the ipywidgets box; ``box.interactive.result`` is the last :func:`patch_view`.
    """
    import ipywidgets as widgets

    from .data import sample_image
    fn = function_or_reference(patchify_fn, "patchify", "transformers")
    image = sample_image(image_name)
    slider = widgets.SelectionSlider(options=[8, 12, 16, 24, 32, 48, 64], value=32, description="patch size")

    return explorer({"patch_size": slider}, lambda patch_size: patch_view(fn, image, patch_size), plot_patches)


# ------------------------------------------------------------------------------------------------
# Pre-norm vs post-norm
# ------------------------------------------------------------------------------------------------
class NormBlock(nn.Module):
    """A transformer block with its LayerNorms before (``"pre"``) or after (``"post"``) the residual adds.

    pre:  x = x + attn(norm1(x));  x = x + mlp(norm2(x))      (GPT-2 and later, ViT)
    post: x = norm1(x + attn(x));  x = norm2(x + mlp(x))      (the original Transformer, BERT)
    Linear weights start as N(0, 1/fan_in), biases at 0. x: (N, T, dim) -> (N, T, dim).
    """

    def __init__(self, dim: int, heads: int = 4, position: str = "pre"):
        super().__init__()
        if position not in ("pre", "post"):
            raise ValueError(f"position must be 'pre' or 'post', got {position!r}")
        self.position = position
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=1 / math.sqrt(module.in_features))
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.position == "pre":
            x = x + self.attn(self.norm1(x))[0]
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attn(x)[0])
        return self.norm2(x + self.mlp(x))


def depth_profile(position: str, depth: int = 16, dim: int = 32, tokens: int = 8, batch: int = 4,
                  seed: int = 0) -> dict:
    """Residual-stream size and gradient sizes across ``depth`` freshly initialised blocks.

    The input is N(0, 1) tokens; the loss is a fixed random projection of the final stream (after a
    final LayerNorm for pre-norm, as in GPT-2/ViT). Returns numpy arrays: "stream_rms" (depth + 1,)
    the RMS of the stream entering each block and leaving the last, "stream_grad" (depth + 1,) the
    RMS of the loss's gradient with respect to it, "param_grad" (depth,) the norm of the gradient of
    each block's parameters, and "update_ratio" (depth,) = |block(x) - x| / |x| (how much each block
    changes the stream).
    """
    depth = require_int("depth", depth, minimum=1)
    dim = require_int("dim", dim, minimum=4)
    generator = torch.Generator().manual_seed(require_int("seed", seed, minimum=0))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        blocks = nn.ModuleList(NormBlock(dim, 4, position) for _ in range(depth))
    x = torch.randn(batch, tokens, dim, generator=generator).requires_grad_()
    streams = [x]
    for block in blocks:
        streams.append(block(streams[-1]))
        streams[-1].retain_grad()
    final = F.layer_norm(streams[-1], (dim,)) if position == "pre" else streams[-1]
    loss = (final * torch.randn(final.shape, generator=generator)).sum() / batch
    loss.backward()

    def rms(t):
        return float(t.detach().pow(2).mean().sqrt())

    return {
        "position": position,
        "stream_rms": np.array([rms(s) for s in streams]),
        "stream_grad": np.array([rms(s.grad) for s in streams]),
        "param_grad": np.array([float(torch.cat([p.grad.flatten() for p in b.parameters()]).norm()) for b in blocks]),
        "update_ratio": np.array([rms(b - a) / rms(a) for a, b in zip(streams[:-1], streams[1:])]),
    }


@display_only
def plot_depth_profiles(profiles: list[dict], fig=None):
    """Plot :func:`depth_profile` results side by side: stream size, gradient sizes, update ratio."""
    import matplotlib.pyplot as plt

    if fig is None:
        fig = plt.figure(figsize=(13, 3.3))
    fig.clear()
    axes = fig.subplots(1, 4)
    panels = (("stream_rms", "RMS of the residual stream", False), ("stream_grad", "RMS of d loss / d stream", True),
              ("param_grad", "|gradient| of each block's parameters", True),
              ("update_ratio", "|block(x) - x| / |x|", True))
    for ax, (key, title, log) in zip(axes, panels):
        for profile in profiles:
            values = profile[key]
            start = 0 if len(values) == len(profile["stream_rms"]) else 1
            ax.plot(range(start, start + len(values)), values, marker=".", label=f"{profile['position']}-norm")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("block (0 = input)", fontsize=8)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.set_layout_engine("tight")
    return fig


# ------------------------------------------------------------------------------------------------
# Mixture of experts
# ------------------------------------------------------------------------------------------------
def dense_mlp(dim: int, hidden: int) -> nn.Sequential:
    """The dense feed-forward layer: Linear(dim, hidden), GELU, Linear(hidden, dim)."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class MoELayer(nn.Module):
    """A sparse mixture-of-experts feed-forward layer with a pluggable router.

    ``num_experts`` GELU MLPs (dim -> hidden -> dim) and a linear router (dim -> num_experts, no bias).
    Each token goes to the ``k`` experts that ``routing_fn(router_logits, k)`` picks (your
    ``top_k_routing``), and the layer returns sum_j gate_j * expert_{index_j}(token). Only k of the
    experts run per token: the *active* parameters are those of k experts, while the total grows with
    the number of experts. ``temperature`` divides the router logits.

    forward(x): x (..., dim) -> (..., dim); with ``return_routing=True`` also a dict with
    "logits" (T, E), "indices" (T, k), "weights" (T, k) over the T = x[..., 0].numel() tokens.
    """

    def __init__(self, dim: int, hidden: int, num_experts: int, k: int, routing_fn: Callable,
                 temperature: float = 1.0):
        super().__init__()
        self.dim = require_int("dim", dim, minimum=1)
        self.num_experts = require_int("num_experts", num_experts, minimum=1)
        self.k = require_int("k", k, minimum=1)
        if self.k > self.num_experts:
            raise ValueError(f"k ({self.k}) must not exceed num_experts ({self.num_experts})")
        self.routing_fn = require_callable("routing_fn", routing_fn)   # (router_logits, k) -> (indices, weights)
        self.temperature = require_float("temperature", temperature, minimum=1e-6)
        self.router = nn.Linear(dim, num_experts, bias=False)
        self.experts = nn.ModuleList(dense_mlp(dim, require_int("hidden", hidden, minimum=1))
                                     for _ in range(num_experts))

    def route(self, tokens: torch.Tensor) -> dict:
        """tokens: (T, dim) -> {"logits" (T, E), "indices" (T, k), "weights" (T, k)}, checked."""
        logits = self.router(tokens) / self.temperature
        indices, weights = self.routing_fn(logits, self.k)
        t = tokens.shape[0]
        indices = require_tensor("the routing function's expert indices", indices, shape=(t, self.k), integer=True)
        weights = require_tensor("the routing function's gate weights", weights, shape=(t, self.k), floating=True)
        if t and (int(indices.min()) < 0 or int(indices.max()) >= self.num_experts):
            raise ValueError(f"the routing function returned expert indices outside [0, {self.num_experts})")
        return {"logits": logits, "indices": indices, "weights": weights}

    def forward(self, x: torch.Tensor, return_routing: bool = False):
        x = require_tensor("x", x, floating=True)
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (..., {self.dim}), got {tuple(x.shape)}")
        tokens = x.reshape(-1, self.dim)
        routing = self.route(tokens)
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            token_idx, slot = (routing["indices"] == e).nonzero(as_tuple=True)
            if len(token_idx):
                gate = routing["weights"][token_idx, slot].unsqueeze(-1)
                out.index_add_(0, token_idx, gate * expert(tokens[token_idx]))
        out = out.reshape(x.shape)
        return (out, routing) if return_routing else out


def routing_problem(num_tokens: int = 48, dim: int = 16, max_experts: int = 16, seed: int = 0) -> dict:
    """Fixed tokens and a router for the routing explorer: tokens (T, dim) from a few clusters, router
    weight (max_experts, dim) with a bias towards the first experts (as an untrained router often has)."""
    g = torch.Generator().manual_seed(require_int("seed", seed, minimum=0))
    centres = torch.randn(4, dim, generator=g) * 1.5
    tokens = centres[torch.arange(num_tokens) % 4] + torch.randn(num_tokens, dim, generator=g)
    router = torch.randn(max_experts, dim, generator=g) / math.sqrt(dim)
    bias = torch.linspace(1.0, -1.0, max_experts)
    return {"tokens": tokens.double(), "router": router.double(), "bias": bias.double()}


def routing_view(routing_fn: Callable, problem: dict, num_experts: int = 8, k: int = 2, temperature: float = 1.0,
                 loss_fn: Callable | None = None) -> dict:
    """Route ``problem``'s tokens with ``routing_fn`` (pure compute, no drawing).

    Router logits (T, E) = (tokens @ router[:E].T + bias[:E]) / temperature. Returns a dict with
    "logits", "indices", "weights", "gates" (T, E) (each token's gate weight per expert, 0 where not
    routed), "load" (E,) how many of the T*k assignments each expert got, and "loss"
    (``loss_fn(logits, indices)`` if given); or "error" if a function failed. (The balancing loss's own
    ingredients are left to the student's ``load_balancing_loss``.)
    """
    e = require_int("num_experts", num_experts, minimum=1)
    k = require_int("k", k, minimum=1)
    temperature = require_float("temperature", temperature, minimum=1e-6)
    if e > problem["router"].shape[0]:
        raise ValueError(f"num_experts must be at most {problem['router'].shape[0]}, got {e}")
    logits = (problem["tokens"] @ problem["router"][:e].T + problem["bias"][:e]) / temperature
    view = {"num_experts": e, "k": k, "temperature": temperature, "logits": logits.numpy()}
    if k > e:
        view["error"] = f"k = {k} is larger than the number of experts ({e})"
        return view
    def route():
        indices, weights = routing_fn(logits.clone(), k)
        indices, weights = torch.as_tensor(indices).long(), torch.as_tensor(weights, dtype=logits.dtype)
        gates = torch.zeros_like(logits).scatter_add_(1, indices, weights)
        loss = float(loss_fn(logits.clone(), indices.clone())) if loss_fn is not None else None
        return indices, weights, gates, loss

    routed, error = call_student(route, what="top_k_routing" + (" and load_balancing_loss" if loss_fn else ""))
    if error:
        view["error"] = error
        return view
    indices, weights, gates, view["loss"] = routed
    view.update(indices=indices.numpy(), weights=weights.numpy(), gates=gates.numpy(),
                load=torch.bincount(indices.flatten(), minlength=e)[:e].numpy())
    return view


@display_only
def plot_routing(view: dict, fig=None):
    """Draw a :func:`routing_view`: gate weight of every token for every expert, and the load per expert."""
    import matplotlib.pyplot as plt

    if fig is None:
        fig = plt.figure(figsize=(12, 3.6))
    fig.clear()
    ax_gates, ax_load = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2.2, 1]})
    e, k = view["num_experts"], view["k"]
    if "error" in view:
        ax_gates.text(0.02, 0.5, view["error"], wrap=True, color="crimson", fontsize=10, transform=ax_gates.transAxes)
        ax_gates.set_axis_off()
        ax_load.set_axis_off()
        return fig
    im = ax_gates.imshow(view["gates"].T, aspect="auto", cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    ax_gates.set_xlabel("token")
    ax_gates.set_ylabel("expert")
    ax_gates.set_title(f"gate weights (k = {k} experts per token, temperature {view['temperature']:g})", fontsize=9)
    fig.colorbar(im, ax=ax_gates, fraction=0.03)
    experts = np.arange(e)
    ax_load.bar(experts, view["load"], width=0.6, label="token assignments")
    ax_load.axhline(view["indices"].size / e, color="black", linestyle="--", linewidth=1,
                    label="perfect balance T·k/E")
    title = "load per expert"
    if view.get("loss") is not None:
        title += f"; your balancing loss = {view['loss']:.3f}"
    ax_load.set_title(title, fontsize=9)
    ax_load.set_xlabel("expert")
    ax_load.legend(fontsize=7)
    fig.set_layout_engine("tight")
    return fig


@display_only
def routing_explorer(routing_fn: Callable | None = None, loss_fn: Callable | None = None,
                     problem: dict | None = None):
    """Sliders for k, the number of experts and the router temperature over fixed tokens.

    Runs your ``top_k_routing`` (and ``load_balancing_loss`` if given); without them the reference is
    used where it ships. Returns the ipywidgets box; ``box.interactive.result`` is the last view.
    """
    import ipywidgets as widgets

    routing_fn = function_or_reference(routing_fn, "top_k_routing", "transformers")
    problem = problem or routing_problem()
    sliders = {"num_experts": widgets.IntSlider(8, min=2, max=problem["router"].shape[0], description="experts"),
               "k": widgets.IntSlider(2, min=1, max=4, description="k"),
               "temperature": widgets.FloatLogSlider(1.0, base=10, min=-1, max=1, step=0.1, description="temperature")}

    def view(num_experts, k, temperature):
        return routing_view(routing_fn, problem, num_experts, k, temperature, loss_fn)

    return explorer(sliders, view, plot_routing)
