"""Cell arithmetic: every kind recomputed by hand equals the layer's own output."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from convlens.errors import ConvlensError
from convlens.inspect import cell_arithmetic
from convlens.models._registry import Normalize, StagedModel

FAST = settings(max_examples=40, deadline=None)


def _model(layer: nn.Module, in_shape: tuple[int, int, int]) -> StagedModel:
    """A one-layer staged model; Normalize(0, 1) passes pixels through unchanged."""
    channels = in_shape[0]
    stages = [("normalize", Normalize([0.0] * channels, [1.0] * channels)), ("layer", layer)]
    return StagedModel(stages, in_shape, 2).eval()


def _cells(output_shape, draw_index):
    """A few cells to check, including both corners (where padding lives)."""
    c, h, w = output_shape
    return [(0, 0, 0), (c - 1, h - 1, w - 1), (draw_index % c, draw_index % h, draw_index % w)]


def _check_all(model, image, cells):
    for channel, row, col in cells:
        cell = cell_arithmetic(model, image, "layer", channel, row, col)
        assert cell.total == pytest.approx(cell.output, abs=1e-5)


@FAST
@given(
    group_channels=st.integers(1, 3),
    groups=st.integers(1, 3),
    out_per_group=st.integers(1, 2),
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    size=st.tuples(st.integers(7, 11), st.integers(7, 11)),
    bias=st.booleans(),
    index=st.integers(0, 100),
)
def test_conv_cell_equals_the_layer(
    group_channels, groups, out_per_group, kernel, stride, padding, dilation, size, bias, index
):
    torch.manual_seed(index)
    conv = nn.Conv2d(
        group_channels * groups, out_per_group * groups, kernel, stride, padding, dilation, groups, bias
    )
    model = _model(conv, (group_channels * groups, *size))
    image = torch.rand(group_channels * groups, *size)
    out_shape = conv(image.unsqueeze(0))[0].shape
    for channel, row, col in _cells(out_shape, index):
        cell = cell_arithmetic(model, image, "layer", channel, row, col)
        assert cell.total == pytest.approx(cell.output, abs=1e-5)
        assert cell.patch.shape == (group_channels, *kernel)
        group = channel // out_per_group
        assert cell.input_channels == list(range(group * group_channels, (group + 1) * group_channels))
        # padded positions hold zeros and are exactly the rows/cols outside the image
        assert (cell.patch[cell.padding] == 0).all()
        row_out = torch.tensor([not 0 <= r < size[0] for r in cell.rows])
        col_out = torch.tensor([not 0 <= c < size[1] for c in cell.cols])
        assert torch.equal(cell.padding[0], row_out[:, None] | col_out[None, :])


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
@FAST
@given(
    padding_mode=st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
    same=st.booleans(),
    kernel=st.integers(1, 4),
    index=st.integers(0, 100),
)
def test_conv_padding_modes_and_same_padding(padding_mode, same, kernel, index):
    torch.manual_seed(index)
    padding = "same" if same else 1
    conv = nn.Conv2d(2, 3, kernel, padding=padding, padding_mode=padding_mode)
    model = _model(conv, (2, 6, 7))
    image = torch.rand(2, 6, 7)
    _check_all(model, image, _cells(conv(image.unsqueeze(0))[0].shape, index))


def test_conv_hand_worked_example():
    conv = nn.Conv2d(1, 1, 2, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]))
        conv.bias.fill_(0.5)
    model = _model(conv, (1, 2, 2))
    image = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    cell = cell_arithmetic(model, image, "layer", 0, 0, 0)  # top-left: the kernel hangs over the padding
    assert cell.rows == [-1, 0] and cell.cols == [-1, 0]
    assert cell.patch[0].tolist() == [[0.0, 0.0], [0.0, 1.0]]
    assert cell.padding[0].tolist() == [[True, True], [True, False]]
    assert cell.products[0].tolist() == [[0.0, 0.0], [0.0, 4.0]]
    assert cell.channel_sums.tolist() == [4.0]
    assert cell.bias == 0.5 and cell.total == 4.5 and cell.output == pytest.approx(4.5)


@FAST
@given(
    kernel=st.integers(1, 3),
    stride=st.integers(1, 3),
    padding=st.integers(0, 1),
    dilation=st.integers(1, 2),
    ceil_mode=st.booleans(),
    index=st.integers(0, 100),
)
def test_max_pool_cell_equals_the_layer(kernel, stride, padding, dilation, ceil_mode, index):
    if padding * 2 > kernel:
        padding = kernel // 2  # PyTorch's rule: padding at most half the kernel
    torch.manual_seed(index)
    pool = nn.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=ceil_mode)
    model = _model(pool, (2, 7, 8))
    image = torch.randn(2, 7, 8)
    out_shape = pool(image.unsqueeze(0))[0].shape
    for channel, row, col in _cells(out_shape, index):
        cell = cell_arithmetic(model, image, "layer", channel, row, col)
        assert cell.total == cell.output
        assert image[channel][cell.winner] == cell.output  # the winner sits where the maximum is


@FAST
@given(
    kernel=st.integers(1, 3),
    stride=st.integers(1, 3),
    padding=st.integers(0, 1),
    ceil_mode=st.booleans(),
    count_include_pad=st.booleans(),
    divisor=st.sampled_from([None, 3]),
    index=st.integers(0, 100),
)
def test_avg_pool_cell_equals_the_layer(
    kernel, stride, padding, ceil_mode, count_include_pad, divisor, index
):
    padding = min(padding, kernel // 2)
    torch.manual_seed(index)
    pool = nn.AvgPool2d(kernel, stride, padding, ceil_mode, count_include_pad, divisor)
    model = _model(pool, (2, 7, 8))
    image = torch.randn(2, 7, 8)
    _check_all(model, image, _cells(pool(image.unsqueeze(0))[0].shape, index))


@pytest.mark.parametrize("output_size", [1, 3, (2, 5)])
def test_adaptive_avg_pool(output_size):
    pool = nn.AdaptiveAvgPool2d(output_size)
    model = _model(pool, (2, 7, 8))
    image = torch.randn(2, 7, 8)
    out_shape = pool(image.unsqueeze(0))[0].shape
    _check_all(
        model, image, [(c, r, k) for c in range(2) for r in range(out_shape[1]) for k in range(out_shape[2])]
    )


def test_batchnorm_relu_linear_flatten_normalize():
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        norm.running_mean.copy_(torch.randn(3))
        norm.running_var.copy_(torch.rand(3) + 0.5)
        norm.weight.copy_(torch.randn(3))
        norm.bias.copy_(torch.randn(3))
    stages = [
        ("normalize", Normalize([0.2, 0.4, 0.6], [0.5, 0.25, 2.0])),
        ("bn", norm),
        ("relu", nn.ReLU()),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(3 * 4 * 5, 6)),
    ]
    model = StagedModel(stages, (3, 4, 5), 6).eval()
    image = torch.rand(3, 4, 5)
    for stage in ("normalize", "bn", "relu"):
        for cell in [(0, 0, 0), (2, 3, 4), (1, 2, 1)]:
            result = cell_arithmetic(model, image, stage, *cell)
            assert result.total == pytest.approx(result.output, abs=1e-5), stage
    relu = cell_arithmetic(model, image, "relu", 1, 2, 3)
    assert relu.after == max(relu.before, 0)
    for unit in (0, 17, 59):
        flat = cell_arithmetic(model, image, "flatten", unit)
        assert flat.source == (unit // 20, unit % 20 // 5, unit % 5)
        assert flat.total == flat.output
    for unit in range(6):
        fc = cell_arithmetic(model, image, "fc", unit)
        assert fc.total == pytest.approx(fc.output, abs=1e-5)
        products = fc.products.abs()
        assert products[fc.top_inputs[0]] == products.max()
        assert fc.top_inputs == sorted(fc.top_inputs, key=lambda i: -products[i])


def test_softmax_cell(digits_model, digits):
    model, _ = digits_model
    image = digits.test_images[0].float() / 255
    cell = cell_arithmetic(model, image, "softmax", 3)
    logits = model(image.unsqueeze(0))[0].detach().double()
    assert cell.exp_sum == pytest.approx(float(torch.exp(logits - logits.max()).sum()))
    assert cell.total == pytest.approx(float(torch.softmax(logits, 0)[3]), abs=1e-6)
    assert cell.probabilities.sum() == pytest.approx(1.0, abs=1e-6)


def test_every_stage_of_the_trained_model(digits_model, digits):
    model, _ = digits_model
    image = digits.test_images[7].float() / 255
    for name, _module in model.stages():
        cells = [(0, 0, 0), (0, 1, 1)] if name not in ("flatten", "fc") else [(0, 0, 0), (5, 0, 0)]
        for cell in cells:
            result = cell_arithmetic(model, image, name, *cell)
            assert result.total == pytest.approx(result.output, abs=1e-5), name


def test_every_stage_of_the_large_data_recipes_convnet():
    """The CPU recipe for large data sets: no last pooling, a hidden fully connected layer."""
    from convlens.models import create_model

    torch.manual_seed(0)
    model = create_model(
        "convnet", (1, 28, 28), 10, blocks=3, batchnorm=True, pool_last=False, hidden=32, stem_stride=2
    )
    model.train()
    model(torch.rand(8, 1, 28, 28))  # BatchNorm running statistics that are not the identity
    model.eval()
    image = torch.rand(1, 28, 28)
    for name, _module in model.stages():
        one_d = name in ("flatten", "fc1", "relu_fc1", "fc")
        for cell in [(0, 0, 0), (5, 0, 0)] if one_d else [(0, 0, 0), (0, 6, 6)]:
            result = cell_arithmetic(model, image, name, *cell)
            assert result.total == pytest.approx(result.output, abs=1e-5), name


@pytest.mark.parametrize(
    ("stage", "cell", "message"),
    [
        ("conv1", (16, 0, 0), r"outside stage 'conv1', whose output is 16x8x8; expected channel 0..15"),
        ("conv1", (0, 8, 0), r"row 0..7"),
        ("pool1", (0, 0, -1), r"col 0..3"),
        ("fc", (10, 0, 0), r"unit 0..9"),
        ("fc", (0, 1, 0), r"row 0 and col 0"),
        ("softmax", (11, 0, 0), r"unit 0..9"),
        ("conv7", (0, 0, 0), r"unknown stage 'conv7'; this model's stages are: normalize, conv1"),
    ],
)
def test_bad_cells_are_clear_errors(digits_model, digits, stage, cell, message):
    model, _ = digits_model
    with pytest.raises(ConvlensError, match=message):
        cell_arithmetic(model, digits.test_images[0].float() / 255, stage, *cell)


def test_composite_stage_lists_the_stages_that_have_arithmetic():
    from convlens.models import create_model

    model = create_model("resnet8", (1, 8, 8), 3).eval()
    with pytest.raises(ConvlensError, match=r"'block1' \(BasicBlock\) has no cell arithmetic.*conv1, bn1"):
        cell_arithmetic(model, torch.rand(1, 8, 8), "block1")
    cell = cell_arithmetic(model, torch.rand(1, 8, 8), "pool", 5)
    assert cell.total == pytest.approx(cell.output, abs=1e-5)
