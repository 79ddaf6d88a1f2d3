"""RoIPool and RoIAlign (``lecturelib.rois``) against a scalar port of torchvision's C++ kernels and exact
properties."""
import pytest
import torch

from lecturelib.rois import roi_align, roi_pool, roi_pool_cells, rois_from_boxes
from test_torchvision_parity import roi_align_port   # the scalar port of torchvision's kernel (one copy)


@pytest.fixture
def problem():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64)
    rois = torch.tensor([[0, 1.3, 2.2, 15.7, 12.9], [1, -3.0, -2.0, 6.0, 5.0], [0, 0, 0, 21.9, 17.9],
                         [1, 10.0, 8.0, 10.5, 8.2], [0, 18.0, 14.0, 30.0, 25.0], [0, 4.0, 4.0, 4.0, 9.0]],
                        dtype=torch.float64)
    return features, rois


@pytest.mark.parametrize("ratio", [0, 1, 2, 3])
@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align_matches_torchvision_kernel(problem, ratio, aligned):
    features, rois = problem
    got = roi_align(features, rois, (3, 4), spatial_scale=0.5, sampling_ratio=ratio, aligned=aligned)
    want = roi_align_port(features, rois, 0.5, 3, 4, ratio, aligned)
    assert got.shape == (6, 3, 3, 4)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_roi_align_on_a_ramp_returns_bin_centres_only_when_aligned():
    h, w = 16, 16
    i, j = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ramp = (2 * (j + 0.5) + 3 * (i + 0.5) + 1)[None, None]
    box = torch.tensor([[0, 2.0, 3.0, 10.0, 11.0]], dtype=torch.float64)
    centres_x = 2.0 + (torch.arange(4, dtype=torch.float64) + 0.5) * 2.0
    centres_y = 3.0 + (torch.arange(4, dtype=torch.float64) + 0.5) * 2.0
    want = 2 * centres_x[None, :] + 3 * centres_y[:, None] + 1
    torch.testing.assert_close(roi_align(ramp, box, 4, aligned=True)[0, 0], want)
    off = roi_align(ramp, box, 4, aligned=False)[0, 0]
    torch.testing.assert_close(off - want, torch.full_like(want, 2.5))   # half a pixel in x and y: 0.5*2 + 0.5*3


def test_roi_pool_takes_max_over_rounded_bins():
    features = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8)
    out = roi_pool(features, torch.tensor([[0, 0.4, 0.4, 3.4, 3.4]]), 2)
    # rounded box covers cells 0..3; bins are rows/cols {0,1} and {2,3}: max is the bottom-right cell
    assert out[0, 0].tolist() == [[9.0, 11.0], [25.0, 27.0]]
    empty = roi_pool(features, torch.tensor([[0, 20.0, 20.0, 30.0, 30.0]]), 2)
    assert (empty == 0).all()


def test_roi_pool_rounds_half_away_from_zero_like_torchvision():
    """torchvision rounds with C++'s std::round: the box 1.5..2.5 covers cells 2..3, whose max is 15 (Python's
    round, half to even, would give cells 2..2 and 10)."""
    features = torch.arange(16.).reshape(1, 1, 4, 4)
    assert roi_pool(features, torch.tensor([[0, 1.5, 1.5, 2.5, 2.5]]), (1, 1)).item() == 15.0
    assert roi_pool_cells((0.5, 1.5, 2.5, -0.5)) == (1, 2, 3, -1)
    assert roi_pool_cells((3.0, 5.0, 11.0, 13.0), 0.25) == (1, 1, 3, 3)     # 0.75, 1.25, 2.75, 3.25


def test_list_of_boxes_equals_rois_tensor(problem):
    features, rois = problem
    boxes = [rois[rois[:, 0] == b, 1:] for b in range(2)]
    ordered = torch.cat([rois[rois[:, 0] == b] for b in range(2)])
    torch.testing.assert_close(roi_align(features, boxes, 2), roi_align(features, ordered, 2))
    assert rois_from_boxes(boxes).shape == (6, 5)


def test_roi_align_is_differentiable(problem):
    features, rois = problem
    features = features.clone().requires_grad_()
    roi_align(features, rois, 2).sum().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(features=torch.zeros(3, 4, 4), rois=torch.zeros(1, 5)), ValueError, "features"),
    (dict(features=torch.zeros(1, 1, 4, 4), rois=torch.zeros(1, 4)), ValueError, "rois"),
    (dict(features=torch.zeros(1, 1, 4, 4), rois=torch.tensor([[1.0, 0, 0, 2, 2]])), ValueError, "image indices"),
    (dict(features=torch.zeros(1, 1, 4, 4), rois=torch.zeros(1, 5), spatial_scale=0.0), ValueError, "spatial_scale"),
    (dict(features=torch.zeros(1, 1, 4, 4), rois=torch.zeros(1, 5), output_size=0), ValueError, "output_size"),
    (dict(features=torch.zeros(1, 1, 4, 4), rois="boxes"), TypeError, "rois"),
])
@pytest.mark.parametrize("op", [roi_align, roi_pool])
def test_bad_input_names_the_argument(op, kwargs, error, words):
    kwargs = {"output_size": 2, **kwargs}
    with pytest.raises(error, match=words):
        op(**kwargs)
