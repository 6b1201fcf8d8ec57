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
(a smiley, scikit-learn's digits, scikit-image's photos, pydicom-data's chest X-ray) need no
download; ``load_picture`` also gives them as a grayscale grid for hand-made convolution.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from convlens.errors import ConvlensError, printable
from convlens.shift import ShiftCheck

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
MAX_ASPECT_CHANGE = 4.0  # refuse to squash an image whose shape is this far from the model's
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")  # JPEG also opens cameras' MPO files
Source = str | Path | bytes | torch.Tensor


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
    header = read_header(source, name=label)
    check_aspect(label, header.height, header.width, height, width)
    if header.kind == "image":
        from convlens.data.readers import array_to_input, decode_image

        readable = _NamedBytes(source, label) if isinstance(source, bytes) else _path(source)
        rgb = _unreadable_on_error(lambda: decode_image(readable, (height, width)), label)  # (H, W, 3) uint8
        return array_to_input(rgb, (channels, height, width))
    if header.kind == "dicom":
        readable = _NamedBytes(source, label) if isinstance(source, bytes) else _path(source)
        gray = _unreadable_on_error(lambda: read_dicom(readable), label)
    else:
        gray = load_picture(source)  # (H, W)
    from convlens.data.transforms import resize_images

    resized = resize_images(gray[None, None], (height, width))[0]  # (1, H, W)
    return resized.expand(channels, height, width).clone()


def read_header(source: str | Path | bytes, name: str | None = None) -> Header:
    """What ``source`` is and its size, from its header (a built-in picture is loaded: it is small)."""
    label = _label(source, name)
    if isinstance(source, bytes):
        if source[128:132] == b"DICM":
            return _dicom_header(_NamedBytes(source, label))
        return _image_header(_NamedBytes(source, label), label)
    if isinstance(source, str) and _is_built_in(source):  # a name (never a Path) first, as load_picture
        gray = load_picture(source)
        return Header("built-in", int(gray.shape[0]), int(gray.shape[1]))
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
        return _dicom_header(path)
    return _image_header(path, label)


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


def _image_header(readable, label: str) -> Header:
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


# ------------------------------------------------------------------------- built-in pictures


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
        return torch.from_numpy(_unit_range(gray.astype(np.float64))).float()
    if text == XRAY:
        return read_dicom(_sample_xray())
    path = _path(text)
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


def _is_built_in(text: str) -> bool:
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


def _unit_range(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


# ------------------------------------------------------------------------------------ DICOM


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


def _dicom_header(source) -> Header:
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
    gray = _unit_range(pixels)
    if str(dataset.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        gray = 1.0 - gray  # MONOCHROME1 shows low values bright
    return torch.from_numpy(gray).float()
