"""Whole-volume inference with a 2D segmenter: every slice, batched, back in the input grid.

The authors' evaluation ran ``floor(D / 32)`` batches of 32 slices, so the last ``D mod 32``
slices of every volume were never predicted and scored as background. Here the last batch is
simply smaller: every slice is predicted.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..data.context import stacks_of
from ..runtime import Device, resolve_device  # noqa: F401  (re-exported)


def _autocast(device: torch.device, amp: bool):
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _resize(x: torch.Tensor, size: Sequence[int], antialias: bool = False) -> torch.Tensor:
    """Bilinear resize of (B, C, H, W) to ``size`` (pixel centres aligned, align_corners=False)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(int(v) for v in size), mode="bilinear", align_corners=False,
                         antialias=antialias)


FLIPS = ((), (-1,), (-2,), (-2, -1))  # the test-time views: none, left-right, up-down, both


def averaged_softmax(model: torch.nn.Module, x: torch.Tensor, dev: torch.device, amp: bool,
                     views: Sequence[Sequence[int]] = FLIPS) -> torch.Tensor:
    """The model's softmax (float32) for batch ``x``, averaged over the flipped ``views`` (each
    flipped back). ``amp`` False leaves any enclosing autocast in force."""
    total = None
    for dims in views:
        with _autocast(dev, amp):
            out = model(x.flip(dims) if dims else x)
        logits = (out[-1] if isinstance(out, (tuple, list)) else out).float()
        p = torch.softmax(logits, dim=1)
        p = p.flip(dims) if dims else p
        total = p if total is None else total + p
    return total / len(views)


def predict_volume(
    model: torch.nn.Module,
    image_slices: Union[np.ndarray, torch.Tensor],
    batch_size: int = 16,
    device: Device = "auto",
    amp: bool = False,
    out_shape: Optional[Sequence[int]] = None,
    axis: Optional[int] = None,
    input_size: Optional[int] = None,
    return_probs: bool = False,
    tta: bool = False,
    context: int = 0,
    context_step: float = 1.0,
) -> np.ndarray:
    """Predict every slice of one volume.

    Args:
        model: segmenter whose ``forward(x (B,1,H,W))`` returns ``(features, aux, main_logits)``
            (a bare logits tensor is accepted too); run in eval mode under inference mode, its
            training flag is restored afterwards.
        image_slices: (S, N, N) float32 slices in [-1, 1] (the prepared ``image``), or with
            ``context`` their stacks (S, 2 * context + 1, N, N) as given
            (``mpscl.data.context.case_stacks``; ``context_step`` then unused).
        batch_size: slices per forward pass; the last batch holds the remainder.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...; the model is moved there.
        amp: bfloat16 autocast for the forward pass.
        out_shape: None: return (S, N, N) (or the model's output size). Two ints ``(h, w)``:
            probabilities are resized bilinearly to ``h x w`` per slice before the argmax and
            (S, h, w) is returned. Three ints (the original array shape): the in-plane size is
            ``out_shape`` without ``axis``, and the slice axis is moved back to ``axis``, so the
            result has exactly ``out_shape``.
        axis: slice axis of the original array (required with a 3-D ``out_shape``).
        input_size: resize slices to ``input_size`` x ``input_size`` before the model when they
            have another size (the model's training ``data.size``); bilinear with antialiasing,
            as ``mpscl.data.resize_slices`` does at prepare time.
        return_probs: return float32 softmax probabilities (S, K, h, w) (slice-first, never
            axis-moved) instead of class ids.
        tta: test-time flips: the softmax is averaged over the slice and its left-right,
            up-down and double flips (each flipped back). Training flips slices the same ways
            (``data.augment``), so every view is one the network has seen. Four forward passes.
        context: the ``data.context`` the model was trained with (``context_of(checkpoint)``):
            each slice goes in with that many neighbours either side as further channels.
        context_step: how far apart those neighbours lie, in slices of this volume
            (``slice_step(context_mm_of(checkpoint), its slice spacing)``; 1: adjacent).

    Returns:
        uint8 class ids (int64 if more than 256 classes) or probabilities, as described above.
    """
    x_all = torch.as_tensor(np.asarray(image_slices, dtype=np.float32))
    stacked = x_all.ndim == 4 and context > 0 and x_all.shape[1] == 2 * context + 1
    if x_all.ndim == 4 and x_all.shape[1] == 1:
        x_all = x_all[:, 0]
    if x_all.ndim != 3 and not stacked:
        raise ValueError(f"predict_volume: expected slices (S, N, N) (or their stacks (S, "
                         f"{2 * context + 1}, N, N) with context {context}), got shape {tuple(x_all.shape)}")
    if batch_size < 1:
        raise ValueError("predict_volume: batch_size must be >= 1")
    n_slices = x_all.shape[0]
    plane: Optional[Sequence[int]] = None
    if out_shape is not None:
        out_shape = tuple(int(v) for v in out_shape)
        if len(out_shape) == 3:
            if axis is None:
                raise ValueError("predict_volume: a 3-D out_shape needs the slice axis")
            axis = axis % 3
            if out_shape[axis] != n_slices:
                raise ValueError(
                    f"predict_volume: {n_slices} slices but out_shape {out_shape} has "
                    f"{out_shape[axis]} along axis {axis}")
            plane = tuple(v for d, v in enumerate(out_shape) if d != axis)
        elif len(out_shape) == 2:
            plane = out_shape
        else:
            raise ValueError(f"predict_volume: out_shape must have 2 or 3 entries, got {out_shape}")

    dev = resolve_device(device)
    was_training = model.training
    model.to(dev).eval()
    chunks = []
    try:
        with torch.inference_mode():
            for start in range(0, n_slices, batch_size):
                rows = np.arange(start, min(start + batch_size, n_slices))  # stacks gathered a batch at a time
                x = (x_all[torch.from_numpy(rows)] if stacked  # (B, 2 * context + 1, N, N)
                     else stacks_of(x_all, rows, context, context_step)).to(dev)
                in_size = tuple(x.shape[-2:])
                if input_size is not None:
                    x = _resize(x, (input_size, input_size), antialias=True)
                probs = averaged_softmax(model, x, dev, amp, FLIPS if tta else ((),))
                target = plane if plane is not None else in_size
                probs = _resize(probs, target)
                if return_probs:
                    chunks.append(probs.cpu())
                else:
                    ids = probs.argmax(dim=1)
                    ids = ids.to(torch.uint8) if probs.shape[1] <= 256 else ids
                    chunks.append(ids.cpu())
    finally:
        model.train(was_training)
    result = torch.cat(chunks).numpy()
    assert result.shape[0] == n_slices  # every slice predicted
    if not return_probs and out_shape is not None and len(out_shape) == 3:
        result = np.ascontiguousarray(np.moveaxis(result, 0, axis))
        assert result.shape == out_shape
    return result
