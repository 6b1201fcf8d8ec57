"""Adversarial attacks: FGSM, PGD, the robustness curve and one image attacked, built on Captum.

Models take pixels in [0, 1] and normalize inside, so ε is in pixel units (ε = 8/255 means
"every pixel moves by at most 8 grey levels") and the adversarial image is clipped to
[0, 1] — a real image. ``methods``: the attacks and their registry (``ATTACKS``; a new attack is
one function and one ``register`` line); ``robustness``: accuracy against ε; ``one_image``: the
explorer's single-image attack with the probabilities around it.
"""

from convlens.attacks.methods import (
    ATTACKS,
    AttackResult,
    attack,
    attack_label,
    check_eps,
    check_inputs,
    fgsm,
    pgd,
)
from convlens.attacks.one_image import ImageAttack, attack_image
from convlens.attacks.robustness import RobustnessCurve, robustness_curve

__all__ = [
    "ATTACKS",
    "AttackResult",
    "ImageAttack",
    "RobustnessCurve",
    "attack",
    "attack_image",
    "attack_label",
    "check_eps",
    "check_inputs",
    "fgsm",
    "pgd",
    "robustness_curve",
]
