"""Hidden cases of the transformers-recap exercises (grader copy only). ``about`` is what the feedback may show."""

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
        {"kind": "error", "tokens": 3, "experts": 2, "k": 3, "seed": 135, "about": "k > E: must raise ValueError"},
    ],
    "load_balancing_loss": [
        {"name": "perfect balance", "tokens": 12, "experts": 6, "k": 1, "routing": "balanced",
         "about": "perfect balance"},
        {"name": "collapse", "tokens": 5, "experts": 8, "k": 2, "routing": "collapsed", "about": "collapse, k = 2"},
        {"tokens": 16, "experts": 8, "k": 2, "seed": 140, "bias": 3.0, "about": "one favoured expert"},
        {"tokens": 3, "experts": 3, "k": 1, "seed": 141, "about": "k = 1 (Switch)"},
        {"tokens": 9, "experts": 4, "k": 4, "seed": 142, "dtype": "float32", "about": "k = E, float32"},
    ],
}
