"""Receptive fields: the computed input region of a cell is where its gradient is nonzero."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from convlens.errors import ConvlensError
from convlens.inspect import receptive_field, receptive_fields
from convlens.models import create_model, list_families
from convlens.models._registry import Normalize, StagedModel


def _gradient_box(model, stage_index, channel, row, col, images) -> tuple[int, int, int, int] | None:
    """Bounding box (top, bottom, left, right) of input pixels with a nonzero gradient, over a batch;
    None when no pixel has one (every tap of a dilated kernel at a corner lies in the padding)."""
    images = images.clone().requires_grad_()
    x = images
    for index, (_, module) in enumerate(model.stages()):
        x = module(x)
        if index == stage_index:
            break
    x[:, channel, row, col].sum().backward()  # channel None: all channels
    nonzero = images.grad.abs().sum(dim=(0, 1)) > 0  # (H, W)
    rows = nonzero.any(dim=1).nonzero().flatten()
    cols = nonzero.any(dim=0).nonzero().flatten()
    if rows.numel() == 0:
        return None
    return int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())


layer = st.one_of(
    st.builds(
        lambda k, s, p, d: ("conv", k, s, min(p, k // 2 * d), d),
        st.integers(1, 4), st.integers(1, 2), st.integers(0, 2), st.integers(1, 2),
    ),
    st.builds(lambda k, s: ("avg", k, s, 0, 1), st.integers(2, 3), st.integers(1, 2)),
)  # fmt: skip


@settings(max_examples=30, deadline=None)
@given(layers=st.lists(layer, min_size=1, max_size=3), size=st.integers(12, 20), seed=st.integers(0, 99))
def test_linear_stacks_match_the_gradient_exactly(layers, size, seed):
    torch.manual_seed(seed)
    stages = [("normalize", Normalize([0.0], [1.0]))]
    for i, (kind, k, s, p, d) in enumerate(layers):
        module = nn.Conv2d(1, 1, k, s, p, d) if kind == "conv" else nn.AvgPool2d(k, s)
        stages.append((f"{kind}{i}", module))
    model = StagedModel(stages, (1, size, size), 2)
    try:
        out = model(torch.zeros(1, 1, size, size))
    except RuntimeError:  # the stack shrank the map below a kernel: not a model to test
        assume(False)
    field = receptive_fields(model)[len(layers)]
    for row, col in {(0, 0), (out.shape[-2] - 1, out.shape[-1] - 1), (out.shape[-2] // 2, 0)}:
        expected = field.region(row, col, (size, size))
        box = _gradient_box(model, len(layers), 0, row, col, torch.rand(1, 1, size, size))
        if box is None:  # the cell reads only padding: no pixel to compare its field with
            continue
        top, left = field.start[0] + row * field.jump[0], field.start[1] + col * field.jump[1]
        clipped = top < 0 or left < 0 or top + field.size[0] > size or left + field.size[1] > size
        if clipped and any(d > 1 for *_, d in layers):
            # a dilated kernel's first taps may fall in the padding and the next ones in a gap
            assert expected[0] <= box[0] <= box[1] <= expected[1]
            assert expected[2] <= box[2] <= box[3] <= expected[3]
        else:
            assert box == expected


@pytest.mark.parametrize("name", list_families("classification"))  # U-Nets: test_segmentation_inspect
def test_registered_models_match_the_gradient(name):
    torch.manual_seed(0)
    model = create_model(name, (1, 16, 16), 3).eval()
    images = torch.rand(64, 1, 16, 16)  # the union over many images reaches past dead ReLUs and pool losers
    fields = receptive_fields(model)
    for index, field in enumerate(fields[:-1]):
        if len(field.output_shape) != 3 or field.whole_image:
            continue
        _, height, width = field.output_shape
        for row, col in {(0, 0), (height // 2, width // 2), (height - 1, width - 1)}:
            box = _gradient_box(model, index, slice(None), row, col, images)
            assert box == field.region(row, col, (16, 16)), (field.stage, row, col)


def test_convnet_geometry_by_hand():
    model = create_model("convnet", (1, 8, 8), 3)
    by_stage = {f.stage: f for f in receptive_fields(model)}
    # conv3x3 pad 1 → 3 px; pool 2 → 4 px, jump 2; conv3x3 → 4 + 2*2 = 8 px; pool → 10 px, jump 4
    assert (by_stage["conv1"].size, by_stage["conv1"].jump, by_stage["conv1"].start) == (
        (3, 3),
        (1, 1),
        (-1, -1),
    )
    assert (by_stage["pool1"].size, by_stage["pool1"].jump) == ((4, 4), (2, 2))
    assert (by_stage["conv2"].size, by_stage["conv2"].jump, by_stage["conv2"].start) == (
        (8, 8),
        (2, 2),
        (-3, -3),
    )
    assert (by_stage["pool2"].size, by_stage["pool2"].jump) == ((10, 10), (4, 4))
    assert by_stage["conv2"].output_shape == (32, 4, 4)
    assert by_stage["conv1"].parameters == 16 * 9 + 16
    assert by_stage["fc"].whole_image and by_stage["softmax"].whole_image
    assert by_stage["conv2"].region(1, 2, (8, 8)) == (0, 6, 1, 7)  # rows -1..6 clipped, cols 1..8 clipped


def test_unknown_stage_lists_valid_ones():
    model = create_model("convnet", (1, 8, 8), 3)
    with pytest.raises(ConvlensError, match="unknown stage 'conv3'.*conv1, relu1"):
        receptive_field(model, "conv3")
    assert receptive_field(model, "pool1").jump == (2, 2)


def test_a_flatten_unit_sees_what_its_pool_cell_sees():
    torch.manual_seed(0)
    model = create_model("convnet", (1, 28, 28), 10)
    fields = {f.stage: f for f in receptive_fields(model)}
    pool, flat, fc = fields["pool2"], fields["flatten"], fields["fc"]
    assert flat.unit_grid == (32, 7, 7) and not flat.whole_image
    assert (flat.size, flat.jump, flat.start) == (pool.size, pool.jump, pool.start)
    assert fc.whole_image and fc.region(0, 0, (28, 28)) == (0, 27, 0, 27)  # the union of all units
    images = torch.rand(16, 1, 28, 28, requires_grad=True)
    units = model.body[: [name for name, _ in model.stages()].index("flatten") + 1](images)  # (4, 1568)
    checked = 0
    for unit in range(0, 32 * 49, 37):
        channel, cell = divmod(unit, 49)
        row, col = divmod(cell, 7)
        region = flat.cell_region(unit, 0, 0, (28, 28))
        assert region == pool.region(row, col, (28, 28)) == pool.cell_region(channel, row, col, (28, 28))
        (gradient,) = torch.autograd.grad(units[:, unit].sum(), images, retain_graph=True)
        rows, cols = (gradient.abs().sum(dim=(0, 1)) > 0).nonzero().T
        if rows.numel() == 0:
            continue  # the unit is off on every image (its ReLU): no gradient to compare
        checked += 1
        top, bottom, left, right = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
        assert region[0] <= top and bottom <= region[1] and region[2] <= left and right <= region[3]
    assert checked > 10
    with pytest.raises(ConvlensError, match=r"channel must be 0..1567 for stage 'flatten'"):
        flat.cell_region(1568, 0, 0, (28, 28))
