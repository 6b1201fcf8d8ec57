"""One image attacked, as the explorer shows it: the adversarial image and the class
probabilities before and after."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from convlens.attacks.methods import AttackResult, attack
from convlens.errors import ConvlensError


@dataclass
class ImageAttack:
    """One image attacked, as the explorer shows it: the result and the probabilities around it."""

    result: AttackResult  # a batch of one image
    label: int  # the class attacked away from: the true class, or the model's own prediction
    clean: torch.Tensor  # (classes,) probabilities before the attack
    attacked: torch.Tensor  # (classes,) probabilities of the adversarial image


def attack_image(
    model: nn.Module,
    image: torch.Tensor,
    label: int | None = None,
    method: str = "fgsm",
    eps: float = 0.1,
    steps: int = 10,
    target: int | None = None,
) -> ImageAttack:
    """Attack one image (C, H, W) or (1, C, H, W) away from ``label`` (None: the class the model
    predicts for it, as for a drawing whose true class nobody knows), with the probabilities
    before and after."""
    from convlens.predict import predict_probabilities

    batch = image.unsqueeze(0) if image.ndim == 3 else image
    if batch.ndim != 4 or batch.shape[0] != 1:
        raise ConvlensError(
            f"image must be one image, C x H x W, got shape {tuple(image.shape)}", parameter="image"
        )
    clean = predict_probabilities(model, batch)[0]  # (classes,)
    label = int(clean.argmax()) if label is None else int(label)
    result = attack(model, batch, torch.tensor([label]), method, eps, steps, target)
    return ImageAttack(result, label, clean, predict_probabilities(model, result.adversarial_images)[0])
