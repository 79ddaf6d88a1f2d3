"""Benchmarks of the transformers-recap topic: notebook time, checks, and the reference operations against
what a user would otherwise call (a Conv2d patch embedding, torch's rms_norm, a dense MLP)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common import REPO, bench_checks, bench_notebook, emit, timed

ORDER = 1  # the lecture's order of topics


def run() -> None:
    from lecturelib import transformers as tr
    from lecturelib.reference import patchify, rms_norm, swiglu, top_k_routing

    emit("== transformers recap: patches, RMSNorm, SwiGLU, mixture of experts ==")
    bench_notebook(REPO / "notebooks" / "01_transformers" / "transformers.ipynb", 30)
    bench_checks("transformers")

    emit("  patch embedding: reference patchify + Linear vs Conv2d(kernel=stride=p) (ViT-B/16 width 768):")
    for n, size, p in ((8, 224, 16), (64, 64, 8)):
        images = torch.randn(n, 3, size, size)
        linear = nn.Linear(3 * p * p, 768)
        conv = tr.conv_patch_embedding(linear, 3, p)
        with torch.no_grad():
            ours = timed(lambda: linear(patchify(images, p)))
            theirs = timed(lambda: conv(images).flatten(2).transpose(1, 2))
            diff = float((linear(patchify(images, p)) - conv(images).flatten(2).transpose(1, 2)).abs().max())
        emit(f"    {n} images {size}x{size}, p = {p}: patchify + Linear {ours * 1e3:7.2f} ms, Conv2d "
             f"{theirs * 1e3:7.2f} ms, ratio {ours / theirs:5.2f}x (max difference {diff:.1e})")

    emit("  rms_norm, reference (pow, mean, rsqrt) vs torch.nn.functional.rms_norm:")
    for shape in ((4096, 768), (8, 1024, 4096)):
        x, w = torch.randn(*shape), torch.randn(shape[-1])
        ours = timed(lambda: rms_norm(x, w, 1e-6))
        theirs = timed(lambda: F.rms_norm(x, (shape[-1],), w, 1e-6))
        emit(f"    x {'x'.join(map(str, shape))}: ours {ours * 1e3:7.2f} ms, torch {theirs * 1e3:7.2f} ms, "
             f"ratio {ours / theirs:5.2f}x")

    emit("  swiglu (D = 768, F = 2048) vs a GELU MLP of equal parameter count (hidden 3072):")
    x = torch.randn(2048, 768)
    wg, wu, wd = torch.randn(768, 2048) / 28, torch.randn(768, 2048) / 28, torch.randn(2048, 768) / 45
    mlp = tr.dense_mlp(768, 3072)
    with torch.no_grad():
        ours = timed(lambda: swiglu(x, wg, wu, wd))
        theirs = timed(lambda: mlp(x))
    emit(f"    2048 tokens: swiglu {ours * 1e3:7.2f} ms, GELU MLP {theirs * 1e3:7.2f} ms, ratio {ours / theirs:5.2f}x")

    emit("  MoE layer (E = 8 experts of hidden 512, k = 2, reference routing) vs a dense MLP with the same ACTIVE "
         "parameters (hidden 1024), D = 256:")
    torch.manual_seed(0)
    moe = tr.MoELayer(256, 512, num_experts=8, k=2, routing_fn=top_k_routing)
    dense = tr.dense_mlp(256, 1024)
    for tokens in (256, 4096):
        x = torch.randn(tokens, 256)
        with torch.no_grad():
            ours = timed(lambda: moe(x))
            theirs = timed(lambda: dense(x))
        emit(f"    {tokens:5d} tokens: MoE {tokens / ours:10.0f} tokens/s, dense {tokens / theirs:10.0f} tokens/s, "
             f"MoE slower by {ours / theirs:5.2f}x (total parameters {sum(p.numel() for p in moe.parameters())} "
             f"vs {sum(p.numel() for p in dense.parameters())})")
