"""Losses, prototypes and metrics are computed in float32 (float64 for float64 inputs),
also inside a bf16/fp16 autocast region: matmuls would otherwise be cast back down."""
from __future__ import annotations

import contextlib

import torch


def full_precision(device: torch.device):
    """A context that switches autocast off on ``device`` (no-op where autocast is unknown)."""
    available = getattr(torch.amp, "is_autocast_available", None)
    if available is not None and not available(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (bf16/fp16 are promoted)."""
    dtype = torch.float32
    for t in tensors:
        if t.is_floating_point():
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype
