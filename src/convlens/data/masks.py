"""Readers for the user's own segmentation data: a folder of images and masks, or an .npz.

A mask holds one class id per pixel, 255 where a pixel has no class (``IGNORE_INDEX``).
Masks are PNGs because only a lossless format keeps ids exact; a palette ("P") PNG's indices
are the ids (its colours only draw them), a single-channel ("L") PNG holds the ids directly.
An RGB mask is refused rather than guessed at: mapping colours to ids needs a palette the
file does not carry. A file that cannot be decoded, or that has no partner, is skipped with
one warning (one bad file in thousands should not stop training, as in the image folder);
anything that would train the wrong model (ids beyond the class list, no object in any mask)
is refused in one line naming the file.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import torch

from convlens.data.arrays import _images_to_tensor, _load_npz, resize_masks
from convlens.data.bundle import IGNORE_INDEX, Dataset
from convlens.data.readers import (
    DEFAULT_TEST_FRACTION,
    NonFinitePixelsError,
    check_regular_file,
    choose_size,
    decode_image,
    image_files_in,
    image_to_tensor,
    is_grayscale,
)
from convlens.data.transforms import check_data_size
from convlens.errors import ConvlensError, printable

log = logging.getLogger("convlens")

MASK_MODES = ("P", "L", "1", "I", "I;16", "I;16L", "I;16B")  # single-channel modes that hold ids
SAVE_HINT = "save class ids as a single-channel (L) or palette (P) PNG"


# ---------------------------------------------------------------- folder of images and masks


def is_mask_folder(path: Path) -> bool:
    """A folder with ``images/`` and ``masks/``, or ``train/images/`` and ``train/masks/``."""
    return path.is_dir() and (_holds_pairs(path) or _holds_pairs(path / "train"))


def _holds_pairs(base: Path) -> bool:
    return (base / "images").is_dir() and (base / "masks").is_dir()


def read_mask(path: Path) -> np.ndarray:
    """A mask PNG as (H, W) uint8 class ids; ConvlensError naming the file if it is not one."""
    from PIL import Image, UnidentifiedImageError

    check_regular_file(path)
    where = printable(path)
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode not in MASK_MODES:
                raise _MaskError(
                    f"{where}: mask in mode {mode} (Pillow's name); expected class ids, one per pixel: "
                    f"{SAVE_HINT} (an RGB mask's colours are not class ids)"
                )
            values = np.asarray(img)  # "P": the palette indices, not the colours they draw
    except _MaskError:
        raise
    except ConvlensError as exc:  # not a regular file, no such file
        raise _Undecodable(str(exc)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise _Undecodable(
            f"{where}: cannot decode mask ({exc.__class__.__name__}: {printable(exc)})"
        ) from None
    low, top = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if low < 0 or top > IGNORE_INDEX:
        raise _MaskError(
            f"{where}: class id {low if low < 0 else top}; expected ids 0..{IGNORE_INDEX - 1} "
            f"({IGNORE_INDEX} = no class)"
        )
    return values.astype(np.uint8)


class _Undecodable(ConvlensError):
    """A mask file that cannot be decoded: skipped with a warning, like an undecodable image."""


class _MaskError(ConvlensError):
    """A mask that decodes but cannot be class ids (RGB, ids over 255): refused, not skipped,
    since every other mask made the same way would be wrong too."""


def read_class_names(path: Path) -> list[str] | None:
    """``classes.txt``: line i names class id i (trailing blank lines ignored); None if absent."""
    if not path.is_file():
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConvlensError(f"{printable(path)}: cannot read class names ({exc})") from None
    names = [line.strip() for line in lines]
    while names and not names[-1]:
        names.pop()
    if "" in names:
        raise ConvlensError(
            f"{printable(path)}: line {names.index('') + 1} is blank; expected one class name per line "
            "(line 1 names class id 0)"
        )
    if len(names) < 2:
        raise ConvlensError(
            f"{printable(path)}: {len(names)} class name(s); expected at least 2 (background and one more)"
        )
    if len(names) > IGNORE_INDEX:
        raise ConvlensError(f"{printable(path)}: {len(names)} classes; expected at most {IGNORE_INDEX}")
    return names


def _pairs(base: Path, root: Path) -> tuple[list[tuple[Path, Path]], list[Path], list[Path]]:
    """(image, mask) pairs of ``base``/images and ``base``/masks, matched by path without suffix,
    with the images that have no mask and the masks that have no image."""
    images: dict[Path, Path] = {}
    for file in image_files_in(base / "images", root):
        key = file.relative_to(base / "images").with_suffix("")
        if key in images:
            raise ConvlensError(
                f"{printable(images[key])} and {printable(file)} share the name {printable(key)}; "
                "expected one image per mask"
            )
        images[key] = file
    masks = {
        file.relative_to(base / "masks").with_suffix(""): file
        for file in image_files_in(base / "masks", root)
        if file.suffix.lower() == ".png"
    }
    pairs = [(images[key], masks[key]) for key in sorted(images) if key in masks]
    return (
        pairs,
        [images[k] for k in sorted(images) if k not in masks],
        [masks[k] for k in sorted(masks) if k not in images],
    )


def _warn_unpaired(base: Path, lonely_images: list[Path], lonely_masks: list[Path]) -> None:
    if lonely_images:
        log.warning(
            "%s: skipped %d image(s) without a mask (masks/NAME.png), e.g. %s",
            printable(base),
            len(lonely_images),
            printable(lonely_images[0]),
        )
    if lonely_masks:
        log.warning(
            "%s: skipped %d mask(s) without an image (images/NAME.*), e.g. %s",
            printable(base),
            len(lonely_masks),
            printable(lonely_masks[0]),
        )


def _decode_pairs(pairs: list[tuple[Path, Path]]) -> tuple[list[np.ndarray], list[np.ndarray], list[Path]]:
    """Decode every pair at full size (a mask is checked against its image's own size); skip,
    with one warning per kind, files that cannot be decoded and masks not the size of their image."""
    images, masks, sources, undecodable, mismatched = [], [], [], [], []
    for image_file, mask_file in pairs:
        try:
            image = decode_image(image_file)
            mask = read_mask(mask_file)
        except (NonFinitePixelsError, _MaskError):
            raise
        except ConvlensError as exc:  # an image or a mask that cannot be decoded
            undecodable.append(str(exc))
            continue
        if image.shape[:2] != mask.shape:
            mismatched.append(
                f"{printable(mask_file)} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                f"{image.shape[1]}x{image.shape[0]}"
            )
            continue
        images.append(image)
        masks.append(mask)
        sources.append(mask_file)
    if undecodable:
        log.warning("skipped %d file(s) that could not be decoded, e.g. %s", len(undecodable), undecodable[0])
    if mismatched:
        log.warning("skipped %d mask(s) not the size of their image, e.g. %s", len(mismatched), mismatched[0])
    return images, masks, sources


def read_mask_folder(root: str | Path, image_size: tuple[int, int] | None = None, seed: int = 0) -> Dataset:
    """Images in ``images/``, masks in ``masks/`` (PNG, same name; optional ``train/``, ``test/``
    levels and ``classes.txt``). Without ``test/``, a fixed 20 % of the pairs is held out."""
    root = Path(root)
    names = read_class_names(root / "classes.txt")
    has_splits = not _holds_pairs(root)  # else is_mask_folder found train/images and train/masks
    bases = [root]
    if has_splits:
        bases = [root / "train"]
        if (root / "test").is_dir():
            if not _holds_pairs(root / "test"):
                raise ConvlensError(
                    f"{printable(root / 'test')}: expected test/images and test/masks folders, or no "
                    "test/ (a share of the training images is then held out)"
                )
            bases.append(root / "test")
    decoded = []
    for base in bases:
        pairs, lonely_images, lonely_masks = _pairs(base, root)
        _warn_unpaired(base, lonely_images, lonely_masks)
        decoded.append(_decode_pairs(pairs))
    for base, (images, _, _) in zip(bases, decoded, strict=True):
        if not images:
            raise ConvlensError(
                f"{printable(base)}: no readable image with a mask; expected images/NAME.png|jpg|... "
                "with masks/NAME.png of the same size"
            )
    every = [array for images, _, _ in decoded for array in images]
    size = image_size or choose_size([a.shape[:2] for a in every], root)
    channels = 1 if all(is_grayscale(a) for a in every) else 3
    check_data_size(len(every), channels, size, 1)
    tensors = []
    for images, masks, sources in decoded:
        x = torch.stack([image_to_tensor(a, channels, size) for a in images])
        m = torch.stack([resize_masks(torch.from_numpy(a)[None], size)[0] for a in masks])
        tensors.append((x, m, sources))
    (x, m, sources), test = tensors[0], (tensors[1] if len(tensors) > 1 else None)
    split = "train/ and test/ subfolders" if test else f"{int(DEFAULT_TEST_FRACTION * 100)} % test split"
    return finish_masks(
        root.name,
        (x, m, sources),
        test,
        names,
        f"mask folder {root} ({split})",
        where=root,
        seed=seed,
        names_file=root / "classes.txt",
    )


# ---------------------------------------------------------------- checks shared by both readers


def finish_masks(name, train, test, names, source, where, seed=0, names_file=None) -> Dataset:
    """Check class ids against the names, refuse masks with no object, split off a test share.

    ``train``/``test`` are (images, masks uint8 (N, H, W), sources) with ``sources`` naming each
    mask for errors (a file, or an array row); ``test`` None holds out DEFAULT_TEST_FRACTION."""
    splits = [train] + ([test] if test is not None else [])
    top, top_source = -1, None
    for _, masks, sources in splits:
        for index, value in _largest_ids(masks):
            if value > top:
                top, top_source = value, sources[index]
    if names is not None and top >= len(names):
        listed = f" in {printable(names_file)}" if names_file is not None else ""
        raise ConvlensError(
            f"{printable(top_source)}: class id {top}, but {len(names)} classes are named{listed} "
            f"(ids 0..{len(names) - 1}, {IGNORE_INDEX} = no class)"
        )
    if top <= 0:
        raise ConvlensError(
            f"{printable(where)}: every mask is background (0) or ignored ({IGNORE_INDEX}); expected "
            "some pixels of a foreground class (id 1 or more)"
        )
    names = names or ["background"] + [f"class {i}" for i in range(1, top + 1)]
    x, m, _ = train
    if test is None:
        if len(x) < 2:
            raise ConvlensError(
                f"{printable(where)}: only 1 image; expected at least 2 to hold out a test image"
            )
        order = np.random.default_rng(seed).permutation(len(x))
        held = max(1, round(len(x) * DEFAULT_TEST_FRACTION))
        test_idx, train_idx = np.sort(order[:held]), np.sort(order[held:])
        x, m, x_test, m_test = x[train_idx], m[train_idx], x[test_idx], m[test_idx]
    else:
        x_test, m_test, _ = test
    return Dataset(
        name=name,
        train_images=x,
        train_labels=m,
        test_images=x_test,
        test_labels=m_test,
        class_names=list(names),
        source=source,
        task="segmentation",
    )


def _largest_ids(masks: torch.Tensor):
    """(row, largest class id) of each mask, ``IGNORE_INDEX`` left out (-1 for a mask of none)."""
    values = masks.reshape(len(masks), -1).to(torch.int16)
    values = torch.where(values == IGNORE_INDEX, torch.full_like(values, -1), values)
    return enumerate(values.max(dim=1).values.tolist())


# ---------------------------------------------------------------- .npz with masks


def is_mask_npz(path: Path) -> bool:
    """An .npz holding an array ``masks`` (its member list is read, no array is loaded)."""
    if not (path.is_file() and path.suffix.lower() == ".npz"):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return "masks.npy" in archive.namelist() or "masks" in archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False  # the plain .npz reader says what is wrong with it


def _masks_to_tensor(masks: np.ndarray, source: str, count: int, image_shape: tuple) -> torch.Tensor:
    """(N, H, W) integer masks (N, 1, H, W accepted) as uint8, checked against their images."""
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.ndim != 3:
        raise ConvlensError(
            f"{source}: expected masks shaped N x H x W (one class id per pixel), got {masks.shape}"
        )
    if not np.issubdtype(masks.dtype, np.integer):
        raise ConvlensError(f"{source}: expected integer class ids, got dtype {masks.dtype}")
    if masks.shape[0] != count or tuple(masks.shape[1:]) != tuple(image_shape[2:]):
        raise ConvlensError(
            f"{source}: masks are {masks.shape} for images {tuple(image_shape)}; expected one H x W "
            "mask per image, the size of its image"
        )
    if masks.size:
        low, high = int(masks.min()), int(masks.max())
        if low < 0 or high > IGNORE_INDEX:
            bad = low if low < 0 else high
            raise ConvlensError(
                f"{source}: class id {bad}; expected ids 0..{IGNORE_INDEX - 1} ({IGNORE_INDEX} = no class)"
            )
    return torch.from_numpy(np.ascontiguousarray(masks.astype(np.uint8)))


def read_mask_npz(path: str | Path, seed: int = 0) -> Dataset:
    """An .npz with ``images`` and ``masks`` (and optional ``images_test``, ``masks_test``, ``class_names``)."""
    path = Path(path)
    arrays = _load_npz(path)
    where = printable(path)
    if "images" not in arrays:
        raise ConvlensError(
            f"{where}: has 'masks' but no 'images'; expected arrays 'images' and 'masks', found {sorted(arrays)}"
        )
    if ("images_test" in arrays) != ("masks_test" in arrays):
        present, absent = (
            ("images_test", "masks_test") if "images_test" in arrays else ("masks_test", "images_test")
        )
        raise ConvlensError(f"{where}: has {present!r} but no {absent!r}; expected both or neither")
    splits = []
    for images_key, masks_key in (("images", "masks"), ("images_test", "masks_test")):
        if images_key not in arrays:
            continue
        x = _images_to_tensor(arrays[images_key], f"{where}:{images_key}")
        m = _masks_to_tensor(arrays[masks_key], f"{where}:{masks_key}", len(x), tuple(x.shape))
        splits.append((x, m, [f"{where}:{masks_key}[{i}]" for i in range(len(m))]))
    names = None
    if "class_names" in arrays:
        raw = arrays["class_names"]
        if raw.ndim != 1 or len(raw) < 2:
            raise ConvlensError(
                f"{where}:class_names: expected a 1-D array of at least 2 names, got shape {raw.shape}"
            )
        names = [str(n) for n in raw]
    if len(splits) > 1 and splits[0][0].shape[1:] != splits[1][0].shape[1:]:
        raise ConvlensError(
            f"{where}: images are {tuple(splits[0][0].shape[1:])} but images_test are "
            f"{tuple(splits[1][0].shape[1:])}; expected the same shape"
        )
    split = (
        "images_test/masks_test" if len(splits) > 1 else f"{int(DEFAULT_TEST_FRACTION * 100)} % test split"
    )
    return finish_masks(
        path.stem,
        splits[0],
        splits[1] if len(splits) > 1 else None,
        names,
        f"NPZ file {path} with masks ({split})",
        where=path,
        seed=seed,
        names_file=Path(f"{path}:class_names"),
    )
