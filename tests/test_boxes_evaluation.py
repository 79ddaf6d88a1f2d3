"""Shared box utilities and the mAP evaluator, checked on hand-computed cases and an independent loop version."""
import numpy as np
import pytest
import torch

from lecturelib.boxes import (box_area, box_cxcywh_to_xyxy, box_iou, box_xyxy_to_cxcywh, denormalize_boxes,
                              normalize_boxes)
from lecturelib.evaluation import (COCO_IOU_THRESHOLDS, average_precision, evaluate_coco, evaluate_detections,
                                  match_detections, mean_average_precision, pck)


# ---------------------------------------------------------------------------------------------
# boxes
# ---------------------------------------------------------------------------------------------
def test_conversions_round_trip_and_keep_the_type():
    xyxy = torch.tensor([[1.0, 2.0, 5.0, 10.0], [0.0, 0.0, 0.0, 0.0]])
    cxcywh = box_xyxy_to_cxcywh(xyxy)
    assert torch.equal(cxcywh, torch.tensor([[3.0, 6.0, 4.0, 8.0], [0.0, 0.0, 0.0, 0.0]]))
    assert torch.equal(box_cxcywh_to_xyxy(cxcywh), xyxy)
    as_numpy = box_cxcywh_to_xyxy(cxcywh.numpy())
    assert isinstance(as_numpy, np.ndarray) and np.array_equal(as_numpy, xyxy.numpy())
    batch = torch.rand(2, 3, 4)
    assert torch.allclose(box_xyxy_to_cxcywh(box_cxcywh_to_xyxy(batch)), batch, atol=1e-6)


def test_normalise_and_back():
    pixels = np.array([[16.0, 8.0, 48.0, 40.0]], dtype=np.float32)
    normalised = normalize_boxes(pixels, 64)
    assert np.allclose(normalised, [[0.5, 0.375, 0.5, 0.5]])
    assert np.allclose(denormalize_boxes(normalised, 64), pixels)


def test_box_iou_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [3.0, 3.0, 3.0, 3.0]])
    b = torch.tensor([[1.0, 0.0, 3.0, 2.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0], [3.0, 3.0, 3.0, 3.0]])
    iou = box_iou(a, b)
    expected = torch.tensor([[2 / 6, 1.0, 0.0, 0.0], [0.0, 0.25, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert iou.shape == (3, 4) and torch.allclose(iou, expected)
    assert not torch.isnan(iou).any()  # a zero-area box against itself: 0, not 0/0
    assert box_iou(torch.zeros(0, 4), b).shape == (0, 4)
    assert np.allclose(box_iou(a.numpy(), b.numpy()), expected.numpy())
    assert np.allclose(box_area(a.numpy()), [4, 1, 0])


def test_box_errors_name_the_argument():
    with pytest.raises(ValueError, match="boxes1 must be xyxy"):
        box_iou(torch.tensor([[2.0, 0.0, 1.0, 1.0]]), torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"boxes2 must have shape \(N, 4\)"):
        box_iou(torch.zeros(1, 4), torch.zeros(1, 4, 4))
    with pytest.raises(TypeError, match="both be torch tensors or both numpy arrays"):
        box_iou(torch.zeros(1, 4), np.zeros((1, 4)))
    with pytest.raises(TypeError, match="boxes must be a torch.Tensor or np.ndarray"):
        box_cxcywh_to_xyxy([[0, 0, 1, 1]])


# ---------------------------------------------------------------------------------------------
# average precision
# ---------------------------------------------------------------------------------------------
def test_average_precision_all_point_interpolation():
    assert average_precision([0.5, 1.0], [1.0, 1.0]) == 1.0
    # TP, FP, TP with 2 objects: envelope (1, 2/3, 2/3) -> 0.5 * 1 + 0.5 * 2/3
    assert average_precision([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3]) == pytest.approx(0.5 + 1 / 3)
    assert average_precision([], []) == 0.0
    with pytest.raises(ValueError, match="non-decreasing"):
        average_precision([0.5, 0.2], [1.0, 1.0])


def test_average_precision_coco_101_points_by_hand():
    # TP, FP, TP with 2 objects: recall (0.5, 0.5, 1), envelope (1, 2/3, 2/3). COCO samples the envelope at
    # r = 0, 0.01, ..., 1 at the first detection with recall >= r: the 51 levels 0..0.50 read 1, the 50 levels
    # 0.51..1 read 2/3 -> (51 + 50 * 2/3) / 101 = 0.83498..., a little below the all-point 0.8333... + ...
    assert average_precision([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3], "101-point") == pytest.approx((51 + 100 / 3) / 101)
    assert average_precision([0.5, 1.0], [1.0, 1.0], "101-point") == 1.0
    # recall never beyond 0.5: the 50 levels above read 0 -> 51 / 101 (all-point: 0.5)
    assert average_precision([0.5], [1.0], "101-point") == pytest.approx(51 / 101)
    assert average_precision([0.5], [1.0]) == 0.5
    with pytest.raises(ValueError, match="interpolation"):
        average_precision([0.5], [1.0], "11-point")


def test_coco_ap_over_iou_thresholds_by_hand():
    assert COCO_IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    # one object, one detection of IoU 80 / 100 = 0.8: a hit at the 7 thresholds 0.5..0.8 (inclusive), a miss
    # (recall 0) at 0.85, 0.9, 0.95 -> AP@[.5:.95] = 7 / 10
    result = evaluate_coco([_det([[0, 0, 10, 8]], [0.9], [1])], [_gt([[0, 0, 10, 10]], [1])])
    assert result["map"] == pytest.approx(0.7)
    assert [result["map_per_threshold"][t] for t in COCO_IOU_THRESHOLDS] == [1.0] * 7 + [0.0] * 3
    assert result["ap"] == {1: pytest.approx(0.7)}
    # two classes: class 1 as above, class 2 the TP-FP-TP case at IoU 1 -> (0.7 + 0.83498) / 2
    targets = [_gt([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [1, 2, 2])]
    detections = [_det([[0, 0, 10, 8], [20, 20, 30, 30], [0, 40, 10, 50], [40, 40, 50, 50]], [0.9, 0.8, 0.7, 0.6],
                       [1, 2, 2, 2])]
    result = evaluate_coco(detections, targets)
    assert result["ap"][2] == pytest.approx((51 + 100 / 3) / 101)
    assert result["map"] == pytest.approx((0.7 + (51 + 100 / 3) / 101) / 2)
    # all-point at 0.5 for comparison: class 2 is 0.5 + 0.5 * 2/3
    assert evaluate_detections(detections, targets)["ap"][2] == pytest.approx(0.5 + 1 / 3)
    assert evaluate_detections(detections, targets, interpolation="101-point")["ap"][2] == result["ap"][2]


def test_ignored_objects_are_neither_missed_nor_false_positives():
    gt = {"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), "labels": np.array([1, 1]),
          "ignore": np.array([False, True])}
    # only the regular object found: recall 1 (the ignored one does not count), AP 1
    assert evaluate_detections([_det([[0, 0, 10, 10]], [0.9], [1])], [gt])["ap"] == {1: 1.0}
    # a detection on the ignored object (even ranked first, even twice) is dropped, not a false positive
    both = _det([[20, 20, 30, 30], [0, 0, 10, 10], [21, 20, 30, 30]], [0.95, 0.9, 0.85], [1, 1, 1])
    result = evaluate_detections([both], [gt])
    assert result["ap"] == {1: 1.0} and result["num_gt"] == {1: 1} and len(result["precision"][1]) == 1
    # had the object been dropped from the ground truth, its correct detection would be a false positive:
    # FP, TP, FP -> recall 1 reached at precision 1/2
    dropped = {"boxes": gt["boxes"][:1], "labels": gt["labels"][:1]}
    assert evaluate_detections([both], [dropped])["ap"][1] == pytest.approx(0.5)
    # and without the flag it is an ordinary object: TP, TP, FP (duplicate) -> AP 1 with 2 objects
    plain = {key: gt[key] for key in ("boxes", "labels")}
    assert evaluate_detections([both], [plain])["num_gt"] == {1: 2}
    # a detection overlapping a regular and an ignored object takes the regular one (COCO's order)
    hits, ignored = match_detections([[0, 0, 10, 10]], [0.9], [[0, 0, 10, 10], [0, 0, 10, 10]], 0.5,
                                     gt_ignore=[True, False], return_ignored=True)
    assert hits.tolist() == [True] and ignored.tolist() == [False]
    # once the regular object is taken, a duplicate falls on the ignored one and is ignored, not a false positive
    hits, ignored = match_detections([[0, 0, 10, 10], [0, 0, 10, 9]], [0.9, 0.8], [[0, 0, 10, 10], [0, 0, 10, 10]],
                                     0.5, gt_ignore=[True, False], return_ignored=True)
    assert hits.tolist() == [True, False] and ignored.tolist() == [False, True]
    # an image whose only object is ignored: a miss costs nothing, a class with only ignored objects is left out
    only = {"boxes": np.array([[0, 0, 10, 10]], np.float32), "labels": np.array([2]), "ignore": np.array([True])}
    result = evaluate_detections([_det([[0, 0, 10, 10]], [0.9], [1]), _det([], [], [])], [gt, only])
    assert result["ap"] == {1: 1.0} and result["num_gt"] == {1: 1, 2: 0}
    with pytest.raises(ValueError, match="ignore"):
        evaluate_detections([_det([], [], [])], [{**gt, "ignore": np.array([True])}])


def _det(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels)}


def _gt(boxes, labels):
    return {"boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4), "labels": np.array(labels)}


def test_perfect_detections_give_map_one():
    targets = [_gt([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 2]), _gt([[5, 5, 15, 15]], [1])]
    detections = [_det([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [1, 2]), _det([[5, 5, 15, 15]], [0.7], [1])]
    result = evaluate_detections(detections, targets)
    assert result["map"] == 1.0 and result["ap"] == {1: 1.0, 2: 1.0} and result["num_gt"] == {1: 2, 2: 1}


def test_duplicates_wrong_class_and_misses_by_hand():
    targets = [_gt([[0, 0, 10, 10]], [1]), _gt([[0, 0, 10, 10]], [1])]
    detections = [
        _det([[0, 0, 10, 10], [0, 0, 10, 9], [0, 0, 10, 10]], [0.9, 0.8, 0.95], [1, 1, 2]),  # hit, duplicate, class 2
        _det([[40, 40, 50, 50]], [0.85], [1]),                                                 # a miss
    ]
    result = evaluate_detections(detections, targets, classes=[1, 2])
    # class 1 in score order: 0.9 TP, 0.85 FP, 0.8 FP (duplicate); 2 objects -> recall 0.5, precision 1 -> AP 0.5
    assert result["ap"] == {1: 0.5}
    assert result["num_gt"][2] == 0 and 2 not in result["ap"]  # a class without objects is left out of the mean
    assert result["map"] == 0.5
    assert np.allclose(result["precision"][1], [1, 0.5, 1 / 3]) and np.allclose(result["recall"][1], [0.5, 0.5, 0.5])


def test_iou_threshold_is_inclusive_and_best_unmatched_object_is_taken():
    # IoU exactly 0.5: [0, 0, 10, 10] vs [0, 0, 10, 5] -> 50 / 100
    assert match_detections([[0, 0, 10, 5]], [1.0], [[0, 0, 10, 10]], 0.5).tolist() == [True]
    assert match_detections([[0, 0, 10, 5]], [1.0], [[0, 0, 10, 10]], 0.51).tolist() == [False]
    # The higher-scored detection takes object 0 (its best); the second detection's best object (0) is taken,
    # so it takes object 1 (IoU 0.6 >= 0.5): COCO's rule.
    objects = [[0, 0, 10, 10], [2, 0, 12, 10]]
    dets = [[0, 0, 10, 10], [1, 0, 11, 10]]
    assert match_detections(dets, [0.9, 0.8], objects, 0.5).tolist() == [True, True]
    assert match_detections(dets, [0.8, 0.9], objects, 0.5).tolist() == [True, True]
    assert match_detections(np.zeros((0, 4)), np.zeros(0), objects).tolist() == []


def _loop_map(detections, targets, threshold):
    """An independent, plain-loop version of the same protocol."""
    classes = sorted({int(c) for t in targets for c in t["labels"]})
    aps = []
    for c in classes:
        entries = []
        for i, d in enumerate(detections):
            for box, score, label in zip(np.asarray(d["boxes"]), np.asarray(d["scores"]), np.asarray(d["labels"])):
                if label == c:
                    entries.append((-float(score), i, box))
        entries.sort(key=lambda e: (e[0], e[1]))
        taken = {i: [False] * len(t["labels"]) for i, t in enumerate(targets)}
        total = sum(int((np.asarray(t["labels"]) == c).sum()) for t in targets)
        tp = []
        for _, i, box in entries:
            best, best_j = -1.0, -1
            for j, (gbox, glabel) in enumerate(zip(np.asarray(targets[i]["boxes"]), np.asarray(targets[i]["labels"]))):
                if glabel != c or taken[i][j]:
                    continue
                w = max(0.0, min(box[2], gbox[2]) - max(box[0], gbox[0]))
                h = max(0.0, min(box[3], gbox[3]) - max(box[1], gbox[1]))
                union = (box[2] - box[0]) * (box[3] - box[1]) + (gbox[2] - gbox[0]) * (gbox[3] - gbox[1]) - w * h
                iou = w * h / union if union > 0 else 0.0
                if iou > best:
                    best, best_j = iou, j
            hit = best >= threshold
            if hit:
                taken[i][best_j] = True
            tp.append(hit)
        tp = np.array(tp, dtype=float)
        recall = np.cumsum(tp) / total
        precision = np.cumsum(tp) / np.arange(1, len(tp) + 1)
        ap, previous = 0.0, 0.0
        for k in range(len(tp)):
            ap += (recall[k] - previous) * precision[k:].max()
            previous = recall[k]
        aps.append(ap)
    return float(np.mean(aps))


def test_agrees_with_an_independent_loop_version_on_random_data():
    rng = np.random.default_rng(0)
    for trial in range(5):
        targets, detections = [], []
        for _ in range(20):
            k = rng.integers(1, 4)
            xy = rng.uniform(0, 50, size=(k, 2))
            gt = np.concatenate([xy, xy + rng.uniform(5, 14, size=(k, 2))], 1)
            targets.append(_gt(gt, rng.integers(1, 4, size=k)))
            jitter = np.concatenate([gt, rng.uniform(0, 60, size=(2, 4)).cumsum(1).clip(0, 64)]) \
                + rng.normal(0, 2, size=(k + 2, 4))
            jitter[:, 2:] = np.maximum(jitter[:, 2:], jitter[:, :2])
            detections.append(_det(jitter, rng.random(k + 2).tolist(), rng.integers(1, 4, size=k + 2).tolist()))
        for threshold in (0.5, 0.75):
            ours = mean_average_precision(detections, targets, iou_threshold=threshold)
            assert ours == pytest.approx(_loop_map(detections, targets, threshold), abs=1e-12), (trial, threshold)


def test_evaluator_input_errors():
    with pytest.raises(ValueError, match="one entry per image"):
        evaluate_detections([_det([], [], [])], [])
    with pytest.raises(ValueError, match=r"detections\[0\] must be a dict with keys"):
        evaluate_detections([{"boxes": torch.zeros(0, 4)}], [_gt([], [])])
    assert np.isnan(mean_average_precision([_det([], [], [])], [_gt([], [])]))


# ---------------------------------------------------------------------------------------------
# PCK (percentage of correct keypoints)
# ---------------------------------------------------------------------------------------------
def _pck_case():
    """Two objects. Object 0: box 20 wide, 10 high (scale at alpha 0.1: 2 px); object 1: box 10 x 30 (3 px)."""
    truth = np.array([[[10, 10, 2], [20, 10, 2], [15, 20, 1], [0, 0, 0]],
                      [[40, 40, 2], [45, 50, 2], [0, 0, 0], [0, 0, 0]]], dtype=np.float32)
    boxes = np.array([[5, 5, 25, 15], [38, 35, 48, 65]], dtype=np.float32)
    predicted = np.array([[[11, 10], [20, 12.5], [15, 20], [30, 30]],     # 1 px: right; 2.5 px: wrong; occluded
                          [[40, 43], [45, 60], [1, 1], [2, 2]]], dtype=np.float32)  # 3 px: right (inclusive); 10 px
    return predicted, truth, boxes


def test_pck_by_hand():
    predicted, truth, boxes = _pck_case()
    # visible keypoints: (0, 0) right, (0, 1) wrong, (1, 0) right at exactly 3 px, (1, 1) wrong -> 2 / 4
    assert pck(predicted, truth, boxes) == pytest.approx(0.5)
    # labelled (v > 0) adds the occluded (0, 2), predicted exactly -> 3 / 5
    assert pck(predicted, truth, boxes, visible_only=False) == pytest.approx(0.6)
    # alpha 0.2: scales 4 and 6 px: (0, 1) at 2.5 px becomes right -> 3 / 4
    assert pck(predicted, truth, boxes, alpha=0.2) == pytest.approx(0.75)
    # a score column is ignored; tensors and per-image lists give the same
    scored = np.concatenate([predicted, np.full(predicted.shape[:2] + (1,), 9.0, np.float32)], -1)
    assert pck(torch.from_numpy(scored), torch.from_numpy(truth), torch.from_numpy(boxes)) == pytest.approx(0.5)
    assert pck([predicted[:1], predicted[1:]], [truth[:1], truth[1:]], [boxes[:1], boxes[1:]]) == pytest.approx(0.5)
    assert np.isnan(pck(predicted[:, 3:], truth[:, 3:], boxes))                  # nothing labelled
    # a NaN prediction (an object no detection found) is never correct, in either mode
    missing = predicted.copy()
    missing[1] = np.nan
    assert pck(missing, truth, boxes) == pytest.approx(0.25)
    assert pck(missing, truth, boxes, any_order=True) == pytest.approx(0.25)


def test_pck_any_order_permutes_the_slots_of_each_object():
    predicted, truth, boxes = _pck_case()
    swapped = predicted[:, [1, 0, 2, 3]]
    # object 0's slots swapped: (11, 10) now sits in slot 1; in order, no visible keypoint of object 0 is right
    # and object 1's swap puts (45, 60) against (40, 40) and (40, 43) against (45, 50): 0 / 4
    assert pck(swapped, truth, boxes) == 0.0
    # permuting back among each object's labelled slots recovers the 2 hits of the original order
    assert pck(swapped, truth, boxes, any_order=True) == pytest.approx(0.5)
    # a prediction serves one keypoint only: one point near two keypoints, the other slots far away -> 1 / 2
    # (scoring each keypoint by its nearest prediction would give 2 / 2)
    near = truth[:1].copy()
    near[0, 1, :2] = near[0, 0, :2] + [1, 0]                                      # within 2 px of (10, 10) too
    one = np.array([[[10, 10], [60, 60], [60, 0], [0, 60]]], dtype=np.float32)
    assert pck(one, near, boxes[:1], any_order=True) == pytest.approx(0.5)


def test_pck_names_the_wrong_shape():
    predicted, truth, boxes = _pck_case()
    with pytest.raises(ValueError, match="keypoints must have shape"):
        pck(predicted, truth[..., :2], boxes)
    with pytest.raises(ValueError, match="predicted must have shape"):
        pck(predicted[:, :3], truth, boxes)
    with pytest.raises(ValueError, match="boxes must have shape"):
        pck(predicted, truth, boxes[:1])
    with pytest.raises(TypeError, match="predicted"):
        pck("points", truth, boxes)
