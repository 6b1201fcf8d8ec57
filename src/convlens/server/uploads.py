"""Turning what the page sends into the model's input: an uploaded or drawn image, or a test image.

Every image endpoint takes the same multipart form: an ``image`` file (a photo, the drawing
canvas as PNG, or a DICOM file) or a ``test_index``. Both go through the one input pipeline,
``Run.input`` (``convlens.inputs``), so the page and the CLI see the same pixels and the same
errors. Before any pixel is decoded the server adds its own limits: at most 5 MB and at most
16 megapixels (read from the header); a file that is not a picture convlens reads is a 415,
one too large a 413, a picture the model cannot take (e.g. a wildly wrong aspect ratio) a 400.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from convlens.errors import ConvlensError
from convlens.inputs import InputTooLarge, ModelInput, UnreadableInput, read_header
from convlens.server.runs import LoadedRun

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_UPLOAD_PIXELS = 16_000_000

__all__ = [
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_PIXELS",
    "ModelInput",
    "UploadRejected",
    "check_upload",
    "model_input",
]


class UploadRejected(ConvlensError):
    """An upload that is not an acceptable image; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def upload_label(name: str) -> str:
    """How every message names an uploaded file."""
    return f"upload {name!r}"


def check_upload(data: bytes, name: str) -> None:
    """The server's limits: size, then format and pixel count from the header (nothing decoded yet)."""
    label = upload_label(name)
    if len(data) == 0:
        raise UploadRejected(f"{label} is empty; expected an image file")
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadRejected(
            f"{label} is {len(data) / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB", status=413
        )
    with _statuses():
        header = read_header(data, name=label)
    if header.pixels > MAX_UPLOAD_PIXELS:
        raise UploadRejected(
            f"{label} is {header.width}x{header.height} pixels"
            + (f" x {header.frames} frames" if header.frames > 1 else "")
            + f"; the limit is {MAX_UPLOAD_PIXELS:,} pixels",
            status=413,
        )


@contextmanager
def _statuses() -> Iterator[None]:
    """Pipeline errors as HTTP statuses: not a picture → 415, too large → 413 (the rest stay 400)."""
    try:
        yield
    except InputTooLarge as exc:
        raise UploadRejected(str(exc), status=413) from None
    except UnreadableInput as exc:
        raise UploadRejected(str(exc), status=415) from None


def test_image(run: LoadedRun, index: int, invert: bool = False) -> ModelInput:
    """Test image ``index`` of the run's data set, through the same pipeline as an upload."""
    from convlens.data import to_float

    images, labels = run.test_split()
    if not 0 <= index < images.shape[0]:
        raise ConvlensError(
            f"test_index must be 0..{images.shape[0] - 1}, got {index}", parameter="test_index"
        )
    found = run.run.input(to_float(images[index]), invert=invert, name=f"test image {index}")
    # a class per image; a segmentation set's label is a mask, which the segment endpoint sends
    found.label = int(labels[index]) if labels[index].ndim == 0 else None
    return found


def model_input(
    run: LoadedRun, data: bytes | None, name: str | None, test_index: int | None, invert: bool = False
) -> ModelInput:
    """Exactly one of an uploaded image or a test index → the model's input (``invert``: 1 − pixels),
    checked against the training images (``Run.input``)."""
    if (data is None) == (test_index is None):
        raise ConvlensError("send exactly one of: an 'image' file (PNG/JPEG…) or a 'test_index'")
    if test_index is not None:
        return test_image(run, test_index, invert)
    name = name or "image"
    check_upload(data, name)
    with _statuses():
        return run.run.input(data, invert=invert, name=upload_label(name))
