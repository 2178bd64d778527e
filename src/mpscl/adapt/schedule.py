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

    ``restart`` (the MPSCL authors' code): each stage decays from the base rate over its own
    length. ``continue``: the stages share one decay over their summed budget, so every
    iteration has the LR a single-stage run of the same total budget would have (MPSCL then
    differs from AdvEnt only by what it adds). A single stage decays over its own length.
    """
    if mode not in ("restart", "continue"):
        raise ValueError(f"unknown schedule mode {mode!r} (restart or continue)")
    if mode == "continue":
        return sum(budgets[:index]), sum(budgets)
    return 0, budgets[index]
