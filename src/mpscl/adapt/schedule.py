"""Learning-rate schedule: DeepLab's poly decay, applied per parameter group."""
from __future__ import annotations

import torch


def poly_factor(iteration: int, max_iters: int, power: float) -> float:
    """``(1 - i / max_iters) ** power``; 1 at the start, 0 at ``max_iters``."""
    if max_iters <= 0:
        return 1.0
    frac = min(max(iteration, 0), max_iters) / max_iters
    return (1.0 - frac) ** power


def set_poly_lr(optimizer: torch.optim.Optimizer, iteration: int, max_iters: int, power: float) -> float:
    """Scale every group's ``initial_lr`` by the poly factor; return the factor.

    Groups keep their own base rate (the heads' 10x is in their ``initial_lr``), so the
    ratio between backbone and heads is preserved through the decay.
    """
    f = poly_factor(iteration, max_iters, power)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * f
    return f


def stage_schedule(stage: str, warmup_iters: int, iters: int, mode: str):
    """``(offset, total)`` of a stage's poly decay: its LR at local step i is poly(offset + i, total).

    ``restart`` (the authors' code): the warm-up and the MPSCL stage each decay from the base
    rate over their own length. ``continue``: warm-up and MPSCL share one decay over
    ``warmup_iters + iters``, so every iteration has the LR a single-stage run of the same
    total budget would have (MPSCL then differs from AdvEnt only by what it adds).
    ``authors`` (their code, the paper presets): both stages decay over ``iters`` (their
    MAX_ITERS) from the base rate; the warm-up is stopped at ``warmup_iters``, so its factor
    ends near (1 - 4000/50000)^0.9 = 0.93, and the MPSCL stage starts again from 1.
    Single-stage methods always decay over their own length.
    """
    if mode not in ("authors", "restart", "continue"):
        raise ValueError(f"unknown schedule mode {mode!r} (authors, restart or continue)")
    if mode == "authors" and stage in ("warmup", "mpscl"):
        # both over iters (MAX_ITERS); a warm-up longer than that decays over its own length
        return 0, (max(iters, warmup_iters) if stage == "warmup" else iters)
    if mode == "continue" and stage in ("warmup", "mpscl"):
        return (0 if stage == "warmup" else warmup_iters), warmup_iters + iters
    return 0, (warmup_iters if stage == "warmup" else iters)
