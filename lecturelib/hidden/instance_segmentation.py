"""Hidden cases of the instance-segmentation exercises (grader copy only). ``about`` is what the feedback may show."""

SPECS = {
    "mask_targets": [
        {"image": (50, 70), "gt": 4, "rois": 9, "M": 28, "seed": 101, "about": "M = 28, many RoIs"},
        {"image": (33, 45), "gt": 1, "rois": 1, "M": 5, "seed": 102, "about": "a single RoI"},
        {"image": (60, 44), "gt": 3, "rois": 6, "M": 12, "seed": 103, "jitter": 0.5, "about": "loose boxes"},
        {"image": (44, 60), "gt": 2, "rois": 4, "M": 9, "seed": 104, "outside": True,
         "about": "boxes over the image border"},
        {"image": (36, 36), "gt": 3, "rois": 5, "M": 8, "seed": 105, "mask_dtype": "float",
         "about": "float ground-truth masks"},
        {"image": (30, 40), "gt": 2, "rois": 0, "M": 7, "seed": 106, "about": "no RoIs"},
    ],
    "mask_loss": [
        {"rois": 6, "classes": 5, "M": 8, "seed": 111, "dtype": "float32", "about": "float32"},
        {"rois": 1, "classes": 2, "M": 3, "seed": 112, "about": "a single RoI"},
        {"rois": 5, "classes": 4, "M": 5, "seed": 113, "scale": 300.0, "about": "very large logits"},
        {"rois": 4, "classes": 3, "M": 7, "seed": 114, "soft": True, "about": "soft targets"},
        {"rois": 3, "classes": 1, "M": 4, "seed": 115, "about": "one class"},
    ],
    "paste_masks": [
        {"image": (50, 38), "rois": 4, "M": 28, "seed": 121, "about": "M = 28"},
        {"image": (30, 44), "rois": 3, "M": 5, "seed": 122, "sizes": (0.6, 0.95), "about": "large boxes"},
        {"image": (64, 64), "rois": 3, "M": 16, "seed": 123, "sizes": (0.05, 0.15), "about": "small boxes"},
        {"image": (40, 52), "rois": 3, "M": 10, "seed": 124, "threshold": 0.7, "outside": True,
         "about": "threshold 0.7, boxes over the border"},
        {"image": (26, 34), "rois": 2, "M": 7, "seed": 125, "masks": "full", "dtype": "float64",
         "about": "all-ones masks, float64"},
        {"image": (20, 24), "rois": 0, "M": 6, "seed": 126, "about": "no masks"},
    ],
}
