"""Reading a picture's header and decoding what the pipeline does not leave to ``data.readers``:
the raster formats convlens accepts (Pillow, header only) and DICOM (pydicom).

Every failure here is the file's fault: ``UnreadableInput`` (a server answers 415), or
``InputTooLarge`` for a picture refused for its size before any pixel is decoded (413).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from convlens.errors import ConvlensError

IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")  # JPEG also opens cameras' MPO files


class UnreadableInput(ConvlensError):
    """The source is not a picture convlens reads (the file's fault, not a wrong argument)."""


class InputTooLarge(UnreadableInput):
    """The picture is refused for its size before its pixels are decoded."""


@dataclass(frozen=True)
class Header:
    """What a picture is, read without decoding its pixels."""

    kind: str  # "image" (a raster format), "dicom" or "built-in"
    height: int
    width: int
    frames: int = 1  # a DICOM volume's slices (only the first is used)

    @property
    def pixels(self) -> int:
        return self.height * self.width * self.frames


def image_header(readable, label: str) -> Header:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(readable, formats=IMAGE_FORMATS) as img:
                width, height = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputTooLarge(f"{label}: refused, image too large ({exc})") from None
    except OSError as exc:
        if isinstance(exc, PermissionError | IsADirectoryError):
            raise UnreadableInput(f"{label}: cannot read ({exc.__class__.__name__})") from None
        raise _not_an_image(label) from None
    except Exception:  # Pillow's plugins raise many types on malformed headers: not an image
        raise _not_an_image(label) from None
    return Header("image", int(height), int(width))


def _not_an_image(label: str) -> UnreadableInput:
    return UnreadableInput(
        f"{label}: cannot decode image: not an image convlens reads; expected "
        f"{', '.join(IMAGE_FORMATS)} or DICOM"
    )


def unit_range(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


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


def _open_dicom(source, header_only: bool = False):
    """``pydicom.dcmread`` of a path or named bytes; any failure is one error naming the source."""
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:
        raise ConvlensError(
            f"{source}: reading DICOM needs pydicom (pip install 'convlens[dicom]')"
        ) from None
    from convlens.data.readers import check_regular_file

    check_regular_file(source)
    try:
        return pydicom.dcmread(source, stop_before_pixels=header_only)
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise UnreadableInput(f"{source}: not a readable DICOM file ({exc})") from None


def dicom_header(source) -> Header:
    dataset = _open_dicom(source, header_only=True)
    try:
        rows, cols = int(dataset.get("Rows", 0)), int(dataset.get("Columns", 0))
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        rows = cols = 0
        frames = 1
    if rows < 1 or cols < 1:
        raise UnreadableInput(f"{source}: DICOM file has no pixel data (no image to show)")
    return Header("dicom", rows, cols, frames)


def read_dicom(path) -> torch.Tensor:
    """A DICOM image (a path, or named bytes) as grayscale (H, W) in [0, 1]: modality LUT applied,
    MONOCHROME1 inverted, the first frame of a volume."""
    dataset = _open_dicom(path)
    from pydicom.pixels import apply_modality_lut

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
    gray = unit_range(pixels)
    if str(dataset.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        gray = 1.0 - gray  # MONOCHROME1 shows low values bright
    return torch.from_numpy(gray).float()
