"""Checkpoints: written atomically, read without unpickling arbitrary objects.

A checkpoint is a dict of tensors and plain Python values saved with ``torch.save`` and
read with ``torch.load(weights_only=True)``: a file that tries to run code when loaded is
refused. Writing goes to a temporary file in the same folder, is fsync'ed, then renamed
over the destination, so a crash leaves either the old file or the new one, never half.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from ..fileio import atomic_write, atomic_write_text  # noqa: F401  (re-exported)

FORMAT = "mpscl-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, unsafe or not one of ours."""


def save_checkpoint(path: str | Path, payload: Dict[str, Any]) -> None:
    payload = {"format": FORMAT, "version": VERSION, **payload}
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> Dict[str, Any]:
    """Load one of our checkpoints safely; clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load: the file holds Python objects other than tensors and "
            f"plain values (an unsafe or foreign pickle); it was not executed ({str(e).splitlines()[0]})"
        ) from e
    except Exception as e:  # truncated zip, not a torch file, ...
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mpscl checkpoint (no '{FORMAT}' header)")
    if obj.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {obj['version']} is newer than this mpscl")
    return obj


def load_model(path: str | Path, device: Any = "cpu") -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """Build the segmenter stored in ``path`` (``final.pt`` or any stage checkpoint).

    Returns ``(model in eval mode on device, checkpoint dict)``; the dict holds ``config``
    (plain dict), ``classes`` (names, background first) and ``label_values`` (raw values).
    """
    from ..config import config_from_dict
    from ..models import build_segmenter

    ckpt = load_checkpoint(path)
    if "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path}: checkpoint holds no model weights")
    cfg = config_from_dict(ckpt["config"], where=f"{path} (config)")
    model = build_segmenter(cfg.model, num_classes=len(ckpt["classes"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the stored model config ({e})") from e
    return model.to(device).eval(), ckpt


def latest_checkpoint(run_dir: str | Path, stage: Optional[str] = None) -> Optional[Path]:
    run_dir = Path(run_dir)
    name = f"{stage}_last.pt" if stage else "last.pt"
    p = run_dir / name
    return p if p.is_file() else None
