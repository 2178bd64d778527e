"""Slices with their neighbours (``data.context``): the 2.5-D input of SIFA's data release,
where each slice enters the network with the slices either side as the other channels.

A 2-D network trained from scratch cannot tell the heart's base from its middle in one slice;
its neighbours say where in the volume it lies. Prepared cases keep every slice in volume
order (``prepare_dataset`` drops none), so neighbours are the adjacent prepared slices; at
the ends the end slice is repeated.

``data.context_spacing: coarser`` takes the neighbours at one physical distance instead: the
coarser domain's median slice spacing, in mm. Adjacent slices are 8 mm apart in MS-CMRSeg's
bSSFP and 5 mm in its LGE, so "the next slice" shows different anatomy in the two domains,
a domain shift of its own; at a common distance a volume whose slices lie closer reads its
neighbours by linear interpolation between the two slices either side (``step`` below: the
distance in slices, e.g. 8 / 5 = 1.6).
"""
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import torch

Array = Union[np.ndarray, torch.Tensor]


def with_context(slices: Array, context: int, step: float = 1.0) -> Array:
    """(S, N, N) slices of one volume -> (S, 2 * context + 1, N, N): channel ``context + d``
    of slice ``s`` is the volume at slice position ``clip(s + d * step, 0, S - 1)`` for d in
    [-context, context], linearly interpolated between slices where that is not a whole
    number (step 1: exactly the adjacent slices). Context 0 gives (S, 1, N, N). numpy in,
    numpy out; torch in, torch out."""
    if slices.ndim != 3:
        raise ValueError(f"with_context: expected slices (S, N, N), got shape {tuple(slices.shape)}")
    return stacks_of(slices, np.arange(slices.shape[0]), context, step)


def case_stacks(case: Mapping[str, Any], context: int, context_mm: Optional[float] = None) -> np.ndarray:
    """The network inputs (S, 2 * context + 1, N, N) of a loaded prepared case
    (``PreparedDataset.case``): with context 1 and neighbours stored with the case (the SIFA
    release's three-slice records, whose files hold one slice each), those; else
    :func:`with_context` at the case's step for ``context_mm`` (:func:`case_step`)."""
    nb = case.get("neighbours")
    if context == 1 and nb is not None:
        return np.ascontiguousarray(np.stack([nb[:, 0], case["image"], nb[:, 1]], axis=1))
    return with_context(case["image"], context, case_step(context_mm, case["meta"]) if context else 1.0)


def drop_context(stack: torch.Tensor, p: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``data.context_dropout``: with probability ``p`` (one draw from ``generator``) the stack
    (2k + 1, N, N) with every channel the middle slice, which is what the slice alone looks
    like to the network; else the stack unchanged. Always draws once, so the stream does not
    depend on the outcome."""
    drop = float(torch.rand((), generator=generator)) < p
    if not drop or stack.shape[0] == 1:
        return stack
    return stack[stack.shape[0] // 2].expand_as(stack).clone()


def stacks_of(slices: Array, rows: Sequence[int], context: int, step: float = 1.0) -> Array:
    """The stacks (len(rows), 2 * context + 1, N, N) of the slices ``rows`` of one volume
    (:func:`with_context` for some slices only, e.g. one batch at a time)."""
    lo, hi, w = neighbour_weights(slices.shape[0], context, step)
    lo, hi, w = lo[rows], hi[rows], w[rows]
    torch_in = isinstance(slices, torch.Tensor)
    if not torch_in:
        slices = np.asarray(slices)
    take = (lambda i: slices[torch.from_numpy(i)]) if torch_in else (lambda i: slices[i])
    out = take(lo)
    if np.any(w > 0):  # a fractional distance: mix in the slice beyond
        wt = w[:, :, None, None].astype(np.float32)
        wt = torch.from_numpy(wt).to(slices.dtype) if torch_in else wt.astype(slices.dtype)
        out = out * (1 - wt) + take(hi) * wt
    return out


def neighbour_weights(n: int, context: int, step: float = 1.0):
    """Where each slice's stack reads an n-slice volume: ``(lo, hi, w)``, each (n, 2 * context + 1);
    channel d of slice s is ``(1 - w) * slice[lo] + w * slice[hi]`` at position
    ``clip(s + (d - context) * step, 0, n - 1)``. Step 1 gives w = 0 and lo = hi = the adjacent
    slice indices, so nothing is interpolated."""
    if context < 0:
        raise ValueError(f"with_context: context must be >= 0, got {context}")
    if not (step > 0 and np.isfinite(step)):
        raise ValueError(f"with_context: step must be a positive number of slices, got {step}")
    pos = np.arange(n)[:, None] + np.arange(-context, context + 1)[None, :] * float(step)
    pos = np.clip(pos, 0, n - 1)
    lo = np.floor(pos).astype(np.int64)
    w = pos - lo
    return lo, np.minimum(lo + 1, n - 1), w


def slice_step(context_mm: Optional[float], slice_spacing: Optional[float]) -> float:
    """The neighbour distance in slices of a volume whose slices are ``slice_spacing`` mm
    apart: ``context_mm / slice_spacing``; 1 (adjacent slices) where either is unknown."""
    if not context_mm or not slice_spacing or not np.isfinite(slice_spacing) or slice_spacing <= 0:
        return 1.0
    return float(context_mm) / float(slice_spacing)


def case_step(context_mm: Optional[float], meta: Mapping[str, Any]) -> float:
    """:func:`slice_step` of a prepared case (its ``meta``): how many of its slices apart the
    neighbours lie."""
    return slice_step(context_mm, case_slice_spacing(meta))


def case_slice_spacing(meta: Mapping[str, Any]) -> Optional[float]:
    """The spacing (mm) along a prepared case's slice axis, None where the case has none (or
    only the SIFA release's placeholder)."""
    if meta.get("spacing_unknown"):
        return None
    sp = meta.get("spacing")
    return float(sp[int(meta["axis"])]) if sp is not None and "axis" in meta else None


def coarser_spacing(datasets: Iterable[Any]) -> Optional[float]:
    """``data.context_spacing: coarser``: the largest of the datasets' median slice spacings
    (mm), None where no case records one."""
    medians = []
    for ds in datasets:
        gaps = [case_slice_spacing(ds.meta(c)) for c in ds.case_ids]
        gaps = [g for g in gaps if g]
        if gaps:
            medians.append(float(np.median(gaps)))
    return round(max(medians), 6) if medians else None


def context_of(checkpoint: Mapping[str, Any]) -> int:
    """The ``data.context`` a checkpoint's network was trained with (0 for configs that predate it)."""
    return int(((checkpoint.get("config") or {}).get("data") or {}).get("context", 0) or 0)


def context_mm_of(checkpoint: Mapping[str, Any]) -> Optional[float]:
    """The neighbour distance (mm) a checkpoint's network was trained with; None: adjacent slices."""
    mm = checkpoint.get("context_mm")
    return float(mm) if mm else None
