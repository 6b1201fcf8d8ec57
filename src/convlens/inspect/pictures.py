"""Pictures to look through a CNN at: a built-in smiley, digits, photos, image files and DICOM.

``load_picture`` gives a grayscale grid for hand-made convolution; ``picture_for_model``
turns the same sources into a model's input (C, H, W). Nothing here downloads: the photos
ship with scikit-image and the chest X-ray with pydicom-data (an optional extra).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from convlens.errors import ConvlensError

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
MAX_ASPECT_CHANGE = 4.0  # refuse to squash an image whose shape is this far from the model's
BUILT_IN = ("smiley", "digits[:N]", *PHOTOS, XRAY)


def load_picture(source: str | Path) -> torch.Tensor:
    """A grayscale picture (H, W) in [0, 1] from a built-in name or an image/DICOM file."""
    text = str(source)
    if text == "smiley":
        return SMILEY.clone()
    if text == "digits" or text.startswith("digits:"):
        return _digit(text)
    if text in PHOTOS:
        import skimage.color
        import skimage.data

        photo = getattr(skimage.data, text)()
        gray = photo if photo.ndim == 2 else skimage.color.rgb2gray(photo)
        return torch.from_numpy(_unit_range(gray.astype(np.float64))).float()
    if text == XRAY:
        return read_dicom(_sample_xray())
    path = Path(text).expanduser()
    if not path.exists():
        raise ConvlensError(
            f"{text}: no such file; expected an image or DICOM file, or one of: {', '.join(BUILT_IN)}"
        )
    from convlens.data.readers import check_regular_file, decode_image, image_to_tensor

    check_regular_file(path)  # before is_dicom opens it: a FIFO would block
    if is_dicom(path):
        return read_dicom(path)

    rgb = decode_image(path)  # (H, W, 3) uint8
    return image_to_tensor(rgb, 1, rgb.shape[:2])[0].float() / 255.0


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


def is_dicom(path: Path) -> bool:
    """DICOM by suffix or by the 'DICM' marker after the 128-byte preamble."""
    if path.suffix.lower() in {".dcm", ".dicom"}:
        return True
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def read_dicom(path: str | Path) -> torch.Tensor:
    """A DICOM image as grayscale (H, W) in [0, 1]: modality LUT applied, MONOCHROME1 inverted."""
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
        from pydicom.pixels import apply_modality_lut
    except ImportError:
        raise ConvlensError(f"{path}: reading DICOM needs pydicom (pip install 'convlens[dicom]')") from None
    from convlens.data.readers import check_regular_file

    check_regular_file(Path(path))
    try:
        dataset = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise ConvlensError(f"{path}: not a readable DICOM file ({exc})") from None
    if not any(key in dataset for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ConvlensError(f"{path}: DICOM file has no pixel data (no image to show)")
    try:
        pixels = apply_modality_lut(dataset.pixel_array, dataset).astype(np.float64)
    except Exception as exc:  # missing decoder plug-ins raise several types
        raise ConvlensError(f"{path}: cannot decode DICOM pixel data ({exc})") from None
    if int(dataset.get("SamplesPerPixel", 1)) == 3:
        pixels = pixels @ np.array([0.299, 0.587, 0.114])  # (…, H, W, 3) → luma
    if pixels.ndim == 3:  # a multi-frame volume: show its first frame
        pixels = pixels[0]
    if pixels.ndim != 2:
        raise ConvlensError(f"{path}: DICOM pixel data has shape {pixels.shape}; expected a 2-D image")
    from convlens.data.readers import count_non_finite, non_finite_error

    if count_non_finite(pixels):  # float pixel data (or a modality LUT) can hold NaN or inf
        raise non_finite_error(str(path), count_non_finite(pixels))
    gray = _unit_range(pixels)
    if str(dataset.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        gray = 1.0 - gray  # MONOCHROME1 shows low values bright
    return torch.from_numpy(gray).float()


def _unit_range(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def picture_for_model(source: str | Path, input_shape: tuple[int, int, int]) -> torch.Tensor:
    """A built-in name, image or DICOM file as a model input (C, H, W) in [0, 1], resized."""
    channels, height, width = input_shape
    path = Path(str(source)).expanduser()
    if path.is_file() and not is_dicom(path):
        from convlens.data.readers import array_to_input, decode_image

        rgb = decode_image(path)  # (H, W, 3) uint8
        _check_aspect(str(source), rgb.shape[0], rgb.shape[1], height, width)
        return array_to_input(rgb, input_shape)
    gray = load_picture(source)  # (H, W)
    _check_aspect(str(source), gray.shape[0], gray.shape[1], height, width)
    if channels not in (1, 3):
        raise ConvlensError(f"{source}: cannot adapt a picture to {channels} channels; expected 1 or 3")
    from convlens.data.transforms import resize_images

    resized = resize_images(gray[None, None], (height, width))[0]  # (1, H, W)
    return resized.expand(channels, height, width).clone()


def _check_aspect(source: str, rows: int, cols: int, height: int, width: int) -> None:
    change = (rows / cols) / (height / width)
    if not 1 / MAX_ASPECT_CHANGE <= change <= MAX_ASPECT_CHANGE:
        raise ConvlensError(
            f"{source}: a {rows}x{cols} picture cannot be adapted to the model's {height}x{width} input "
            f"(aspect ratio off by more than {MAX_ASPECT_CHANGE:g}x); crop it first"
        )
