"""The segmentation topic module: demos and the transposed-convolution explorer."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from lecturelib import reference, segmentation  # noqa: E402


def test_sliding_window_and_dense_scores_agree():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3))  # receptive field 5
    result = segmentation.sliding_window_cost(net, torch.rand(3, 9, 7), patch=5)
    assert result["window_passes"] == 63 and result["dense_passes"] == 1
    assert result["max_difference"] < 1e-5
    with pytest.raises(ValueError, match="patch must be odd"):
        segmentation.sliding_window_cost(net, torch.rand(3, 9, 7), patch=4)
    with pytest.raises(ValueError, match="image must have 3 dimensions"):
        segmentation.sliding_window_cost(net, torch.rand(1, 3, 9, 7), patch=5)


@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 1), (3, 0)])
def test_conv2d_matrix_and_its_transpose(stride, padding):
    kernel = torch.randn(3, 3, dtype=torch.float64)
    matrix = segmentation.conv2d_as_matrix(kernel, (6, 5), stride=stride, padding=padding)
    x = torch.randn(6, 5, dtype=torch.float64)
    out = F.conv2d(x[None, None], kernel[None, None], stride=stride, padding=padding)[0, 0]
    assert matrix.shape == (out.numel(), 30)
    torch.testing.assert_close(matrix @ x.flatten(), out.flatten())
    z = torch.randn(out.shape, dtype=torch.float64)
    up = F.conv_transpose2d(z[None, None], kernel[None, None], stride=stride, padding=padding)[0, 0]
    # conv_transpose2d may produce fewer rows than 6 when stride does not divide evenly: compare where defined
    torch.testing.assert_close((matrix.T @ z.flatten()).reshape(6, 5)[: up.shape[0], : up.shape[1]], up)


def test_footprint_and_overlap_counts():
    result = segmentation.conv_transpose_footprint(reference.conv_transpose2d, input_size=3, kernel_size=3,
                                                   stride=2, pixel=(1, 2))
    assert result["output_size"] == 7
    footprint = result["footprint"]
    assert footprint.shape == (7, 7) and footprint.sum() == 9
    assert np.array_equal(np.argwhere(footprint)[0], [2, 4])          # kernel placed at (i*s, j*s)
    overlap = result["overlap"]
    assert overlap.max() == 4 and overlap[2, 2] == 4 and overlap[0, 0] == 1   # corners of 4 copies meet
    assert overlap.sum() == 9 * 9                                          # every copy counted once


def test_footprint_shows_a_students_overwrite_bug():
    def overwriting(x, weight, bias=None, stride=1, padding=0):
        n, c, h, w = x.shape
        k = weight.shape[-1]
        out = x.new_zeros(n, weight.shape[1], (h - 1) * stride + k, (w - 1) * stride + k)
        for i in range(h):
            for j in range(w):
                out[:, :, i * stride:i * stride + k, j * stride:j * stride + k] = x[0, 0, i, j] * weight[0]
        return out

    result = segmentation.conv_transpose_footprint(overwriting, input_size=3, kernel_size=3, stride=2)
    assert result["overlap"].max() == 1          # the bug is visible: no pixel sums two copies


def test_footprint_reports_errors_instead_of_raising():
    def stub(*args, **kwargs):
        raise NotImplementedError()

    result = segmentation.conv_transpose_footprint(stub)
    assert result["error"] == "implement conv_transpose2d above"
    fig = segmentation.plot_conv_transpose(result)
    assert len(fig.axes) == 3
    with pytest.raises(ValueError, match="pixel must lie inside"):
        segmentation.conv_transpose_footprint(stub, input_size=2, pixel=(2, 0))


def test_explorer_runs_the_students_function_and_follows_sliders():
    calls = []

    def spy(x, weight, bias=None, stride=1, padding=0):
        calls.append((tuple(x.shape), tuple(weight.shape), stride, padding))
        return reference.conv_transpose2d(x, weight, bias, stride, padding)

    box = segmentation.conv_transpose_explorer(spy)
    assert calls and calls[-1] == ((1, 1, 3, 3), (1, 1, 3, 3), 2, 0)
    controls = box.interactive
    sliders = {w.description: w for w in controls.children if hasattr(w, "description")}
    sliders["stride"].value = 3
    sliders["kernel"].value = 4
    assert calls[-1] == ((1, 1, 3, 3), (1, 1, 4, 4), 3, 0)
    assert controls.result["output_size"] == (3 - 1) * 3 + 4
    sliders["input size"].value = 2
    assert sliders["pixel row"].max == 1


def test_default_explorer_function_is_the_reference_in_the_instructor_copy():
    assert segmentation.conv_transpose_footprint()["overlap"].tolist() == \
        segmentation.conv_transpose_footprint(reference.conv_transpose2d)["overlap"].tolist()


# ---------------------------------------------------------------------------------------------
# Strided convolution, the lecture's transposed-convolution example (issue 15)
# ---------------------------------------------------------------------------------------------
def test_strided_convolution_is_the_subsampled_stride_one_convolution():
    demo = segmentation.strided_conv_demo(size=10, channels=3, kernel_size=3, stride=2, padding=1)
    assert (demo["input_shape"], demo["strided_shape"], demo["dense_shape"]) == ((10, 10), (5, 5), (10, 10))
    assert demo["max_difference"] < 1e-5 and demo["avg_pool_difference"] < 1e-6
    assert demo["flops"]["strided"] * 4 == demo["flops"]["dense"]


def test_the_lectures_transposed_convolution_example():
    example = segmentation.transposed_conv_example()
    assert example["full"].shape == (5, 5) and example["no_output_padding"].shape == (3, 3)
    assert example["output_padding_1"].shape == (4, 4)
    # All-ones kernel: the centre of the full output is covered by all four copies, 1 + 2 + 3 + 4.
    assert example["full"][2, 2] == 10 and example["full"].sum() == 9 * 10
    np.testing.assert_array_equal(example["output_padding_1"], example["full"][1:, 1:])   # padding 1 off the top/left
    np.testing.assert_array_equal(example["no_output_padding"], example["full"][1:-1, 1:-1])


def test_new_segmentation_figures_draw():
    import matplotlib.pyplot as plt
    fig = segmentation.plot_strided_windows(4, 3, 2, 1)
    assert "4 x 4 input -> 2 x 2 output" in fig.axes[1].get_title()
    assert "4 x 4 input -> 4 x 4 output" in fig.axes[0].get_title()
    fig = segmentation.plot_transposed_conv_example(segmentation.transposed_conv_example())
    assert "4 x 4 (red)" in fig.axes[2].get_title()
    plt.close("all")
