"""Segmentation built-ins from real pixels: Fashion-MNIST objects pasted on real photo crops.

No segmentation data set with masks ships offline, so ``scenes`` and ``portrait`` are made:
real backgrounds (crops of the photos and textures scikit-image ships in its wheel) with real
objects (Fashion-MNIST clothes, read from the Debian IDX files) pasted on them. Pasting makes
the masks exact by construction, which hand-drawn masks never are.

An object's alpha (opacity) is its intensity over ``OPAQUE_AT``, clipped to 1: cloth is
opaque even where it is dark, and intensity / 255 would cut a black dress into scattered
specks (a quarter of Fashion-MNIST's images keep less than half their silhouette at 128).
The object covers a pixel where its alpha (scaled to its size) is at least 0.5; that same
test decides what is painted, with no half-transparent rim, so every pixel shows exactly what
its mask says: a pixel of class 0 is the untouched photo, a pixel of class k is the top object
of class k (later objects occlude earlier ones). Inside the object its intensity shades a
random tint, chosen far from the colours under it, so the clothes stay visible on any
background and keep their folds and seams.

Train and test never share a background pixel or an object: each photo (scaled so its short
side is ``SHORT_SIDE`` pixels) gives train crops from its left ``TRAIN_SHARE`` of columns and
test crops from the rest; train scenes use Fashion-MNIST's train split, test scenes its test
split. Everything is drawn from fixed-seed numpy Generators, so every machine makes the same
data (and the cache only saves time).
"""

from __future__ import annotations

import numpy as np

SIDE = 64  # scenes are SIDE x SIDE RGB
# scikit-image photos and textures that ship in its wheel (no download): people, animals,
# objects, a rocket, a telescope field, a stained tissue slide, and grayscale textures
PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "camera",
    "brick",
    "grass",
    "gravel",
    "coins",
    "clock",
    "moon",
)
SHORT_SIDE = 256  # a 64..128 px crop then shows a quarter to a half of the photo's height
TRAIN_SHARE = 0.6  # the left 60 % of every photo's columns gives train crops, the right 40 % test crops
CROP_SIDES = (SIDE, 2 * SIDE)  # a crop's side before it is resized to SIDE: a random zoom

# Five Fashion-MNIST classes whose silhouettes differ (the tint is random, so only the shape
# tells them apart): a logistic regression on thresholded 28x28 silhouettes mixes up the
# T-shirt/Shirt/Pullover/Coat family and Sandal/Sneaker far more than these five.
SCENE_CLASSES = ("Trouser", "Dress", "Sneaker", "Bag", "Ankle boot")
SCENE_FASHION_IDS = (1, 3, 7, 8, 9)  # their labels in Fashion-MNIST
SCENE_SIZES = (20, 36)  # an object's side in pixels (its 28x28 image scaled), inclusive
SCENE_OBJECTS = (1, 3)  # objects per scene, inclusive
PORTRAIT_SIZES = (40, 56)  # one large object near the centre, as a portrait's subject
PORTRAIT_JITTER = 6  # its centre lies this many pixels or fewer from the image's centre
OPAQUE_AT = 51.0  # intensity (of 255) from which an object is fully opaque: alpha 0.5 at 25.5
SHADE_FLOOR = 0.45  # the darkest shade of a tint (at intensity 0); full tint at intensity 255
SPLIT_SEEDS = {"train": 0, "test": 1}
KIND_SEEDS = {"scenes": 1, "portrait": 2}


def load_photos() -> list[np.ndarray]:
    """Every photo of ``PHOTOS`` as uint8 (H, W, 3), scaled so its short side is ``SHORT_SIDE``.

    Pillow's bilinear resize widens its filter when shrinking, so the photos are antialiased."""
    import skimage.data
    from PIL import Image

    photos = []
    for name in PHOTOS:
        array = np.asarray(getattr(skimage.data, name)())
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        array = np.ascontiguousarray(array[:, :, :3].astype(np.uint8))
        height, width = array.shape[:2]
        scale = SHORT_SIDE / min(height, width)
        size = (round(width * scale), round(height * scale))
        photos.append(np.asarray(Image.fromarray(array).resize(size, Image.BILINEAR)))
    return photos


def crop_region(photo: np.ndarray, split: str) -> tuple[int, int]:
    """The columns [start, stop) of ``photo`` that ``split``'s crops come from (disjoint splits)."""
    cut = int(photo.shape[1] * TRAIN_SHARE)
    return (0, cut) if split == "train" else (cut, photo.shape[1])


def random_crop(photos: list[np.ndarray], split: str, rng: np.random.Generator) -> np.ndarray:
    """A SIDE x SIDE uint8 (H, W, 3) crop of a random photo, from ``split``'s columns, at a random zoom."""
    from PIL import Image

    photo = photos[int(rng.integers(len(photos)))]
    start, stop = crop_region(photo, split)
    largest = min(CROP_SIDES[1], stop - start, photo.shape[0])
    side = int(rng.integers(CROP_SIDES[0], largest + 1))
    top = int(rng.integers(0, photo.shape[0] - side + 1))
    left = start + int(rng.integers(0, stop - start - side + 1))
    crop = photo[top : top + side, left : left + side]
    if side != SIDE:
        crop = np.asarray(Image.fromarray(crop).resize((SIDE, SIDE), Image.BILINEAR))
    return np.ascontiguousarray(crop)


def scale_object(image: np.ndarray, side: int) -> np.ndarray:
    """A 28x28 uint8 Fashion-MNIST image resized (bilinear) to ``side`` x ``side``."""
    from PIL import Image

    if image.shape == (side, side):
        return image
    return np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))


def alpha(intensity: np.ndarray) -> np.ndarray:
    """An object's opacity from its uint8 intensity: intensity / OPAQUE_AT, at most 1."""
    return np.minimum(intensity.astype(np.float32) / OPAQUE_AT, 1.0)


def covers(intensity: np.ndarray) -> np.ndarray:
    """Where an object is (and is painted): its alpha is at least 0.5."""
    return alpha(intensity) >= 0.5


def shade(tint: np.ndarray, intensity: np.ndarray) -> np.ndarray:
    """The object's colours, uint8 (s, s, 3): its tint, darker where the garment is darker."""
    light = SHADE_FLOOR + (1.0 - SHADE_FLOOR) * intensity.astype(np.float32) / 255.0
    return np.rint(tint[None, None, :] * light[:, :, None]).clip(0, 255).astype(np.uint8)


def pick_tint(under: np.ndarray, rng: np.random.Generator, candidates: int = 8) -> np.ndarray:
    """A random RGB colour (0..255 floats) far from the mean colour of ``under``: of a few random
    colours, the one farthest from it, so an object shows on dark space and on white walls alike."""
    options = rng.random((candidates, 3)) * 255.0
    shaded = options * (1.0 + SHADE_FLOOR) / 2  # an object's pixels are its tint, shaded
    distance = np.abs(shaded - under.reshape(-1, 3).mean(axis=0)).sum(axis=1)
    return options[int(distance.argmax())]


def paint(
    background: np.ndarray, objects: list[tuple[np.ndarray, int, int, int, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """Paste ``objects`` on a copy of ``background`` (uint8 (H, W, 3)); return the image and its mask.

    Each object is ``(intensity, class_id, top, left, tint)``: a uint8 (s, s) picture already at
    its size, placed with its top-left corner at (top, left) inside the image, painted where
    ``covers(intensity)`` as ``shade(tint, intensity)``, in order (later on top). The mask holds
    the class id of the top object at each pixel, 0 where the photo shows."""
    image = background.copy()
    mask = np.zeros(background.shape[:2], dtype=np.uint8)
    for intensity, class_id, top, left, tint in objects:
        side_h, side_w = intensity.shape
        where = covers(intensity)
        region = image[top : top + side_h, left : left + side_w]
        region[where] = shade(tint, intensity)[where]
        mask[top : top + side_h, left : left + side_w][where] = class_id
    return image, mask


def class_pools(labels: np.ndarray, fashion_classes: list[int]) -> list[np.ndarray]:
    """The indices of the Fashion-MNIST images of each wanted class, in that order."""
    return [np.flatnonzero(labels == c) for c in fashion_classes]


def _scene_objects(fashion, pools, background, rng) -> list:
    """1-3 objects of random scene classes (ids 1..5), sizes and places, each wholly inside."""
    objects = []
    for _ in range(int(rng.integers(SCENE_OBJECTS[0], SCENE_OBJECTS[1] + 1))):
        class_index = int(rng.integers(len(pools)))
        pool = pools[class_index]
        intensity = scale_object(fashion[pool[int(rng.integers(len(pool)))]], _side(SCENE_SIZES, rng))
        side = intensity.shape[0]
        top, left = (int(v) for v in rng.integers(0, SIDE - side + 1, size=2))
        tint = pick_tint(background[top : top + side, left : left + side], rng)
        objects.append((intensity, class_index + 1, top, left, tint))
    return objects


def _portrait_object(fashion, pools, background, rng) -> list:
    """One large object of any Fashion-MNIST class (id 1, foreground) near the centre."""
    everything = pools[0]
    intensity = scale_object(
        fashion[everything[int(rng.integers(len(everything)))]], _side(PORTRAIT_SIZES, rng)
    )
    side = intensity.shape[0]
    centre = (SIDE - side) // 2
    top, left = (
        int(np.clip(centre + rng.integers(-PORTRAIT_JITTER, PORTRAIT_JITTER + 1), 0, SIDE - side))
        for _ in range(2)
    )
    tint = pick_tint(background[top : top + side, left : left + side], rng)
    return [(intensity, 1, top, left, tint)]


def _side(sizes: tuple[int, int], rng: np.random.Generator) -> int:
    return int(rng.integers(sizes[0], sizes[1] + 1))


def generate(
    kind: str,
    split: str,
    count: int,
    fashion: tuple[np.ndarray, np.ndarray],
    photos: list[np.ndarray],
    keep_backgrounds: bool = False,
) -> tuple[np.ndarray, ...]:
    """``count`` scenes of ``kind`` ("scenes" or "portrait") for ``split`` ("train" or "test").

    ``fashion`` is that split's Fashion-MNIST (images (N, 28, 28) uint8, labels (N,)).
    Returns images uint8 (count, 3, SIDE, SIDE) and masks uint8 (count, SIDE, SIDE), and with
    ``keep_backgrounds`` the crops they were painted on (count, 3, SIDE, SIDE), which a test
    compares with the images outside every mask."""
    images, labels = fashion
    if kind == "scenes":
        pools, place = class_pools(labels, SCENE_FASHION_IDS), _scene_objects
    else:
        pools, place = [np.arange(len(labels))], _portrait_object
    rng = np.random.default_rng([KIND_SEEDS[kind], SPLIT_SEEDS[split]])
    out = np.empty((count, SIDE, SIDE, 3), dtype=np.uint8)
    masks = np.empty((count, SIDE, SIDE), dtype=np.uint8)
    backgrounds = np.empty_like(out) if keep_backgrounds else None
    for index in range(count):
        background = random_crop(photos, split, rng)
        out[index], masks[index] = paint(background, place(images, pools, background, rng))
        if backgrounds is not None:
            backgrounds[index] = background
    result = (np.ascontiguousarray(out.transpose(0, 3, 1, 2)), masks)
    if backgrounds is not None:
        result += (np.ascontiguousarray(backgrounds.transpose(0, 3, 1, 2)),)
    return result


def make_builtin(kind: str, train: int, test: int, fashion: tuple[np.ndarray, ...]):
    """The four arrays of a built-in (train images, masks, test images, masks), as ``load_arrays``
    returns, from Fashion-MNIST's four arrays (train images (N, 1, 28, 28), labels, test ...)."""
    fashion_train_x, fashion_train_y, fashion_test_x, fashion_test_y = fashion
    photos = load_photos()
    train_x, train_y = generate(kind, "train", train, (fashion_train_x[:, 0], fashion_train_y), photos)
    test_x, test_y = generate(kind, "test", test, (fashion_test_x[:, 0], fashion_test_y), photos)
    return train_x, train_y, test_x, test_y
