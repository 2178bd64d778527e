"""A size prior on the segmenter's target predictions (``loss.size_prior``, beyond the paper).

The adversarial warm-up already distorts the class shares of the target predictions, before
any self-training: on the phantom (validation seed 1, every target slice, label-free) CT -> MR
calls 2.45x the source's share left atrium and 2.78x aorta, MR -> CT 0.62x and 0.51x, while
the truth of the validation cases lies within 0.96-1.22x (LGE's warm-up stays within
0.94-1.11x). Constrained domain adaptation (Bateson et al., IEEE TMI 2021) penalises
predicted sizes outside bounds known a priori; here the bounds are a band around the
source labels' shares, wide enough for real differences between the domains.

The share of class k is the mean softmax over the target pixels. One batch of 4 slices is far
too noisy (benchmarks/class_proportions.py --windows), so the penalty is taken on a running
estimate that this batch enters with weight ``1 - m`` (``adapt/class_prior.ClassSharePrior``,
the same running mean over about 64 slices); only this batch carries gradient. For each
foreground class, with ratio r = share / source share and band b,

    penalty = sum_k max(0, r_k - b)^2 + max(0, 1/b - r_k)^2

so nothing is asked while every class lies within [1/b, b] times the source's share.
"""
from __future__ import annotations

import torch


def band_penalty(shares: torch.Tensor, source: torch.Tensor, band: float) -> torch.Tensor:
    """The penalty above for ``shares`` (K,) against ``source`` (K,) shares; class 0 (the
    background) is left out."""
    if band < 1.0:
        raise ValueError(f"band_penalty: band must be >= 1, got {band}")
    r = shares[1:] / source[1:].to(shares).clamp_min(1e-12)
    return (torch.relu(r - band) ** 2 + torch.relu(1.0 / band - r) ** 2).sum()


def mixed_shares(local_probs: torch.Tensor, running: torch.Tensor, global_shares: torch.Tensor,
                 slices: int, window: float) -> torch.Tensor:
    """The running estimate with this batch folded in: ``m * running + (1 - m) * batch`` with
    ``m = max(0, 1 - slices / window)``; the batch's value is ``global_shares`` (the mean
    softmax of the global batch, every rank's) and its gradient that of this rank's softmax
    ``local_probs`` (B,K,H,W), so that DDP's averaged gradients are one process's
    (tests/scale/test_ddp.py)."""
    local = local_probs.float().mean(dim=(0, 2, 3))
    batch = global_shares.to(local) + (local - local.detach())
    m = max(0.0, 1.0 - slices / window)
    return m * running.to(local) + (1.0 - m) * batch
