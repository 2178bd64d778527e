"""Losses of MPSCL, as pure functions of tensors (see docs/METHOD.md, Losses).

- segmentation: class-weighted cross-entropy + soft Dice (source supervision);
- contrastive: MPCL, pixel features vs class prototypes with an angular margin;
- adversarial: AdvEnt entropy maps and the BCE terms of segmenter and discriminators.
"""
from .adversarial import (
    ENTROPY_EPS,
    SOURCE_LABEL,
    TARGET_LABEL,
    discriminator_loss,
    entropy_map,
    generator_adversarial_loss,
)
from .contrastive import MASK_EPS, SIN_CLAMP_MIN, mpcl_loss
from .segmentation import (
    DICE_EPS,
    class_weights,
    dice_loss,
    segmentation_loss,
    weighted_cross_entropy,
)

__all__ = [
    "class_weights",
    "weighted_cross_entropy",
    "dice_loss",
    "segmentation_loss",
    "DICE_EPS",
    "mpcl_loss",
    "MASK_EPS",
    "SIN_CLAMP_MIN",
    "entropy_map",
    "generator_adversarial_loss",
    "discriminator_loss",
    "SOURCE_LABEL",
    "TARGET_LABEL",
    "ENTROPY_EPS",
]
