"""Tests of the shapes dataset (lecturelib.data)."""
import numpy as np
import pytest
import torch

from lecturelib import data
from lecturelib.data import (CLASSES, MIN_VISIBILITY, MIN_VISIBLE_PIXELS, NUM_CLASSES, SAMPLE_IMAGES, Sample, Shapes,
                             ShapesDataset, detection_collate, make_classification, make_shapes,
                             sample_image)


@pytest.fixture(scope="module")
def shapes():
    return make_shapes(300, seed=0)


@pytest.fixture(scope="module")
def separated():
    return make_shapes(200, seed=0, occlusion=False)


def test_classes():
    assert CLASSES == ("background", "circle", "square", "triangle", "star")
    assert NUM_CLASSES == 5


def test_types_and_shapes(shapes):
    n = len(shapes)
    assert n == 300
    assert shapes.images.shape == (n, 64, 64, 3) and shapes.images.dtype == np.uint8
    assert shapes.semantic.shape == (n, 64, 64) and shapes.semantic.dtype == np.int64
    assert len(shapes.instance_masks) == len(shapes.boxes) == len(shapes.labels) == n
    for masks, boxes, labels in zip(shapes.instance_masks, shapes.boxes, shapes.labels):
        k = len(labels)
        assert masks.shape == (k, 64, 64) and masks.dtype == bool
        assert boxes.shape == (k, 4) and boxes.dtype == np.float32
        assert labels.shape == (k,) and labels.dtype == np.int64
        assert labels.min() >= 1 and labels.max() <= 4


def test_other_size():
    s = make_shapes(5, size=32, seed=2)
    assert s.images.shape == (5, 32, 32, 3)
    assert s.size == 32


def test_same_seed_same_data_other_seed_other_data():
    a = make_shapes(20, seed=0)
    b = make_shapes(20, seed=0)
    c = make_shapes(20, seed=1)
    assert np.array_equal(a.images, b.images)
    assert np.array_equal(a.semantic, b.semantic)
    assert all(np.array_equal(x, y) for x, y in zip(a.boxes, b.boxes))
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.semantic, c.semantic)


def test_counts_within_range(shapes):
    counts = shapes.object_counts()
    assert counts.min() >= 1 and counts.max() <= 4
    assert set(np.unique(counts)) == {1, 2, 3, 4}
    s = make_shapes(50, seed=3, min_objects=2, max_objects=3)
    assert set(np.unique(s.object_counts())) <= {2, 3}


def test_classes_roughly_balanced(shapes):
    labels = np.concatenate(shapes.labels)
    freq = np.bincount(labels, minlength=NUM_CLASSES)[1:] / len(labels)
    assert np.all(freq > 0.18) and np.all(freq < 0.32), freq


def test_semantic_consistent_with_instances(shapes):
    for i in range(len(shapes)):
        sample = shapes[i]
        union = np.zeros(sample.semantic.shape, bool)
        for mask, label in zip(sample.instance_masks, sample.labels):
            assert mask.sum() >= MIN_VISIBLE_PIXELS
            # visible parts: every pixel carries its object's label, and visible parts never overlap
            assert np.all(sample.semantic[mask] == label)
            assert not np.any(union & mask)
            union |= mask
        # every object pixel belongs to some listed instance, background pixels to none
        assert np.array_equal(union, sample.semantic > 0)


def test_occlusion_happens_by_default(shapes):
    # a visible mask with a hole cut by a later object is smaller than the full shape would be:
    # at least some objects must be partly covered, i.e. their box contains pixels of later objects
    covered = 0
    for masks, boxes in zip(shapes.instance_masks, shapes.boxes):
        for k in range(len(masks) - 1):
            x1, y1, x2, y2 = boxes[k].astype(int)
            later = masks[k + 1:].any(0)
            covered += later[y1:y2, x1:x2].any()
    assert covered > 10


def test_visibility_and_ignore_flags(shapes, separated):
    """Visibility = visible pixels / pixels of the whole shape; objects below MIN_VISIBILITY are flagged ignore."""
    assert MIN_VISIBILITY == 0.25
    for masks, visibility, ignore in zip(shapes.instance_masks, shapes.visibility, shapes.ignore):
        assert visibility.dtype == np.float32 and visibility.shape == (len(masks),)
        assert np.all(visibility > 0) and np.all(visibility <= 1)
        assert visibility[-1] == 1.0                      # the topmost object is never covered
        assert np.array_equal(ignore, visibility < MIN_VISIBILITY)
        # the whole shape's area implied by the visible one lies in the size range of make_shapes
        whole = masks.sum((1, 2)) / visibility
        assert np.all(whole > 0.8 * np.pi * (0.09 * 64) ** 2) and np.all(whole < 1.2 * np.pi * (0.2 * 64) ** 2)
    # an object covered by a later one shows less than all of itself; unoccluded data is fully visible
    all_vis = np.concatenate(shapes.visibility)
    assert 0.2 < np.mean(all_vis < 1) < 0.6 and 0 < np.mean(all_vis < MIN_VISIBILITY) < 0.1
    assert all(np.all(v == 1.0) and not f.any() for v, f in zip(separated.visibility, separated.ignore))
    # the flagged objects stay in the labels (painted, in the semantic mask); boxes stay the VISIBLE extent
    i = next(i for i, f in enumerate(shapes.ignore) if f.any())
    k = int(np.flatnonzero(shapes.ignore[i])[0])
    assert np.all(shapes.semantic[i][shapes.instance_masks[i][k]] == shapes.labels[i][k])
    target = shapes.targets(i)
    assert set(target) == {"boxes", "labels", "masks", "ignore"}
    assert np.array_equal(target["ignore"], shapes.ignore[i]) and np.array_equal(target["boxes"], shapes.boxes[i])
    sample = shapes[i]
    assert np.array_equal(sample.visibility, shapes.visibility[i]) and np.array_equal(sample.ignore, shapes.ignore[i])
    sub = shapes.subset([i, 0])
    assert np.array_equal(sub.visibility[0], shapes.visibility[i]) and np.array_equal(sub.ignore[0], shapes.ignore[i])


def test_shapes_built_without_visibility_count_everything_as_visible():
    s = make_shapes(3, seed=0)
    bare = Shapes(s.images, s.semantic, s.instance_masks, s.boxes, s.labels, s.background_kind)
    assert [v.tolist() for v in bare.visibility] == [[1.0] * len(lab) for lab in s.labels]
    assert not any(f.any() for f in bare.ignore)


def test_boxes_tight_around_masks(shapes):
    for masks, boxes in zip(shapes.instance_masks, shapes.boxes):
        for mask, box in zip(masks, boxes):
            ys, xs = np.nonzero(mask)
            expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert box.tolist() == expected


def test_box_width_counts_columns():
    s = make_shapes(10, seed=5)
    for masks, boxes in zip(s.instance_masks, s.boxes):
        for mask, (x1, y1, x2, y2) in zip(masks, boxes):
            assert x2 - x1 == np.ptp(np.nonzero(mask.any(0))[0]) + 1
            assert y2 - y1 == np.ptp(np.nonzero(mask.any(1))[0]) + 1


def test_no_occlusion_gives_disjoint_masks(separated):
    for masks in separated.instance_masks:
        assert masks.sum(0).max() <= 1
        # objects do not even touch: dilating one mask by a pixel does not reach another
        for a in range(len(masks)):
            grown = masks[a].copy()
            grown[1:] |= masks[a][:-1]
            grown[:-1] |= masks[a][1:]
            grown[:, 1:] |= masks[a][:, :-1]
            grown[:, :-1] |= masks[a][:, 1:]
            for b in range(len(masks)):
                if a != b:
                    assert not np.any(grown & masks[b])
    counts = separated.object_counts()
    assert counts.min() >= 1 and counts.max() <= 4


def test_objects_contrast_with_background():
    s = make_shapes(100, seed=4, background="plain")
    for sample in (s[i] for i in range(len(s))):
        background = sample.image[sample.semantic == 0].astype(float).mean(0)
        for mask in sample.instance_masks:
            color = sample.image[mask].astype(float).mean(0)
            assert np.linalg.norm(color - background) > 0.25 * 255


def _high_frequency_energy(images):
    gray = images.astype(np.float64).mean(-1)
    return np.mean(np.abs(np.diff(gray, axis=1))) + np.mean(np.abs(np.diff(gray, axis=2)))


def _background_energy(shapes):
    """High-frequency energy of background pixels only (objects masked out)."""
    gray = shapes.images.astype(np.float64).mean(-1)
    bg = shapes.semantic == 0
    dx = np.abs(np.diff(gray, axis=2))[bg[:, :, 1:] & bg[:, :, :-1]]
    return dx.mean()


def test_backgrounds_differ():
    kinds = {kind: make_shapes(60, seed=0, background=kind) for kind in ("plain", "noise", "texture")}
    energy = {kind: _background_energy(s) for kind, s in kinds.items()}
    assert energy["plain"] < 0.5
    assert energy["noise"] > energy["plain"] + 3
    assert energy["texture"] > energy["plain"] + 3
    for kind, s in kinds.items():
        assert set(s.background_kind) == {kind}
    mixed = make_shapes(200, seed=0, background="mixed")
    share = np.mean(mixed.background_kind == "noise")
    assert set(mixed.background_kind) == {"noise", "texture"}
    assert 0.35 < share < 0.65


def test_sample_record(shapes):
    sample = shapes[3]
    assert isinstance(sample, Sample)
    assert np.array_equal(sample.image, shapes.images[3])
    assert np.array_equal(sample.labels, shapes.labels[3])
    assert np.array_equal(shapes[-1].image, shapes.images[-1])
    with pytest.raises(IndexError):
        shapes[len(shapes)]
    with pytest.raises(TypeError, match="index"):
        shapes[1.5]


def test_tensors(shapes):
    x = shapes.image_tensor()
    assert x.shape == (len(shapes), 3, 64, 64) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1
    assert torch.allclose(x[0].permute(1, 2, 0) * 255, torch.from_numpy(shapes.images[0]).float())
    y = shapes.semantic_tensor()
    assert y.shape == (len(shapes), 64, 64) and y.dtype == torch.int64


def test_subset(shapes):
    sub = shapes.subset([5, 2, 7])
    assert isinstance(sub, Shapes) and len(sub) == 3
    assert np.array_equal(sub.images[1], shapes.images[2])
    assert np.array_equal(sub.boxes[0], shapes.boxes[5])
    assert len(shapes.subset(slice(0, 10))) == 10
    mask = np.zeros(len(shapes), bool)
    mask[[1, 4]] = True
    assert np.array_equal(shapes.subset(mask).labels[1], shapes.labels[4])
    with pytest.raises(IndexError):
        shapes.subset([len(shapes)])


def test_classification_data():
    s = make_classification(101, seed=0)
    assert s.object_counts().tolist() == [1] * 101
    labels = s.class_labels()
    assert labels.dtype == np.int64 and labels.shape == (101,)
    counts = np.bincount(labels, minlength=NUM_CLASSES)[1:]
    assert counts.max() - counts.min() <= 1
    assert np.array_equal(labels, make_classification(101, seed=0).class_labels())
    assert not np.array_equal(labels, make_classification(101, seed=1).class_labels())
    with pytest.raises(ValueError, match="exactly one object"):
        make_shapes(20, seed=0, min_objects=2).class_labels()


def test_dataset_semantic(shapes):
    ds = ShapesDataset(shapes)
    assert len(ds) == len(shapes)
    image, target = ds[4]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert target.shape == (64, 64) and target.dtype == torch.int64
    assert torch.equal(target, torch.from_numpy(shapes.semantic[4]))
    loader = torch.utils.data.DataLoader(ds, batch_size=8)
    images, targets = next(iter(loader))
    assert images.shape == (8, 3, 64, 64) and targets.shape == (8, 64, 64)


def test_dataset_detection(shapes):
    ds = ShapesDataset(shapes, target="detection")
    image, target = ds[0]
    k = len(shapes.labels[0])
    assert target["boxes"].shape == (k, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].dtype == torch.int64 and target["labels"].shape == (k,)
    assert target["masks"].shape == (k, 64, 64) and target["masks"].dtype == torch.bool
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=detection_collate)
    images, targets = next(iter(loader))
    assert images.shape == (4, 3, 64, 64)
    assert isinstance(targets, list) and len(targets) == 4
    assert torch.equal(targets[2]["labels"], torch.from_numpy(shapes.labels[2]))


def test_dataset_class():
    s = make_classification(12, seed=0)
    ds = ShapesDataset(s, target="class")
    image, label = ds[3]
    assert label.dtype == torch.int64 and int(label) == s.class_labels()[3]
    with pytest.raises(ValueError, match="exactly one object"):
        ShapesDataset(make_shapes(10, min_objects=2), target="class")


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(n=0), ValueError, "n"),
    (dict(n=2.5), TypeError, "n"),
    (dict(n=4, size=8), ValueError, "size"),
    (dict(n=4, seed=-1), ValueError, "seed"),
    (dict(n=4, min_objects=0), ValueError, "min_objects"),
    (dict(n=4, min_objects=3, max_objects=2), ValueError, "max_objects"),
    (dict(n=4, background="stripes"), ValueError, "background"),
    (dict(n=4, background=3), TypeError, "background"),
    (dict(n=4, occlusion="yes"), TypeError, "occlusion"),
    (dict(n=4, min_radius=0.3, max_radius=0.2), ValueError, "max_radius"),
    (dict(n=4, max_radius=0.9), ValueError, "max_radius"),
])
def test_make_shapes_bad_arguments(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        make_shapes(**kwargs)


def test_impossible_layout_raises():
    with pytest.raises(ValueError, match="min_objects"):
        make_shapes(2, size=32, min_objects=12, max_objects=12, occlusion=False,
                    min_radius=0.3, max_radius=0.3)


def test_dataset_bad_arguments(shapes):
    with pytest.raises(TypeError, match="shapes"):
        ShapesDataset(np.zeros((2, 64, 64, 3)))
    with pytest.raises(ValueError, match="target"):
        ShapesDataset(shapes, target="boxes")


def test_sample_images():
    assert "cat" in SAMPLE_IMAGES and "astronaut" in SAMPLE_IMAGES
    for name in SAMPLE_IMAGES:
        image = sample_image(name)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert image.shape[0] >= 100 and image.shape[1] >= 100
    import skimage.data
    assert np.array_equal(sample_image("cat"), skimage.data.chelsea())
    with pytest.raises(ValueError, match="name"):
        sample_image("dog")
    with pytest.raises(TypeError, match="name"):
        sample_image(1)


def test_no_global_random_state_used():
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    make_shapes(5, seed=0)
    assert np.random.random() == before
    assert data.make_shapes(3, seed=9).images.sum() == make_shapes(3, seed=9).images.sum()


def test_image_batch_accepts_shapes_uint8_arrays_and_float_tensors():
    from lecturelib.data import image_batch
    shapes = make_shapes(3, seed=0)
    batch = image_batch(shapes)
    assert batch.shape == (3, 3, 64, 64) and batch.dtype == torch.float32 and 0 <= batch.min() <= batch.max() <= 1
    assert torch.equal(image_batch(shapes.images), batch)
    assert image_batch(batch) is batch
    with pytest.raises(ValueError, match="uint8"):
        image_batch(shapes.images.astype(np.float32))
    with pytest.raises(ValueError, match="images must have 4 dimensions"):
        image_batch(batch[0])
    with pytest.raises(TypeError, match="images"):
        image_batch([1, 2])


# ------------------------------------------------------------------------------------------------
# Keypoints (issue 15): natural points of each shape, clockwise from the topmost, COCO's v flag
# ------------------------------------------------------------------------------------------------
def test_keypoints_shape_count_and_padding(shapes):
    from lecturelib.data import KEYPOINTS_PER_CLASS, MAX_KEYPOINTS
    assert KEYPOINTS_PER_CLASS == (0, 1, 4, 3, 5) and MAX_KEYPOINTS == 5
    for kp, labels in zip(shapes.keypoints, shapes.labels):
        assert kp.shape == (len(labels), MAX_KEYPOINTS, 3) and kp.dtype == np.float32
        assert np.isin(kp[..., 2], (0, 1, 2)).all()
        for points, label in zip(kp, labels):
            n = KEYPOINTS_PER_CLASS[label]
            assert (points[n:] == 0).all(), "slots the class does not have are (0, 0, 0)"


def test_keypoints_are_the_corners_tips_and_centre():
    """Each polygon keypoint lies on the object's outline at the farthest distance from the centre (its
    circumradius); a circle's one keypoint is its centre; all keypoints of one object are equally far from it."""
    shapes = make_shapes(200, seed=5, occlusion=False)
    for kp, labels, masks in zip(shapes.keypoints, shapes.labels, shapes.instance_masks):
        for points, label, mask in zip(kp, labels, masks):
            n = data.KEYPOINTS_PER_CLASS[label]
            xy = points[:n, :2].astype(np.float64)
            assert (points[:n, 2] == 2).all(), "no occlusion: every keypoint is visible"
            ys, xs = np.nonzero(mask)
            if label == 1:                      # the circle's centre: the mask's centroid within half a pixel
                assert np.hypot(xs.mean() + 0.5 - xy[0, 0], ys.mean() + 0.5 - xy[0, 1]) < 0.5
                continue
            centre = xy.mean(0)                 # a regular polygon's vertices average to its centre
            radius = np.hypot(*(xy - centre).T)
            assert np.allclose(radius, radius[0], rtol=1e-3)
            # every vertex within 2.5 px of a mask pixel centre (a star tip is thin), no mask pixel beyond the vertices
            d = np.hypot(xs[None] + 0.5 - xy[:, :1], ys[None] + 0.5 - xy[:, 1:])
            assert d.min(1).max() < 2.5
            assert np.hypot(xs + 0.5 - centre[0], ys + 0.5 - centre[1]).max() <= radius[0] + 1e-3


def test_keypoints_clockwise_from_the_topmost(shapes):
    for kp, labels in zip(shapes.keypoints, shapes.labels):
        for points, label in zip(kp, labels):
            n = data.KEYPOINTS_PER_CLASS[label]
            if n < 3 or (points[:n, 2] == 0).any():
                continue
            xy = points[:n, :2].astype(np.float64)
            assert xy[0, 1] == xy[:, 1].min(), "the first keypoint is the topmost"
            centre = xy.mean(0)
            angle = np.unwrap(np.arctan2(xy[:, 1] - centre[1], xy[:, 0] - centre[0]))
            # y points down: clockwise on the screen is increasing atan2 angle
            assert np.allclose(np.diff(angle), 2 * np.pi / n, atol=1e-3)


def test_keypoint_occlusion_follows_the_masks(shapes):
    """v = 1 exactly where the pixel holding the point lies in a mask of an object listed (painted) later."""
    occluded_seen = 0
    for kp, masks in zip(shapes.keypoints, shapes.instance_masks):
        size = masks.shape[-1]
        for k, points in enumerate(kp):
            later = masks[k + 1:].any(0) if k + 1 < len(masks) else np.zeros((size, size), bool)
            for x, y, v in points:
                if v == 0:
                    continue
                covered = later[int(np.floor(y)), int(np.floor(x))]
                assert v == (1 if covered else 2)
                occluded_seen += covered
    assert occluded_seen > 10


def test_keypoints_leave_the_rest_of_the_data_unchanged(monkeypatch):
    """Keypoints are computed from the layout without random draws: the same seed gives the same images and
    labels with and without them (the shipped weights were trained on data made before keypoints existed)."""
    shapes = make_shapes(20, seed=0)
    monkeypatch.setattr(data, "_keypoints", lambda layout, masks: np.zeros(layout["label"].shape + (5, 3), np.float32))
    without = make_shapes(20, seed=0)
    monkeypatch.undo()
    assert np.array_equal(shapes.images, without.images) and np.array_equal(shapes.semantic, without.semantic)
    for name in ("instance_masks", "boxes", "labels", "visibility"):
        assert all(np.array_equal(a, b) for a, b in zip(getattr(shapes, name), getattr(without, name))), name
    assert not any(k.any() for k in without.keypoints) and all(k.any() for k in shapes.keypoints)
    sub = shapes.subset([2, 0])
    assert np.array_equal(sub.keypoints[1], shapes.keypoints[0])
    assert np.array_equal(shapes[2].keypoints, shapes.keypoints[2])


def test_shapes_built_without_keypoints_have_none_labelled():
    s = Shapes(np.zeros((1, 16, 16, 3), np.uint8), np.zeros((1, 16, 16), np.int64), [np.zeros((2, 16, 16), bool)],
               [np.zeros((2, 4), np.float32)], [np.array([1, 2])], np.array(["plain"]))
    assert s.keypoints[0].shape == (2, 5, 3) and not s.keypoints[0].any()


def test_textures_are_scikit_images_own():
    """The textures are decoded straight from scikit-image's PNGs: the same pixels skimage.data gives."""
    import skimage.data

    from lecturelib.data import _TEXTURE_NAMES, _load_textures
    full, half = _load_textures()
    expected = np.stack([getattr(skimage.data, name)()[:512, :512] for name in _TEXTURE_NAMES]) / 255
    assert full.shape == (3, 512, 512) and half.shape == (3, 256, 256)
    np.testing.assert_allclose(full, expected, atol=1e-6)
