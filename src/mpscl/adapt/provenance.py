"""Which warm-up a run folder's ``prototypes.pt`` was computed from, and whether it still fits;
and the arithmetic (bf16 or float32) its stages trained in.

The initial prototypes are a function of the warm-up model (METHOD.md, Losses item 3). A
run folder keeps them in ``RUN/prototypes.pt`` so a resumed run does not recompute them;
a different warm-up (another ``--init``, or a warm-up trained again) must not silently
reuse them. The file therefore records the warm-up's path, iteration and a fingerprint of
its segmenter weights, and :func:`prototypes_fit` compares them with the warm-up now in use.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Dict, Sequence

import torch

from ..checkpoint import load_checkpoint
from .trainer import TrainingError


class StalePrototypes(TrainingError):
    """``prototypes.pt`` came from another warm-up and the MPSCL stage already used it."""


def weights_fingerprint(state: Dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a state dict's tensors (hex).

    Equal for equal weights however the checkpoint was saved or loaded; any changed value
    changes it."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def warmup_record(warm_path: Path, warm_ckpt: Dict[str, Any]) -> Dict[str, Any]:
    """The provenance entries stored in ``prototypes.pt`` next to the prototypes."""
    return {"from": str(warm_path), "warmup_iteration": warm_ckpt.get("iteration"),
            "warmup_fingerprint": weights_fingerprint(warm_ckpt["model"])}


def prototypes_fit(proto_path: Path, warm_path: Path, warm_ckpt: Dict[str, Any],
                   log: Callable[[str], None] = print) -> bool:
    """Whether ``proto_path`` holds prototypes of the warm-up ``warm_ckpt`` (at ``warm_path``).

    A file without a fingerprint (written before it was recorded) fits when it names the
    same warm-up path. When it does not fit and no MPSCL stage checkpoint exists next to it,
    it is logged and ``False`` is returned (the caller recomputes); when an MPSCL stage of
    the run already started from it, :class:`StalePrototypes` is raised, naming what to do.
    """
    if not proto_path.is_file():
        return False
    saved = load_checkpoint(proto_path)
    if "warmup_fingerprint" in saved:
        fits = saved["warmup_fingerprint"] == weights_fingerprint(warm_ckpt["model"])
    else:
        fits = saved.get("from") == str(warm_path)
    if fits:
        return True
    was = f"{saved.get('from')} (iteration {saved.get('warmup_iteration', '?')})"
    now = f"{warm_path} (iteration {warm_ckpt.get('iteration', '?')})"
    stage_dir = proto_path.parent / "mpscl"
    started = [p for p in (stage_dir / "last.pt", stage_dir / "final.pt") if p.is_file()]
    if started:
        raise StalePrototypes(
            f"{proto_path}: made from the warm-up {was}, not from the one in use now, {now}; "
            f"the MPSCL stage in {stage_dir} already trained from it. Use a new --out for this "
            f"warm-up (or remove {stage_dir} and {proto_path} to redo the MPSCL stage)")
    log(f"[prototypes] {proto_path} was made from the warm-up {was}, not {now}: recomputing")
    return False


def trained_amp(stage_finals: Sequence[Path], fallback: str) -> str:
    """The arithmetic the stages whose ``final.pt`` are given trained in, from the ``amp`` their
    checkpoints record: "bf16", "off" or "mixed" when they all agree, else per stage
    (e.g. "warmup off, mpscl bf16"). ``fallback`` stands for a checkpoint written before it
    was recorded."""
    per = []
    for path in stage_finals:
        ck = load_checkpoint(path, map_location="cpu")
        per.append((ck.get("stage") or Path(path).parent.name, ck.get("amp") or fallback))
    kinds = {a for _, a in per}
    if len(kinds) <= 1:
        return kinds.pop() if kinds else fallback
    return ", ".join(f"{stage} {a}" for stage, a in per)
