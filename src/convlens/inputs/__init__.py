"""The one input pipeline: a file, uploaded bytes, a built-in picture or a tensor → the model's input.

Every face reads images through here (``Run.input``: `convlens explain`, `convlens predict`,
the explorer's uploads), so one image gets the same pixels and the same errors everywhere:

1. **Header** (nothing decoded yet): a raster image must be one of ``IMAGE_FORMATS`` (Pillow
   can open formats that run external programs; those are refused), DICOM is recognised by its
   suffix or its ``DICM`` marker, and the picture's size is known before any pixel is decoded
   (a server bounds it; Pillow's decompression-bomb guard refuses the absurd).
2. **Aspect ratio**: a picture whose shape is more than ``MAX_ASPECT_CHANGE`` times off the
   model's is refused (crop it first) instead of being squashed into nonsense.
3. **Decoding and conversion**: raster images as RGB uint8, grey (ITU-R 601 luma) or RGB as the
   model takes, resized; a large JPEG is decoded at a reduced scale, never below the model's
   size. DICOM and the built-in pictures are grayscale in [0, 1], resized and repeated over
   the model's channels.
4. **Polarity and shift** (``convlens.shift``): ``invert`` gives ``1 − pixels``; the result
   says how far the image is from the training images.

Errors are ConvlensErrors naming the source; ``UnreadableInput`` (the bytes are not a picture
convlens reads) and ``InputTooLarge`` let a server answer 415 and 413. The built-in pictures
are in ``inputs.built_in``, header reading and DICOM in ``inputs.decoders``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from convlens.errors import ConvlensError, printable
from convlens.inputs.built_in import BUILT_IN, PHOTOS, SMILEY, XRAY, is_built_in, load_picture
from convlens.inputs.decoders import (
    IMAGE_FORMATS,
    Header,
    InputTooLarge,
    UnreadableInput,
    dicom_header,
    image_header,
    is_dicom,
    read_dicom,
)
from convlens.shift import ShiftCheck

MAX_ASPECT_CHANGE = 4.0  # refuse to squash an image whose shape is this far from the model's
Source = str | Path | bytes | torch.Tensor

__all__ = [
    "BUILT_IN",
    "IMAGE_FORMATS",
    "MAX_ASPECT_CHANGE",
    "PHOTOS",
    "SMILEY",
    "XRAY",
    "Header",
    "InputTooLarge",
    "ModelInput",
    "UnreadableInput",
    "check_aspect",
    "is_dicom",
    "load_picture",
    "model_pixels",
    "picture_for_model",
    "read_dicom",
    "read_header",
    "read_input",
]


@dataclass
class ModelInput:
    """One image as the model takes it, where it came from and how it compares with the training images."""

    pixels: torch.Tensor  # (C, H, W) float32 in [0, 1]
    source: str  # how messages name it: a path, a built-in name, "upload 'x.png'", "test image 12"
    inverted: bool = False  # the pixels are 1 − the image's
    shift: ShiftCheck | None = None  # None when the checkpoint records no training mean/std
    label: int | None = None  # the true class, when the image comes from a labelled data set

    @property
    def batch(self) -> torch.Tensor:
        return self.pixels.unsqueeze(0)  # (1, C, H, W)

    def shift_json(self) -> dict | None:
        return None if self.shift is None else self.shift.to_json()


class _NamedBytes(io.BytesIO):
    """Bytes that print as their source's name, so every reader's error names the upload."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.label = name

    def __str__(self) -> str:
        return self.label


# ------------------------------------------------------------------------------ the pipeline


def read_input(
    source: Source,
    input_shape: tuple[int, int, int],
    *,
    name: str | None = None,
    invert: bool = False,
    check: Callable[[torch.Tensor], ShiftCheck | None] | None = None,
) -> ModelInput:
    """``source`` as the model's input (``Run.input`` passes the run's shape and shift check).

    ``name`` labels bytes and tensors in messages (default "image bytes", "image tensor");
    ``invert``: use ``1 − pixels``; ``check(pixels)``: a ``ShiftCheck`` or None.
    """
    label = _label(source, name)
    pixels = model_pixels(source, input_shape, name=label)
    if invert:
        from convlens.shift import invert as inverted

        pixels = inverted(pixels)
    return ModelInput(pixels, label, inverted=bool(invert), shift=None if check is None else check(pixels))


def model_pixels(source: Source, input_shape: tuple[int, int, int], name: str | None = None) -> torch.Tensor:
    """``source`` as float32 (C, H, W) in [0, 1] at ``input_shape``: header, aspect check, decode, convert."""
    channels, height, width = (int(v) for v in input_shape)
    label = _label(source, name)
    if isinstance(source, torch.Tensor):
        return _checked_tensor(source, (channels, height, width), label)
    if channels not in (1, 3):
        raise ConvlensError(
            f"input_shape: a picture becomes 1 (gray) or 3 (RGB) channels, the model takes {channels}",
            parameter="input_shape",
        )
    header, gray = _header(source, label)  # a built-in picture comes loaded (``gray``)
    check_aspect(label, header.height, header.width, height, width)
    if header.kind == "image":
        from convlens.data.readers import array_to_input, decode_image

        readable = _NamedBytes(source, label) if isinstance(source, bytes) else _path(source)
        rgb = _unreadable_on_error(lambda: decode_image(readable, (height, width)), label)  # (H, W, 3) uint8
        return array_to_input(rgb, (channels, height, width))
    if header.kind == "dicom":
        readable = _NamedBytes(source, label) if isinstance(source, bytes) else _path(source)
        gray = _unreadable_on_error(lambda: read_dicom(readable), label)  # (H, W)
    from convlens.data.transforms import resize_images

    resized = resize_images(gray[None, None], (height, width))[0]  # (1, H, W)
    return resized.expand(channels, height, width).clone()


def read_header(source: str | Path | bytes, name: str | None = None) -> Header:
    """What ``source`` is and its size, from its header (a built-in picture is loaded: it is small)."""
    return _header(source, _label(source, name))[0]


def _header(source: str | Path | bytes, label: str) -> tuple[Header, torch.Tensor | None]:
    """The header, and a built-in picture already loaded (None for files and bytes)."""
    if isinstance(source, bytes):
        if source[128:132] == b"DICM":  # bytes have no suffix: the marker after the preamble
            return dicom_header(_NamedBytes(source, label)), None
        return image_header(_NamedBytes(source, label), label), None
    if isinstance(source, str) and is_built_in(source):  # a name (never a Path) first, as load_picture
        gray = load_picture(source)  # (H, W)
        return Header("built-in", int(gray.shape[0]), int(gray.shape[1])), gray
    path = _path(source)
    if not path.exists():
        raise UnreadableInput(
            f"{label}: no such file; expected an image or DICOM file, or one of: {', '.join(BUILT_IN)}"
        )
    from convlens.data.readers import check_regular_file

    check_regular_file(path)  # before anything opens it: a FIFO would block
    if path.is_dir():
        raise UnreadableInput(f"{label}: is a folder, expected an image file")
    if is_dicom(path):
        return dicom_header(path), None
    return image_header(path, label), None


def check_aspect(source: str, rows: int, cols: int, height: int, width: int) -> None:
    """Refuse a ``rows`` x ``cols`` picture whose shape is too far from the model's ``height`` x ``width``."""
    change = (rows / cols) / (height / width)
    if not 1 / MAX_ASPECT_CHANGE <= change <= MAX_ASPECT_CHANGE:
        raise ConvlensError(
            f"{source}: a {rows}x{cols} picture cannot be adapted to the model's {height}x{width} input "
            f"(aspect ratio off by more than {MAX_ASPECT_CHANGE:g}x); crop it first"
        )


def picture_for_model(source: str | Path | bytes, input_shape: tuple[int, int, int]) -> torch.Tensor:
    """A built-in name, image or DICOM file as a model input (C, H, W) in [0, 1] (``model_pixels``)."""
    return model_pixels(source, input_shape)


def _label(source: Source, name: str | None) -> str:
    if name is not None:
        return printable(name)
    if isinstance(source, bytes):
        return "image bytes"
    if isinstance(source, torch.Tensor):
        return "image tensor"
    return printable(source)


def _path(source: str | Path) -> Path:
    return Path(str(source)).expanduser()


def _checked_tensor(pixels: torch.Tensor, shape: tuple[int, int, int], label: str) -> torch.Tensor:
    if tuple(pixels.shape) != shape or not pixels.is_floating_point():
        raise ConvlensError(
            f"image: {label} is {pixels.dtype} of shape {tuple(pixels.shape)}; the model takes float "
            f"{'x'.join(map(str, shape))} (C x H x W) in [0, 1]",
            parameter="image",
        )
    return pixels.detach().float()


def _unreadable_on_error(read: Callable[[], object], label: str):
    """Run a decoder; any failure (cannot decode, NaN pixels, no pixel data, a malformed body past
    a valid header) is the file's fault, one line naming it."""
    try:
        return read()
    except UnreadableInput:
        raise
    except ConvlensError as exc:
        raise UnreadableInput(str(exc)) from None
    except Exception as exc:  # decoders raise many types on bodies their header did not predict
        raise UnreadableInput(f"{label}: cannot decode image ({exc.__class__.__name__})") from None
