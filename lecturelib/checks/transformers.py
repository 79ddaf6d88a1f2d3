"""Checks of the transformers-recap exercises: ViT patches, RMSNorm, SwiGLU, top-k routing and the
load-balancing loss of a mixture of experts.

Oracles are torch built-ins run by the checker (``F.unfold``, ``F.conv2d``, ``F.rms_norm``, ``F.silu``,
``torch.topk``) and float64 formulas; properties give a second, reference-free view (patchify + Linear
equals the Conv2d patch embedding; RMSNorm is scale invariant; a routing is valid whatever way ties are
broken; perfect balance gives a loss of exactly 1). Failures are compared with the outputs of known
bugs (a reshape without permute, LayerNorm instead of RMSNorm, sigmoid instead of SiLU, an ascending
sort, probabilities that are not renormalised, ...) to name the likely cause.

Library versions of what the exercises implement are refused while the student's function runs:
``F.unfold`` at the ATen level (``im2col``); ``F.rms_norm``/``nn.RMSNorm`` and ``F.layer_norm`` at the
``torch.nn.functional`` level (:class:`TorchFunctionWatch`), because on the CPU ``rms_norm`` is a
composite operator that reaches the dispatcher only as ``pow``, ``mean`` and ``rsqrt``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .core import (Call, Case, Exercise, ForbiddenOp, Mismatch, Raised, compare, expect_raises, expect_tensor,
                   matches, register)
from .watch import TorchFunctionWatch

_NORMS = (
    TorchFunctionWatch(((F.rms_norm, "F.rms_norm / nn.RMSNorm"), (torch.rms_norm, "torch.rms_norm"),
                        (F.layer_norm, "F.layer_norm / nn.LayerNorm"), (torch.layer_norm, "torch.layer_norm"),
                        (F.group_norm, "F.group_norm / nn.GroupNorm"))),
    ForbiddenOp("native_layer_norm", "a layer-norm kernel (F.layer_norm / nn.LayerNorm)"),
)
_UNFOLD = (ForbiddenOp("im2col", "F.unfold / nn.Unfold (write the reshape and permute yourself)"),)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _randn(shape, seed, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=_generator(seed), dtype=dtype)


def _shape_str(shape) -> str:
    return "x".join(str(s) for s in shape)


def _dtype(spec) -> torch.dtype:
    return getattr(torch, spec.get("dtype", "float64"))


# ------------------------------------------------------------------------------------------------
# patchify
# ------------------------------------------------------------------------------------------------
def _patchify_oracle(images: torch.Tensor, p: int) -> torch.Tensor:
    """F.unfold with kernel = stride = p: (N, C*p*p, L) with channel-first features, row-major patches."""
    return F.unfold(images, p, stride=p).transpose(1, 2)


def _patchify_variants(images: torch.Tensor, p: int) -> dict[str, torch.Tensor]:
    n, c, h, w = images.shape
    gh, gw = h // p, w // p
    blocks = images.reshape(n, c, gh, p, gw, p)                     # n, c, gy, i, gx, j
    return {
        "ppc": blocks.permute(0, 2, 4, 3, 5, 1).reshape(n, gh * gw, c * p * p),
        "column_major": blocks.permute(0, 4, 2, 1, 3, 5).reshape(n, gh * gw, c * p * p),
        "no_permute": images.reshape(n, gh * gw, c * p * p),
        "pixels_transposed": blocks.permute(0, 2, 4, 1, 5, 3).reshape(n, gh * gw, c * p * p),
    }


_PATCHIFY_CAUSES = {
    "ppc": ("each patch is flattened as (p, p, C), channels last (as for an (H, W, C) image); the convention here "
            "is (C, p, p), channels first, like the weight of Conv2d(C, D, kernel_size=p, stride=p): feature "
            "index c * p * p + i * p + j"),
    "column_major": ("the patches are in column-major order (down the first column first); patch t must be at row "
                     "t // (W / p), column t % (W / p): left to right, then top to bottom"),
    "no_permute": ("a reshape without a permute: reshaping (N, C, H, W) straight to (N, L, C*p*p) cuts the memory "
                   "into runs of consecutive pixels (parts of image rows), not into p x p squares; reshape to "
                   "(N, C, H/p, p, W/p, p), permute the grid axes in front, then reshape"),
    "pixels_transposed": "inside each patch rows and columns are swapped: pixel (i, j) of a patch goes to i * p + j",
}


def _diagnose_patchify(got, images, p) -> str | None:
    for name, wrong in _patchify_variants(images, p).items():
        if matches(got, wrong, tol=0):
            return _PATCHIFY_CAUSES[name]
    if matches(got, _patchify_oracle(images, p).transpose(1, 2), tol=0):
        return _UNFOLD_LAYOUT
    return None


_UNFOLD_LAYOUT = ("the last two axes look swapped: that is F.unfold's layout (N, C*p*p, L); a transformer wants "
                  "tokens first: (N, L, C*p*p)")


def _patchify_shape_cause(shape, images, p) -> str:
    n, c, h, w = images.shape
    if tuple(shape) == (n, c * p * p, (h // p) * (w // p)):
        return _UNFOLD_LAYOUT
    if len(shape) == 6 or len(shape) == 5:
        return "flatten each patch into one vector of C*p*p numbers and the grid into one axis of L patches"
    return f"L = (H / p) * (W / p) = {(h // p) * (w // p)} patches of C * p * p = {c * p * p} numbers each"


def _patchify_case(spec, reveal) -> Case:
    kind = spec.get("kind", "value")
    n, c, h, w = spec["x"]
    p = spec["p"]
    images = _randn((n, c, h, w), spec.get("seed", 0), _dtype(spec))
    name = f"images {_shape_str((n, c, h, w))}, patch_size {p}" + (f", {spec['dtype']}" if "dtype" in spec else "")
    about = spec.get("about", "")
    if kind == "error":
        which = "H" if h % p else "W"

        def verify_error(outcomes):
            if not isinstance(outcomes[0], Raised):
                raise Mismatch(f"expected ValueError: {which} = {h if which == 'H' else w} is not divisible by "
                               f"patch_size = {p}, but the function returned normally (a reshape can silently "
                               "drop or mix pixels: check the sizes first)")
            expect_raises(outcomes[0], ("ValueError",), mentioning="patch_size")

        return Case(f"{name}: not divisible, raises ValueError", [Call(images, p)], verify_error,
                    expects_error=True, about=about)
    expected = _patchify_oracle(images, p)

    def check_value(got):
        if isinstance(got, torch.Tensor) and tuple(got.shape) != tuple(expected.shape):
            raise Mismatch(f"output has shape {tuple(got.shape)}; expected {tuple(expected.shape)}\n"
                           f"likely cause: {_patchify_shape_cause(got.shape, images, p)}")
        got = expect_tensor(got, shape=expected.shape, dtype=expected.dtype)
        compare(got, expected, reveal=reveal, diagnose=lambda g: _diagnose_patchify(g, images, p))

    if kind == "value":
        return Case(name, [Call(images, p)], lambda outcomes: check_value(outcomes[0]), about=about)
    if kind == "conv":
        dim = spec["dim"]
        weight = _randn((dim, c, p, p), spec["seed"] + 1, images.dtype)
        bias = _randn((dim,), spec["seed"] + 2, images.dtype)
        conv = F.conv2d(images, weight, bias, stride=p).flatten(2).transpose(1, 2)       # (N, L, D)

        def verify_conv(outcomes):
            got = outcomes[0]
            if isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(expected.shape):
                linear = got.to(weight.dtype) @ weight.reshape(dim, -1).T + bias
                try:
                    compare(linear, conv, name="patchify(x) @ W.reshape(D, C*p*p).T + b", reveal=reveal)
                except Mismatch as exc:
                    raise Mismatch("patchify followed by a Linear layer must equal the Conv2d(kernel_size=p, "
                                   "stride=p) patch embedding whose weight (D, C, p, p) is reshaped to "
                                   "(D, C*p*p); it does not\n" + str(exc)) from None
            check_value(got)

        return Case(f"patchify + Linear == Conv2d patch embedding ({dim} dims): {name}", [Call(images, p)],
                    verify_conv, about=about)
    raise ValueError(f"unknown patchify case kind {kind!r}")


register(Exercise(
    "patchify", topic="transformers",
    summary="(N, C, H, W) -> (N, L, C*p*p) in row-major patch order with channel-first patches, equal to F.unfold "
            "and, followed by a Linear layer, to the Conv2d(kernel=stride=p) patch embedding; non-square images "
            "and grids, dtype kept; ValueError when H or W is not divisible",
    cases=lambda specs, reveal: [_patchify_case(s, reveal) for s in specs],
    visible=[{"x": (1, 1, 4, 4), "p": 2, "seed": 1},
             {"x": (2, 3, 8, 12), "p": 4, "seed": 2},
             {"kind": "conv", "x": (2, 3, 6, 9), "p": 3, "dim": 5, "seed": 3},
             {"x": (1, 2, 4, 6), "p": 2, "dtype": "float32", "seed": 4},
             {"kind": "error", "x": (1, 3, 10, 8), "p": 4, "seed": 5}],
    forbidden=_UNFOLD,
))


# ------------------------------------------------------------------------------------------------
# rms_norm
# ------------------------------------------------------------------------------------------------
def _rms_variants(x, weight, eps) -> dict[str, torch.Tensor]:
    ms = x.pow(2).mean(-1, keepdim=True)
    centred = x - x.mean(-1, keepdim=True)
    out = {
        "layer_norm": centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps) * weight,
        "layer_norm_unbiased": centred / torch.sqrt(centred.var(-1, keepdim=True) + eps) * weight,
        "eps_outside": x / (torch.sqrt(ms) + eps) * weight,
        "no_sqrt": x / (ms + eps) * weight,
        "no_weight": x / torch.sqrt(ms + eps),
        "sum": x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps) * weight,
    }
    for dim in range(x.ndim - 1):
        if x.shape[dim] > 1:
            out[f"dim{dim}"] = x / torch.sqrt(x.pow(2).mean(dim, keepdim=True) + eps) * weight
    return out


_RMS_CAUSES = {
    "layer_norm": "the mean was subtracted first: that is LayerNorm (without bias); RMSNorm only divides by "
                  "sqrt(mean(x^2) + eps), it does not centre",
    "layer_norm_unbiased": "the mean was subtracted and the unbiased variance used: that is a LayerNorm; RMSNorm "
                           "does not centre and uses mean(x^2)",
    "eps_outside": "eps is added outside the square root: x / (sqrt(mean(x^2)) + eps); it goes inside: "
                   "x / sqrt(mean(x^2) + eps) (visible when mean(x^2) is small next to eps)",
    "no_sqrt": "the square root is missing: divide by sqrt(mean(x^2) + eps), the root mean square",
    "no_weight": "the weight (the learned per-feature gain) is not applied: multiply by weight at the end",
    "sum": "sum(x^2) was used instead of mean(x^2): the root MEAN square divides by the number of features",
}


def _diagnose_rms(got, x, weight, eps) -> str | None:
    for name, wrong in _rms_variants(x, weight, eps).items():
        if matches(got, wrong):
            if name.startswith("dim"):
                return (f"normalised over dimension {name[3:]} instead of the last one: every token (row) is "
                        "normalised over its own features, mean(x ** 2, dim=-1, keepdim=True)")
            return _RMS_CAUSES[name]
    return None


def _rms_case(spec, reveal) -> Case:
    kind = spec.get("kind", "value")
    shape, eps, dtype, seed = tuple(spec["x"]), spec.get("eps", 1e-6), _dtype(spec), spec["seed"]
    x = _randn(shape, seed, dtype) * spec.get("scale", 1.0) + spec.get("offset", 0.0)
    if spec.get("zero_row"):
        x[(0,) * (x.ndim - 1)] = 0
    weight = 1 + 0.5 * _randn((shape[-1],), seed + 1, dtype)
    expected = F.rms_norm(x, (shape[-1],), weight, eps)
    name = f"x {_shape_str(shape)}, eps {eps:g}"
    if spec.get("scale", 1.0) != 1.0:
        name += f", |x| about {spec['scale']:g}"
    if spec.get("offset"):
        name += f", mean {spec['offset']:g}"
    if spec.get("zero_row"):
        name += ", one all-zero token"
    if "dtype" in spec:
        name += f", {spec['dtype']}"
    tol = {} if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-5}

    def check_value(got):
        got = expect_tensor(got, shape=expected.shape, dtype=expected.dtype)
        compare(got, expected, reveal=reveal, diagnose=lambda g: _diagnose_rms(g, x, weight, eps), **tol)

    if kind == "value":
        return Case(name, [Call(x, weight, eps)], lambda outcomes: check_value(outcomes[0]),
                    about=spec.get("about", ""))
    if kind == "scale":
        factor = spec.get("factor", 7.5)

        def verify_scale(outcomes):
            a = expect_tensor(outcomes[0], shape=expected.shape, dtype=expected.dtype)
            b = expect_tensor(outcomes[1], shape=expected.shape, dtype=expected.dtype)
            try:
                compare(b, a, name=f"rms_norm({factor:g} x) vs rms_norm(x)", reveal=reveal)
            except Mismatch as exc:
                raise Mismatch(f"with eps = 0, RMSNorm is invariant to scaling a token: rms_norm({factor:g} * x) "
                               "must equal rms_norm(x); yours is not\n" + str(exc)) from None
            check_value(a)

        return Case(f"scale invariance (eps = 0): {name}", [Call(x, weight, eps), Call(factor * x, weight, eps)],
                    verify_scale, about=spec.get("about", "scale invariance"))
    raise ValueError(f"unknown rms_norm case kind {kind!r}")


register(Exercise(
    "rms_norm", topic="transformers",
    summary="matches F.rms_norm over the last dimension (no centring, eps inside the square root, per-feature "
            "weight) for 2-D and 3-D inputs, small and offset inputs, an all-zero token and float32; scale "
            "invariant with eps = 0",
    cases=lambda specs, reveal: [_rms_case(s, reveal) for s in specs],
    visible=[{"x": (4, 8), "seed": 10},
             {"x": (2, 5, 6), "seed": 11, "offset": 2.0},
             {"x": (3, 16), "seed": 12, "scale": 0.05, "eps": 0.01},
             {"kind": "scale", "x": (3, 7), "seed": 13, "eps": 0.0},
             {"x": (2, 3, 10), "seed": 14, "dtype": "float32", "zero_row": True}],
    forbidden=_NORMS,
))


# ------------------------------------------------------------------------------------------------
# swiglu
# ------------------------------------------------------------------------------------------------
def _swiglu_oracle(x, w_gate, w_up, w_down, act=F.silu):
    return (act(x @ w_gate) * (x @ w_up)) @ w_down


_SWIGLU_VARIANTS = {
    "sigmoid": ("the gate uses sigmoid(x W_gate); SwiGLU uses SiLU (swish): silu(z) = z * sigmoid(z) "
                "(sigmoid alone is the original GLU)"),
    "swapped": ("gate and up projections are swapped: silu is applied to x @ w_up; the convention here (and "
                "Llama's gate_proj / up_proj) is silu(x @ w_gate) * (x @ w_up). As an architecture either is fine "
                "(the two weights just trade names), but with given or pretrained weights it is a different function"),
    "gelu": "GELU was used: that is GeGLU; SwiGLU uses SiLU, silu(z) = z * sigmoid(z)",
    "gelu_tanh": "the tanh approximation of GELU was used (GeGLU); SwiGLU uses SiLU, silu(z) = z * sigmoid(z)",
    "relu": "ReLU was used (ReGLU); SwiGLU uses SiLU, silu(z) = z * sigmoid(z)",
    "no_gate": "the up projection (the linear, ungated half) is missing: multiply silu(x @ w_gate) by x @ w_up",
    "no_act": "no activation on the gate (that is a bilinear layer): apply silu to x @ w_gate",
    "silu_after": "silu is applied after the product: silu((x @ w_gate) * (x @ w_up)); only the gate goes through "
                  "silu",
}


def _swiglu_variants(x, w_gate, w_up, w_down) -> dict[str, torch.Tensor]:
    return {
        "sigmoid": _swiglu_oracle(x, w_gate, w_up, w_down, torch.sigmoid),
        "swapped": _swiglu_oracle(x, w_up, w_gate, w_down),
        "gelu": _swiglu_oracle(x, w_gate, w_up, w_down, F.gelu),
        "gelu_tanh": _swiglu_oracle(x, w_gate, w_up, w_down, lambda z: F.gelu(z, approximate="tanh")),
        "relu": _swiglu_oracle(x, w_gate, w_up, w_down, F.relu),
        "no_gate": F.silu(x @ w_gate) @ w_down,
        "no_act": _swiglu_oracle(x, w_gate, w_up, w_down, lambda z: z),
        "silu_after": F.silu((x @ w_gate) * (x @ w_up)) @ w_down,
    }


def _diagnose_swiglu(got, x, w_gate, w_up, w_down) -> str | None:
    for name, wrong in _swiglu_variants(x, w_gate, w_up, w_down).items():
        if matches(got, wrong):
            return _SWIGLU_VARIANTS[name]
    return None


def _swiglu_case(spec, reveal) -> Case:
    shape, hidden, seed, dtype = tuple(spec["x"]), spec["hidden"], spec["seed"], _dtype(spec)
    d = shape[-1]
    x = _randn(shape, seed, dtype)
    w_gate = _randn((d, hidden), seed + 1, dtype) / d ** 0.5
    w_up = _randn((d, hidden), seed + 2, dtype) / d ** 0.5
    w_down = _randn((hidden, d), seed + 3, dtype) / hidden ** 0.5
    expected = _swiglu_oracle(x, w_gate, w_up, w_down)
    tol = {} if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-5}

    def verify(outcomes):
        got = expect_tensor(outcomes[0], shape=expected.shape, dtype=expected.dtype)
        compare(got, expected, reveal=reveal, diagnose=lambda g: _diagnose_swiglu(g, x, w_gate, w_up, w_down), **tol)

    def explain_error(raised):
        if any(word in raised.message for word in ("shape", "size", "mat1", "match", "multiplied")):
            return ("the weights are laid out for x @ W: w_gate and w_up are (D, F), w_down is (F, D) "
                    "(the transpose of nn.Linear's weight); do not transpose them")
        return None

    name = f"x {_shape_str(shape)}, D = {d}, hidden F = {hidden}" + (f", {spec['dtype']}" if "dtype" in spec else "")
    return Case(name, [Call(x, w_gate, w_up, w_down)], verify, explain_error=explain_error,
                about=spec.get("about", ""))


register(Exercise(
    "swiglu", topic="transformers",
    summary="(silu(x W_gate) * (x W_up)) W_down with (D, F), (D, F), (F, D) weights, for 2-D and 3-D inputs, "
            "F != D, float32; tells SiLU from sigmoid and GELU, and the gate from the up projection",
    cases=lambda specs, reveal: [_swiglu_case(s, reveal) for s in specs],
    visible=[{"x": (3, 4), "hidden": 6, "seed": 20},
             {"x": (2, 5, 8), "hidden": 12, "seed": 21},
             {"x": (4, 6), "hidden": 4, "seed": 22, "dtype": "float32"}],
))


# ------------------------------------------------------------------------------------------------
# top_k_routing
# ------------------------------------------------------------------------------------------------
def _router_logits(spec) -> torch.Tensor:
    t, e = spec["tokens"], spec["experts"]
    dtype = _dtype(spec)
    if spec.get("values") == "ties":
        return torch.randint(0, spec.get("levels", 3), (t, e), generator=_generator(spec["seed"])).to(dtype)
    return _randn((t, e), spec["seed"], dtype) * spec.get("scale", 1.0)


def _routing_name(spec) -> str:
    text = f"{spec['tokens']} tokens, {spec['experts']} experts, k = {spec['k']}"
    if spec.get("values") == "ties":
        text += ", integer logits (ties)"
    if "dtype" in spec:
        text += f", {spec['dtype']}"
    return text


def _unpack_routing(out, t, k):
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise Mismatch("return a tuple (expert_indices, gate_weights); got "
                       + (f"a {type(out).__name__} of length {len(out)}" if isinstance(out, (tuple, list))
                          else f"a {type(out).__name__}"))
    indices = expect_tensor(out[0], name="expert_indices")
    if indices.is_floating_point() or indices.dtype == torch.bool:
        raise Mismatch(f"expert_indices has dtype {indices.dtype}; expected torch.int64 (what topk / argsort return)")
    indices = expect_tensor(indices, shape=(t, k), dtype=torch.int64, name="expert_indices")
    weights = expect_tensor(out[1], shape=(t, k), floating=True, name="gate_weights")
    return indices, weights


def _verify_routing(out, logits: torch.Tensor, k: int, reveal: bool) -> None:
    """A valid top-k routing whatever the tie-breaking: k distinct experts per token whose logits are the
    k largest, in non-increasing order, and gate weights = softmax over the selected logits."""
    t, e = logits.shape
    indices, weights = _unpack_routing(out, t, k)
    if weights.dtype != logits.dtype:
        raise Mismatch(f"gate_weights has dtype {weights.dtype}; expected {logits.dtype} (the dtype of the logits)")
    if bool(((indices < 0) | (indices >= e)).any()):
        raise Mismatch(f"expert_indices out of range: they must lie in [0, {e})")
    token = lambda i: f" (token {i})" if reveal else ""  # noqa: E731
    duplicated = (indices.sort(-1).values.diff(dim=-1) == 0).any(-1)
    if bool(duplicated.any()):
        raise Mismatch(f"an expert is chosen twice for one token{token(int(duplicated.nonzero()[0]))}\n"
                       "likely cause: equal logits (ties) picked by value, e.g. by looking up where each of the top "
                       "values occurs; take positions, not values: torch.topk or an argsort gives k distinct experts")
    chosen = logits.gather(1, indices)
    top = logits.topk(k, dim=-1).values
    if not torch.equal(chosen.sort(-1, descending=True).values, top):
        bottom = logits.topk(k, dim=-1, largest=False).values
        if torch.equal(chosen.sort(-1).values, bottom.sort(-1).values):
            cause = ("these are the k SMALLEST logits: argsort sorts ascending; use "
                     "argsort(descending=True) or torch.topk")
        else:
            cause = "take the k largest router logits of each token"
        raise Mismatch("the chosen experts are not the top k of each token" + token(int(
            (chosen.sort(-1, descending=True).values != top).any(-1).nonzero()[0])) + f"\nlikely cause: {cause}")
    if bool((chosen.diff(dim=-1) > 0).any()):
        raise Mismatch("the right experts, but not in order: list them by decreasing logit (largest first), as "
                       "torch.topk does")
    expected = chosen.softmax(-1)
    all_probs = logits.softmax(-1).gather(1, indices)

    def diagnose(got):
        if matches(got, all_probs):
            sums = got.sum(-1)
            return (f"the weights sum to {float(sums.min()):.3g}..{float(sums.max()):.3g}, not 1: a softmax over all "
                    f"{e} experts followed by top-k keeps probabilities that are not renormalised (Switch "
                    "Transformer's choice for k = 1); here, as in Mixtral, take the softmax over the k selected "
                    "logits only (or divide the kept probabilities by their sum)")
        if matches(got, chosen):
            return "these are the raw logits: the gate weights are the softmax over the k selected logits"
        if matches(got, chosen / chosen.sum(-1, keepdim=True)):
            return "the logits were divided by their sum: use a softmax over the k selected logits"
        return None

    compare(weights, expected, name="gate_weights", reveal=reveal, diagnose=diagnose,
            **({} if logits.dtype == torch.float64 else {"atol": 1e-6, "rtol": 1e-5}))


def _routing_case(spec, reveal) -> Case:
    logits, k = _router_logits(spec), spec["k"]
    if spec.get("kind") == "error":
        def verify_error(outcomes):
            if not isinstance(outcomes[0], Raised):
                raise Mismatch(f"expected ValueError for k = {k} with only {spec['experts']} experts, but the "
                               "function returned normally")
            expect_raises(outcomes[0], ("ValueError",), mentioning="k")

        return Case(f"{_routing_name(spec)}: k larger than the number of experts raises ValueError",
                    [Call(logits, k)], verify_error, expects_error=True, about=spec.get("about", ""))
    return Case(_routing_name(spec), [Call(logits, k)],
                lambda outcomes: _verify_routing(outcomes[0], logits, k, reveal), about=spec.get("about", ""))


register(Exercise(
    "top_k_routing", topic="transformers",
    summary="k distinct experts per token with the k largest logits, largest first (any tie-breaking), int64; "
            "gate weights = softmax over the selected logits (Mixtral), summing to 1; k = 1 and k = E; "
            "ValueError when k > E",
    cases=lambda specs, reveal: [_routing_case(s, reveal) for s in specs],
    visible=[{"tokens": 5, "experts": 4, "k": 2, "seed": 30},
             {"tokens": 6, "experts": 8, "k": 1, "seed": 31, "scale": 3.0},
             {"tokens": 8, "experts": 6, "k": 3, "seed": 32, "values": "ties"},
             {"tokens": 3, "experts": 3, "k": 3, "seed": 33, "dtype": "float32"},
             {"kind": "error", "tokens": 2, "experts": 3, "k": 4, "seed": 34}],
))


# ------------------------------------------------------------------------------------------------
# load_balancing_loss
# ------------------------------------------------------------------------------------------------
def _balance_inputs(spec):
    t, e, k = spec["tokens"], spec["experts"], spec["k"]
    dtype = _dtype(spec)
    routing = spec.get("routing", "topk")
    if routing == "balanced":                       # equal logits, every expert gets t * k / e assignments
        logits = torch.zeros(t, e, dtype=dtype)
        indices = (torch.arange(t * k) % e).reshape(t, k)
    elif routing == "collapsed":                    # every token sure of expert 0
        logits = torch.full((t, e), -20.0, dtype=dtype)
        logits[:, 0] = 20.0
        indices = torch.arange(k).repeat(t, 1)
    else:
        logits = _randn((t, e), spec["seed"], dtype) * spec.get("scale", 1.0)
        logits[:, 0] += spec.get("bias", 0.0)
        indices = logits.topk(k, dim=-1).indices
    return logits, indices.to(torch.int64)


def _balance_oracle(logits, indices, variant: str = ""):
    t, e = logits.shape
    k = indices.shape[1]
    probs = logits.to(torch.float64).softmax(-1)
    counts = torch.zeros(e, dtype=torch.float64).index_add_(0, indices.flatten(), torch.ones(indices.numel(),
                                                                                             dtype=torch.float64))
    f = counts / (t * k)
    p = probs.mean(0)
    if variant == "per_token":
        f = counts / t
    elif variant == "first_only":
        f = torch.bincount(indices[:, 0], minlength=e).to(torch.float64) / t
    elif variant == "probs_as_f":
        f = p
    elif variant == "gates_as_p":
        gates = logits.to(torch.float64).gather(1, indices).softmax(-1)
        p = torch.zeros(t, e, dtype=torch.float64).scatter_(1, indices, gates).mean(0)
    scale = {"no_factor": 1.0, "mean": 1.0 / e}.get(variant, float(e))
    return scale * (f * p).sum()


_BALANCE_CAUSES = {
    "no_factor": "the factor num_experts is missing: loss = E * sum_i f_i P_i (so that perfect balance gives 1)",
    "mean": "a mean over the experts instead of the sum, and no factor E: loss = E * sum_i f_i P_i",
    "per_token": ("f_i was divided by the number of tokens T only, so the f_i sum to k (HF Mixtral's convention, "
                  "loss k at balance); here f_i is the fraction of the T * k assignments that go to expert i"),
    "first_only": "only each token's first choice was counted: count all k choices of every token in f_i",
    "probs_as_f": ("f_i was computed from the router probabilities; f_i is the fraction of assignments (counts of "
                   "expert_indices), P_i the mean router probability; only P_i carries a gradient"),
    "gates_as_p": ("P_i was computed from the renormalised top-k gate weights; P_i is the mean of the full softmax "
                   "over all experts, so that the loss also pushes up experts that were not chosen"),
}


def _balance_case(spec, reveal) -> Case:
    logits, indices = _balance_inputs(spec)
    expected = _balance_oracle(logits, indices).to(logits.dtype)
    name = spec.get("name") or (f"{spec['tokens']} tokens, {spec['experts']} experts, k = {spec['k']}"
                                + (", one favoured expert" if spec.get("bias") else "")
                                + (f", {spec['dtype']}" if "dtype" in spec else ""))

    def verify(outcomes):
        got = outcomes[0]
        if isinstance(got, (int, float)) and not isinstance(got, bool):
            raise Mismatch("returned a Python number; return a 0-d tensor (e.g. `(f * P).sum() * E`) so the loss "
                           "can be backpropagated into the router")
        got = expect_tensor(got, name="the loss")
        if got.ndim != 0:
            raise Mismatch(f"the loss has shape {tuple(got.shape)}; expected a 0-d tensor (a scalar): sum over "
                           "the experts")
        got = expect_tensor(got, shape=(), dtype=logits.dtype, name="the loss")

        def diagnose(g):
            for variant, cause in _BALANCE_CAUSES.items():
                if matches(g, _balance_oracle(logits, indices, variant).to(g.dtype), tol=1e-6):
                    return cause
            return None

        compare(got, expected, name="the loss", reveal=reveal, diagnose=diagnose,
                **({} if logits.dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-5}))

    return Case(name, [Call(logits, indices)], verify, about=spec.get("about", ""))


register(Exercise(
    "load_balancing_loss", topic="transformers",
    summary="E * sum_i f_i P_i (f_i: share of the T*k assignments, P_i: mean softmax probability) as a 0-d "
            "tensor: 1 at perfect balance, about E when collapsed, random routings with k = 1, 2, 3, float32",
    cases=lambda specs, reveal: [_balance_case(s, reveal) for s in specs],
    visible=[{"name": "perfect balance gives 1 (8 tokens, 4 experts, k = 2)", "tokens": 8, "experts": 4, "k": 2,
              "routing": "balanced"},
             {"name": "collapse onto one expert gives about E (6 tokens, 4 experts, k = 1)", "tokens": 6,
              "experts": 4, "k": 1, "routing": "collapsed"},
             {"tokens": 10, "experts": 5, "k": 2, "seed": 40, "bias": 1.5},
             {"tokens": 7, "experts": 6, "k": 3, "seed": 41, "dtype": "float32"}],
))
