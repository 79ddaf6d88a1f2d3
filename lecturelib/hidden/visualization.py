"""Hidden cases of the visualization exercises (grader copy only)."""

SPECS = {
    "saliency_map": [
        {"model": "linear", "images": (2, 3, 5, 4), "classes": [2, 1], "num_classes": 4, "seed": 201},
        {"model": "cnn", "images": (4, 3, 4, 4), "classes": [1, 0, 2, 0], "seed": 202},
        {"model": "cnn", "images": (1, 2, 8, 6), "classes": [2], "seed": 203},
        {"model": "linear", "images": (3, 1, 3, 6), "classes": [0, 2, 1], "dtype": "float32", "seed": 204},
    ],
    "class_activation_map": [
        {"kind": "gap_identity", "features": (3, 4, 2, 3), "num_classes": 5, "classes": [4, 0, 4], "seed": 211},
        {"features": (2, 3, 5, 2), "num_classes": 3, "classes": [0, 2], "seed": 212},
        {"features": (4, 7, 2, 2), "num_classes": 7, "classes": [6, 1, 3, 1], "seed": 213},
        {"kind": "gap_identity", "features": (1, 8, 3, 3), "num_classes": 2, "classes": [0], "dtype": "float32",
         "seed": 214},
    ],
    "grad_cam": [
        {"kind": "cam_identity", "layer": "relu3", "images": (3, 3, 6, 10), "classes": [1, 0, 2], "seed": 221},
        {"layer": "conv2", "images": (4, 3, 6, 6), "classes": [1, 2, 0, 2], "num_classes": 3, "seed": 222},
        {"layer": "conv3", "images": (3, 2, 8, 4), "classes": [0, 2, 1], "seed": 223},
        {"layer": "conv1", "images": (2, 3, 4, 6), "classes": [2, 0], "seed": 224},
        {"layer": "bn2", "bn": True, "train": True, "images": (2, 3, 6, 8), "classes": [2, 0], "seed": 225},
        {"layer": "relu1", "frozen": ["conv1", "conv2", "conv3", "fc"], "images": (3, 3, 8, 8),
         "classes": [1, 1, 0], "seed": 226},
        {"layer": "conv3", "frozen": ["conv1"], "grads": True, "images": (2, 3, 8, 8), "classes": [2, 1],
         "seed": 227},
        {"layer": "bn2", "fail": True, "bn": True, "train": True, "images": (1, 3, 8, 8), "classes": [2],
         "seed": 228},
        {"layer": "conv2", "bn": True, "train": True, "grads": True, "images": (3, 3, 6, 6), "classes": [0, 2, 1],
         "dtype": "float32", "seed": 229},
    ],
    "occlusion_map": [
        {"model": "linear", "images": (3, 2, 5, 5), "classes": [2, 0, 1], "patch": 5, "stride": 2, "seed": 231},
        {"model": "linear", "images": (2, 3, 8, 6), "classes": [1, 0], "patch": 3, "stride": 1, "seed": 232},
        {"model": "cnn", "images": (2, 3, 6, 8), "classes": [0, 1], "patch": 2, "stride": 3, "seed": 233},
        {"model": "cnn", "images": (3, 2, 6, 6), "classes": [2, 2, 0], "patch": 4, "stride": 1, "seed": 234},
        {"model": "linear", "images": (1, 3, 6, 4), "classes": [2], "patch": 2, "stride": 2, "dtype": "float32",
         "seed": 235},
    ],
}
