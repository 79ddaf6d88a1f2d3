"""Sliding-window counts, selective search and proposal recall (lecturelib.proposals)."""
import numpy as np
import pytest
import torch

from lecturelib import data, proposals


def test_window_count_by_hand():
    # 4 x 4 image, 2 x 2 windows at stride 1: 3 x 3 positions; 4 x 4 windows: 1; stride 2: 2 x 2 positions
    assert proposals.window_count(4, [2]) == 9
    assert proposals.window_count(4, [2, 4]) == 10
    assert proposals.window_count(4, [2], stride=2) == 4
    # aspect ratio 4 on a 4-pixel square size: 4 x 1 windows (w = 4, h = 1): 1 x 4 positions; ratio 1/4: 4 x 1
    assert proposals.window_count(4, [2], aspect_ratios=(4.0, 0.25)) == 4 + 4
    assert proposals.window_count(4, [8]) == 0       # does not fit


@pytest.mark.parametrize("kwargs, word", [(dict(image_size=0, window_sizes=[2]), "image_size"),
                                          (dict(image_size=4, window_sizes=[]), "window_sizes"),
                                          (dict(image_size=4, window_sizes=[2], stride=0), "stride")])
def test_window_count_bad_input(kwargs, word):
    with pytest.raises((ValueError, TypeError), match=word):
        proposals.window_count(**kwargs)


def _two_squares():
    image = np.zeros((32, 32, 3), np.uint8)
    image[4:12, 6:16] = (255, 0, 0)
    image[18:28, 20:30] = (0, 0, 255)
    return image, torch.tensor([[6.0, 4, 16, 12], [20, 18, 30, 28]])


def test_selective_search_finds_flat_regions_exactly_and_the_whole_image():
    image, truth = _two_squares()
    boxes = proposals.selective_search(image, min_size=5)
    assert boxes.dtype == torch.float32 and boxes.shape[1] == 4
    for box in truth:
        assert (boxes == box).all(1).any(), f"{box.tolist()} not among {boxes.tolist()}"
    assert [0, 0, 32, 32] in boxes.tolist()            # the last merge covers every region
    assert len(torch.unique(boxes, dim=0)) == len(boxes)
    assert proposals.recall(boxes, truth) == 1.0


def test_selective_search_accepts_a_chw_tensor_and_finds_most_shapes():
    shapes = data.make_shapes(20, seed=3)
    found = total = 0
    for i in range(len(shapes)):
        image = torch.from_numpy(shapes.images[i]).permute(2, 0, 1).float() / 255
        boxes = proposals.selective_search(image)
        found += proposals.recall(boxes, shapes.boxes[i]) * len(shapes.boxes[i])
        total += len(shapes.boxes[i])
    assert found / total >= 0.9      # measured 0.97 on 50 images (seed 1), about 37 proposals per image


def test_recall_by_hand():
    truth = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    assert proposals.recall(torch.tensor([[0.0, 0, 10, 10]]), truth) == 0.5
    assert proposals.recall(torch.tensor([[0.0, 0, 10, 5]]), truth) == 0.5 * 1   # IoU exactly 0.5 counts
    assert proposals.recall(torch.tensor([[0.0, 0, 10, 4]]), truth) == 0.0
    assert proposals.recall(torch.zeros(0, 4), truth) == 0.0
    assert proposals.recall(torch.zeros(0, 4), torch.zeros(0, 4)) == 1.0


@pytest.mark.parametrize("image, word", [(np.zeros((8, 8)), "image"), (np.zeros((8, 8, 4)), "image")])
def test_selective_search_bad_input(image, word):
    with pytest.raises(ValueError, match=word):
        proposals.selective_search(image)
