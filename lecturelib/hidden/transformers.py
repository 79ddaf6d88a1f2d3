"""Grader side of the transformers-recap checks: oracles, known mistakes, case builders, visible and hidden
specs (grader copy only). ``about`` is what the feedback may show of a hidden case.

Oracles are torch built-ins (``F.unfold``, ``F.conv2d``, ``F.rms_norm``, ``F.silu``, ``torch.topk``) and float64
formulas. Each known mistake is a small wrong implementation with the cause a student must be told (a reshape
without permute, LayerNorm instead of RMSNorm, sigmoid instead of SiLU, probabilities that are not
renormalised, ...); its outputs on a case's inputs go into the case's data, so the student package can name
the cause without holding the code that made the mistake.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..checks.core import Call, Case
from . import mistake_outputs
from ._inputs import dtype_of, generator, randn, shape_str


# ------------------------------------------------------------------------------------------------
# patchify
# ------------------------------------------------------------------------------------------------
def _patchify_oracle(images, p):
    """F.unfold with kernel = stride = p: (N, L, C*p*p), channel-first features, row-major patches."""
    return F.unfold(images, p, stride=p).transpose(1, 2)


def _blocks_permuted(order):
    """A patchify that permutes the (N, C, H/p, p, W/p, p) blocks into ``order`` before flattening."""
    def wrong(images, p):
        n, c, h, w = images.shape
        blocks = images.reshape(n, c, h // p, p, w // p, p)            # n, c, gy, i, gx, j
        return blocks.permute(*order).reshape(n, (h // p) * (w // p), c * p * p)
    return wrong


_PATCHIFY_MISTAKES = [
    (_blocks_permuted((0, 2, 4, 3, 5, 1)),
     "each patch is flattened as (p, p, C), channels last (as for an (H, W, C) image); the convention here is "
     "(C, p, p), channels first, like the weight of Conv2d(C, D, kernel_size=p, stride=p): feature index "
     "c * p * p + i * p + j"),
    (_blocks_permuted((0, 4, 2, 1, 3, 5)),
     "the patches are in column-major order (down the first column first); patch t must be at row t // (W / p), "
     "column t % (W / p): left to right, then top to bottom"),
    (lambda images, p: images.reshape(images.shape[0], -1, images.shape[1] * p * p),
     "a reshape without a permute: reshaping (N, C, H, W) straight to (N, L, C*p*p) cuts the memory into runs "
     "of consecutive pixels (parts of image rows), not into p x p squares; reshape to (N, C, H/p, p, W/p, p), "
     "permute the grid axes in front, then reshape"),
    (_blocks_permuted((0, 2, 4, 1, 5, 3)),
     "inside each patch rows and columns are swapped: pixel (i, j) of a patch goes to i * p + j"),
]


def _patchify_name(spec) -> str:
    return (f"images {shape_str(spec['x'])}, patch_size {spec['p']}"
            + (f", {spec['dtype']}" if "dtype" in spec else ""))


def _patchify_value(images, spec):
    p = spec["p"]
    return _patchify_name(spec), {"expected": _patchify_oracle(images, p),
                                  "mistakes": mistake_outputs(_PATCHIFY_MISTAKES, images, p)}


def _patchify_conv(images, spec):
    """Patchify then a Linear layer must equal the Conv2d(kernel = stride = p) patch embedding."""
    name, data = _patchify_value(images, spec)
    dim, p, c = spec["dim"], spec["p"], images.shape[1]
    weight = randn((dim, c, p, p), spec["seed"] + 1, images.dtype)
    bias = randn((dim,), spec["seed"] + 2, images.dtype)
    embedding = F.conv2d(images, weight, bias, stride=p).flatten(2).transpose(1, 2)       # (N, L, D)
    data.update(weight=weight, bias=bias, embedding=embedding)
    return f"patchify + Linear == Conv2d patch embedding ({dim} dims): {name}", data


def _patchify_error(images, spec):
    h, w = spec["x"][2:]
    side = "H" if h % spec["p"] else "W"
    return (f"{_patchify_name(spec)}: not divisible, raises ValueError",
            {"side": side, "size": h if side == "H" else w, "p": spec["p"]})


_PATCHIFY_KINDS = {"value": _patchify_value, "conv": _patchify_conv, "error": _patchify_error}


def _patchify_cases(specs, reveal):
    for spec in specs:
        kind = spec.get("kind", "value")
        images = randn(spec["x"], spec.get("seed", 0), dtype_of(spec))
        name, data = _PATCHIFY_KINDS[kind](images, spec)
        yield Case(name, [Call(images, spec["p"])], f"patchify:{kind}", data, expects_error=kind == "error",
                   about=spec.get("about", ""))


# ------------------------------------------------------------------------------------------------
# rms_norm
# ------------------------------------------------------------------------------------------------
def _mean_square(x, dim=-1):
    return x.pow(2).mean(dim, keepdim=True)


def _centred(x):
    return x - x.mean(-1, keepdim=True)


_RMS_MISTAKES = [
    (lambda x, w, eps: _centred(x) / torch.sqrt(_mean_square(_centred(x)) + eps) * w,
     "the mean was subtracted first: that is LayerNorm (without bias); RMSNorm only divides by "
     "sqrt(mean(x^2) + eps), it does not centre"),
    (lambda x, w, eps: _centred(x) / torch.sqrt(_centred(x).var(-1, keepdim=True) + eps) * w,
     "the mean was subtracted and the unbiased variance used: that is a LayerNorm; RMSNorm does not centre and "
     "uses mean(x^2)"),
    (lambda x, w, eps: x / (torch.sqrt(_mean_square(x)) + eps) * w,
     "eps is added outside the square root: x / (sqrt(mean(x^2)) + eps); it goes inside: "
     "x / sqrt(mean(x^2) + eps) (visible when mean(x^2) is small next to eps)"),
    (lambda x, w, eps: x / torch.sqrt(_mean_square(x)) * w,
     "eps is missing: x / sqrt(mean(x^2)) divides by zero for an all-zero token and is off for small inputs; "
     "divide by sqrt(mean(x^2) + eps)"),
    (lambda x, w, eps: x / (_mean_square(x) + eps) * w,
     "the square root is missing: divide by sqrt(mean(x^2) + eps), the root mean square"),
    (lambda x, w, eps: x / torch.sqrt(_mean_square(x) + eps),
     "the weight (the learned per-feature gain) is not applied: multiply by weight at the end"),
    (lambda x, w, eps: x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps) * w,
     "sum(x^2) was used instead of mean(x^2): the root MEAN square divides by the number of features"),
]


def _rms_mistakes(x):
    """The usual mistakes, then normalising over each other dimension of x (of size > 1)."""
    other_dims = [(lambda x, w, eps, dim=dim: x / torch.sqrt(_mean_square(x, dim) + eps) * w,
                   f"normalised over dimension {dim} instead of the last one: every token (row) is normalised over "
                   "its own features, mean(x ** 2, dim=-1, keepdim=True)")
                  for dim in range(x.ndim - 1) if x.shape[dim] > 1]
    return _RMS_MISTAKES + other_dims


def _rms_inputs(spec):
    shape, dtype, seed = tuple(spec["x"]), dtype_of(spec), spec["seed"]
    x = randn(shape, seed, dtype) * spec.get("scale", 1.0) + spec.get("offset", 0.0)
    if spec.get("zero_row"):
        x[(0,) * (x.ndim - 1)] = 0
    weight = 1 + 0.5 * randn((shape[-1],), seed + 1, dtype)
    return x, weight, spec.get("eps", 1e-6)


def _rms_name(spec, eps) -> str:
    name = f"x {shape_str(spec['x'])}, eps {eps:g}"
    if spec.get("scale", 1.0) != 1.0:
        name += f", |x| about {spec['scale']:g}"
    if spec.get("offset"):
        name += f", mean {spec['offset']:g}"
    if spec.get("zero_row"):
        name += ", one all-zero token"
    if "dtype" in spec:
        name += f", {spec['dtype']}"
    return name


def _rms_value(x, weight, eps, spec):
    return _rms_name(spec, eps), [Call(x, weight, eps)], {}


def _rms_scale(x, weight, eps, spec):
    """With eps = 0, rms_norm(factor * x) = rms_norm(x)."""
    factor = spec.get("factor", 7.5)
    return (f"scale invariance (eps = 0): {_rms_name(spec, eps)}",
            [Call(x, weight, eps), Call(factor * x, weight, eps)], {"factor": factor})


_RMS_KINDS = {"value": _rms_value, "scale": _rms_scale}


def _rms_cases(specs, reveal):
    for spec in specs:
        kind = spec.get("kind", "value")
        x, weight, eps = _rms_inputs(spec)
        name, calls, data = _RMS_KINDS[kind](x, weight, eps, spec)
        data.update(expected=F.rms_norm(x, (x.shape[-1],), weight, eps),
                    mistakes=mistake_outputs(_rms_mistakes(x), x, weight, eps))
        yield Case(name, calls, f"rms_norm:{kind}", data, explain="rms_norm",
                   about=spec.get("about", "scale invariance" if kind == "scale" else ""))


# ------------------------------------------------------------------------------------------------
# swiglu
# ------------------------------------------------------------------------------------------------
def _swiglu_oracle(x, w_gate, w_up, w_down, act=F.silu):
    return (act(x @ w_gate) * (x @ w_up)) @ w_down


def _gated_by(act):
    return lambda x, w_gate, w_up, w_down: _swiglu_oracle(x, w_gate, w_up, w_down, act)


_SILU = "SwiGLU uses SiLU, silu(z) = z * sigmoid(z)"
_SWIGLU_MISTAKES = [
    (_gated_by(torch.sigmoid),
     "the gate uses sigmoid(x W_gate); SwiGLU uses SiLU (swish): silu(z) = z * sigmoid(z) (sigmoid alone is the "
     "original GLU)"),
    (lambda x, w_gate, w_up, w_down: _swiglu_oracle(x, w_up, w_gate, w_down),
     "gate and up projections are swapped: silu is applied to x @ w_up; the convention here (and Llama's "
     "gate_proj / up_proj) is silu(x @ w_gate) * (x @ w_up). As an architecture either is fine (the two weights "
     "just trade names), but with given or pretrained weights it is a different function"),
    (_gated_by(F.gelu), f"GELU was used: that is GeGLU; {_SILU}"),
    (_gated_by(lambda z: F.gelu(z, approximate="tanh")),
     f"the tanh approximation of GELU was used (GeGLU); {_SILU}"),
    (_gated_by(F.relu), f"ReLU was used (ReGLU); {_SILU}"),
    (lambda x, w_gate, w_up, w_down: F.silu(x @ w_gate) @ w_down,
     "the up projection (the linear, ungated half) is missing: multiply silu(x @ w_gate) by x @ w_up"),
    (_gated_by(lambda z: z), "no activation on the gate (that is a bilinear layer): apply silu to x @ w_gate"),
    (lambda x, w_gate, w_up, w_down: F.silu((x @ w_gate) * (x @ w_up)) @ w_down,
     "silu is applied after the product: silu((x @ w_gate) * (x @ w_up)); only the gate goes through silu"),
]


def _swiglu_cases(specs, reveal):
    for spec in specs:
        shape, hidden, seed, dtype = tuple(spec["x"]), spec["hidden"], spec["seed"], dtype_of(spec)
        d = shape[-1]
        x = randn(shape, seed, dtype)
        weights = (randn((d, hidden), seed + 1, dtype) / d ** 0.5,           # w_gate (D, F)
                   randn((d, hidden), seed + 2, dtype) / d ** 0.5,           # w_up (D, F)
                   randn((hidden, d), seed + 3, dtype) / hidden ** 0.5)      # w_down (F, D)
        data = {"expected": _swiglu_oracle(x, *weights), "mistakes": mistake_outputs(_SWIGLU_MISTAKES, x, *weights)}
        name = f"x {shape_str(shape)}, D = {d}, hidden F = {hidden}" + (f", {spec['dtype']}" if "dtype" in spec else "")
        yield Case(name, [Call(x, *weights)], "swiglu", data, explain="swiglu", about=spec.get("about", ""))


# ------------------------------------------------------------------------------------------------
# top_k_routing
# ------------------------------------------------------------------------------------------------
def _router_logits(spec) -> torch.Tensor:
    t, e = spec["tokens"], spec["experts"]
    if spec.get("values") == "ties":
        return torch.randint(0, spec.get("levels", 3), (t, e), generator=generator(spec["seed"])).to(dtype_of(spec))
    return randn((t, e), spec["seed"], dtype_of(spec)) * spec.get("scale", 1.0)


def _routing_name(spec) -> str:
    text = f"{spec['tokens']} tokens, {spec['experts']} experts, k = {spec['k']}"
    if spec.get("values") == "ties":
        text += ", integer logits (ties)"
    if "dtype" in spec:
        text += f", {spec['dtype']}"
    return text


def _gate_weight_mistakes(logits, k, reveal):
    """Gate weights that known mistakes give for the right experts: ``[(weights (T, k), cause)]``."""
    indices = logits.topk(k, dim=-1).indices
    chosen = logits.gather(1, indices)
    kept = logits.softmax(-1).gather(1, indices)
    sums = kept.sum(-1)
    how = (f"the weights sum to {float(sums.min()):.3g}..{float(sums.max()):.3g}, not 1: a softmax over all "
           f"{logits.shape[1]} experts" if reveal else "the weights do not sum to 1: a softmax over all experts")
    return [(kept, how + " followed by top-k keeps probabilities that are not renormalised (Switch Transformer's "
                         "choice for k = 1); here, as in Mixtral, take the softmax over the k selected logits only "
                         "(or divide the kept probabilities by their sum)"),
            (chosen, "these are the raw logits: the gate weights are the softmax over the k selected logits"),
            (chosen.softmax(0), "the softmax was taken over the tokens (dim 0); take it over the k selected logits "
                                "of each token (dim -1), so that each token's weights sum to 1"),
            (chosen / chosen.sum(-1, keepdim=True),
             "the logits were divided by their sum: use a softmax over the k selected logits")]


def _routing_value(logits, spec, reveal):
    """What a valid routing must give whatever its tie-breaking: the k largest logits of each token (T, k)
    largest first, the k smallest (a known mistake) in increasing order, and the gate weights."""
    k = spec["k"]
    top = logits.topk(k, dim=-1).values
    return _routing_name(spec), {"logits": logits, "top": top,
                                 "bottom": logits.topk(k, dim=-1, largest=False).values.sort(-1).values,
                                 "expected": top.softmax(-1), "mistakes": _gate_weight_mistakes(logits, k, reveal)}


def _routing_error(logits, spec, reveal):
    return (f"{_routing_name(spec)}: k larger than the number of experts raises ValueError",
            {"k": spec["k"], "experts": spec["experts"]})


_ROUTING_KINDS = {"value": _routing_value, "error": _routing_error}


def _routing_cases(specs, reveal):
    for spec in specs:
        kind = spec.get("kind", "value")
        logits = _router_logits(spec)
        name, data = _ROUTING_KINDS[kind](logits, spec, reveal)
        yield Case(name, [Call(logits, spec["k"])], f"top_k_routing:{kind}", data, expects_error=kind == "error",
                   explain="top_k_routing", about=spec.get("about", ""))


# ------------------------------------------------------------------------------------------------
# load_balancing_loss
# ------------------------------------------------------------------------------------------------
def _balance_inputs(spec):
    """Router logits (T, E) and the experts they route to (T, k) int64."""
    t, e, k = spec["tokens"], spec["experts"], spec["k"]
    dtype = dtype_of(spec)
    routing = spec.get("routing", "topk")
    if routing == "balanced":                       # equal logits, every expert gets t * k / e assignments
        logits = torch.zeros(t, e, dtype=dtype)
        indices = (torch.arange(t * k) % e).reshape(t, k)
    elif routing == "collapsed":                    # every token sure of expert 0
        logits = torch.full((t, e), -20.0, dtype=dtype)
        logits[:, 0] = 20.0
        indices = torch.arange(k).repeat(t, 1)
    else:
        logits = randn((t, e), spec["seed"], dtype) * spec.get("scale", 1.0)
        logits[:, 0] += spec.get("bias", 0.0)
        indices = logits.topk(k, dim=-1).indices
    return logits, indices.to(torch.int64)


def _counts(indices, e):
    """How many of the assignments in ``indices`` go to each of the e experts: (E,) float64."""
    return torch.bincount(indices.flatten(), minlength=e).to(torch.float64)


def _mean_probs(logits):
    """P_i: the mean over the tokens of the full softmax (E,), float64."""
    return logits.to(torch.float64).softmax(-1).mean(0)


def _balance_oracle(logits, indices):
    e = logits.shape[1]
    return e * (_counts(indices, e) / indices.numel() * _mean_probs(logits)).sum()


def _gates_as_p(logits, indices):
    """P_i from the renormalised top-k gate weights (zero for the experts not chosen)."""
    gates = logits.to(torch.float64).gather(1, indices).softmax(-1)
    return torch.zeros(logits.shape, dtype=torch.float64).scatter_(1, indices, gates).mean(0)


def _tokens_softmax_p(logits):
    """P_i from a softmax over the tokens (dim 0) instead of over the experts."""
    return logits.to(torch.float64).softmax(0).mean(0)


_BALANCE_MISTAKES = [
    (lambda logits, indices: _balance_oracle(logits, indices) / logits.shape[1],
     "the factor num_experts is missing: loss = E * sum_i f_i P_i (so that perfect balance gives 1)"),
    (lambda logits, indices: _balance_oracle(logits, indices) / logits.shape[1] ** 2,
     "a mean over the experts instead of the sum, and no factor E: loss = E * sum_i f_i P_i"),
    (lambda logits, indices: _balance_oracle(logits, indices) * indices.shape[1],
     "f_i was divided by the number of tokens T only, so the f_i sum to k (HF Mixtral's convention, loss k at "
     "balance); here f_i is the fraction of the T * k assignments that go to expert i"),
    (lambda logits, indices: _balance_oracle(logits, indices[:, :1]),
     "only each token's first choice was counted: count all k choices of every token in f_i"),
    (lambda logits, indices: logits.shape[1] * (_mean_probs(logits) ** 2).sum(),
     "f_i was computed from the router probabilities; f_i is the fraction of assignments (counts of "
     "expert_indices), P_i the mean router probability; only P_i carries a gradient"),
    (lambda logits, indices: logits.shape[1] * (_counts(indices, logits.shape[1]) / indices.numel()
                                                * _gates_as_p(logits, indices)).sum(),
     "P_i was computed from the renormalised top-k gate weights; P_i is the mean of the full softmax over all "
     "experts, so that the loss also pushes up experts that were not chosen"),
    (lambda logits, indices: logits.shape[1] * (_counts(indices, logits.shape[1]) / indices.numel()
                                                * _tokens_softmax_p(logits)).sum(),
     "P_i was computed with a softmax over the tokens (dim 0); the softmax is over the experts of each token "
     "(dim -1), then averaged over the tokens"),
]


def _distinct(mistakes, tol=1e-9):
    """The known mistakes whose output no mistake with another cause shares on these inputs (a collapsed router
    makes several formulas give E): naming one of two equal outputs would be a guess."""
    def same(a, b):
        return abs(float(a) - float(b)) <= tol * (1 + abs(float(b)))
    return [(out, cause) for out, cause in mistakes
            if not any(same(out, other) and cause != other_cause for other, other_cause in mistakes)]


def _balance_cases(specs, reveal):
    for spec in specs:
        logits, indices = _balance_inputs(spec)
        # compared in the dtype of the logits, the dtype the loss must have
        mistakes = [(wrong.to(logits.dtype), cause)
                    for wrong, cause in _distinct(mistake_outputs(_BALANCE_MISTAKES, logits, indices))]
        data = {"expected": _balance_oracle(logits, indices).to(logits.dtype), "mistakes": mistakes}
        name = spec.get("name") or (f"{spec['tokens']} tokens, {spec['experts']} experts, k = {spec['k']}"
                                    + (", one favoured expert" if spec.get("bias") else "")
                                    + (f", {spec['dtype']}" if "dtype" in spec else ""))
        yield Case(name, [Call(logits, indices)], "load_balancing_loss", data, about=spec.get("about", ""))


BUILDERS = {
    "patchify": _patchify_cases,
    "rms_norm": _rms_cases,
    "swiglu": _swiglu_cases,
    "top_k_routing": _routing_cases,
    "load_balancing_loss": _balance_cases,
}

VISIBLE = {
    "patchify": [{"x": (1, 1, 4, 4), "p": 2, "seed": 1},
                 {"x": (2, 3, 8, 12), "p": 4, "seed": 2},
                 {"kind": "conv", "x": (2, 3, 6, 9), "p": 3, "dim": 5, "seed": 3},
                 {"x": (1, 2, 4, 6), "p": 2, "dtype": "float32", "seed": 4},
                 {"kind": "error", "x": (1, 3, 10, 8), "p": 4, "seed": 5}],
    "rms_norm": [{"x": (4, 8), "seed": 10},
                 {"x": (2, 5, 6), "seed": 11, "offset": 2.0},
                 {"x": (3, 16), "seed": 12, "scale": 0.05, "eps": 0.01},
                 {"kind": "scale", "x": (3, 7), "seed": 13, "eps": 0.0},
                 {"x": (2, 3, 10), "seed": 14, "dtype": "float32", "zero_row": True}],
    "swiglu": [{"x": (3, 4), "hidden": 6, "seed": 20},
               {"x": (2, 5, 8), "hidden": 12, "seed": 21},
               {"x": (4, 6), "hidden": 4, "seed": 22, "dtype": "float32"}],
    "top_k_routing": [{"tokens": 5, "experts": 4, "k": 2, "seed": 30},
                      {"tokens": 6, "experts": 8, "k": 1, "seed": 31, "scale": 3.0},
                      {"tokens": 8, "experts": 6, "k": 3, "seed": 32, "values": "ties"},
                      {"tokens": 3, "experts": 3, "k": 3, "seed": 33, "dtype": "float32"},
                      {"kind": "error", "tokens": 2, "experts": 3, "k": 4, "seed": 34}],
    "load_balancing_loss": [
        {"name": "perfect balance gives 1 (8 tokens, 4 experts, k = 2)", "tokens": 8, "experts": 4, "k": 2,
         "routing": "balanced"},
        {"name": "collapse onto one expert gives about E (6 tokens, 4 experts, k = 1)", "tokens": 6, "experts": 4,
         "k": 1, "routing": "collapsed"},
        {"tokens": 10, "experts": 5, "k": 2, "seed": 40, "bias": 1.5},
        {"tokens": 7, "experts": 6, "k": 3, "seed": 41, "dtype": "float32"}],
}

SPECS = {
    "patchify": [
        {"x": (3, 2, 6, 10), "p": 2, "seed": 101, "about": "batch, non-square grid"},
        {"x": (1, 3, 16, 8), "p": 8, "seed": 102, "about": "tall image, large patches"},
        {"x": (2, 1, 5, 5), "p": 5, "seed": 103, "about": "one patch per image"},
        {"x": (2, 4, 3, 6), "p": 1, "seed": 104, "about": "1 x 1 patches"},
        {"kind": "conv", "x": (1, 3, 12, 8), "p": 4, "dim": 7, "seed": 105, "about": "equals the Conv2d embedding"},
        {"x": (2, 3, 6, 4), "p": 2, "dtype": "float32", "seed": 106, "about": "float32"},
        {"kind": "error", "x": (1, 3, 8, 10), "p": 4, "seed": 107, "about": "W not divisible: must raise ValueError"},
    ],
    "rms_norm": [
        {"x": (5, 3), "seed": 110, "about": "few features"},
        {"x": (2, 3, 4, 8), "seed": 111, "offset": -1.5, "about": "4-D input, negative mean"},
        {"x": (4, 12), "seed": 112, "scale": 0.02, "eps": 0.001, "about": "small inputs, eps matters"},
        {"x": (6, 1, 9), "seed": 113, "about": "a singleton dimension"},
        {"kind": "scale", "x": (2, 2, 5), "seed": 114, "eps": 0.0, "factor": 0.1, "about": "scale invariance"},
        {"x": (3, 32), "seed": 115, "dtype": "float32", "zero_row": True, "scale": 10.0, "about": "float32"},
    ],
    "swiglu": [
        {"x": (1, 5), "hidden": 3, "seed": 120, "about": "one token, F < D"},
        {"x": (3, 2, 4), "hidden": 10, "seed": 121, "about": "3-D input"},
        {"x": (2, 2, 3, 6), "hidden": 8, "seed": 122, "about": "4-D input"},
        {"x": (5, 8), "hidden": 16, "seed": 123, "dtype": "float32", "about": "float32"},
    ],
    "top_k_routing": [
        {"tokens": 9, "experts": 8, "k": 2, "seed": 130, "about": "Mixtral's 8 experts, k = 2"},
        {"tokens": 4, "experts": 5, "k": 4, "seed": 131, "scale": 0.1, "about": "nearly equal logits"},
        {"tokens": 12, "experts": 4, "k": 2, "seed": 132, "values": "ties", "levels": 2, "about": "many ties"},
        {"tokens": 1, "experts": 2, "k": 1, "seed": 133, "about": "one token"},
        {"tokens": 6, "experts": 7, "k": 3, "seed": 134, "scale": 5.0, "dtype": "float32", "about": "float32"},
        {"tokens": 5, "experts": 3, "k": 3, "seed": 136, "about": "k = E: every expert"},
        {"kind": "error", "tokens": 3, "experts": 2, "k": 3, "seed": 135, "about": "k > E: must raise ValueError"},
    ],
    "load_balancing_loss": [
        {"name": "perfect balance", "tokens": 12, "experts": 6, "k": 1, "routing": "balanced",
         "about": "perfect balance"},
        # A random routing before the collapse: on a collapsed router several mistakes give the same loss.
        {"tokens": 16, "experts": 8, "k": 2, "seed": 140, "bias": 3.0, "about": "one favoured expert"},
        {"name": "collapse", "tokens": 5, "experts": 8, "k": 2, "routing": "collapsed", "about": "collapse, k = 2"},
        {"tokens": 3, "experts": 3, "k": 1, "seed": 141, "about": "k = 1 (Switch)"},
        {"tokens": 9, "experts": 4, "k": 4, "seed": 142, "dtype": "float32", "about": "k = E, float32"},
    ],
}
