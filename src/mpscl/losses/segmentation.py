"""Supervised segmentation losses on the source domain (docs/METHOD.md, Losses item 1).

``segmentation_loss = weighted_cross_entropy + dice_loss``, both computed from raw logits.
All functions are pure functions of tensors; they run on any device, accept float32 and
float64 logits, and compute in float32 (or float64) even when called with bf16/fp16
logits or inside an autocast region.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from .precision import compute_dtype as _compute_dtype, full_precision as _full_precision

__all__ = ["class_counts", "class_weights", "weighted_cross_entropy", "dice_loss", "segmentation_loss"]

DICE_EPS = 1e-5


def _check_logits_labels(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.dim() != 4:
        raise ValueError(f"logits must be (B,K,H,W), got shape {tuple(logits.shape)}")
    if labels.dim() != 3:
        raise ValueError(f"labels must be (B,H,W), got shape {tuple(labels.shape)}")
    b, _, h, w = logits.shape
    if tuple(labels.shape) != (b, h, w):
        raise ValueError(
            f"labels shape {tuple(labels.shape)} does not match logits (B,H,W) = {(b, h, w)}"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")


def _valid_mask(labels: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """(B,H,W) bool: pixels with a class id in [0, K); raises on ids that are neither valid
    nor ``ignore_index`` (one host sync, cheaper than a device-side assert)."""
    valid = (labels >= 0) & (labels < num_classes)
    bad = ~valid & (labels != ignore_index)
    if bool(bad.any()):
        found = torch.unique(labels[bad]).tolist()[:10]
        raise ValueError(
            f"labels contain ids {found} outside [0, {num_classes}) that are not "
            f"ignore_index={ignore_index}"
        )
    return valid


def class_counts(labels: torch.Tensor, num_classes: int, ignore_index: int = -1) -> torch.Tensor:
    """(K,) float32 number of VALID pixels (ids in [0, K)) of each class in ``labels`` (B,H,W).

    Exact integers up to 2**24 pixels per class. A data-parallel trainer sums these over
    its ranks and passes the result as ``counts`` to :func:`weighted_cross_entropy`.
    """
    valid = (labels >= 0) & (labels < num_classes)
    safe = torch.where(valid, labels, torch.zeros_like(labels)).reshape(-1)
    counts = torch.zeros(num_classes, dtype=torch.float32, device=labels.device)
    counts.scatter_add_(0, safe, valid.reshape(-1).to(torch.float32))
    return counts


def class_weights(labels: torch.Tensor, num_classes: int, ignore_index: int = -1,
                  counts: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-class weights ``w_c = 1 - freq_c`` from the batch's labels.

    Args:
        labels: (B,H,W) integer class ids; ``ignore_index`` pixels are not counted.
        num_classes: K.
        counts: optional (K,) class pixel counts to take the frequencies from instead of
            ``labels`` (those of the global batch of a data-parallel run).
    Returns:
        (K,) float32 on the labels' device. ``freq_c`` is the fraction of VALID pixels
        (ids in [0, K)) with class c, so a class absent from the batch gets weight 1
        (its weight never enters the loss anyway: no pixel carries it). With no valid
        pixel at all every weight is 1.
    """
    if counts is None:
        counts = class_counts(labels, num_classes, ignore_index)
    counts = counts.to(device=labels.device, dtype=torch.float32)
    total = counts.sum().clamp_min(1.0)
    return 1.0 - counts / total


def weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -1,
    counts: Optional[torch.Tensor] = None, world_size: int = 1,
    class_scale: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Class-weighted cross-entropy with ``w_c = 1 - freq_c`` of class c in this batch.

    The reduction is the weighted mean that ``F.cross_entropy(weight=w)`` uses and that the
    authors' code relies on: ``sum_i w_{y_i} * nll_i / sum_i w_{y_i}`` over valid pixels.
    Two degenerate cases, which the authors' code turns into NaN (0/0):
      * every valid pixel has the same class c: then ``w_c = 0`` for all of them and we
        return the plain (unweighted) mean NLL, the weighted mean with equal weights;
      * no valid pixel: returns 0 (still connected to ``logits`` for autograd).

    Data parallelism: pass ``counts``, the (K,) :func:`class_counts` of the GLOBAL batch
    (summed over the ``world_size`` ranks, each holding an equal share). Weights and
    normaliser are then those of the global batch and the value returned is this rank's
    share ``world_size * sum_i w_{y_i} nll_i / sum_c w_c counts_c``, so the mean over ranks
    (what gradient averaging computes) is exactly the loss of the global batch.

    Args:
        logits: (B,K,H,W) raw scores (any float dtype; computed in float32/float64).
        labels: (B,H,W) int64 class ids in [0, K) or ``ignore_index``.
        counts: optional (K,) class pixel counts of the global batch (see above).
        world_size: number of ranks sharing the global batch (with ``counts`` only).
        class_scale: optional (K,) factors on each class's terms in the numerator only, the
            normaliser unchanged: ``sum_i s_{y_i} w_{y_i} nll_i / sum_i w_{y_i}``, so scale s
            on every class is the loss times s, and on some classes those classes' weight
            alone (``mpscl.self_training_trusted``). In the degenerate one-class case the
            plain mean is scaled the same way.
    Returns:
        scalar tensor (float32, or float64 for float64 logits).
    """
    _check_logits_labels(logits, labels)
    k = logits.shape[1]
    with _full_precision(logits.device):
        x = logits.to(_compute_dtype(logits))
        valid = _valid_mask(labels, k, ignore_index)
        safe = torch.where(valid, labels, torch.zeros_like(labels))
        nll = -F.log_softmax(x, dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)  # (B,H,W)
        validf = valid.to(x.dtype)
        wc = class_weights(labels, k, ignore_index, counts=counts).to(x.dtype)
        w = wc[safe] * validf
        scale = None if class_scale is None else class_scale.to(device=x.device, dtype=x.dtype)[safe] * validf
        if counts is None:
            wsum, nvalid = w.sum(), validf.sum()
        else:  # the global batch's normalisers, shared out over the ranks
            cnt = counts.to(device=x.device, dtype=x.dtype)
            wsum, nvalid = (wc * cnt).sum() / world_size, cnt.sum() / world_size
        if scale is not None:
            w_num, plain_num = w * scale, scale
        else:
            w_num, plain_num = w, validf
        weighted = (w_num * nll).sum() / torch.where(wsum > 0, wsum, torch.ones_like(wsum))
        plain = (plain_num * nll).sum() / nvalid.clamp_min(1.0 / world_size)
        return torch.where(wsum > 0, weighted, plain)


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """Soft Dice loss, averaged over samples and over ALL classes (background included).

    For sample b and class c, with p = softmax(logits) and g = one-hot(labels):
    ``1 - (2*sum p*g + eps) / (sum p^2 + sum g^2 + eps)``, eps = 1e-5, sums over the
    pixels of that sample (per-sample Dice, as the authors' code). A class absent from a
    sample scores ``eps / (sum p^2 + eps)``, i.e. ~1 loss unless nothing predicts it.
    Pixels labelled ``ignore_index`` are left out of every sum.

    Args:
        logits: (B,K,H,W) raw scores. labels: (B,H,W) int64.
    Returns:
        scalar tensor (float32, or float64 for float64 logits).
    """
    _check_logits_labels(logits, labels)
    k = logits.shape[1]
    with _full_precision(logits.device):
        x = logits.to(_compute_dtype(logits))
        valid = _valid_mask(labels, k, ignore_index).unsqueeze(1).to(x.dtype)  # (B,1,H,W)
        safe = torch.where(labels >= 0, labels, torch.zeros_like(labels)).clamp_max(k - 1)
        probs = F.softmax(x, dim=1) * valid
        onehot = F.one_hot(safe, k).permute(0, 3, 1, 2).to(x.dtype) * valid
        inter = (probs * onehot).sum(dim=(2, 3))  # (B,K)
        den = (probs * probs).sum(dim=(2, 3)) + (onehot * onehot).sum(dim=(2, 3))
        dice = (2.0 * inter + DICE_EPS) / (den + DICE_EPS)
        return 1.0 - dice.mean()


def segmentation_loss(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -1,
    counts: Optional[torch.Tensor] = None, world_size: int = 1,
) -> torch.Tensor:
    """``weighted_cross_entropy + dice_loss`` (docs/METHOD.md Losses item 1) for one output head.

    Args: logits (B,K,H,W), labels (B,H,W) int64; ``counts``/``world_size`` as in
    :func:`weighted_cross_entropy` (the per-sample Dice needs no correction: with equal
    shares the mean over ranks of per-rank means is the global mean). Returns a scalar.
    """
    return weighted_cross_entropy(logits, labels, ignore_index, counts, world_size) + dice_loss(
        logits, labels, ignore_index
    )
