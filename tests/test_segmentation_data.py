"""Segmentation data: the composed built-ins, the images/ + masks/ folder and the .npz with masks.

Masks are checked against what was written or painted, computed here independently: the ids
a palette PNG holds (not its colours), Pillow's own nearest-neighbour resize, the pixels of the
photo crop a scene was painted on.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.data import load_dataset
from convlens.data.builtins import FASHION_MNIST_DIR
from convlens.errors import ConvlensError

needs_fashion = pytest.mark.skipif(
    not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed"
)


# ---------------------------------------------------------------- the built-ins


@pytest.fixture(scope="module")
def builtins(tmp_path_factory):
    """Both built-ins, generated once into a fresh cache folder (a few seconds)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVLENS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield {name: load_dataset(name) for name in ("scenes", "portrait")}


@needs_fashion
@pytest.mark.parametrize(("name", "classes"), [("scenes", 6), ("portrait", 2)])
def test_builtin_shapes_dtypes_and_every_class_in_both_splits(builtins, name, classes):
    data = builtins[name]
    assert data.task == "segmentation" and data.is_segmentation
    assert data.augmentation == "flip"
    assert data.input_shape == (3, 64, 64) and data.num_classes == classes
    assert data.class_names[0] == "background"
    assert tuple(data.train_images.shape) == (2000, 3, 64, 64) and tuple(data.test_images.shape) == (
        500,
        3,
        64,
        64,
    )
    assert tuple(data.train_labels.shape) == (2000, 64, 64) and tuple(data.test_labels.shape) == (500, 64, 64)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.uint8
    for masks in (data.train_labels, data.test_labels):
        counts = torch.bincount(masks.reshape(-1).long(), minlength=classes)
        assert len(counts) == classes and (counts > 0).all()  # no 255 and no id past the classes
        assert (masks.reshape(len(masks), -1).amax(dim=1) > 0).all()  # every scene shows an object


@needs_fashion
def test_scene_class_names_are_five_fashion_classes(builtins):
    from convlens.data.builtins import FASHION_CLASSES

    names = builtins["scenes"].class_names
    assert names == ["background", "Trouser", "Dress", "Sneaker", "Bag", "Ankle boot"]
    from convlens.data.scenes import SCENE_CLASSES, SCENE_FASHION_IDS

    assert names[1:] == list(SCENE_CLASSES) == [FASHION_CLASSES[i] for i in SCENE_FASHION_IDS]
    assert builtins["portrait"].class_names == ["background", "foreground"]


@needs_fashion
@pytest.mark.parametrize("name", ["scenes", "portrait"])
def test_generation_is_deterministic_and_the_builtin_is_its_prefix(builtins, name):
    from convlens.data.builtins import _fashion
    from convlens.data.scenes import generate, load_photos

    fx, fy, tx, ty = _fashion()
    photos = load_photos()
    first = generate(name, "test", 40, (tx[:, 0], ty), photos)
    second = generate(name, "test", 40, (tx[:, 0], ty), photos)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    # scenes are drawn one after another from one seeded stream: the built-in starts the same
    assert np.array_equal(first[0], builtins[name].test_images[:40].numpy())
    assert np.array_equal(first[1], builtins[name].test_labels[:40].numpy())
    train = generate(name, "train", 40, (fx[:, 0], fy), photos)
    assert np.array_equal(train[1], builtins[name].train_labels[:40].numpy())


@needs_fashion
@pytest.mark.parametrize("name", ["scenes", "portrait"])
def test_outside_every_mask_a_scene_is_its_background_crop(name):
    from convlens.data.builtins import _fashion
    from convlens.data.scenes import generate, load_photos

    fx, fy, _, _ = _fashion()
    images, masks, backgrounds = generate(
        name, "train", 60, (fx[:, 0], fy), load_photos(), keep_backgrounds=True
    )
    background = np.broadcast_to((masks == 0)[:, None], images.shape)
    assert np.array_equal(images[background], backgrounds[background])
    changed = (images != backgrounds).any(axis=1)
    assert changed[masks > 0].mean() > 0.95  # objects are painted over the photo (a tint may match it)


def test_paint_puts_each_object_where_its_alpha_is_half_and_later_ones_on_top():
    from convlens.data.scenes import paint, shade

    background = np.full((64, 64, 3), 7, dtype=np.uint8)
    block = np.zeros((28, 28), dtype=np.uint8)
    block[4:24, 4:24] = 255
    faint = np.zeros((10, 10), dtype=np.uint8)
    faint[:, :5] = 26  # 26 / 51 >= 0.5: covered
    faint[:, 5:] = 25  # 25 / 51 < 0.5: not covered, and not painted either
    red, blue = np.array([200.0, 0.0, 0.0]), np.array([0.0, 0.0, 250.0])
    image, mask = paint(background, [(block, 3, 10, 20, red), (faint, 5, 12, 22, blue)])
    expected = np.zeros((64, 64), dtype=np.uint8)
    expected[14:34, 24:44] = 3
    expected[12:22, 22:27] = 5
    assert np.array_equal(mask, expected)
    assert (image[mask == 0] == 7).all()
    assert (image[mask == 3] == [200, 0, 0]).all()  # full intensity: the tint itself
    assert np.array_equal(image[12, 22], shade(blue, np.array([[26]], dtype=np.uint8))[0, 0])


def test_train_and_test_crops_come_from_disjoint_columns():
    from convlens.data.scenes import PHOTOS, crop_region, load_photos

    photos = load_photos()  # every photo ships with scikit-image: none needs a download
    assert len(photos) == len(PHOTOS) >= 10
    for photo in photos:
        train, test = crop_region(photo, "train"), crop_region(photo, "test")
        assert train[0] == 0 and train[1] == test[0] and test[1] == photo.shape[1]
        assert min(train[1] - train[0], test[1] - test[0], photo.shape[0]) >= 64


@needs_fashion
def test_a_cache_with_masks_out_of_range_is_rebuilt(tmp_path, monkeypatch, builtins):
    from convlens.data.builtins import CACHE_VERSION

    monkeypatch.setenv("CONVLENS_CACHE_DIR", str(tmp_path))
    good = builtins["portrait"]
    masks = good.train_labels.numpy().copy()
    masks[0, 0, 0] = 9  # portrait has classes 0 and 1 only
    np.savez(
        tmp_path / f"portrait-v{CACHE_VERSION}.npz",
        train_x=good.train_images.numpy(),
        train_y=masks,
        test_x=good.test_images.numpy(),
        test_y=good.test_labels.numpy(),
    )
    again = load_dataset("portrait")
    assert again.fingerprint() == good.fingerprint()


@needs_fashion
def test_datasets_listing_says_the_task(builtins):
    from convlens.data import list_datasets

    tasks = {row["name"]: row["task"] for row in list_datasets()}
    assert tasks["scenes"] == tasks["portrait"] == "segmentation" and tasks["digits"] == "classification"


@needs_fashion
def test_image_size_resizes_builtin_masks_with_nearest(builtins):
    small = load_dataset("portrait", image_size=32)
    assert small.input_shape == (3, 32, 32) and tuple(small.train_labels.shape) == (2000, 32, 32)
    expected = np.asarray(
        Image.fromarray(builtins["portrait"].train_labels[3].numpy()).resize((32, 32), Image.NEAREST)
    )
    assert np.array_equal(small.train_labels[3].numpy(), expected)


# ---------------------------------------------------------------- the images/ + masks/ folder

PALETTE = [255, 0, 0, 0, 255, 0, 0, 0, 255, 90, 90, 90] + [0, 0, 0] * 252  # index 0 drawn red


def _photo(index: int, height: int = 24, width: int = 32) -> np.ndarray:
    import skimage.data

    source = (skimage.data.astronaut, skimage.data.coffee, skimage.data.chelsea)[index % 3]()
    top, left = 40 + 7 * index, 60 + 5 * index
    return np.ascontiguousarray(source[top : top + height, left : left + width])


def _mask(index: int, height: int = 24, width: int = 32, top_id: int = 2) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[2 + index % 5 : 12, 3:15] = 1
    mask[14:, 18 + index % 4 :] = top_id
    mask[0, :] = 255  # a border of "no class"
    return mask


def _save_mask(path, mask: np.ndarray, palette: bool) -> None:
    image = Image.fromarray(mask, mode="L")
    if palette:
        image = image.convert("P")  # keeps the values as indices (the default palette is gray)
        image.putpalette(PALETTE)
    image.save(path)


def _mask_folder(root, count=10, base="", classes=("background", "person", "car")):
    (root / base / "images").mkdir(parents=True)
    (root / base / "masks").mkdir(parents=True)
    for index in range(count):
        suffix = ".jpg" if index % 3 == 0 else ".png"
        Image.fromarray(_photo(index)).save(root / base / "images" / f"p{index:02d}{suffix}")
        _save_mask(root / base / "masks" / f"p{index:02d}.png", _mask(index), palette=index % 2 == 0)
    if classes:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def test_a_mask_folder_reads_palette_indices_and_gray_ids(tmp_path):
    root = _mask_folder(tmp_path / "data")
    assert Image.open(root / "masks" / "p00.png").mode == "P"
    assert Image.open(root / "masks" / "p01.png").mode == "L"
    data = load_dataset(root)
    assert data.task == "segmentation" and data.class_names == ["background", "person", "car"]
    assert data.input_shape == (3, 24, 32) and len(data.train_labels) == 8 and len(data.test_labels) == 2
    every = torch.cat([data.train_labels, data.test_labels])
    written = {tuple(_mask(i).reshape(-1)) for i in range(10)}
    assert {tuple(m.reshape(-1).tolist()) for m in every} == written  # ids, never palette colours
    assert set(every.unique().tolist()) == {0, 1, 2, 255}
    again = load_dataset(root)
    assert torch.equal(again.test_labels, data.test_labels)  # a fixed 20 % held out


def test_a_mask_folder_with_train_and_test_levels(tmp_path):
    root = _mask_folder(tmp_path / "data", count=6, base="train")
    _mask_folder(root, count=3, base="test", classes=())
    data = load_dataset(root)
    assert len(data.train_labels) == 6 and len(data.test_labels) == 3
    assert "train/ and test/" in data.source


def test_without_classes_txt_names_go_up_to_the_largest_id(tmp_path):
    root = _mask_folder(tmp_path / "data", classes=())
    (root / "masks" / "p03.png").unlink()
    _save_mask(root / "masks" / "p03.png", _mask(3, top_id=4), palette=False)
    assert load_dataset(root).class_names == ["background", "class 1", "class 2", "class 3", "class 4"]


def test_image_size_resizes_masks_with_nearest_and_adds_no_class(tmp_path):
    root = _mask_folder(tmp_path / "data")
    data = load_dataset(root, image_size="13x19")
    assert data.input_shape == (3, 13, 19) and tuple(data.train_labels.shape[1:]) == (13, 19)
    assert set(torch.cat([data.train_labels, data.test_labels]).unique().tolist()) <= {0, 1, 2, 255}
    full = load_dataset(root)
    for small, large in zip(data.train_labels, full.train_labels, strict=True):
        pillow = np.asarray(Image.fromarray(large.numpy()).resize((19, 13), Image.NEAREST))
        assert np.array_equal(small.numpy(), pillow)


def test_grayscale_images_give_one_channel(tmp_path):
    root = _mask_folder(tmp_path / "data")
    for file in (root / "images").iterdir():
        Image.open(file).convert("L").save(file)
    assert load_dataset(root).input_shape == (1, 24, 32)


def test_undecodable_and_unpaired_files_are_skipped_with_warnings(tmp_path, caplog):
    root = _mask_folder(tmp_path / "data")
    (root / "images" / "p01.png").write_bytes(b"not a png")
    Image.fromarray(_photo(0)).save(root / "images" / "lonely.png")
    _save_mask(root / "masks" / "orphan.png", _mask(0), palette=False)
    _save_mask(root / "masks" / "p02.png", _mask(0, height=20), palette=False)  # its image is 24 high
    with caplog.at_level(logging.WARNING, logger="convlens"):
        data = load_dataset(root)
    assert len(data.train_labels) + len(data.test_labels) == 8
    text = caplog.text
    assert "skipped 1 file(s) that could not be decoded" in text and "p01.png" in text
    assert "skipped 1 image(s) without a mask" in text and "lonely.png" in text
    assert "skipped 1 mask(s) without an image" in text and "orphan.png" in text
    assert "skipped 1 mask(s) not the size of their image" in text and "p02.png is 32x20" in text


def test_an_rgb_mask_is_refused_saying_how_to_save_ids(tmp_path):
    root = _mask_folder(tmp_path / "data")
    Image.fromarray(np.zeros((24, 32, 3), dtype=np.uint8)).save(root / "masks" / "p04.png")
    with pytest.raises(
        ConvlensError, match=r"p04\.png: mask in mode RGB .*single-channel \(L\) or palette \(P\) PNG"
    ):
        load_dataset(root)


def test_a_class_id_beyond_classes_txt_names_the_file_and_value(tmp_path):
    root = _mask_folder(tmp_path / "data")
    _save_mask(root / "masks" / "p05.png", _mask(5, top_id=7), palette=True)
    with pytest.raises(
        ConvlensError, match=r"p05\.png: class id 7, but 3 classes are named in .*classes\.txt"
    ):
        load_dataset(root)


def test_masks_with_no_foreground_are_refused(tmp_path):
    root = _mask_folder(tmp_path / "data")
    for file in (root / "masks").iterdir():
        _save_mask(file, np.where(_mask(0) == 255, 255, 0).astype(np.uint8), palette=False)
    with pytest.raises(ConvlensError, match="every mask is background .0. or ignored .255."):
        load_dataset(root)


def test_a_folder_with_no_images_is_refused(tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    with pytest.raises(ConvlensError, match=r"data: no readable image with a mask"):
        load_dataset(root)


def test_a_test_folder_without_images_and_masks_is_refused(tmp_path):
    root = _mask_folder(tmp_path / "data", count=4, base="train")
    (root / "test").mkdir()
    with pytest.raises(ConvlensError, match=r"test: expected test/images and test/masks"):
        load_dataset(root)


def test_a_blank_line_in_classes_txt_is_refused(tmp_path):
    root = _mask_folder(tmp_path / "data", classes=("background", "", "car"))
    with pytest.raises(ConvlensError, match=r"classes\.txt: line 2 is blank"):
        load_dataset(root)


# ---------------------------------------------------------------- .npz with masks


def _npz(path, channels_last=True, **extra):
    images = np.stack([_photo(i) for i in range(10)])
    if not channels_last:
        images = images.transpose(0, 3, 1, 2)
    masks = np.stack([_mask(i) for i in range(10)])
    np.savez(path, images=images, masks=masks, **extra)
    return images, masks


@pytest.mark.parametrize("channels_last", [True, False])
def test_an_npz_with_masks_is_read_as_segmentation(tmp_path, channels_last):
    images, masks = _npz(tmp_path / "seg.npz", channels_last, class_names=np.array(["background", "a", "b"]))
    data = load_dataset(tmp_path / "seg.npz")
    assert data.task == "segmentation" and data.class_names == ["background", "a", "b"]
    assert len(data.train_labels) == 8 and len(data.test_labels) == 2
    rows = {tuple(m.reshape(-1)) for m in masks}
    assert {tuple(m.reshape(-1).tolist()) for m in torch.cat([data.train_labels, data.test_labels])} == rows
    assert data.input_shape == (3, 24, 32)
    train_rows = [
        i for i in range(10) if any(torch.equal(torch.from_numpy(masks[i]), m) for m in data.train_labels)
    ]
    pixels = images[train_rows] if not channels_last else images[train_rows].transpose(0, 3, 1, 2)
    assert np.array_equal(data.train_images.numpy(), pixels)  # each image stays with its mask


def test_an_npz_with_a_test_split_float_images_and_image_size(tmp_path):
    images = np.stack([_photo(i) for i in range(6)]).transpose(0, 3, 1, 2).astype(np.float32) / 255
    masks = np.stack([_mask(i) for i in range(6)]).astype(np.int64)
    np.savez(
        tmp_path / "seg.npz", images=images[:4], masks=masks[:4], images_test=images[4:], masks_test=masks[4:]
    )
    data = load_dataset(tmp_path / "seg.npz", image_size=12)
    assert len(data.train_labels) == 4 and len(data.test_labels) == 2 and data.input_shape == (3, 12, 12)
    assert data.class_names == ["background", "class 1", "class 2"]
    expected = np.asarray(Image.fromarray(masks[4].astype(np.uint8)).resize((12, 12), Image.NEAREST))
    assert np.array_equal(data.test_labels[0].numpy(), expected)


def test_a_plain_npz_still_reads_as_classification(tmp_path):
    np.savez(tmp_path / "plain.npz", x=np.zeros((10, 4, 4), dtype=np.uint8), y=np.arange(10) % 2)
    assert load_dataset(tmp_path / "plain.npz").task == "classification"


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"masks": np.zeros((2, 4, 4), np.uint8)}, "has 'masks' but no 'images'"),
        ({"images": np.zeros((2, 4, 4)), "masks": np.zeros((2, 4, 4))}, "masks: expected integer class ids"),
        (
            {"images": np.zeros((2, 4, 4)), "masks": np.zeros((2, 5, 4), np.uint8)},
            "expected one H x W mask per image",
        ),
        ({"images": np.zeros((2, 4, 4)), "masks": np.full((2, 4, 4), 300)}, "masks: class id 300"),
        ({"images": np.zeros((2, 4, 4)), "masks": np.zeros((2, 4, 4), np.uint8)}, "every mask is background"),
        (
            {
                "images": np.zeros((2, 4, 4)),
                "masks": np.ones((2, 4, 4), np.uint8),
                "images_test": np.zeros((1, 4, 4)),
            },
            "has 'images_test' but no 'masks_test'",
        ),
        (
            {
                "images": np.zeros((2, 4, 4)),
                "masks": np.full((2, 4, 4), 3),
                "class_names": np.array(["bg", "a"]),
            },
            r"seg\.npz:masks\[0\]: class id 3, but 2 classes are named",
        ),
        ({"images": np.full((2, 4, 4), np.nan), "masks": np.ones((2, 4, 4), np.uint8)}, "non-finite pixel"),
    ],
)
def test_bad_npz_masks_are_refused_in_one_line(tmp_path, arrays, message):
    np.savez(tmp_path / "seg.npz", **arrays)
    with pytest.raises(ConvlensError, match=message) as caught:
        load_dataset(tmp_path / "seg.npz")
    assert "seg.npz" in str(caught.value) and "\n" not in str(caught.value)
