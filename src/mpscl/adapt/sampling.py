"""Deterministic batch order: the batch of iteration ``i`` is a pure function of (seed, i).

Each domain is walked in epochs; epoch ``e`` is a permutation drawn from a generator
seeded with (seed, domain, e). Because nothing here carries state, a resumed run draws
exactly the batches the uninterrupted run would have drawn, and ranks of a distributed
run take disjoint shares of the same global batch.

Augmentation is drawn per sample from :func:`sample_generator`, seeded by the sample's
position in the GLOBAL batch: rank r's share (positions r*B .. r*B+B-1) is augmented
exactly as the same samples of a one-process run with batch size world_size*B.
"""
from __future__ import annotations

from functools import lru_cache
from typing import List

import torch

_DOMAIN_SALT = {"source": 1, "target": 2, "val": 3}


@lru_cache(maxsize=64)
def _epoch_perm(seed: int, domain: str, epoch: int, n: int) -> tuple:
    g = torch.Generator().manual_seed((seed * 1_000_003 + _DOMAIN_SALT.get(domain, 9) * 7919 + epoch) % (2**63))
    return tuple(torch.randperm(n, generator=g).tolist())


def batch_indices(seed: int, domain: str, iteration: int, batch_size: int, n: int,
                  rank: int = 0, world_size: int = 1) -> List[int]:
    """Dataset indices of this rank's share of the global batch of ``iteration``."""
    if n <= 0:
        raise ValueError(f"the {domain} dataset has no slices")
    global_bs = batch_size * world_size
    start = iteration * global_bs + rank * batch_size
    out = []
    for pos in range(start, start + batch_size):
        epoch, k = divmod(pos, n)
        out.append(_epoch_perm(seed, domain, epoch, n)[k])
    return out


def sample_generator(seed: int, iteration: int, position: int) -> torch.Generator:
    """Generator for the augmentation of the sample at ``position`` of the global batch of
    ``iteration`` (position = rank * batch_size + index within the rank's share)."""
    if position < 0:
        raise ValueError(f"position must be >= 0, got {position}")
    return torch.Generator().manual_seed(
        ((seed * 2_000_003 + iteration) * 1_000_033 + position) % (2**63))
