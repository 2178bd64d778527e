"""Output-space adversarial alignment on entropy maps (AdvEnt; docs/METHOD.md, Losses item 2).

Domain labels: SOURCE = 0, TARGET = 1. The segmenter is trained to make the
discriminator call target entropy maps "source"; the discriminator is trained on detached
maps of both domains, each term halved. Pure functions of tensors; any device; results in
float32 (float64 for float64 inputs) also under bf16/fp16 autocast.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from .precision import full_precision as _full_precision

__all__ = [
    "SOURCE_LABEL",
    "TARGET_LABEL",
    "ENTROPY_EPS",
    "entropy_map",
    "generator_adversarial_loss",
    "discriminator_loss",
]

SOURCE_LABEL = 0.0
TARGET_LABEL = 1.0
ENTROPY_EPS = 1e-7


def _to_compute(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(torch.float32, x.dtype))


def entropy_map(logits: torch.Tensor) -> torch.Tensor:
    """Weighted self-information map, the discriminators' input.

    ``-p * log2(p + 1e-7) / log2(K)`` per class channel, with ``p = softmax(logits)``
    over K; summed over channels it is the normalised entropy in [0, 1] (up to the eps).

    Args:
        logits: (B,K,H,W) raw scores, K >= 2.
    Returns:
        (B,K,H,W) tensor, float32 (float64 for float64 logits).
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must be (B,K,H,W), got shape {tuple(logits.shape)}")
    k = logits.shape[1]
    if k < 2:
        raise ValueError(f"entropy map needs K >= 2 classes, got {k}")
    with _full_precision(logits.device):
        p = F.softmax(_to_compute(logits), dim=1)
        return -p * torch.log2(p + ENTROPY_EPS) / math.log2(k)


def _bce_to(d_logits: torch.Tensor, label: float) -> torch.Tensor:
    with _full_precision(d_logits.device):
        x = _to_compute(d_logits)
        return F.binary_cross_entropy_with_logits(x, torch.full_like(x, label))


def generator_adversarial_loss(d_logits_target: torch.Tensor) -> torch.Tensor:
    """Segmenter's adversarial loss: BCE-with-logits of D's output on TARGET entropy maps
    against the SOURCE label 0 (fool D into calling target "source"), mean over elements.

    Args:
        d_logits_target: (B,1,h,w) discriminator logits (any shape works).
    Returns:
        scalar tensor. Multiply by lambda_adv (main 0.003, aux 0.00002) in the caller.
    """
    return _bce_to(d_logits_target, SOURCE_LABEL)


def discriminator_loss(d_logits: torch.Tensor, is_target: bool) -> torch.Tensor:
    """One domain's half of the discriminator loss: ``BCE(d_logits, label) / 2`` with
    label 1 for target maps (``is_target=True``) and 0 for source maps.

    The training loop calls it twice, on D(entropy of detached source output) and on
    D(entropy of detached target output), and back-propagates both.

    Args:
        d_logits: (B,1,h,w) discriminator logits (any shape works).
        is_target: which domain the maps came from.
    Returns:
        scalar tensor.
    """
    if not isinstance(is_target, bool):
        raise TypeError(f"is_target must be a bool, got {type(is_target).__name__}")
    return _bce_to(d_logits, TARGET_LABEL if is_target else SOURCE_LABEL) / 2.0
