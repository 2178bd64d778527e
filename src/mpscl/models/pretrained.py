"""Loading user-supplied ImageNet weights into the backbone, strictly and safely.

Accepted layouts (after unwrapping a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper
and stripping a ``module.`` and/or ``Scale.`` prefix shared by every key):

- the caffe-converted DeepLab ResNet-101 (``Scale.conv1.weight``, ``Scale.layer1.0.conv1.weight``,
  ``Scale.bn1.running_mean``, ... plus its classifier ``Scale.layer5.*``, skipped);
- a torchvision-style ResNet (``conv1.weight``, ``layer1.0.conv1.weight``, ..., ``fc.*`` skipped).

Classifier keys (``fc.``, ``layer5.``, ``layer6.``) and ``num_batches_tracked`` counters are
skipped; every other backbone tensor must be present with the right shape, and nothing else
may be there. Anything else raises :class:`WeightsError` (a ``ValueError``) naming the file and
the missing, unexpected and mismatched keys. ``.pth``/``.pt`` files are read with
``torch.load(weights_only=True)``, so a pickle holding Python objects is refused without
being executed; ``.safetensors`` files are read with ``safetensors``.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Union

import torch
from torch import nn

HEAD_PREFIXES = ("fc.", "layer5.", "layer6.")  # ImageNet fc / DeepLab classifiers: not ours
STRIP_PREFIXES = ("module.", "Scale.")


class WeightsError(ValueError):
    """A weights file is unreadable, unsafe, or does not fit the backbone."""


@dataclass
class InitReport:
    """What :func:`load_imagenet_init` did: backbone keys loaded, file keys skipped."""

    path: str
    loaded: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.path}: loaded {len(self.loaded)} backbone tensors, skipped {len(self.skipped)} keys"


def read_state_dict(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """Read a flat ``{name: tensor}`` dict from ``.pth``/``.pt`` (weights only) or ``.safetensors``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise WeightsError(f"{path}: reading .safetensors needs the 'safetensors' package") from e
        try:
            obj = load_file(str(path), device="cpu")
        except Exception as e:
            raise WeightsError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from e
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise WeightsError(
                f"{path}: refused to load: the file holds Python objects other than tensors and "
                f"plain values (an unsafe or foreign pickle); it was not executed ({first})") from e
        except Exception as e:
            raise WeightsError(f"{path}: not a readable PyTorch weights file ({type(e).__name__}: {e})") from e
    return _flatten(obj, path)


def _flatten(obj, path: Path) -> Dict[str, torch.Tensor]:
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{path}: expected a state dict of tensors; non-tensor entries: {_few(map(str, bad))}")
    for prefix in STRIP_PREFIXES:
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def _few(keys, n: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _skippable(key: str) -> bool:
    return key.startswith(HEAD_PREFIXES) or key.endswith("num_batches_tracked")


def load_imagenet_init(model: nn.Module, path: Union[str, Path]) -> InitReport:
    """Load ImageNet weights from ``path`` into ``model``'s backbone (a Segmenter or a ResNet).

    Raises :class:`WeightsError` naming the file and every missing, unexpected or
    shape-mismatched key; the model is untouched unless every check passes.
    """
    backbone = getattr(model, "backbone", model)
    target = backbone.state_dict()
    source = read_state_dict(path)
    report = InitReport(str(path))
    mapped, unexpected, mismatched = {}, [], []
    for key, value in source.items():
        if _skippable(key):
            report.skipped.append(key)
        elif key not in target:
            unexpected.append(key)
        elif tuple(value.shape) != tuple(target[key].shape):
            mismatched.append(f"{key} {tuple(value.shape)} vs ours {tuple(target[key].shape)}")
        else:
            mapped[key] = value
    missing = [k for k in target if k not in mapped and not _skippable(k)
               and k not in {m.split(" ")[0] for m in mismatched}]
    if missing or unexpected or mismatched:
        desc = f"{getattr(backbone, 'depth', type(backbone).__name__)}, width {getattr(backbone, 'width', '?')}"
        parts = [f"{path}: these weights do not fit the backbone ({desc}); expected a torchvision-style "
                 f"ResNet or the caffe-converted DeepLab ResNet ('Scale.' prefix) state dict"]
        if missing:
            parts.append(f"missing {len(missing)}: {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {_few(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatch {len(mismatched)}: {_few(mismatched)}")
        raise WeightsError("; ".join(parts))
    backbone.load_state_dict(mapped, strict=False)
    report.loaded = sorted(mapped)
    return report
