"""Cross-domain class mixing for self-training (``mpscl.self_training_mix``).

DACS (Tranheden et al., WACV 2021) pastes the pixels of half the classes of a source slice
onto a target slice; the mixed slice is labelled with the source labels where pasted and the
target pseudo-labels elsewhere. Self-training alone drifts (a class grows into its
neighbours, confirmed by its own labels); the pasted pixels keep correct labels in the
target's context. Only foreground classes are drawn: pasting the background would cover
most of a cardiac slice.

Pasted source classes come labelled on every pixel, target structures only where the teacher
is confident, so the mixed slices can show more labelled foreground than the target has (the
twenty-third round measured structures growing on the phantom). Two variants were meant to
keep the labels' density: the pasted pixels labelled only where the teacher is confident and
right on the source slice (``confident_source_labels``), or, as ClassMix does, classes pasted
from another target slice with their pseudo-labels (``pair_partners``). Measured (twenty-
fourth round): the teacher is confident on most pasted source pixels, so the first still
adds 44-78% to the labelled foreground, the second 15-28%; both still made the phantom's
structures grow.
"""
from __future__ import annotations

from typing import Tuple

import torch


def class_mix_mask(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(H,W) bool mask of the pixels of ``labels`` (H,W) whose class is among ceil(n/2) of
    its n foreground classes (> 0), drawn with ``generator``; all False when n = 0."""
    present = torch.unique(labels)
    present = present[present > 0]
    if present.numel() == 0:
        return torch.zeros_like(labels, dtype=torch.bool)
    n = present.numel()
    chosen = present[torch.randperm(n, generator=generator)[:(n + 1) // 2]]
    return torch.isin(labels, chosen)


def class_mix(xs: torch.Tensor, ys: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor,
              masks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Source slices ``xs`` (B,C,H,W) with labels ``ys`` (B,H,W) pasted onto target slices
    ``xt`` with pseudo-labels ``yt`` (-1 = ignored) where ``masks`` (B,H,W) is True:
    the mixed slices and their labels."""
    if not (xs.shape == xt.shape and ys.shape == yt.shape == masks.shape == xs.shape[:1] + xs.shape[2:]):
        raise ValueError(f"class_mix: shapes differ: source {tuple(xs.shape)} / {tuple(ys.shape)}, "
                         f"target {tuple(xt.shape)} / {tuple(yt.shape)}, masks {tuple(masks.shape)}")
    m = masks.to(xs.device)
    x = torch.where(m[:, None], xs, xt)
    y = torch.where(m, ys.to(yt.dtype), yt)
    return x, y


def confident_source_labels(probs: torch.Tensor, ys: torch.Tensor, threshold: float) -> torch.Tensor:
    """Source labels ``ys`` (B,H,W) kept where the class probabilities ``probs`` (B,K,H,W) of
    the source slice reach ``threshold`` and their argmax is ``ys``; -1 (ignored) elsewhere."""
    if probs.shape[:1] + probs.shape[2:] != ys.shape:
        raise ValueError(f"confident_source_labels: probabilities {tuple(probs.shape)} do not match "
                         f"labels {tuple(ys.shape)}")
    conf, pred = probs.detach().float().max(dim=1)
    keep = (conf >= threshold) & (pred == ys.to(pred.device))
    return torch.where(keep, ys.to(pred.device), torch.full_like(pred, -1))


def pair_partners(n: int) -> torch.Tensor:
    """Which slice of a batch of ``n`` each slice takes its pasted classes from: its neighbour
    in the pairs (0, 1), (2, 3), ...; an odd last slice is its own partner (nothing changes).
    Pairs, not a rotation: with an even share per rank, DDP ranks pair as one process would."""
    partners = torch.arange(n) ^ 1
    return torch.where(partners < n, partners, torch.arange(n))
