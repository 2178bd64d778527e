"""Checkpoints: written atomically, read without unpickling arbitrary objects.

A checkpoint is a dict of tensors and plain Python values saved with ``torch.save`` and
read with ``torch.load(weights_only=True)``: a file that tries to run code when loaded is
refused. Writing goes to a temporary file in the same folder, is fsync'ed, then renamed
over the destination, so a crash leaves either the old file or the new one, never half.
"""
from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from .fileio import atomic_write, atomic_write_text  # noqa: F401  (re-exported)

FORMAT = "mpscl-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, unsafe or not one of ours."""


def save_checkpoint(path: str | Path, payload: Dict[str, Any]) -> None:
    payload = {"format": FORMAT, "version": VERSION, **payload}
    atomic_write(path, lambda f: torch.save(payload, f))


def _refusal(e: Exception) -> str:
    """The line of torch's weights-only refusal that says what was refused (not its advice
    to retry with ``weights_only=False``)."""
    text = str(e)
    m = re.search(r"(Trying to load unsupported GLOBAL[^\n]*|Unsupported (?:global|class|operand)[^\n]*)",
                  text)
    if m:
        return m.group(1).strip().rstrip(".")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else type(e).__name__


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> Dict[str, Any]:
    """Load one of our checkpoints safely; clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise here
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load: the file holds Python objects other than tensors and "
            f"plain values (an unsafe or foreign pickle); nothing in it was run ({_refusal(e)})"
        ) from e
    except Exception as e:  # truncated zip, not a torch file, ...
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated?): "
                              f"{type(e).__name__}: {e}") from e
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
    from .config import config_from_dict
    from .models import build_segmenter

    ckpt = load_checkpoint(path)
    if "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path}: checkpoint holds no model weights")
    classes, values = ckpt.get("classes"), ckpt.get("label_values")
    if (not isinstance(ckpt["model"], dict) or not isinstance(classes, list) or len(classes) < 2
            or not all(isinstance(c, str) for c in classes) or not isinstance(values, list)
            or len(values) != len(classes) or not all(isinstance(v, int) for v in values)):
        raise CheckpointError(f"{path}: not a model checkpoint: it needs 'model' (state dict), "
                              "'classes' (names) and 'label_values' (one integer per class)")
    cfg = config_from_dict(ckpt["config"], where=f"{path} (config)")
    # the trained weights are in the checkpoint: the ImageNet file it started from is not
    # read (and need not exist on the machine that evaluates); input_mode was stored resolved
    cfg.model.imagenet_init = None
    model = build_segmenter(cfg.model, num_classes=len(classes))
    mismatch = _state_mismatch(model.state_dict(), ckpt["model"])
    if mismatch:
        raise CheckpointError(f"{path}: weights do not fit the stored model config ({mismatch})")
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def _state_mismatch(expected: Dict[str, Any], got: Dict[str, Any]) -> str:
    """A short description of how ``got`` differs from ``expected`` ('' when it fits)."""
    def few(keys):
        keys = sorted(keys)
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
    missing, unexpected = set(expected) - set(got), set(got) - set(expected)
    shapes = [k for k in set(expected) & set(got) if not isinstance(got[k], torch.Tensor)
              or tuple(got[k].shape) != tuple(expected[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {few(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} of another shape: {few(shapes)}")
    return "; ".join(parts)


def latest_checkpoint(run_dir: str | Path, stage: Optional[str] = None) -> Optional[Path]:
    run_dir = Path(run_dir)
    name = f"{stage}_last.pt" if stage else "last.pt"
    p = run_dir / name
    return p if p.is_file() else None
