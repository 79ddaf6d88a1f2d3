"""A procedurally generated "shapes" dataset shared by every topic of the lecture.

Each image shows a few coloured shapes (circle, square, triangle, five-pointed star) with random
position, size, rotation and colour on a background that is a flat colour, a noisy colour gradient
or a tinted crop of one of scikit-image's textures (grass, brick, gravel). Because the generator
knows where it painted every object, each image comes with exact labels for all six topics:

* a semantic mask (class id per pixel) for semantic segmentation,
* per-object boxes and labels for detection and DETR,
* per-object masks of the visible part of each object for instance segmentation,
* per-object visibility (visible share of the object's own area) and the ``ignore`` flags derived from
  it: objects hidden beyond ``MIN_VISIBILITY`` are evaluated as "ignore" (see :attr:`Shapes.ignore`),
* a single class label per image (``make_classification``) for classification and visualization,
* per-object keypoints (triangle corners, square corners, star tips, a circle's centre) with COCO's
  visibility flag, for keypoint estimation (Mask R-CNN's pose head; see :attr:`Shapes.keypoints`).

Everything is generated with numpy, vectorised over images, so 5,000 images of 64 x 64 take a couple
of seconds and no file is downloaded. The same arguments and seed always give the same data.

Seed convention used by the tests and notebooks: the training set is made with ``seed=0`` and the
held-out set ("another seed") with ``seed=1``, e.g.::

    train = make_shapes(5000, seed=0)
    test = make_shapes(1000, seed=1)

Class ids are indices into ``CLASSES``; 0 is the background.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
import torch

from ._validate import describe, require_array, require_float, require_int, require_tensor

__all__ = [
    "CLASSES",
    "NUM_CLASSES",
    "BACKGROUNDS",
    "MIN_VISIBLE_PIXELS",
    "MIN_VISIBILITY",
    "KEYPOINTS_PER_CLASS",
    "MAX_KEYPOINTS",
    "Sample",
    "Shapes",
    "make_shapes",
    "make_classification",
    "ShapesDataset",
    "detection_collate",
    "image_batch",
    "SAMPLE_IMAGES",
    "sample_image",
]

CLASSES = ("background", "circle", "square", "triangle", "star")
NUM_CLASSES = len(CLASSES)
BACKGROUNDS = ("plain", "noise", "texture", "mixed")

#: Objects with fewer visible pixels than this (after occlusion) are not painted at all.
MIN_VISIBLE_PIXELS = 8
#: Objects whose visible part is less than this share of their own area are flagged "ignore"
#: (``Shapes.ignore``): kept in the labels, but neither counted as missed nor as false when detected.
MIN_VISIBILITY = 0.25
#: Natural keypoints of each class: a circle has one (its centre), a square its 4 corners, a triangle its 3
#: corners, a star its 5 tips (background: none). See ``Shapes.keypoints`` for the order and the flags.
KEYPOINTS_PER_CLASS = (0, 1, 4, 3, 5)
#: Keypoint slots per object (the star's 5 tips); classes with fewer keypoints leave the last slots at v = 0.
MAX_KEYPOINTS = max(KEYPOINTS_PER_CLASS)

# Outline of every polygon class, as (number of points, inner radius / outer radius).
# A regular n-gon is a "star" whose inner vertices are its edge midpoints (ratio cos(pi / n)).
_POLYGONS = {
    2: (4, np.cos(np.pi / 4)),  # square
    3: (3, np.cos(np.pi / 3)),  # triangle
    4: (5, 0.45),               # star
}


def _circumradius_factors() -> np.ndarray:
    """(NUM_CLASSES,) circumradius of each class's shape whose area equals a unit circle's.

    A star polygon with n points and inner ratio q (circumradius 1) has area n q sin(pi / n).
    """
    factors = np.ones(NUM_CLASSES)
    for class_id, (n_points, ratio) in _POLYGONS.items():
        factors[class_id] = np.sqrt(np.pi / (n_points * ratio * np.sin(np.pi / n_points)))
    return factors


_CIRCUMRADIUS_FACTORS = _circumradius_factors()
_TEXTURE_NAMES = ("grass", "brick", "gravel")
_CHUNK = 256          # images generated at once (bounds the memory of the (n, K, H, W) arrays)
_MAX_ROUNDS = 50      # redraw attempts before giving up on an impossible layout
_MIN_CONTRAST = 0.45  # minimal RGB distance between an object and what lies under it
_GAP = 1.5            # minimal distance in pixels between the circumcircles of separate objects


# --------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Sample:
    """One image and its labels.

    image:          (H, W, 3) uint8
    semantic:       (H, W) int64 class id per pixel (0 = background)
    instance_masks: (K, H, W) bool, visible part of each object
    boxes:          (K, 4) float32 xyxy pixel coordinates, x2/y2 exclusive
    labels:         (K,) int64 class ids in 1..4
    visibility:     (K,) float32 visible pixels / pixels of the whole object (1 if not occluded)
    keypoints:      (K, MAX_KEYPOINTS, 3) float32 (x, y, v) per keypoint (see ``Shapes.keypoints``)
    """
    image: np.ndarray
    semantic: np.ndarray
    instance_masks: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    visibility: np.ndarray | None = None
    keypoints: np.ndarray | None = None

    def __post_init__(self):
        if self.visibility is None:
            self.visibility = np.ones(len(self.labels), np.float32)
        if self.keypoints is None:
            self.keypoints = np.zeros((len(self.labels), MAX_KEYPOINTS, 3), np.float32)

    @property
    def ignore(self) -> np.ndarray:
        """(K,) bool: objects hidden beyond ``MIN_VISIBILITY`` (see ``Shapes.ignore``)."""
        return self.visibility < MIN_VISIBILITY


@dataclasses.dataclass
class Shapes:
    """A set of shape images with all their labels.

    images:          (N, H, W, 3) uint8
    semantic:        (N, H, W) int64 class id per pixel; where objects overlap the topmost one wins
    instance_masks:  list of N arrays (K_i, H, W) bool, the visible part of each object
    boxes:           list of N arrays (K_i, 4) float32, xyxy pixel coordinates tight around the
                     visible mask, x2 and y2 exclusive (x2 - x1 = number of pixel columns)
    labels:          list of N arrays (K_i,) int64 class ids in 1..4
    background_kind: (N,) str, "plain", "noise" or "texture" for each image
    visibility:      list of N arrays (K_i,) float32, the visible share of each object's own area
                     (visible pixels / pixels of the whole shape; 1.0 when nothing covers it)
    keypoints:       list of N arrays (K_i, MAX_KEYPOINTS, 3) float32, (x, y, v) of each object's keypoints

    Keypoints (as COCO's ``keypoints`` field, x and y in the pixel coordinates of the boxes: pixel (i, j)
    covers [j, j + 1) x [i, i + 1)):

    * which: the shape's natural points, ``KEYPOINTS_PER_CLASS``: a square's 4 corners, a triangle's 3 corners,
      a star's 5 outer tips, and for a circle (no corners) its centre; slots beyond a class's count are (0, 0, 0);
    * order: clockwise as seen on the screen (y points down), starting from the topmost point (smallest y),
      so that slot k means the same for every object of a class whatever its rotation;
    * v, COCO's flag: 2 = visible; 1 = labelled but occluded: the pixel holding the point,
      (floor(y), floor(x)), is covered by an object painted later (listed later: objects are listed bottom to
      top), i.e. lies in the union of the later objects' masks; 0 = not labelled: outside the image, or a slot
      the class does not have (then x = y = 0). Like COCO, occluded points keep their true position.

    Ground truth under occlusion follows PASCAL VOC and COCO:

    * a box is the **visible** extent of its object (VOC's annotation guidelines: "the bounding box of the
      visible area of the object, not the estimated total extent"; COCO's boxes enclose the visible
      segmentation), never the amodal box of the whole shape; masks are the visible part too;
    * an object hidden beyond ``MIN_VISIBILITY`` (visible area < 25% of its own area) is flagged in
      :attr:`ignore`. It stays in ``boxes``/``labels``/``instance_masks`` (it is painted and the semantic mask
      shows it), and evaluation treats it as VOC treats "difficult" objects and COCO its "iscrowd" regions:
      a detection that matches it (and no regular object) is neither a true nor a false positive, and missing
      it costs no recall. Ignoring is the standard choice over dropping: a dropped object that is still
      visible would make a correct detection of it a false positive. Training does not ask the models to
      find these objects either (their anchors and queries are left out of the loss).
    """
    images: np.ndarray
    semantic: np.ndarray
    instance_masks: list
    boxes: list
    labels: list
    background_kind: np.ndarray
    visibility: list | None = None
    keypoints: list | None = None

    def __post_init__(self):
        if self.visibility is None:
            self.visibility = [np.ones(len(lab), np.float32) for lab in self.labels]
        if self.keypoints is None:
            self.keypoints = [np.zeros((len(lab), MAX_KEYPOINTS, 3), np.float32) for lab in self.labels]

    @property
    def ignore(self) -> list:
        """list of N (K_i,) bool arrays: True where an object's visible area is below ``MIN_VISIBILITY`` of
        its own area (heavily occluded; evaluated like VOC's "difficult" objects, see the class docstring)."""
        return [v < MIN_VISIBILITY for v in self.visibility]

    def targets(self, index: int) -> dict:
        """Ground truth of one image for ``lecturelib.evaluation``: {"boxes" (K, 4), "labels" (K,),
        "masks" (K, H, W), "ignore" (K,)} as numpy arrays."""
        i = self._check_index(index)
        return {"boxes": self.boxes[i], "labels": self.labels[i], "masks": self.instance_masks[i],
                "ignore": self.visibility[i] < MIN_VISIBILITY}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index) -> Sample:
        i = self._check_index(index)
        return Sample(self.images[i], self.semantic[i], self.instance_masks[i],
                      self.boxes[i], self.labels[i], self.visibility[i], self.keypoints[i])

    def _check_index(self, index) -> int:
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int (use .subset(indices) for several images), "
                            f"got {type(index).__name__}")
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} images")
        return index % len(self)

    @property
    def size(self) -> int:
        """Side length of the (square) images in pixels."""
        return self.images.shape[1]

    def image_tensor(self) -> torch.Tensor:
        """All images as float32 (N, 3, H, W) in [0, 1]."""
        return torch.from_numpy(self.images).permute(0, 3, 1, 2).float().div_(255)

    def semantic_tensor(self) -> torch.Tensor:
        """All semantic masks as int64 (N, H, W)."""
        return torch.from_numpy(self.semantic)

    def class_labels(self) -> np.ndarray:
        """int64 (N,) class id of each image's single object (for ``make_classification`` data)."""
        counts = np.array([len(lab) for lab in self.labels])
        if np.any(counts != 1):
            bad = int(np.flatnonzero(counts != 1)[0])
            raise ValueError(f"class_labels() needs exactly one object per image, image {bad} has "
                             f"{counts[bad]}; use make_classification() for such data")
        return np.array([lab[0] for lab in self.labels], dtype=np.int64)

    def object_counts(self) -> np.ndarray:
        """int64 (N,) number of objects in each image."""
        return np.array([len(lab) for lab in self.labels], dtype=np.int64)

    def subset(self, indices) -> "Shapes":
        """A new Shapes holding the images at ``indices`` (ints, a slice or a boolean mask)."""
        if isinstance(indices, slice):
            indices = np.arange(len(self))[indices]
        indices = np.asarray(indices)
        if indices.dtype == bool:
            if indices.shape != (len(self),):
                raise ValueError(f"indices as a boolean mask must have shape ({len(self)},), "
                                 f"got {indices.shape}")
            indices = np.flatnonzero(indices)
        if indices.ndim != 1 or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
            raise TypeError(f"indices must be a 1-d sequence of ints, a slice or a boolean mask, "
                            f"got dtype {indices.dtype} and shape {indices.shape}")
        if indices.size and (indices.max() >= len(self) or indices.min() < -len(self)):
            raise IndexError(f"indices out of range for {len(self)} images")
        indices = indices.astype(np.int64) % max(len(self), 1)
        return Shapes(images=self.images[indices], semantic=self.semantic[indices],
                      instance_masks=[self.instance_masks[i] for i in indices],
                      boxes=[self.boxes[i] for i in indices],
                      labels=[self.labels[i] for i in indices],
                      background_kind=self.background_kind[indices],
                      visibility=[self.visibility[i] for i in indices],
                      keypoints=[self.keypoints[i] for i in indices])


# --------------------------------------------------------------------------------------------
# Public generators
# --------------------------------------------------------------------------------------------

def make_shapes(n: int, *, size: int = 64, seed: int = 0, min_objects: int = 1, max_objects: int = 4,
                background: str = "mixed", occlusion: bool = True,
                min_radius: float = 0.09, max_radius: float = 0.2) -> Shapes:
    """Generate ``n`` images with ``min_objects``..``max_objects`` shapes each.

    size:        side length of the square images in pixels (>= 16)
    seed:        the same seed and arguments always give the same data (train 0, held-out 1)
    background:  "plain" (flat colour), "noise" (colour gradient plus pixel noise),
                 "texture" (tinted crop of grass / brick / gravel) or "mixed" (half noise, half texture)
    occlusion:   True: objects are placed independently and later ones are painted over earlier ones
                 (boxes and masks are the visible part; objects less than ``MIN_VISIBILITY`` visible are
                 flagged in ``Shapes.ignore``); False: objects never overlap or touch
    min_radius, max_radius: size of the shapes as a fraction of ``size``: the radius of the circle
                 with the same area, so every class is equally large on average (the corners of a
                 triangle or star reach about 1.55 times as far from the centre, a square's 1.25 times)

    Objects left with fewer than ``MIN_VISIBLE_PIXELS`` visible pixels are not painted, and images
    that end up with fewer than ``min_objects`` objects are redrawn, so every count is within range.
    """
    n = require_int("n", n, minimum=1)
    size = require_int("size", size, minimum=16)
    seed = require_int("seed", seed, minimum=0)
    min_objects = require_int("min_objects", min_objects, minimum=1)
    max_objects = require_int("max_objects", max_objects, minimum=1)
    if max_objects < min_objects:
        raise ValueError(f"max_objects must be >= min_objects, got max_objects={max_objects} "
                         f"and min_objects={min_objects}")
    background = _check_background(background)
    if not isinstance(occlusion, (bool, np.bool_)):
        raise TypeError(f"occlusion must be True or False, got {type(occlusion).__name__}")
    min_radius = require_float("min_radius", min_radius, minimum=0.02, maximum=0.5)
    max_radius = require_float("max_radius", max_radius, minimum=0.02, maximum=0.5)
    if max_radius < min_radius:
        raise ValueError(f"max_radius must be >= min_radius, got max_radius={max_radius} "
                         f"and min_radius={min_radius}")
    if not occlusion:
        _check_room(size, min_objects, min_radius * size)
    return _generate(n, size=size, seed=seed, min_objects=min_objects, max_objects=max_objects,
                     background=background, occlusion=bool(occlusion),
                     radius_range=(min_radius * size, max_radius * size), balanced_single=False)


def make_classification(n: int, *, size: int = 64, seed: int = 0, background: str = "mixed",
                        min_radius: float = 0.15, max_radius: float = 0.3) -> Shapes:
    """Generate ``n`` images with exactly one shape each, for image classification.

    The four classes appear equally often (up to one image) in random order;
    ``shapes.class_labels()`` gives the int64 (N,) class ids (1..4).
    Objects are a bit larger than in ``make_shapes`` so that a classifier's heat map is visible.
    """
    n = require_int("n", n, minimum=1)
    size = require_int("size", size, minimum=16)
    seed = require_int("seed", seed, minimum=0)
    background = _check_background(background)
    min_radius = require_float("min_radius", min_radius, minimum=0.02, maximum=0.5)
    max_radius = require_float("max_radius", max_radius, minimum=0.02, maximum=0.5)
    if max_radius < min_radius:
        raise ValueError(f"max_radius must be >= min_radius, got max_radius={max_radius} "
                         f"and min_radius={min_radius}")
    return _generate(n, size=size, seed=seed, min_objects=1, max_objects=1, background=background,
                     occlusion=True, radius_range=(min_radius * size, max_radius * size),
                     balanced_single=True)


def _check_room(size: int, min_objects: int, min_radius_px: float, gap: float = _GAP) -> None:
    """Fail fast when ``min_objects`` separate circles cannot fit (densest packing covers < 91%)."""
    needed = min_objects * np.pi * (min_radius_px + gap / 2) ** 2
    if needed > 0.9 * size * size:
        raise ValueError(f"min_objects={min_objects} non-overlapping objects of radius >= "
                         f"{min_radius_px:.1f} px cannot fit in a {size}x{size} image; "
                         f"lower min_objects or min_radius")


def _check_background(background) -> str:
    if not isinstance(background, str):
        raise TypeError(f"background must be a str, one of {BACKGROUNDS}, got {type(background).__name__}")
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    return background


# --------------------------------------------------------------------------------------------
# Generation, vectorised over a chunk of images
# --------------------------------------------------------------------------------------------

def _generate(n, *, size, seed, min_objects, max_objects, background, occlusion, radius_range,
              balanced_single) -> Shapes:
    rng = np.random.default_rng(seed)
    textures = _load_textures() if background in ("texture", "mixed") else None
    forced_labels = None
    if balanced_single:
        forced_labels = rng.permutation(np.arange(n) % (NUM_CLASSES - 1) + 1)

    images = np.empty((n, size, size, 3), np.uint8)
    semantic = np.empty((n, size, size), np.int64)
    kinds = np.empty(n, dtype="<U7")
    instance_masks, boxes, labels, visibility, keypoints = [], [], [], [], []
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        chunk_labels = None if forced_labels is None else forced_labels[start:start + m, None]
        layout, masks = _draw_layouts(rng, m, size, min_objects, max_objects, occlusion,
                                      radius_range, chunk_labels)
        canvas, kind = _draw_backgrounds(rng, m, size, background, textures)
        sem = np.zeros((m, size, size), np.int64)
        for k in range(max_objects):  # paint bottom to top
            mask_k = masks[:, k]
            color = _contrasting_colors(rng, canvas, mask_k)
            image_of_pixel = np.nonzero(mask_k)[0]
            canvas[mask_k] = color[image_of_pixel]
            sem[mask_k] = layout["label"][image_of_pixel, k]
        canvas = _add_pixel_noise(rng, canvas, kind == "noise")
        images[start:start + m] = np.round(np.clip(canvas, 0, 1) * 255).astype(np.uint8)
        semantic[start:start + m] = sem
        kinds[start:start + m] = kind
        visible = _visible_parts(masks)
        chunk_boxes = _tight_boxes(visible)
        shown = visible.sum((2, 3)) / np.maximum(masks.sum((2, 3)), 1)
        chunk_keypoints = _keypoints(layout, masks)
        for i in range(m):
            keep = layout["active"][i]
            instance_masks.append(visible[i, keep])
            boxes.append(chunk_boxes[i, keep])
            labels.append(layout["label"][i, keep].astype(np.int64))
            visibility.append(shown[i, keep].astype(np.float32))
            keypoints.append(chunk_keypoints[i, keep])
    return Shapes(images, semantic, instance_masks, boxes, labels, kinds, visibility, keypoints)


def _draw_layouts(rng, m, size, min_objects, max_objects, occlusion, radius_range, forced_labels):
    """Object parameters (dict of (m, K) arrays) and their full masks (m, K, H, W) bool.

    Images whose layout fails (objects hidden by occlusion, or no room without overlap)
    are redrawn until each has at least ``min_objects`` objects.
    """
    layout = _random_layout(rng, m, size, min_objects, max_objects, radius_range, forced_labels)
    masks = np.zeros((m, max_objects, size, size), bool)
    todo = np.arange(m)
    for _ in range(_MAX_ROUNDS):
        sub = {key: value[todo] for key, value in layout.items()}
        if not occlusion:
            _place_without_overlap(rng, sub, size)
        sub_masks = _shape_masks(sub, size) & sub["active"][:, :, None, None]
        if occlusion:
            _drop_hidden_objects(sub, sub_masks)
        for key in layout:
            layout[key][todo] = sub[key]
        masks[todo] = sub_masks
        short = sub["active"].sum(1) < min_objects
        if not short.any():
            return layout, masks
        todo = todo[short]
        fresh = _random_layout(rng, len(todo), size, min_objects, max_objects, radius_range,
                               None if forced_labels is None else forced_labels[todo])
        for key in layout:
            layout[key][todo] = fresh[key]
    raise ValueError(f"could not place min_objects={min_objects} objects in a {size}x{size} image "
                     f"with radius up to {radius_range[1]:.1f} px; lower min_objects or max_radius")


def _random_layout(rng, m, size, min_objects, max_objects, radius_range, forced_labels):
    """Random number of objects, class, circumradius (px), centre (px) and rotation per slot.

    ``radius_range`` bounds the equal-area radius; the layout stores the circumradius.
    """
    count = rng.integers(min_objects, max_objects + 1, size=m)
    shape = (m, max_objects)
    label = rng.integers(1, NUM_CLASSES, size=shape)
    if forced_labels is not None:
        label[:] = forced_labels
    radius = rng.uniform(*radius_range, size=shape) * _CIRCUMRADIUS_FACTORS[label]
    cx, cy = _random_centres(rng, radius, size)
    return {
        "active": np.arange(max_objects)[None, :] < count[:, None],
        "label": label,
        "radius": radius,
        "cx": cx,
        "cy": cy,
        "rotation": rng.uniform(0, 2 * np.pi, size=shape),
    }


def _random_centres(rng, radius, size):
    """Centres that keep a shape of the given circumradius inside the image."""
    margin = np.minimum(radius, size / 2)
    cx = rng.uniform(margin, size - margin)
    cy = rng.uniform(margin, size - margin)
    return cx, cy


def _place_without_overlap(rng, layout, size, tries=50, gap=_GAP):
    """Rejection sampling: move each object until its circumcircle is clear of earlier objects.

    Objects that find no room after ``tries`` proposals are deactivated.
    """
    active, radius, cx, cy = layout["active"], layout["radius"], layout["cx"], layout["cy"]
    for k in range(1, active.shape[1]):
        pending = np.flatnonzero(active[:, k])
        for _ in range(tries):
            if pending.size == 0:
                break
            earlier = active[pending, :k]
            dist = np.hypot(cx[pending, :k] - cx[pending, k, None], cy[pending, :k] - cy[pending, k, None])
            clear = dist >= radius[pending, :k] + radius[pending, k, None] + gap
            ok = np.all(clear | ~earlier, axis=1)
            pending = pending[~ok]
            new_x, new_y = _random_centres(rng, radius[pending, k], size)
            cx[pending, k], cy[pending, k] = new_x, new_y
        active[pending, k] = False


def _shape_masks(layout, size) -> np.ndarray:
    """(m, K, H, W) bool mask of every object, inactive ones included.

    A pixel at distance r and angle phi from the centre is inside if r <= rho(phi), the distance to
    the outline in that direction. Polygons and stars repeat with period 2 pi / points; folded into
    half a period, the outline is a straight segment from an outer vertex (angle 0, radius R) to an
    inner point (angle half, radius R_in), whose polar equation is
    rho(t) = R R_in sin(half) / (R sin(t) + R_in sin(half - t)).

    To save time the test runs in a square window around each object, which is then pasted
    into the full-size masks.
    """
    m, k = layout["label"].shape
    window = int(min(size, 2 * np.ceil(layout["radius"].max()) + 2))
    left = np.clip(np.floor(layout["cx"]).astype(int) - window // 2, 0, size - window)
    top = np.clip(np.floor(layout["cy"]).astype(int) - window // 2, 0, size - window)
    offsets = np.arange(window)
    coords = offsets.astype(np.float32) + 0.5  # pixel centres
    dx = (left - layout["cx"]).astype(np.float32)[:, :, None, None] + coords[None, None, None, :]
    dy = (top - layout["cy"]).astype(np.float32)[:, :, None, None] + coords[None, None, :, None]
    inside = dx * dx + dy * dy <= _outline_radius(layout, dx, dy) ** 2

    masks = np.zeros((m, k, size, size), bool)
    rows = (top[:, :, None] + offsets)[:, :, :, None]
    cols = (left[:, :, None] + offsets)[:, :, None, :]
    masks[np.arange(m)[:, None, None, None], np.arange(k)[None, :, None, None], rows, cols] = inside
    return masks


def _outline_radius(layout, dx, dy) -> np.ndarray:
    """rho: distance from the centre to the outline in the direction of each (dx, dy) offset."""
    angle = np.arctan2(dy, dx) - layout["rotation"][:, :, None, None].astype(np.float32)
    label = layout["label"]
    outer = layout["radius"].astype(np.float32)
    points = np.ones_like(outer)
    inner_ratio = np.ones_like(outer)
    for class_id, (n_points, ratio) in _POLYGONS.items():
        points[label == class_id] = n_points
        inner_ratio[label == class_id] = ratio
    half = (np.pi / points)[:, :, None, None]
    inner = (outer * inner_ratio)[:, :, None, None]
    outer = outer[:, :, None, None]

    t = np.mod(angle, 2 * half)
    t = np.minimum(t, 2 * half - t)
    rho = outer * inner * np.sin(half) / (outer * np.sin(t) + inner * np.sin(half - t))
    is_circle = (label == CLASSES.index("circle"))[:, :, None, None]
    return np.where(is_circle, outer, rho)


def _visible_parts(masks: np.ndarray) -> np.ndarray:
    """(m, K, H, W): the part of each mask not covered by any later (higher) object."""
    visible = masks.copy()
    covered = np.zeros_like(masks[:, 0])
    for k in range(masks.shape[1] - 1, -1, -1):
        visible[:, k] &= ~covered
        covered |= masks[:, k]
    return visible


def _drop_hidden_objects(layout, masks):
    """Deactivate (and erase) objects with fewer than MIN_VISIBLE_PIXELS visible pixels."""
    hidden = _visible_parts(masks).sum((2, 3)) < MIN_VISIBLE_PIXELS
    hidden &= layout["active"]
    layout["active"] &= ~hidden
    masks[hidden] = False


def _keypoints(layout, masks: np.ndarray) -> np.ndarray:
    """(m, K, MAX_KEYPOINTS, 3) float32 (x, y, v) of every object (the rules: ``Shapes`` docstring).

    Computed from the layout alone (no random draws: the images and other labels of a seed do not change).
    A polygon's outer vertices lie at angles rotation + 2 pi k / n from its centre, at the circumradius.
    """
    label, rotation = layout["label"], layout["rotation"]
    m, k_max = label.shape
    size = masks.shape[-1]
    count = np.asarray(KEYPOINTS_PER_CLASS)[label]                              # (m, K)
    slot = np.arange(MAX_KEYPOINTS)
    angle = rotation[..., None] + 2 * np.pi * slot / np.maximum(count, 1)[..., None]
    radius = np.where(count > 1, layout["radius"], 0.0)[..., None]                  # a circle: its centre
    x = layout["cx"][..., None] + radius * np.cos(angle)
    y = layout["cy"][..., None] + radius * np.sin(angle)
    used = slot < count[..., None]
    # Clockwise on screen (y down) = increasing angle; start at the topmost used point.
    top = np.argmin(np.where(used, y, np.inf), axis=-1)
    order = np.where(used, (top[..., None] + slot) % np.maximum(count, 1)[..., None], slot)
    x, y = np.take_along_axis(x, order, -1), np.take_along_axis(y, order, -1)
    inside = used & (x >= 0) & (x < size) & (y >= 0) & (y < size)
    col = np.clip(np.floor(x), 0, size - 1).astype(np.int64)
    row = np.clip(np.floor(y), 0, size - 1).astype(np.int64)
    # covered[i, k] = union of the masks of the objects painted after k (bottom to top)
    covered = np.zeros_like(masks)
    covered[:, :-1] = np.logical_or.accumulate(masks[:, :0:-1], axis=1)[:, ::-1]
    occluded = covered[np.arange(m)[:, None, None], np.arange(k_max)[None, :, None], row, col]
    v = np.where(inside, np.where(occluded, 1, 2), 0)
    out = np.stack([np.where(inside, x, 0.0), np.where(inside, y, 0.0), v], axis=-1)
    return out.astype(np.float32)


def _tight_boxes(masks: np.ndarray) -> np.ndarray:
    """(m, K, 4) float32 xyxy boxes around (m, K, H, W) masks; x2, y2 exclusive; zeros if empty."""
    rows = masks.any(axis=3)
    cols = masks.any(axis=2)
    size_y, size_x = rows.shape[-1], cols.shape[-1]
    y1 = rows.argmax(-1)
    y2 = size_y - rows[..., ::-1].argmax(-1)
    x1 = cols.argmax(-1)
    x2 = size_x - cols[..., ::-1].argmax(-1)
    boxes = np.stack([x1, y1, x2, y2], axis=-1).astype(np.float32)
    boxes[~rows.any(-1)] = 0
    return boxes


# --------------------------------------------------------------------------------------------
# Colours and backgrounds
# --------------------------------------------------------------------------------------------

def _contrasting_colors(rng, canvas, mask, candidates=16):
    """(m, 3) colour per image far (in RGB) from the mean of what lies under ``mask`` now."""
    m = len(canvas)
    weights = mask.reshape(m, 1, -1).astype(np.float32)
    area = weights.sum(-1)
    under = (weights @ canvas.reshape(m, -1, 3))[:, 0] / np.maximum(area, 1)
    choices = rng.uniform(0, 1, size=(m, candidates, 3)).astype(np.float32)
    distance = np.linalg.norm(choices - under[:, None, :], axis=-1)
    passing = distance >= _MIN_CONTRAST
    pick = np.where(passing.any(1), passing.argmax(1), distance.argmax(1))
    return choices[np.arange(m), pick]


def _draw_backgrounds(rng, m, size, background, textures):
    """(m, H, W, 3) float32 backgrounds in [0, 1] and the kind of each, (m,) str."""
    if background == "mixed":
        kind = np.where(rng.random(m) < 0.5, "noise", "texture")
    else:
        kind = np.full(m, background)
    canvas = np.empty((m, size, size, 3), np.float32)
    for name, draw in (("plain", _plain), ("noise", _gradient), ("texture", _tinted_texture)):
        idx = np.flatnonzero(kind == name)
        if idx.size:
            canvas[idx] = draw(rng, idx.size, size, textures)
    return canvas, kind.astype("<U7")


def _plain(rng, m, size, textures=None):
    color = rng.uniform(0, 1, size=(m, 1, 1, 3)).astype(np.float32)
    return np.broadcast_to(color, (m, size, size, 3))


def _gradient(rng, m, size, textures=None):
    """Linear blend between two random colours along a random direction."""
    start = rng.uniform(0, 1, size=(m, 1, 1, 3)).astype(np.float32)
    end = rng.uniform(0, 1, size=(m, 1, 1, 3)).astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi, size=(m, 1, 1))
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    along = coords[None, None, :] * np.cos(direction) + coords[None, :, None] * np.sin(direction)
    t = (along / np.sqrt(2) + 0.5).astype(np.float32)[..., None]  # in [0, 1]
    return start + t * (end - start)


def _tinted_texture(rng, m, size, textures):
    """Random crops of the textures (at scale 1 or 1/2), mapped onto a random dark-light colour ramp."""
    stacks = [stack for stack in textures if stack.shape[1] >= size]
    if not stacks:
        raise ValueError(f"size must be <= {textures[0].shape[1]} for textured backgrounds, got {size}")
    scale = rng.integers(0, len(stacks), size=m)
    crops = np.empty((m, size, size), np.float32)
    offsets = np.arange(size)
    for s, stack in enumerate(stacks):
        idx = np.flatnonzero(scale == s)
        which = rng.integers(0, len(stack), size=idx.size)
        y0 = rng.integers(0, stack.shape[1] - size + 1, size=idx.size)
        x0 = rng.integers(0, stack.shape[2] - size + 1, size=idx.size)
        crops[idx] = stack[which[:, None, None], (y0[:, None] + offsets)[:, :, None],
                           (x0[:, None] + offsets)[:, None, :]]
    low = np.percentile(crops, 2, axis=(1, 2), keepdims=True)
    high = np.percentile(crops, 98, axis=(1, 2), keepdims=True)
    t = np.clip((crops - low) / np.maximum(high - low, 1e-3), 0, 1)[..., None]
    dark = rng.uniform(0, 0.6, size=(m, 1, 1, 3)).astype(np.float32)
    light = np.clip(dark + rng.uniform(0.2, 0.5, size=(m, 1, 1, 3)), 0, 1).astype(np.float32)
    return dark + t * (light - dark)


def _add_pixel_noise(rng, canvas, which):
    """Gaussian pixel noise (sigma 0.02-0.08) on the images selected by the bool (m,) ``which``."""
    idx = np.flatnonzero(which)
    if idx.size:
        sigma = rng.uniform(0.02, 0.08, size=(idx.size, 1, 1, 1)).astype(np.float32)
        noise = rng.standard_normal(size=(idx.size,) + canvas.shape[1:], dtype=np.float32)
        canvas = canvas.copy()
        canvas[idx] += sigma * noise
    return canvas


@functools.lru_cache(maxsize=1)
def _load_textures() -> tuple[np.ndarray, np.ndarray]:
    """Grass, brick and gravel as float32 stacks in [0, 1]: [(3, 512, 512) at scale 1, (3, 256, 256) at 1/2].

    The PNGs that ship inside scikit-image, decoded with Pillow: the same pixels as ``skimage.data.grass()``
    (tested), without the imports behind ``skimage.data`` (measured: 0.09 s instead of 0.30 s, paid by every
    notebook and every grading kernel that makes textured images); decoded once per process."""
    from importlib.resources import files

    from PIL import Image
    folder = files("skimage.data")
    full = np.stack([np.asarray(Image.open(folder.joinpath(f"{name}.png")))[:512, :512]
                     for name in _TEXTURE_NAMES])
    full = full.astype(np.float32) / 255
    half = full.reshape(len(full), 256, 2, 256, 2).mean((2, 4))
    for stack in (full, half):
        stack.flags.writeable = False     # loaded once per process and shared by every call
    return full, half


# --------------------------------------------------------------------------------------------
# torch Dataset
# --------------------------------------------------------------------------------------------

class ShapesDataset(torch.utils.data.Dataset):
    """A ``Shapes`` as a torch Dataset.

    target="semantic":  (image (3, H, W) float32 in [0, 1], semantic (H, W) int64)
    target="detection": (image, {"boxes": (K, 4) float32 xyxy, "labels": (K,) int64,
                                  "masks": (K, H, W) bool}); batch with ``collate_fn=detection_collate``
    target="class":     (image, class id int64 scalar), for one-object images (``make_classification``)
    """
    TARGETS = ("semantic", "detection", "class")

    def __init__(self, shapes: Shapes, target: str = "semantic"):
        if not isinstance(shapes, Shapes):
            raise TypeError(f"shapes must be a Shapes (from make_shapes), got {type(shapes).__name__}")
        if target not in self.TARGETS:
            raise ValueError(f"target must be one of {self.TARGETS}, got {target!r}")
        self.shapes = shapes
        self.target = target
        self._class_labels = shapes.class_labels() if target == "class" else None

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, index):
        i = self.shapes._check_index(index)
        image = torch.from_numpy(self.shapes.images[i]).permute(2, 0, 1).float().div_(255)
        if self.target == "semantic":
            return image, torch.from_numpy(self.shapes.semantic[i])
        if self.target == "class":
            return image, torch.tensor(self._class_labels[i])
        return image, {
            "boxes": torch.from_numpy(self.shapes.boxes[i]),
            "labels": torch.from_numpy(self.shapes.labels[i]),
            "masks": torch.from_numpy(self.shapes.instance_masks[i]),
        }


def image_batch(images) -> torch.Tensor:
    """A model's input (N, 3, H, W) float in [0, 1] from a Shapes, a uint8 (N, H, W, 3) array or a float tensor."""
    if isinstance(images, Shapes):
        return images.image_tensor()
    if isinstance(images, np.ndarray):
        array = require_array("images", images, ndim=4)
        if array.dtype != np.uint8 or array.shape[-1] != 3:
            raise ValueError(f"images as a numpy array must be uint8 (N, H, W, 3), got {describe(array)}")
        return torch.from_numpy(array).permute(0, 3, 1, 2).float().div_(255)
    return require_tensor("images", images, ndim=4, floating=True)


def detection_collate(batch: Sequence):
    """Collate (image, target dict) pairs: images stacked to (B, 3, H, W), targets kept as a list."""
    images = torch.stack([image for image, _ in batch])
    targets = [target for _, target in batch]
    return images, targets


# --------------------------------------------------------------------------------------------
# Real photos shipped with scikit-image (no download)
# --------------------------------------------------------------------------------------------

# name -> scikit-image loader; all of these files ship inside the scikit-image wheel.
_PHOTO_LOADERS = {
    "cat": "chelsea",
    "astronaut": "astronaut",
    "coffee": "coffee",
    "rocket": "rocket",
    "camera": "camera",
    "coins": "coins",
    "moon": "moon",
    "hubble": "hubble_deep_field",
    "immunohistochemistry": "immunohistochemistry",
    "retina": "retina",
}
SAMPLE_IMAGES = tuple(_PHOTO_LOADERS)


def sample_image(name: str = "cat") -> np.ndarray:
    """A real photo shipped with scikit-image, as (H, W, 3) uint8 (grey photos repeated to 3 channels).

    name: one of SAMPLE_IMAGES ("cat" is scikit-image's "chelsea").
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {SAMPLE_IMAGES}, got {type(name).__name__}")
    if name not in _PHOTO_LOADERS:
        raise ValueError(f"name must be one of {SAMPLE_IMAGES}, got {name!r}")
    import skimage.data
    image = np.asarray(getattr(skimage.data, _PHOTO_LOADERS[name])())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3].astype(np.uint8))
