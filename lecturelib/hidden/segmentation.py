"""Hidden cases of the semantic-segmentation exercises (grader copy only)."""

SPECS = {
    "nearest_unpool": [
        {"shape": (3, 2, 5, 2), "scale": 2, "seed": 101, "about": "batch of 3, non-square"},
        {"shape": (1, 4, 3, 3), "scale": 4, "seed": 102, "about": "larger scale"},
        {"shape": (2, 1, 1, 6), "scale": 3, "dtype": "float32", "seed": 103, "about": "float32 input"},
    ],
    "bed_of_nails_unpool": [
        {"shape": (3, 2, 5, 2), "scale": 2, "seed": 111, "about": "batch of 3, non-square"},
        {"shape": (1, 4, 3, 3), "scale": 4, "seed": 112, "about": "larger scale"},
        {"shape": (2, 1, 1, 6), "scale": 3, "dtype": "float32", "seed": 113, "about": "float32 input"},
    ],
    "max_unpool": [
        {"shape": (2, 2, 7, 5), "kernel": 2, "seed": 121, "about": "odd image size"},
        {"shape": (1, 3, 9, 6), "kernel": 3, "seed": 122, "about": "3x3 windows"},
        {"shape": (3, 1, 8, 12), "kernel": 4, "seed": 123, "about": "4x4 windows, batch"},
    ],
    "conv_transpose_output_size": [
        {"name": "stride larger than the kernel", "settings": [(5, 2, 3, 0), (7, 1, 4, 0), (2, 3, 5, 1)]},
        {"name": "padding and odd kernels", "settings": [(6, 5, 2, 2), (9, 7, 3, 3), (10, 4, 2, 1), (1, 5, 1, 2)]},
    ],
    "conv_transpose2d": [
        {"kind": "impulse", "x": (1, 1, 4, 5), "c_out": 1, "k": (3, 2), "stride": 3, "padding": 1, "at": (2, 4),
         "seed": 130, "about": "impulse response, non-square kernel"},
        {"x": (3, 2, 4, 3), "c_out": 5, "k": 3, "stride": 2, "padding": 0, "seed": 131, "about": "C_in != C_out, batch"},
        {"x": (2, 3, 3, 5), "c_out": 3, "k": 2, "stride": 3, "padding": 0, "bias": True, "seed": 132, "about": "stride larger than the kernel"},
        {"x": (1, 2, 5, 4), "c_out": 4, "k": 5, "stride": 2, "padding": 2, "seed": 133, "about": "kernel 5, stride 2, padding 2"},
        {"x": (2, 4, 3, 3), "c_out": 4, "k": 3, "stride": 1, "padding": 2, "bias": True, "seed": 134, "about": "padding 2, bias"},
        {"x": (1, 1, 6, 2), "c_out": 2, "k": (4, 3), "stride": 2, "padding": 1, "seed": 135, "about": "non-square kernel"},
        {"x": (2, 3, 4, 4), "c_out": 3, "k": 3, "stride": 2, "padding": 1, "seed": 139, "about": "kernel 3, stride 2, padding 1"},
        {"kind": "linearity", "x": (2, 3, 4, 3), "c_out": 2, "k": 3, "stride": 3, "padding": 1, "seed": 136},
        {"kind": "adjoint", "x": (1, 3, 5, 4), "c_out": 2, "k": 5, "stride": 2, "padding": 2, "seed": 137},
        {"x": (2, 2, 4, 3), "c_out": 3, "k": 3, "stride": 2, "padding": 1, "bias": True, "dtype": "float32",
         "seed": 138, "about": "float32 input"},
    ],
    "mean_iou": [
        {"num_classes": 5, "shape": (3, 8, 9), "absent": (0, 3), "seed": 141, "about": "two classes absent"},
        {"num_classes": 2, "shape": (17,), "seed": 142, "about": "1-D labels"},
        {"num_classes": 6, "shape": (4, 6, 6), "seed": 143, "about": "6 classes, batch of 4"},
        {"name": "one class only, predicted perfectly", "num_classes": 4, "shape": (5, 5), "absent": (0, 1, 3),
         "seed": 144},
    ],
}
