"""lecturelib.instance_segmentation: vectorised RoIAlign, mask IoU and mask AP, the demos, the tiny model and
its shipped weights, the widgets."""
import numpy as np
import pytest
import torch

from lecturelib import data
from lecturelib import instance_segmentation as inst
from lecturelib import reference as ref
from lecturelib.boxes import box_iou
from lecturelib.rois import roi_align
from lecturelib.evaluation import evaluate_detections


# ---------------------------------------------------------------------------------------------
# RoIAlign's sampling points
# ---------------------------------------------------------------------------------------------
def test_sampling_points_are_where_roi_align_samples():
    """On a ramp f = x-coordinate of the pixel centre, each bin's RoIAlign value is the mean of its samples' x."""
    width = 30
    ramp = (torch.arange(width, dtype=torch.float64) + 0.5).expand(1, 1, 20, width).contiguous()
    box = (3.3, 2.1, 17.9, 12.6)
    xs, ys = inst.roi_sampling_points(box, 5)
    got = roi_align(ramp, torch.tensor([[0.0, *box]], dtype=torch.float64), (5, 5), 1.0, 2, True)[0, 0, 0]
    assert np.allclose(got.numpy(), xs.reshape(5, 2).mean(1))
    assert len(ys) == 10 and ys[0] > box[1] and ys[-1] < box[3]


# ---------------------------------------------------------------------------------------------
# Semantic vs instance, RoIPool vs RoIAlign
# ---------------------------------------------------------------------------------------------
def test_touching_example_has_two_touching_objects_of_one_class():
    shapes = data.make_shapes(200, seed=3, occlusion=True)
    i = inst.touching_example(shapes)
    from scipy import ndimage
    merged = [int((shapes.labels[i] == c).sum()) - ndimage.label(shapes.semantic[i] == c)[1] for c in range(1, 5)]
    assert max(merged) >= 1
    with pytest.raises(ValueError, match="touching"):
        inst.touching_example(data.make_shapes(3, seed=0, occlusion=False))


def test_roi_align_crops_masks_better_than_roi_pool():
    shapes = data.make_shapes(30, seed=4, min_objects=1, max_objects=1, background="plain", occlusion=False)
    views = [inst.pool_vs_align(m[0], b[0], stride=8, M=14) for m, b in zip(shapes.instance_masks, shapes.boxes)]
    pool = np.mean([v["iou_pool"] for v in views])
    align = np.mean([v["iou_align"] for v in views])
    assert align > pool + 0.1, (pool, align)
    assert views[0]["truth"].shape == (14, 14) and views[0]["feature"].shape == (8, 8)


# ---------------------------------------------------------------------------------------------
# Mask IoU and mask AP
# ---------------------------------------------------------------------------------------------
def _filled(boxes, size):
    masks = np.zeros((len(boxes), size, size), dtype=bool)
    for k, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, dtype=int)):
        masks[k, y1:y2, x1:x2] = True
    return masks


def test_mask_iou_of_filled_boxes_is_box_iou():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 20, (5, 2))
    b = rng.integers(0, 20, (4, 2))
    boxes1 = np.concatenate([a, a + rng.integers(1, 12, (5, 2))], 1).astype(np.float64)
    boxes2 = np.concatenate([b, b + rng.integers(1, 12, (4, 2))], 1).astype(np.float64)
    got = inst.mask_iou(_filled(boxes1, 32), _filled(boxes2, 32))
    assert np.allclose(got.numpy(), box_iou(boxes1, boxes2))
    assert inst.mask_iou(np.zeros((1, 4, 4), bool), np.zeros((2, 4, 4), bool)).tolist() == [[0.0, 0.0]]


def test_mask_ap_of_filled_boxes_equals_box_ap():
    """With every mask a filled box, mask AP must equal lecturelib.evaluation's box AP."""
    rng = np.random.default_rng(1)
    shapes = data.make_shapes(25, seed=5, occlusion=False)
    predictions, targets = [], []
    for i in range(len(shapes)):
        gt = shapes.boxes[i].astype(np.float64)
        noisy = np.clip(np.round(gt + rng.normal(0, 3, gt.shape)), 0, 64)
        noisy[:, 2:] = np.maximum(noisy[:, 2:], noisy[:, :2] + 1)
        extra = np.array([[5.0, 5.0, 20.0, 20.0]])
        boxes = np.concatenate([noisy, extra])
        labels = np.concatenate([shapes.labels[i], rng.integers(1, 5, 1)])
        scores = rng.random(len(boxes))
        predictions.append({"boxes": boxes, "scores": scores, "labels": labels, "masks": _filled(boxes, 64)})
        targets.append({"boxes": gt, "labels": shapes.labels[i], "masks": _filled(gt, 64)})
    for threshold in (0.5, 0.75):
        masks = inst.evaluate_masks(predictions, targets, threshold, classes=range(1, 5))
        boxes = evaluate_detections(predictions, targets, iou_threshold=threshold, classes=range(1, 5))
        assert masks["map"] == pytest.approx(boxes["map"])
        assert 0.05 < masks["map"] < 1.0


def test_evaluate_masks_rejects_bad_input():
    with pytest.raises(ValueError, match="one entry per image"):
        inst.evaluate_masks([], [{"masks": np.zeros((0, 4, 4), bool), "labels": np.zeros(0, int)}])
    with pytest.raises(ValueError, match="keys"):
        inst.evaluate_masks([{"masks": np.zeros((0, 4, 4), bool)}], [{"masks": np.zeros((0, 4, 4), bool),
                                                                      "labels": np.zeros(0, int)}])


# ---------------------------------------------------------------------------------------------
# The model, training, the shipped weights
# ---------------------------------------------------------------------------------------------
def test_model_output_shape_and_roi_order():
    torch.manual_seed(0)
    model = inst.TinyMaskRCNN().eval()
    images = torch.rand(2, 3, 64, 64)
    boxes = [torch.tensor([[3.0, 4.0, 30.0, 40.0]]), torch.tensor([[10.0, 10.0, 20.0, 30.0], [3.0, 4.0, 30.0, 40.0]])]
    with torch.no_grad():
        out = model(images, boxes)
        alone = model(images[1:], [boxes[1][1:]])
    assert out.shape == (3, data.NUM_CLASSES, model.mask_size, model.mask_size)
    assert torch.allclose(out[2], alone[0], atol=1e-5)


def test_jitter_keeps_boxes_valid_and_inside():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 64.0, 64.0]]).repeat(50, 1)
    moved = inst.jitter_boxes(boxes, torch.Generator().manual_seed(0), 0.3, 64)
    assert (moved[:, 2:] > moved[:, :2]).all() and moved.min() >= 0 and moved.max() <= 64
    assert not torch.equal(moved, boxes)


def test_training_lowers_the_mask_loss():
    torch.manual_seed(0)
    shapes = data.make_shapes(64, seed=0, occlusion=False)
    model = inst.TinyMaskRCNN(width=16, head_width=16)
    losses = inst.train_mask_head(model, shapes, mask_targets_fn=ref.mask_targets, mask_loss_fn=ref.mask_loss,
                                  epochs=3, lr=1e-2, batch_size=16, progress=False)
    assert losses[-1] < losses[0] - 0.05, losses


def test_train_rejects_bad_arguments():
    with pytest.raises(TypeError, match="mask_loss_fn"):
        inst.train_mask_head(inst.TinyMaskRCNN(), data.make_shapes(2, seed=0), mask_targets_fn=ref.mask_targets,
                             mask_loss_fn=None, epochs=1)


@pytest.fixture(scope="module")
def shipped():
    return inst.load_pretrained()


def test_shipped_weights_record_how_they_were_made(shipped):
    meta = shipped.metadata
    # the shipped file predates the one `make weights` entry; a retrained one names it
    assert meta["command"] in ("python scripts/train_instance_segmentation.py",
                               "python scripts/train_weights.py instance_segmentation")
    # trained and measured on the data set's default (occluded) held-out set, and on unoccluded images (issue 14)
    assert meta["train"] == "make_shapes(5000, seed=0)" and meta["test"] == "make_shapes(1000, seed=1)"
    assert meta["mask_map50"] >= 0.8 and meta["box_map50"] >= 0.8
    assert meta["mask_map50_unoccluded"] >= 0.95 and meta["box_map50_unoccluded"] >= 0.95
    assert meta["mask_coco"] < meta["mask_map50"] < meta["mask_map50_unoccluded"]
    assert not shipped.training


def test_shipped_model_segments_held_out_images(shipped):
    """Mask AP@0.5 with DETR's boxes on 100 held-out images, and with ground-truth boxes (upper bound)."""
    shapes = data.make_shapes(100, seed=1, occlusion=False)
    scores = inst.evaluate(shipped, shapes, ref.paste_masks)
    assert scores["mask_map"] >= 0.9, scores["mask_map"]
    truth = [{"boxes": torch.from_numpy(shapes.boxes[i]), "labels": torch.from_numpy(shapes.labels[i]),
              "scores": torch.ones(len(shapes.labels[i]))} for i in range(len(shapes))]
    predictions = inst.predict_masks(shipped, shapes, truth, ref.paste_masks)
    ious = torch.cat([inst.mask_iou(p["masks"], shapes.instance_masks[i]).diagonal()
                      for i, p in enumerate(predictions)])
    assert ious.mean() >= 0.9, ious.mean()


def test_predict_masks_uses_the_given_paste_function(shipped):
    shapes = data.make_shapes(2, seed=1, occlusion=False)
    dets = [{"boxes": torch.from_numpy(shapes.boxes[i]), "labels": torch.from_numpy(shapes.labels[i]),
             "scores": torch.ones(len(shapes.labels[i]))} for i in range(2)]
    calls = []

    def paste(probs, boxes, size, threshold):
        calls.append((probs.shape, size, threshold))
        return torch.zeros(len(probs), *size, dtype=torch.bool)
    out = inst.predict_masks(shipped, shapes, dets, paste, threshold=0.3)
    assert [c[1:] for c in calls] == [((64, 64), 0.3)] * 2
    assert out[0]["probs"].shape[1:] == (shipped.mask_size, shipped.mask_size)
    assert ((out[0]["probs"] >= 0) & (out[0]["probs"] <= 1)).all()


# ---------------------------------------------------------------------------------------------
# Widgets
# ---------------------------------------------------------------------------------------------
def test_roi_target_explorer_shows_the_given_function():
    box = inst.roi_target_explorer(ref.mask_targets)
    target = box.interactive.result["target"]
    sample = data.make_shapes(1, seed=7, min_objects=1, max_objects=1, background="plain", occlusion=False)
    expected = ref.mask_targets(torch.from_numpy(sample.instance_masks[0]), torch.from_numpy(sample.boxes[0]),
                                torch.zeros(1, dtype=torch.long), 14)[0]
    assert np.array_equal(target, expected.numpy())

    def unfinished(*args):
        raise NotImplementedError()
    unfinished_view = inst.roi_target_explorer(unfinished).interactive.result
    assert unfinished_view["target"].sum() == 0 and "implement mask_targets" in unfinished_view["error"]


def test_threshold_explorer_areas_shrink_as_the_threshold_grows(shipped):
    shapes = data.make_shapes(3, seed=1, occlusion=False)
    dets = [{"boxes": torch.from_numpy(shapes.boxes[i]), "labels": torch.from_numpy(shapes.labels[i]),
             "scores": torch.ones(len(shapes.labels[i])), "keep": torch.ones(len(shapes.labels[i]), dtype=torch.bool)}
            for i in range(3)]
    predictions = inst.predict_masks(shipped, shapes, dets, ref.paste_masks)
    box = inst.threshold_explorer(shapes, predictions, ref.paste_masks, max_images=3)
    low = [int(m.sum()) for m in box.interactive.result]
    box.interactive.children[0].value = 0.9
    high = [int(m.sum()) for m in box.interactive.result]
    assert len(low) == 3 and sum(high) < sum(low)


# ---------------------------------------------------------------------------------------------
# The keypoint head: contract, loss by hand, training, the shipped weights
# ---------------------------------------------------------------------------------------------
def test_keypoint_model_contract_and_grown_rois():
    torch.manual_seed(0)
    model = inst.TinyKeypointRCNN().eval()
    S = model.heatmap_size
    images = torch.rand(2, 3, 64, 64)
    boxes = [torch.tensor([[3.0, 4.0, 30.0, 40.0]]), torch.tensor([[10.0, 10.0, 20.0, 30.0], [3.0, 4.0, 30.0, 40.0]])]
    with torch.no_grad():
        out = model(images, boxes)
        alone = model(images[1:], [boxes[1][1:]])
        empty = model(images[:1], [torch.zeros(0, 4)])
    assert out.shape == (3, data.MAX_KEYPOINTS, S, S) and S == 16 and empty.shape == (0, data.MAX_KEYPOINTS, S, S)
    assert torch.allclose(out[2], alone[0], atol=1e-5)
    margin = model.config["margin"]
    assert torch.equal(model.rois(boxes[0]), torch.tensor([[3.0 - margin, 4.0 - margin, 30.0 + margin, 40.0 + margin]]))
    assert [r.shape for r in model.rois(boxes)] == [(1, 4), (2, 4)]
    # one home for the backbone and the head's layout: the mask model has the same backbone
    mask_model = inst.TinyMaskRCNN()
    shapes_of = lambda m: [tuple(p.shape) for p in m.backbone.parameters()]      # noqa: E731
    assert shapes_of(model) == shapes_of(mask_model)


def test_keypoint_loss_by_hand():
    """S = 2, one RoI, two slots: slot 0's target is cell 3, slot 1 is not valid (left out)."""
    logits = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]], [[9.0, -9.0], [0.0, 0.0]]]], requires_grad=True)
    targets = torch.tensor([[3, 0]])
    valid = torch.tensor([[True, False]])
    expected = -(3.0 - np.log(np.exp(0.0) + np.exp(1.0) + np.exp(2.0) + np.exp(3.0)))     # 0.4402
    loss = inst.keypoint_loss(logits, targets, valid)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # two valid keypoints: the mean of their cross-entropies
    both = inst.keypoint_loss(logits, torch.tensor([[3, 1]]), torch.tensor([[True, True]]))
    second = -(-9.0 - np.log(np.exp(9.0) + np.exp(-9.0) + 2.0))
    assert both.item() == pytest.approx((expected + second) / 2, abs=1e-5)
    loss.backward()
    assert logits.grad[0, 1].abs().sum() == 0                                # the invalid slot gets no gradient
    none = inst.keypoint_loss(logits, targets, torch.zeros(1, 2, dtype=torch.bool))
    assert none.item() == 0 and none.requires_grad
    with pytest.raises(ValueError, match="targets"):
        inst.keypoint_loss(logits, torch.tensor([3, 0]), valid)


def test_keypoint_training_lowers_the_loss_with_the_given_targets():
    torch.manual_seed(0)
    shapes = data.make_shapes(48, seed=0)
    model = inst.TinyKeypointRCNN(width=16, head_width=16, convs=2)
    calls = []

    def targets(keypoints, rois, size):
        calls.append(size)
        return ref.keypoint_targets(keypoints, rois, size)
    losses = inst.train_keypoint_head(model, shapes, keypoint_targets_fn=targets, epochs=3, lr=1e-2, batch_size=16,
                                      progress=False)
    assert losses[-1] < losses[0] - 0.2, losses
    assert set(calls) == {model.heatmap_size} and len(calls) == 3 * 3 * 16
    with pytest.raises(TypeError, match="keypoint_targets_fn"):
        inst.train_keypoint_head(model, shapes, keypoint_targets_fn=None, epochs=1)
    with pytest.raises(TypeError, match="TinyKeypointRCNN"):
        inst.train_keypoint_head(inst.TinyMaskRCNN(), shapes, keypoint_targets_fn=targets, epochs=1)


@pytest.fixture(scope="module")
def keypoint_head():
    return inst.load_pretrained("keypoints_shapes")


def test_predict_keypoints_decodes_over_the_grown_rois(keypoint_head):
    shapes = data.make_shapes(2, seed=1)
    seen = []

    def decode(heatmaps, rois):
        seen.append(rois.clone())
        return ref.decode_keypoints(heatmaps, rois)
    out = inst.predict_keypoints(keypoint_head, shapes, shapes.boxes, decode)
    expected = torch.from_numpy(np.concatenate(shapes.boxes)) + torch.tensor([-2.0, -2.0, 2.0, 2.0])
    assert torch.equal(seen[0], expected)
    assert [tuple(o.shape) for o in out] == [(len(b), data.MAX_KEYPOINTS, 3) for b in shapes.boxes]


def test_evaluate_keypoints_matches_detections_to_objects(keypoint_head):
    """Detections = the ground-truth boxes shuffled plus a stray box give the ground-truth PCK; dropping an
    object's detection makes its keypoints wrong."""
    shapes = data.make_shapes(20, seed=1, occlusion=False)
    truth = inst.evaluate_keypoints(keypoint_head, shapes, ref.decode_keypoints)
    shuffled = [{"boxes": torch.cat([torch.from_numpy(b).flip(0), torch.tensor([[0.0, 0.0, 3.0, 3.0]])]),
                 "keep": torch.ones(len(b) + 1, dtype=torch.bool)} for b in shapes.boxes]
    same = inst.evaluate_keypoints(keypoint_head, shapes, ref.decode_keypoints, shuffled)
    assert same["pck"] == pytest.approx(truth["pck"]) and same["matched"] == 1.0
    for d in shuffled:
        d["keep"][0] = False                                         # each image loses its last object's box
    fewer = inst.evaluate_keypoints(keypoint_head, shapes, ref.decode_keypoints, shuffled)
    lost = [p[-1] for p in fewer["predicted"]]
    assert all(torch.isnan(p).all() for p in lost) and fewer["pck"] < truth["pck"]
    assert fewer["matched"] == pytest.approx(1 - len(shapes) / sum(len(b) for b in shapes.boxes))


def test_shipped_keypoint_head_reaches_its_recorded_pck(keypoint_head):
    meta = keypoint_head.metadata
    assert meta["command"] == "python scripts/train_weights.py keypoints" and meta["seed"] == 0
    assert meta["architecture"] == "TinyKeypointRCNN" and meta["test"] == "make_shapes(1000, seed=1)"
    assert meta["pck"] >= 0.6 and meta["pck_any_order"] >= meta["pck"] and not keypoint_head.training
    subset = data.make_shapes(1000, seed=1).subset(range(150))
    scores = inst.evaluate_keypoints(keypoint_head, subset, ref.decode_keypoints)
    assert abs(scores["pck"] - meta["pck"]) < 0.05, (scores["pck"], meta["pck"])


def _train_weights_script():
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("train_weights", Path(__file__).resolve().parent.parent / "scripts"
                                                  / "train_weights.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_keypoint_recipe_is_registered_after_its_topic():
    topics = _train_weights_script().TOPICS
    assert topics.index("keypoints") == topics.index("instance_segmentation") + 1
    assert topics.index("detr") < topics.index("keypoints")         # evaluated with DETR's boxes


@pytest.mark.slow
def test_keypoint_recipe_writes_loadable_weights_with_metadata(tmp_path):
    from lecturelib.train import load_weights, read_metadata
    out = tmp_path / "kp.pt"
    threads = torch.get_num_threads()
    try:
        options = ["--epochs", "1", "--train-size", "64", "--test-size", "20", "--no-detr", "--out", str(out)]
        scores = _train_weights_script().main(["keypoints", *options, "--no-progress"])["keypoints"]
    finally:
        torch.set_num_threads(threads)
    meta = read_metadata(out)
    assert meta["command"] == "python scripts/train_weights.py keypoints " + " ".join(options) and meta["threads"] == 2
    assert meta["pck"] == round(scores["pck"], 4) and meta["test"] == "make_shapes(20, seed=1)"
    assert meta["train"] == "make_shapes(64, seed=0)" and len(meta["losses"]) == 1 and "pck_detr" not in meta
    load_weights(inst.TinyKeypointRCNN(**meta["config"]), out)
