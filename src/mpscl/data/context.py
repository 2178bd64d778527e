"""Slices with their neighbours (``data.context``): the 2.5-D input of SIFA's data release,
where each slice enters the network with the slices either side as the other channels.

A 2-D network trained from scratch cannot tell the heart's base from its middle in one slice;
its neighbours say where in the volume it lies. Prepared cases keep every slice in volume
order (``prepare_dataset`` drops none), so neighbours are the adjacent prepared slices; at
the ends the end slice is repeated.
"""
from typing import Any, Mapping, Union

import numpy as np
import torch

Array = Union[np.ndarray, torch.Tensor]


def with_context(slices: Array, context: int) -> Array:
    """(S, N, N) slices of one volume -> (S, 2 * context + 1, N, N): channel ``context + d``
    of slice ``s`` is slice ``clip(s + d, 0, S - 1)`` for d in [-context, context]. Context 0
    gives (S, 1, N, N). numpy in, numpy out; torch in, torch out."""
    if slices.ndim != 3:
        raise ValueError(f"with_context: expected slices (S, N, N), got shape {tuple(slices.shape)}")
    idx = neighbour_index(slices.shape[0], context)
    if isinstance(slices, torch.Tensor):
        return slices[torch.from_numpy(idx)]
    return np.asarray(slices)[idx]


def neighbour_index(n: int, context: int) -> np.ndarray:
    """(n, 2 * context + 1) slice indices of each slice's stack in an n-slice volume (row s:
    ``clip(s + d, 0, n - 1)``), to gather stacks a batch at a time."""
    if context < 0:
        raise ValueError(f"with_context: context must be >= 0, got {context}")
    return np.clip(np.arange(n)[:, None] + np.arange(-context, context + 1)[None, :], 0, n - 1)


def context_of(checkpoint: Mapping[str, Any]) -> int:
    """The ``data.context`` a checkpoint's network was trained with (0 for configs that predate it)."""
    return int(((checkpoint.get("config") or {}).get("data") or {}).get("context", 0) or 0)
