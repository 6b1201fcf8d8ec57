"""The built-in pictures: the seed's smiley, scikit-learn's digits, scikit-image's photos and
pydicom-data's chest X-ray, none of which needs a download; ``load_picture`` also reads image and
DICOM files as one grayscale grid (for hand-made convolution).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from convlens.errors import ConvlensError, printable
from convlens.inputs.decoders import is_dicom, read_dicom, unit_range

# The seed's 8x8 smiley: a ring, two eyes and a mouth, 1 = ink.
SMILEY = torch.tensor(
    [
        [0, 0, 1, 1, 1, 1, 0, 0],
        [0, 1, 0, 0, 0, 0, 1, 0],
        [1, 0, 1, 0, 0, 1, 0, 1],
        [1, 0, 0, 0, 0, 0, 0, 1],
        [1, 0, 1, 0, 0, 1, 0, 1],
        [1, 0, 0, 1, 1, 0, 0, 1],
        [0, 1, 0, 0, 0, 0, 1, 0],
        [0, 0, 1, 1, 1, 1, 0, 0],
    ],
    dtype=torch.float32,
)
PHOTOS = ("astronaut", "chelsea", "coffee", "camera")  # scikit-image's sample images
XRAY = "xray"  # pydicom-data's chest X-ray RG1_UNCI.dcm
BUILT_IN = ("smiley", "digits[:N]", *PHOTOS, XRAY)


def load_picture(source: str | Path) -> torch.Tensor:
    """A grayscale picture (H, W) in [0, 1] from a built-in name or an image/DICOM file."""
    text = str(source)
    if text == "smiley":
        return SMILEY.clone()
    if _is_digits(text):
        return _digit(text)
    if text in PHOTOS:
        import skimage.color
        import skimage.data

        photo = getattr(skimage.data, text)()
        gray = photo if photo.ndim == 2 else skimage.color.rgb2gray(photo)
        return torch.from_numpy(unit_range(gray.astype(np.float64))).float()
    if text == XRAY:
        return read_dicom(_sample_xray())
    path = Path(text).expanduser()
    if not path.exists():
        raise ConvlensError(
            f"{printable(text)}: no such file; expected an image or DICOM file, or one of: {', '.join(BUILT_IN)}"
        )
    from convlens.data.readers import check_regular_file, decode_image, image_to_tensor

    check_regular_file(path)  # before is_dicom opens it: a FIFO would block
    if is_dicom(path):
        return read_dicom(path)

    rgb = decode_image(path)  # (H, W, 3) uint8
    return image_to_tensor(rgb, 1, rgb.shape[:2])[0].float() / 255.0


def _is_digits(text: str) -> bool:
    return text == "digits" or text.startswith("digits:")


def is_built_in(text: str) -> bool:
    """Whether ``text`` names a built-in picture (a name, not a file: it wins over a file of that name)."""
    return text in ("smiley", *PHOTOS, XRAY) or _is_digits(text)


def _digit(text: str) -> torch.Tensor:
    from sklearn.datasets import load_digits

    digits = load_digits().images  # (1797, 8, 8) values 0..16
    _, _, index_text = text.partition(":")
    try:
        index = int(index_text or 0)
    except ValueError:
        index = -1
    if not 0 <= index < len(digits):
        raise ConvlensError(f"{text}: expected digits:N with N in 0..{len(digits) - 1}")
    return torch.from_numpy(digits[index] / 16.0).float()


def _sample_xray() -> Path:
    try:
        from pydicom.data import get_testdata_file
    except ImportError:
        get_testdata_file = None
    path = get_testdata_file("RG1_UNCI.dcm", download=False) if get_testdata_file else None
    if not path:
        raise ConvlensError(
            "xray: the sample chest X-ray needs pydicom and pydicom-data (pip install 'convlens[dicom]')"
        )
    return Path(path)
