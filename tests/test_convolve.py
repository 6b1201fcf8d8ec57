"""Hand-made convolution: the seed's edge kernel on the smiley, scipy as the reference, bad kernels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.signal import correlate2d

from convlens.errors import ConvlensError
from convlens.inspect import KERNELS, SMILEY, convolve, load_picture, parse_kernel, read_dicom

# The edge kernel (-1 left column, +1 right column) on the smiley, worked out by hand:
# each cell is (sum of the 3 pixels right of centre) - (sum of the 3 pixels left of centre).
SMILEY_EDGES = [
    [1, 0, -1, 1, 0, -1],
    [-1, -1, -1, 1, 1, 1],
    [-1, 0, -2, 2, 0, 1],
    [-2, 1, 0, 0, -1, 2],
    [-1, 0, 0, 0, 0, 1],
    [0, 1, 1, -1, -1, 0],
]


def test_edge_kernel_on_the_smiley_gives_the_hand_computed_map():
    result = convolve(SMILEY, "edge")
    assert result.output.tolist() == SMILEY_EDGES
    cell = result.cell(2, 2)  # rows 2..4, cols 2..4 of the smiley
    assert cell.patch.tolist() == [[1, 0, 0], [0, 0, 0], [1, 0, 0]]
    assert cell.products.tolist() == [[-1, 0, 0], [0, 0, 0], [-1, 0, 0]]
    assert cell.sum == -2


finite = st.floats(-10, 10, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    image=arrays(np.float64, st.tuples(st.integers(3, 12), st.integers(3, 12)), elements=finite),
    kernel=arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 3)), elements=finite),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
)
def test_matches_scipy_correlate2d(image, kernel, stride, padding):
    expected = correlate2d(np.pad(image, padding), kernel, mode="valid")[::stride, ::stride]
    result = convolve(image, kernel, stride=stride, padding=padding)
    np.testing.assert_allclose(result.output.numpy(), expected, atol=1e-9)
    row, col = expected.shape[0] - 1, expected.shape[1] - 1
    assert result.cell(row, col).sum == pytest.approx(expected[row, col], abs=1e-9)


def test_padding_cells_are_marked_and_zero():
    cell = convolve(SMILEY, "sobel-x", padding=1).cell(0, 7)
    assert cell.rows == [-1, 0, 1] and cell.cols == [6, 7, 8]
    assert cell.padding.tolist() == [[True, True, True], [False, False, True], [False, False, True]]
    assert (cell.patch[cell.padding] == 0).all()


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_named_kernels_behave(name):
    flat = torch.full((6, 6), 0.5, dtype=torch.float64)
    out = convolve(flat, name).output
    expected = 0.5 * float(torch.tensor(KERNELS[name]).sum())  # a flat image: kernel sum times the value
    assert torch.allclose(out, torch.full_like(out, expected))
    assert torch.equal(convolve(SMILEY, "identity").output, SMILEY[1:-1, 1:-1].double())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,0,-1; 2,0,-2", [[1, 0, -1], [2, 0, -2]]),
        ("[[1, 2], [3, 4]]", [[1, 2], [3, 4]]),
        ("1 2\n3 4", [[1, 2], [3, 4]]),
        ("Sobel-Y", KERNELS["sobel-y"]),
    ],
)
def test_kernel_text(text, expected):
    assert parse_kernel(text).tolist() == expected


@pytest.mark.parametrize(
    ("kernel", "message"),
    [
        ("wobble", "expected a name"),
        ("1,2; 3", "same number of values"),
        ("[[1, 2], [3]]", "2-D numeric matrix"),
        ("[1, 2, 3]", "2-D numeric matrix"),
        ("[[1, 2", "not valid JSON"),
        ([[1, float("nan")]], "finite"),
        ([["a", "b"]], "2-D numeric matrix"),
        ([[[1]]], "2-D numeric matrix"),
    ],
)
def test_bad_kernels(kernel, message):
    with pytest.raises(ConvlensError, match=message):
        convolve(SMILEY, kernel)


def test_bad_sizes_strides_and_cells():
    with pytest.raises(ConvlensError, match="larger than the 8x8"):
        convolve(SMILEY, np.ones((9, 3)))
    with pytest.raises(ConvlensError, match="stride"):
        convolve(SMILEY, "edge", stride=0)
    with pytest.raises(ConvlensError, match="padding"):
        convolve(SMILEY, "edge", padding=-1)
    with pytest.raises(ConvlensError, match="2-D grayscale"):
        convolve(torch.rand(3, 8, 8), "edge")
    with pytest.raises(ConvlensError, match=r"outside the 6x6 feature map; expected row 0..5"):
        convolve(SMILEY, "edge").cell(6, 0)


def test_pictures_load_as_grayscale_in_unit_range(tmp_path):
    from PIL import Image

    for name, shape in [("smiley", (8, 8)), ("digits:5", (8, 8)), ("chelsea", (300, 451))]:
        picture = load_picture(name)
        assert picture.shape == shape and picture.min() >= 0 and picture.max() <= 1
    rgb = np.zeros((5, 7, 3), dtype=np.uint8)
    rgb[:, 3] = 255
    Image.fromarray(rgb).save(tmp_path / "bar.png")
    assert load_picture(tmp_path / "bar.png")[:, 3].tolist() == [1.0] * 5
    with pytest.raises(
        ConvlensError, match="no such file; expected an image or DICOM file, or one of: smiley"
    ):
        load_picture(tmp_path / "missing.png")
    with pytest.raises(ConvlensError, match="digits:N with N in 0..1796"):
        load_picture("digits:5000")


def test_dicom_chest_xray_and_dicom_without_pixels(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm", download=False)
    ct = read_dicom(path)
    assert ct.ndim == 2 and float(ct.min()) == 0.0 and float(ct.max()) == 1.0
    dataset = pydicom.dcmread(path)
    del dataset.PixelData
    dataset.save_as(tmp_path / "empty.dcm")
    with pytest.raises(ConvlensError, match="empty.dcm: DICOM file has no pixel data"):
        load_picture(tmp_path / "empty.dcm")
    (tmp_path / "fake.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(ConvlensError, match="fake.dcm: not a readable DICOM file"):
        load_picture(tmp_path / "fake.dcm")
    if get_testdata_file("RG1_UNCI.dcm", download=False):
        xray = load_picture("xray")
        assert xray.shape == (1955, 1841)
        assert convolve(xray[:64, :64], "laplacian").output.shape == (62, 62)
