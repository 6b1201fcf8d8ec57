"""A segmentation decoder's layers: transposed convolutions and upsampling, cell by cell against
torch, and their receptive fields against the pixels with a nonzero gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from convlens.cli.render import steps_text
from convlens.inspect import cell_arithmetic, layer_facts, layer_kind, open_model, receptive_fields
from convlens.inspect.upsampling import TransposedConvCell, UpsampleCell
from convlens.models._registry import Normalize, StagedModel
from convlens.views.arithmetic import arithmetic_steps

# (in channels, out channels, kernel, stride, padding, output padding, dilation, groups)
TRANSPOSED = [
    (3, 4, 2, 2, 0, 0, 1, 1),  # a U-Net's up-convolution: every output cell from one input cell
    (3, 4, 4, 2, 1, 0, 1, 1),  # overlapping stamps
    (2, 3, 3, 2, 1, 1, 1, 1),
    (4, 6, 3, 1, 1, 0, 2, 2),  # dilated, grouped
    (2, 2, 1, 3, 0, 2, 1, 1),  # stride beyond the kernel: cells only the bias reaches
    (4, 4, (3, 2), (2, 3), (0, 1), (1, 2), (1, 2), 4),  # depthwise, every axis different
]
UPSAMPLES = [
    {"scale_factor": 2, "mode": "nearest"},
    {"scale_factor": 3, "mode": "nearest"},
    {"size": (7, 11), "mode": "nearest"},
    {"scale_factor": 1.5, "mode": "nearest-exact"},
    {"scale_factor": 2, "mode": "bilinear", "align_corners": False},
    {"scale_factor": 2, "mode": "bilinear", "align_corners": True},
    {"scale_factor": (2.5, 1.7), "mode": "bilinear", "align_corners": False},
    {"size": (9, 13), "mode": "bilinear", "align_corners": False},
    {"size": (9, 13), "mode": "bilinear", "align_corners": True},
]
SHAPE = (4, 5, 6)


def _transposed(cin, cout, k, s, p, op, d, g) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, k, s, p, op, groups=g, dilation=d)


def _chain(*layers: nn.Module, shape=SHAPE) -> StagedModel:
    stages = [("normalize", Normalize([0.0] * shape[0], [1.0] * shape[0]))]
    stages += [(f"layer{i}", layer) for i, layer in enumerate(layers)]
    return StagedModel(stages, shape, 2).eval()


def _random_cells(shape, count, seed):
    generator = torch.Generator().manual_seed(seed)
    return {tuple(int(torch.randint(0, n, (1,), generator=generator)) for n in shape) for _ in range(count)}


def _check_cells(model, image, stage: str, count: int = 12):
    with torch.no_grad():
        output = dict(model.stages())[stage](
            model.body[: list(dict(model.stages())).index(stage)](image[None])
        )[0]
    cells = _random_cells(output.shape, count, 0) | {(0, 0, 0), tuple(n - 1 for n in output.shape)}
    for channel, row, col in cells:
        cell = cell_arithmetic(model, image, stage, channel, row, col)
        assert cell.output == pytest.approx(float(output[channel, row, col]), abs=1e-6)
        assert cell.total == pytest.approx(cell.output, abs=1e-5), (stage, channel, row, col)
    return cell


@pytest.mark.parametrize("settings_", TRANSPOSED)
def test_a_transposed_convolutions_cells_add_up_the_stamps_that_cover_them(settings_):
    torch.manual_seed(1)
    layer = _transposed(settings_[0], *settings_[1:])
    model = _chain(nn.Conv2d(4, settings_[0], 1), layer)
    image = torch.rand(SHAPE)
    cell = _check_cells(model, image, "layer1")
    assert isinstance(cell, TransposedConvCell)
    # every stamp listed lands on the cell: input index * stride - padding + tap * dilation
    (s, t), (p, q), (d, e) = cell.stride, cell.padding, cell.dilation
    assert all(i * s - p + k * d == cell.row for i, k in zip(cell.rows, cell.kernel_rows, strict=True))
    assert all(i * t - q + k * e == cell.col for i, k in zip(cell.cols, cell.kernel_cols, strict=True))


def test_a_cell_no_stamp_covers_is_its_bias():
    torch.manual_seed(2)
    layer = nn.ConvTranspose2d(2, 2, 1, stride=2)
    cell = cell_arithmetic(_chain(layer, shape=(2, 3, 3)), torch.rand(2, 3, 3), "layer0", 1, 1, 0)
    assert cell.rows == [] and cell.total == pytest.approx(float(layer.bias[1].detach()))
    assert cell.output == pytest.approx(cell.total, abs=1e-6)


@pytest.mark.parametrize("options", UPSAMPLES, ids=lambda o: "-".join(map(str, o.values())))
def test_an_upsampled_cell_copies_or_blends_its_sources_as_torch_does(options):
    model = _chain(nn.Upsample(**options))
    cell = _check_cells(model, torch.rand(SHAPE), "layer0", count=40)
    assert isinstance(cell, UpsampleCell)
    assert sum(cell.row_weights) == pytest.approx(1.0) and sum(cell.col_weights) == pytest.approx(1.0)
    assert len(cell.rows) == (1 if "nearest" in options["mode"] else len(cell.rows)) <= 2


def test_upsampling_bilinear2d_is_bilinear_with_aligned_corners():
    cell = cell_arithmetic(
        _chain(nn.UpsamplingBilinear2d(scale_factor=2)), torch.rand(SHAPE), "layer0", 1, 3, 5
    )
    assert cell.align_corners and cell.total == pytest.approx(cell.output, abs=1e-5)
    # corners aligned: output row 3 of 10 sits at input row 3 * 4 / 9
    assert cell.positions[0] == pytest.approx(3 * 4 / 9, abs=1e-6)


def _gradient_box(model, stage_index, row, col, shape):
    images = torch.rand(4, *shape, requires_grad=True)
    x = images
    for index, (_, module) in enumerate(model.stages()):
        x = module(x)
        if index == stage_index:
            break
    x[:, :, row, col].sum().backward()
    nonzero = images.grad.abs().sum(dim=(0, 1)) > 0
    rows, cols = nonzero.any(dim=1).nonzero().flatten(), nonzero.any(dim=0).nonzero().flatten()
    if rows.numel() == 0:
        return None
    return int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())


def _assert_fields_match_gradients(model, shape, count: int = 10):
    """The corners, the centre and ``count`` random cells of every stage."""
    fields = receptive_fields(model)
    for index, field in enumerate(fields[:-1]):
        _, height, width = field.output_shape
        cells = {(0, 0), (height - 1, width - 1), (height // 2, width // 2), (0, width - 1)}
        cells |= {cell[1:] for cell in _random_cells((1, height, width), count, index)}
        for row, col in cells:
            top, bottom, left, right = field.region(row, col, shape[1:])
            box = _gradient_box(model, index, row, col, shape)
            if box is None:
                assert top > bottom or left > right, (field.stage, row, col)
            else:
                assert box == (top, bottom, left, right), (field.stage, row, col)


@pytest.mark.parametrize("settings_", TRANSPOSED)
def test_a_transposed_convolutions_receptive_field_is_its_nonzero_gradient(settings_):
    torch.manual_seed(3)
    model = _chain(
        nn.Conv2d(4, settings_[0], 3, padding=1), _transposed(*settings_), nn.Conv2d(settings_[1], 2, 3)
    )
    _assert_fields_match_gradients(model, SHAPE)


@pytest.mark.parametrize("options", UPSAMPLES, ids=lambda o: "-".join(map(str, o.values())))
def test_an_upsamplings_receptive_field_is_its_nonzero_gradient(options):
    torch.manual_seed(4)
    model = _chain(nn.Conv2d(4, 2, 2), nn.Upsample(**options), nn.Conv2d(2, 2, 3, padding=1))
    _assert_fields_match_gradients(model, SHAPE)


layer = st.one_of(
    st.builds(lambda k, s, p: ("conv", k, s, min(p, k // 2)), st.integers(1, 3), st.integers(1, 2), st.integers(0, 1)),
    st.builds(lambda k, s, p: ("up-conv", k, s, min(p, k - 1)), st.integers(1, 4), st.integers(1, 3), st.integers(0, 2)),
    st.builds(lambda m, f: ("upsample", m, f, 0), st.sampled_from(["nearest", "bilinear", "aligned"]), st.sampled_from([2, 1.5])),
)  # fmt: skip


@settings(max_examples=15, deadline=None)
@given(layers=st.lists(layer, min_size=1, max_size=3), seed=st.integers(0, 99))
def test_decoder_stacks_match_the_gradient_exactly(layers, seed):
    torch.manual_seed(seed)
    modules = []
    for kind, a, b, c in layers:
        if kind == "conv":
            modules.append(nn.Conv2d(1, 1, a, b, c))
        elif kind == "up-conv":
            modules.append(nn.ConvTranspose2d(1, 1, a, b, c))
        else:
            mode = "nearest" if a == "nearest" else "bilinear"
            modules.append(
                nn.Upsample(
                    scale_factor=b, mode=mode, align_corners=(a == "aligned") if mode != "nearest" else None
                )
            )
    shape = (1, 6, 7)
    model = _chain(*modules, shape=shape)
    try:
        out = model(torch.zeros(1, *shape))
    except RuntimeError:
        assume(False)
    assume(out.shape[-1] > 0 and out.shape[-2] > 0 and out.numel() < 4000)
    _assert_fields_match_gradients(model, shape)


def test_layer_facts_and_roles():
    model = _chain(nn.ConvTranspose2d(4, 6, 4, 2, 1, groups=2), nn.Upsample(scale_factor=2, mode="bilinear"))
    facts = {fact.stage: fact for fact in layer_facts(model)}
    up_conv, upsample = facts["layer0"], facts["layer1"]
    assert up_conv.role == "transposed_convolution" and upsample.role == "upsample"
    assert (up_conv.kernel, up_conv.stride, up_conv.filters, up_conv.weights_per_filter) == (
        (4, 4),
        (2, 2),
        6,
        2 * 16,
    )
    assert up_conv.output_shape == (6, 10, 12) and upsample.output_shape == (6, 20, 24)
    assert up_conv.mixes_channels and not upsample.mixes_channels
    assert up_conv.grad_cam_target and upsample.grad_cam_target
    assert not layer_kind(nn.ConvTranspose2d(4, 4, 3, groups=4)).mixes(nn.ConvTranspose2d(4, 4, 3, groups=4))
    assert layer_kind(nn.Upsample(scale_factor=2)).affine and layer_kind(nn.ConvTranspose2d(1, 1, 1)).affine
    fields = {field.stage: field for field in receptive_fields(model)}
    assert fields["layer0"].jump == (0.5, 0.5) and fields["layer1"].jump == (0.25, 0.25)


class TinyDecoder(nn.Module):
    """A U-Net's decoder in miniature: down, up by a transposed convolution, a skip, upsampling."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.mix = nn.Conv2d(7, 2, 3, padding=1)
        self.grow = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(torch.relu(self.down(x)))
        y = self.mix(torch.cat([y, x], dim=1))
        return F.interpolate(self.grow(y), scale_factor=0.5, mode="nearest")


def test_a_decoder_opened_as_a_graph_explains_its_cells_in_words_and_numbers():
    torch.manual_seed(5)
    net = TinyDecoder().eval()
    model = open_model(net, (3, 8, 8))
    image = torch.rand(3, 8, 8)
    with torch.no_grad():
        up = net.up(torch.relu(net.down(image[None])))[0]
        grown = net.grow(net.mix(torch.cat([up[None], image[None]], dim=1)))[0]
    kinds = {name: layer_kind(module) for name, module in model.stages()}
    assert kinds["interpolate"].role == "upsample"  # F.interpolate became an Upsample stage
    cell = cell_arithmetic(model, image, "up", 2, 5, 6)
    assert cell.total == pytest.approx(float(up[2, 5, 6]), abs=1e-5) and (cell.rows, cell.cols) == ([2], [3])
    cell = cell_arithmetic(model, image, "grow", 1, 9, 4)
    assert cell.total == pytest.approx(float(grown[1, 9, 4]), abs=1e-5)
    for stage, where, words in (
        ("up", (2, 5, 6), "stamps a copy of the kernel"),
        ("grow", (1, 9, 4), "blends the input cells"),
        ("interpolate", (0, 3, 3), "copies the input cell"),
    ):
        cell = cell_arithmetic(model, image, stage, *where)
        steps = arithmetic_steps(cell)
        total = next(step for step in steps if step.get("total"))
        assert total["value"] == pytest.approx(cell.output, abs=1e-5)
        assert words in steps[1]["text"]
        text = steps_text(steps)  # what explain --at prints
        assert words in text and "the layer's own output" in text
