"""Transformers recap: ViT patches, pre-norm vs post-norm, and a mixture-of-experts layer.

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
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._student import call_student, function_or_reference
from ._validate import describe, require_callable, require_float, require_int, require_tensor
from .layers import Attention
from .plot import explorer

__all__ = [
    "conv_patch_embedding", "patch_view", "plot_patches", "patch_explorer",
    "NormBlock", "depth_profile", "plot_depth_profiles",
    "MoELayer", "dense_mlp", "routing_problem", "routing_view", "plot_routing", "routing_explorer",
]


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
    fig.tight_layout()
    return fig


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
    fig.tight_layout()
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
    fig.tight_layout()
    return fig


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
