"""Margin preserving contrastive loss, MPCL (docs/METHOD.md, Losses item 4).

Every pixel feature is contrasted with the K category prototypes: its own class's cosine
gets an additive angular margin, the other classes are negatives. Two variants:

* ``variant="paper"`` (default): the formula of the paper / docs/METHOD.md, one stable
  log-softmax over ``[cos(theta_y + m), cos_k (k != y)] / T``.
* ``variant="authors"``: what the authors' released code computes (docs/METHOD.md, Traps):
  the margin logit ``phi_k`` for every class, the positive shifted by ``max_k phi_k/T`` and
  the negatives by ``max_k cos_k/T`` (both shifts detached, as in their code, so the
  gradient is theirs too), and ``+1e-4`` inside the log. The separate shifts mostly
  cancel the margin. Offered only to reproduce and compare their numbers.

Pure function of tensors; any device; float32/float64; bf16/fp16 inputs and autocast
regions are computed in float32.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from .precision import full_precision as _full_precision

__all__ = ["mpcl_loss", "MASK_EPS", "SIN_CLAMP_MIN"]

MASK_EPS = 1e-4       # denominator guard of the masked (target) average
SIN_CLAMP_MIN = 1e-4  # sin_y = sqrt(clamp(1 - cos_y^2, 1e-4, 1))
_AUTHORS_LOG_EPS = 1e-4
_VARIANTS = ("paper", "authors")


def _margin_cos(cos: torch.Tensor, margin: float) -> torch.Tensor:
    """cos(theta + m) from cos(theta), with the ArcFace fallback ``cos - m*sin(m)`` where
    theta + m would pass pi (cos <= cos(pi - m))."""
    sin = torch.sqrt((1.0 - cos * cos).clamp(SIN_CLAMP_MIN, 1.0))
    phi = cos * math.cos(margin) - sin * math.sin(margin)
    fallback = cos - margin * math.sin(margin)
    return torch.where(cos > math.cos(math.pi - margin), phi, fallback)


def _check(features, labels, prototypes, margin, temperature, base_temperature, mask, variant):
    if features.dim() != 4:
        raise ValueError(f"features must be (B,C,h,w), got shape {tuple(features.shape)}")
    b, c, h, w = features.shape
    if labels.dim() != 3 or tuple(labels.shape) != (b, h, w):
        raise ValueError(
            f"labels must be (B,h,w) = {(b, h, w)} to match features, "
            f"got shape {tuple(labels.shape)} (downsample image labels first)"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if prototypes.dim() != 2 or prototypes.shape[1] != c:
        raise ValueError(
            f"prototypes must be (K,C) with C = {c} feature channels, "
            f"got shape {tuple(prototypes.shape)}"
        )
    if prototypes.shape[0] < 2:
        raise ValueError(f"need at least 2 prototypes (classes), got {prototypes.shape[0]}")
    if mask is not None and tuple(mask.shape) != (b, h, w):
        raise ValueError(f"mask must be (B,h,w) = {(b, h, w)}, got shape {tuple(mask.shape)}")
    if not (0.0 <= margin < math.pi):
        raise ValueError(f"margin must be in [0, pi) radians, got {margin}")
    if not temperature > 0 or not base_temperature > 0:
        raise ValueError(
            f"temperature and base_temperature must be > 0, got {temperature}, {base_temperature}"
        )
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")


def mpcl_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    prototypes: torch.Tensor,
    *,
    margin: float,
    temperature: float,
    base_temperature: float = 1.0,
    mask: Optional[torch.Tensor] = None,
    variant: str = "paper",
    mask_total: Optional[torch.Tensor] = None,
    world_size: int = 1,
) -> torch.Tensor:
    """Margin preserving contrastive loss between pixel features and class prototypes.

    Both ``features`` and ``prototypes`` are L2-normalised here (along C), so
    ``cos_k = <f, c_k>``. For a pixel with label y (``variant="paper"``):

        phi_y = cos(theta_y + m) = cos_y cos m - sin_y sin m,
                sin_y = sqrt(clamp(1 - cos_y^2, 1e-4, 1)),
                phi_y = cos_y - m sin m   where cos_y <= cos(pi - m);
        loss  = -(T / T_base) * log_softmax([phi_y, cos_k (k != y)] / T)[y].

    ``variant="authors"`` (see module docstring):

        loss = -(T/T_base) * [ (phi_y/T - max_k phi_k/T)
               - log( sum_{k!=y} exp(cos_k/T - max_k cos_k/T) + exp(phi_y/T - max_k phi_k/T) + 1e-4 ) ]

    Args:
        features: (B,C,h,w) pixel features, un-normalised (e.g. the layer4 output).
        labels: (B,h,w) integer class ids at feature resolution. Ids outside [0, K)
            (e.g. -1 = ignore) are excluded from the average (both numerator and
            denominator; the authors' code would count them as zero-loss pixels).
        prototypes: (K,C) class prototypes, un-normalised. Gradients flow into both
            ``features`` and ``prototypes``; detach the prototypes yourself if needed.
        margin: additive angular margin m in radians, 0 <= m < pi.
        temperature: T > 0. base_temperature: T_base > 0 (scale T / T_base).
        mask: optional (B,h,w) bool selection (pseudo-label confidence); other dtypes are
            used as 0/1 weights.
        variant: "paper" (default) or "authors".
        mask_total: data parallelism, with ``mask``: ``sum(mask)`` over valid pixels of the
            GLOBAL batch (summed over the ``world_size`` ranks). The value returned is then
            this rank's share ``world_size * sum(loss * mask) / (mask_total + 1e-4)``, whose
            mean over ranks is exactly the masked average of the global batch. (Without
            ``mask`` no correction is needed when ranks hold equally many valid pixels.)
        world_size: number of ranks sharing the global batch (with ``mask_total`` only).
    Returns:
        scalar tensor, float32 (float64 if features or prototypes are float64):
        without ``mask`` the mean over valid pixels (0 if none);
        with ``mask`` ``sum(loss * mask) / (sum(mask) + 1e-4)`` over valid pixels.
    """
    _check(features, labels, prototypes, margin, temperature, base_temperature, mask, variant)
    b, c, h, w = features.shape
    k = prototypes.shape[0]
    dtype = torch.promote_types(
        torch.promote_types(torch.float32, features.dtype), prototypes.dtype
    )
    with _full_precision(features.device):
        f = F.normalize(features.to(dtype), p=2, dim=1)
        f = f.permute(0, 2, 3, 1).reshape(-1, c)                     # (N,C)
        protos = F.normalize(prototypes.to(dtype), p=2, dim=1)      # (K,C)
        cos = f @ protos.t()                                         # (N,K)

        y = labels.reshape(-1)
        valid = (y >= 0) & (y < k)
        y_safe = torch.where(valid, y, torch.zeros_like(y))
        is_pos = F.one_hot(y_safe, k).to(torch.bool)                 # (N,K)

        if variant == "paper":
            cos_y = cos.gather(1, y_safe[:, None])                   # (N,1)
            phi_y = _margin_cos(cos_y, margin)
            logits = torch.where(is_pos, phi_y, cos) / temperature
            log_prob = F.log_softmax(logits, dim=1).gather(1, y_safe[:, None]).squeeze(1)
        else:
            neg = cos / temperature
            neg = neg - neg.max(dim=1, keepdim=True).values.detach()
            pos = _margin_cos(cos, margin) / temperature
            pos = pos - pos.max(dim=1, keepdim=True).values.detach()
            mixed = torch.where(is_pos, pos, neg)
            log_prob = pos.gather(1, y_safe[:, None]).squeeze(1) - torch.log(
                mixed.exp().sum(dim=1) + _AUTHORS_LOG_EPS
            )

        loss = -(temperature / base_temperature) * log_prob         # (N,)
        weight = valid.to(dtype)
        if mask is None:
            return (loss * weight).sum() / weight.sum().clamp_min(1.0)
        weight = weight * mask.reshape(-1).to(dtype)
        if mask_total is not None:
            den = (mask_total.to(device=weight.device, dtype=dtype) + MASK_EPS) / world_size
            return (loss * weight).sum() / den
        return (loss * weight).sum() / (weight.sum() + MASK_EPS)
