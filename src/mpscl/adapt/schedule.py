"""Learning-rate schedule: DeepLab's poly decay, applied per parameter group."""
from __future__ import annotations

from typing import Sequence

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


def stage_schedule(budgets: Sequence[int], index: int, mode: str):
    """``(offset, total)`` of stage ``index``'s poly decay, given every stage's iterations:
    its LR at local step i is poly(offset + i, total).

    ``restart``: each stage decays from the base rate over its own length. ``continue``: the
    stages share one decay over their summed budget, so every iteration has the LR a
    single-stage run of the same total budget would have (MPSCL then differs from AdvEnt only
    by what it adds). ``authors`` (the MPSCL authors' code, the paper presets): every stage
    decays from the base rate over the LAST stage's budget (their MAX_ITERS, ``train.iters``);
    the warm-up is stopped at its own budget, so its factor ends near (1 - 4000/50000)^0.9 =
    0.93, and the MPSCL stage starts again from 1. A stage longer than the last decays over
    its own length. A single stage decays over its own length in every mode.
    """
    if mode not in ("authors", "restart", "continue"):
        raise ValueError(f"unknown schedule mode {mode!r} (authors, restart or continue)")
    if mode == "continue":
        return sum(budgets[:index]), sum(budgets)
    if mode == "authors":
        return 0, max(budgets[index], budgets[-1])
    return 0, budgets[index]
