"""Is the answer translation-invariant? Shift test images by −k..k pixels and watch the accuracy.

Three models trained on the same unshifted images (no shift augmentation): a CNN with max
pooling, the same CNN without pooling (stride 1 everywhere, flattened into the classifier)
and a dense MLP. Pooling throws away a little position after every block, so small shifts
matter less; without it the classifier still sees exact positions; the MLP has no notion of
neighbourhood at all. Agreement is the fraction of images whose shifted prediction equals
the unshifted one.
"""

from __future__ import annotations

from dataclasses import dataclass

from convlens.data import Dataset
from convlens.errors import ConvlensError
from convlens.lab._common import (
    LabResult,
    check_positive,
    predict_logits,
    register_experiment,
    shift_images,
    subset,
    train_quick,
)

VARIANTS = {  # label -> (model name, options)
    "cnn with pooling": ("convnet", {}),
    "cnn without pooling": ("convnet", {"pool": False}),
    "mlp": ("mlp", {}),
}


@dataclass
class InvarianceResult(LabResult):
    dataset: str
    epochs: int
    test_images: int
    axis: str  # "horizontal", "vertical" or "diagonal"
    shifts: list[int]  # pixels, -k..k
    clean_accuracy: dict[str, float]  # variant -> accuracy at shift 0
    accuracy: dict[str, list[float]]  # variant -> accuracy per shift
    agreement: dict[str, list[float]]  # variant -> fraction agreeing with the unshifted prediction
    seconds: float = 0.0


def _move(axis: str, shift: int) -> tuple[int, int]:
    return {"horizontal": (0, shift), "vertical": (shift, 0), "diagonal": (shift, shift)}[axis]


def run(
    dataset: Dataset,
    max_shift: int = 6,
    epochs: int = 3,
    axis: str = "horizontal",
    train_limit: int | None = None,
    test_limit: int | None = None,
    seed: int = 0,
    progress=None,
) -> InvarianceResult:
    """Accuracy and agreement against shift, for each of the three variants.

    ``progress(variants done, variants, what)`` before each variant and at the end.
    """
    check_positive("epochs", epochs)
    if axis not in ("horizontal", "vertical", "diagonal"):
        raise ConvlensError(f"axis must be horizontal, vertical or diagonal, got {axis!r}")
    if not isinstance(max_shift, int) or not 0 < max_shift < min(dataset.input_shape[1:]):
        raise ConvlensError(
            f"max_shift must be between 1 and {min(dataset.input_shape[1:]) - 1} pixels for "
            f"{'x'.join(map(str, dataset.input_shape[1:]))} images, got {max_shift}"
        )
    data = subset(dataset, train_limit, test_limit, seed)
    shifts = list(range(-max_shift, max_shift + 1))
    clean, accuracy, agreement = {}, {}, {}
    for index, (label, (model_name, options)) in enumerate(VARIANTS.items()):
        if progress is not None:
            progress(index, len(VARIANTS), f"training and shifting: {label}")
        model, _ = train_quick(data, model_name, epochs, seed, **options)
        unshifted = predict_logits(model, data.test_images).argmax(1)  # (N,)
        clean[label] = float((unshifted == data.test_labels).float().mean())
        accuracy[label], agreement[label] = [], []
        for shift in shifts:
            predicted = predict_logits(model, shift_images(data.test_images, *_move(axis, shift))).argmax(1)
            accuracy[label].append(float((predicted == data.test_labels).float().mean()))
            agreement[label].append(float((predicted == unshifted).float().mean()))
    if progress is not None:
        progress(len(VARIANTS), len(VARIANTS), "done")
    return InvarianceResult(
        dataset=dataset.name,
        epochs=epochs,
        test_images=int(data.test_labels.shape[0]),
        axis=axis,
        shifts=shifts,
        clean_accuracy=clean,
        accuracy=accuracy,
        agreement=agreement,
    )


register_experiment(
    "invariance",
    run,
    quick={"epochs": 1, "max_shift": 2, "train_limit": 500, "test_limit": 200},
    help="accuracy vs shift for a CNN with pooling, without pooling, and an MLP",
)
