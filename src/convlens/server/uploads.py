"""Turning what the page sends into the model's input: an uploaded or drawn image, or a test image.

Every image endpoint takes the same multipart form: an ``image`` file (a photo, or the
drawing canvas as PNG) or a ``test_index``. Uploads are checked before any pixel is
decoded: at most 5 MB, one of a few raster formats (Pillow can open formats that run
external programs; those are refused), at most 16 megapixels, then decoded by the same
reader as ``convlens predict`` with Pillow's decompression-bomb guard and resized to the
model's input, so the page and the CLI see the same pixels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch

from convlens.errors import ConvlensError
from convlens.server.runs import LoadedRun

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_UPLOAD_PIXELS = 16_000_000
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")  # JPEG also opens cameras' MPO files


class UploadRejected(ConvlensError):
    """An upload that is not an acceptable image; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _NamedBytes(io.BytesIO):
    """Upload bytes that print as the uploaded file's name, so reader errors name the file."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.label = name

    def __str__(self) -> str:
        return f"upload {self.label!r}"


@dataclass
class ModelInput:
    """One image as the model takes it, and where it came from."""

    pixels: torch.Tensor  # (C, H, W) float32 in [0, 1]
    source: str  # "upload 'x.png'" or "test image 12"
    label: int | None = None  # the true class of a test image
    inverted: bool = False  # the pixels are 1 − the image's (the page's invert toggle)
    shift: dict | None = None  # how far it is from the training images (``convlens.shift``)

    @property
    def batch(self) -> torch.Tensor:
        return self.pixels.unsqueeze(0)  # (1, C, H, W)


def check_upload(data: bytes, name: str) -> None:
    """Size, format and pixel count, read from the header only (nothing decoded yet)."""
    from PIL import Image

    if len(data) == 0:
        raise UploadRejected(f"upload {name!r} is empty; expected an image file")
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadRejected(
            f"upload {name!r} is {len(data) / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB",
            status=413,
        )
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as img:
            width, height = img.size
    except Image.DecompressionBombError as exc:
        raise UploadRejected(f"upload {name!r} refused, image too large ({exc})", status=413) from None
    except Exception:
        # Pillow's plugins raise many types on malformed headers; any of them means "not an image"
        raise UploadRejected(
            f"upload {name!r} is not an image convlens reads; expected {', '.join(ALLOWED_FORMATS)}",
            status=415,
        ) from None
    if width * height > MAX_UPLOAD_PIXELS:
        raise UploadRejected(
            f"upload {name!r} is {width}x{height} pixels; the limit is {MAX_UPLOAD_PIXELS:,} pixels",
            status=413,
        )


def decode_upload(data: bytes, name: str, input_shape: tuple[int, int, int]) -> torch.Tensor:
    """Upload bytes → the model's input (C, H, W) float32 in [0, 1]."""
    from convlens.data.readers import array_to_input, decode_image

    check_upload(data, name)
    try:
        array = decode_image(_NamedBytes(data, name))  # (H, W, 3) uint8
    except ConvlensError as exc:
        raise UploadRejected(str(exc), status=415) from None
    except (
        Exception
    ) as exc:  # a malformed body past a valid header (e.g. struct.error): still the file's fault
        raise UploadRejected(
            f"upload {name!r}: cannot decode image ({exc.__class__.__name__})", status=415
        ) from None
    return array_to_input(array, input_shape)  # (C, H, W), as `convlens predict` reads files


def test_image(run: LoadedRun, index: int) -> ModelInput:
    """Test image ``index`` of the run's data set."""
    from convlens.data import to_float

    images, labels = run.test_split()
    if not 0 <= index < images.shape[0]:
        raise ConvlensError(f"test_index must be 0..{images.shape[0] - 1}, got {index}")
    return ModelInput(to_float(images[index]), f"test image {index}", int(labels[index]))


def model_input(
    run: LoadedRun, data: bytes | None, name: str | None, test_index: int | None, invert: bool = False
) -> ModelInput:
    """Exactly one of an uploaded image or a test index → the model's input (``invert``: 1 − pixels),
    checked against the training images (``Run.check_shift``)."""
    from convlens.shift import invert as inverted

    if (data is None) == (test_index is None):
        raise ConvlensError("send exactly one of: an 'image' file (PNG/JPEG…) or a 'test_index'")
    if test_index is not None:
        found = test_image(run, test_index)
    else:
        name = name or "image"
        found = ModelInput(decode_upload(data, name, run.input_shape), f"upload {name!r}")
    if invert:
        found.pixels, found.inverted = inverted(found.pixels), True
    check = run.run.check_shift(found.pixels)
    found.shift = None if check is None else check.to_json()
    return found
