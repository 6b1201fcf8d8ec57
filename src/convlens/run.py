"""A trained run, typed: the model plus everything its checkpoint says, and what faces do with it.

``Run.open(path)`` is how the CLI, the report and the explorer load a model: one object with
the class names, input shape, normalization, training config, metrics, history, the data it
was trained on and where its checkpoints lie, instead of a JSON dict that each face parses
its own way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from convlens.errors import ConvlensError

CHECKPOINT_NAMES = ("model", "best", "last")  # what `convlens train` writes into a run folder
PREDICT_BATCH = 100  # images read, made float and classified at a time from a FloatImages


@dataclass
class Run:
    """A trained model and its checkpoint's facts (see ``convlens.checkpoint`` for the format)."""

    model: nn.Module  # in eval mode, inputs are pixels in [0, 1]
    checkpoint: Path  # the checkpoint's JSON file
    model_name: str
    input_shape: tuple[int, int, int]  # (C, H, W)
    class_names: list[str]
    normalization: dict  # {"mean", "std", "source"}
    training: dict  # the TrainConfig it was trained with
    metrics: dict  # test accuracy, per-class scores, confusion matrix, ...
    history: list[dict]  # one row per epoch
    dataset: dict  # {"name", "spec", "fingerprint", "source", ...} of the training data
    versions: dict
    validation: dict  # the validation split's sizes and rule ({} for runs from before it)
    diagnostics: list[dict]  # what training found wrong: {"kind", "severity", "message", "action"}
    metadata: dict = field(repr=False)  # the whole JSON, for fields not typed above

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """Load a run folder (its ``model.json``) or any ``NAME.json``/``NAME.safetensors`` of one."""
        from convlens.checkpoint import read_checkpoint

        json_path, model, meta, _ = read_checkpoint(path)
        return cls.from_checkpoint(json_path, model, meta)

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        run_dir: str | Path,
        class_names: list[str] | str | None = None,
        input_shape: tuple[int, int, int] | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        data: str | Path | None = None,
        overwrite: bool = False,
    ) -> Run:
        """Save a model object from a notebook or script as the run folder ``run_dir``; open it.

        ``model``: a StagedModel from ``convlens.create_model`` or a module laid out as torchvision's
        resnet18, resnet34 or mobilenet_v2 (any other class is refused, naming the routes that
        exist). ``data`` gives the class names, input shape and mean/std; otherwise give
        ``class_names`` and ``input_shape`` (C, H, W), with the ``mean``/``std`` the weights expect
        in [0, 1] pixel units, or neither for a model that takes pixels as they are
        (``convlens.imports``).
        """
        from convlens.imports import import_model

        result = import_model(model, run_dir, class_names, input_shape, mean, std, data, overwrite)
        return cls.open(result.checkpoint)

    @classmethod
    def from_checkpoint(cls, json_path: Path, model: nn.Module, meta: dict) -> Run:
        def section(key: str, kind: type):
            value = meta.get(key)
            return value if isinstance(value, kind) else kind()

        return cls(
            model=model,
            checkpoint=Path(json_path),
            model_name=str(meta["model"].get("name", "")),
            input_shape=tuple(int(s) for s in meta.get("input_shape", model.in_shape)),  # type: ignore[arg-type]
            class_names=[str(name) for name in meta["class_names"]],
            normalization=section("normalization", dict),
            training=section("training", dict),
            metrics=section("metrics", dict),
            history=section("history", list),
            dataset=section("dataset", dict),
            versions=section("versions", dict),
            validation=section("validation", dict),
            diagnostics=section("diagnostics", list),
            metadata=meta,
        )

    # ------------------------------------------------------------------------------ facts

    @property
    def folder(self) -> Path:
        return self.checkpoint.parent

    @property
    def name(self) -> str:
        """The run folder's name: how faces refer to a run."""
        return self.folder.name

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def paths(self) -> dict[str, Path]:
        """The checkpoints present in the run folder: {"model", "best", "last"} → their JSON."""
        found = {name: self.folder / f"{name}.json" for name in CHECKPOINT_NAMES}
        return {name: path for name, path in found.items() if path.is_file()}

    @property
    def task(self) -> str:
        """``classification`` (a class per image) or ``segmentation`` (a class per pixel)."""
        return getattr(self.model, "task", "classification")

    @property
    def test_accuracy(self) -> float | None:
        value = self.metrics.get("test_accuracy")
        return float(value) if isinstance(value, int | float) else None

    @property
    def data_spec(self) -> str | None:
        """How to load the training data again (a built-in name or a path), if the checkpoint says."""
        return self.dataset.get("spec") or self.dataset.get("name") or None

    def class_index(self, value: int | str | None, parameter: str = "target") -> int | None:
        """A class given by index (0..K-1) or by name; None stays None. The one place that checks it."""
        if value is None:
            return None
        if isinstance(value, str) and value in self.class_names:
            return self.class_names.index(value)
        try:
            index = int(value)
        except (TypeError, ValueError):
            index = -1
        if isinstance(value, bool) or not 0 <= index < self.num_classes:
            raise ConvlensError(
                f"{parameter} must be a class index 0..{self.num_classes - 1} or a class name, got {value!r}",
                parameter=parameter,
            )
        return index

    # ------------------------------------------------------------------------------- data

    def data(self, data: str | None = None):
        """The data set to run this model on, as ``(Dataset, spec)``.

        By default the data it was trained on, reloaded at the size it was trained at (so a run
        trained with an image size gets its images resized the same way). Other data (``data``)
        must already have the model's input shape and the same number of classes.
        """
        from convlens.data import load_dataset

        spec = data or self.data_spec
        if not spec:
            raise ConvlensError(
                "data: the checkpoint does not say which data set it was trained on; give one",
                parameter="data",
            )
        dataset = load_dataset(spec, image_size=None if data else self.input_shape[1:])
        if dataset.input_shape != self.input_shape:
            raise ConvlensError(
                f"data {spec}: images are {'x'.join(map(str, dataset.input_shape))}, the model takes "
                f"{'x'.join(map(str, self.input_shape))} (train a model on this data, or pick data of that shape)",
                parameter="data",
            )
        if dataset.task != self.task:
            raise ConvlensError(
                f"data {spec}: {dataset.task} data, the model does {self.task}", parameter="data"
            )
        if dataset.num_classes != self.num_classes:
            raise ConvlensError(
                f"data {spec}: {dataset.num_classes} classes, the model has {self.num_classes}",
                parameter="data",
            )
        return dataset, spec

    def test_split(self, data: str | None = None, limit: int | None = None, seed: int = 0):
        """``(images, labels, spec)``: a seeded sample of ``limit`` test images (None: all), the
        images a ``data.rows.FloatImages`` that reads and makes float only what is asked of it.

        This is how a whole split is walked (the report): memory holds a batch, not the split
        as floats, however large the folder (a cached folder's split stays on disk)."""
        from convlens.data.rows import FloatImages
        from convlens.data.transforms import sample_indices

        dataset, spec = self.data(data)
        index = sample_indices(dataset.test_labels.shape[0], limit, seed)
        return FloatImages(dataset.test_images, index), dataset.test_labels[index], spec

    def test_data(self, data: str | None = None, limit: int | None = None, seed: int = 0):
        """``(float images, labels, spec)``: ``test_split``'s sample as one float tensor.

        For a sample (``limit``): only the sampled images are read and made float, so 100 images
        of a 20,000-image split cost 100 images. A whole split: ``test_split``."""
        images, labels, spec = self.test_split(data, limit, seed)
        return images[:], labels, spec

    # ------------------------------------------------------------------------- predictions

    def predict(self, images) -> torch.Tensor:
        """Softmax probabilities (N, classes) of float images (N, C, H, W) in [0, 1], a tensor or
        a ``FloatImages`` (``test_split``), which is read a batch at a time."""
        from convlens.data.rows import FloatImages
        from convlens.predict import predict_probabilities

        if not isinstance(images, FloatImages):
            return predict_probabilities(self.model, images)
        # read batches of predict_probabilities' own: the same forward passes as for one tensor
        parts = [
            predict_probabilities(self.model, batch, PREDICT_BATCH) for batch in images.batches(PREDICT_BATCH)
        ]
        return torch.cat(parts) if parts else torch.zeros(0, self.num_classes)

    def check_shift(self, image: torch.Tensor):
        """How far ``image`` (C, H, W) in [0, 1] is from the training images (``convlens.shift``).

        None when the checkpoint records no training mean/std to compare with.
        """
        from convlens.shift import check_shift

        mean, std = self.normalization.get("mean"), self.normalization.get("std")
        if not mean or not std or len(mean) != self.input_shape[0]:
            return None
        return check_shift(image, mean, std)

    def input(self, source: str | Path | bytes | torch.Tensor, invert: bool = False, name: str | None = None):
        """One image as this model's input: a ``convlens.inputs.ModelInput`` (pixels, shift check).

        ``source``: an image or DICOM file, a built-in picture (smiley, digits:N, a photo, xray),
        the bytes of an uploaded file, or pixels (C, H, W). Every face reads images through this,
        so each gets the same pixels and the same errors (``convlens.inputs``). ``invert``: use
        ``1 − pixels``; ``name``: how messages name bytes or pixels (e.g. "upload 'x.png'").
        """
        from convlens.inputs import read_input

        return read_input(source, self.input_shape, name=name, invert=invert, check=self.check_shift)

    def require_task(self, task: str, instead: str) -> None:
        """Refuse to do on this run what only a ``task`` run can do, saying what to use instead.

        The faces call this before anything is loaded or written, so a classification-only
        command on a segmentation run (or the reverse) fails in one line, not deep inside.
        """
        if self.task != task:
            per = "a class per pixel" if self.task == "segmentation" else "a class per image"
            raise ConvlensError(
                f"run {self.name}: a {self.task} run ({per}); this needs a {task} run ({instead})"
            )

    def segment(self, source: str | Path | bytes | torch.Tensor, invert: bool = False):
        """Every pixel's class of one image read by ``input``: a ``convlens.predict.SegmentationMaps``
        (probabilities, mask, confidence, uncertainty, per-class shares named by this run's classes).
        A classification run is refused: its model gives one class per image (``predict_files``)."""
        from convlens.predict import segment

        self.require_task("segmentation", "classify images with predict_files")
        return segment(self.model, self.input(source, invert=invert).pixels, self.class_names)

    def predict_files(self, paths: list[str | Path], top_k: int = 3, invert: bool = False) -> list[dict]:
        """Classify image files or folders of images: [{"file", "predictions": [{"class", "probability"}],
        "shift"}] (``shift``: how far each image is from the training images, see ``check_shift``).
        Each file is read by ``input``. ``invert``: classify ``1 − pixels``. A file that cannot be
        read is skipped with a warning and gets ``{"file", "error", "predictions": []}``; a
        ConvlensError only if none can be read."""
        from convlens.predict import predict_files

        self.require_task("classification", "segment each image with segment")
        return predict_files(
            self.model,
            self.input_shape,
            self.class_names,
            paths,
            top_k,
            invert=invert,
            check=self.check_shift,
        )
