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
    """Read a flat ``{name: tensor}`` dict from ``.pth``/``.pt`` (weights only) or ``.safetensors``,
    without a ``module.`` and/or ``Scale.`` prefix shared by every key."""
    return _strip_prefixes(read_stored_state_dict(path))


def read_stored_state_dict(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """:func:`read_state_dict` with the key prefixes as stored (wrappers removed)."""
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
    return obj


def _strip_prefixes(obj: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    for prefix in STRIP_PREFIXES:
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def weights_convention(path: Union[str, Path]) -> str:
    """The input convention the ImageNet weights in ``path`` were trained with.

    ``caffe`` for the caffe-converted DeepLab ResNet-101 (every key prefixed ``Scale.``, or
    its classifier ``layer5.`` present); ``torchvision`` for a torchvision ResNet (its
    ``fc.`` classifier or ``num_batches_tracked`` counters present). Raises
    :class:`WeightsError` when the file shows neither, asking for an explicit choice.
    """
    keys = list(read_stored_state_dict(path))
    if all(k.startswith("module.") for k in keys):
        keys = [k[len("module."):] for k in keys]
    if all(k.startswith("Scale.") for k in keys) or any(k.startswith("layer5.") for k in keys):
        return "caffe"
    if any(k.startswith("fc.") or k.endswith("num_batches_tracked") for k in keys):
        return "torchvision"
    raise WeightsError(
        f"{path}: cannot tell which input convention these weights expect (no 'Scale.' prefix or "
        f"'layer5.' classifier as in the DeepLab ResNet-101, no 'fc.' classifier or "
        f"'num_batches_tracked' as in torchvision's ResNet); set model.input_mode to caffe "
        f"(0-255, BGR, minus the Caffe mean) or torchvision (RGB mean/std)")


def resolve_input_mode(model_cfg) -> str:
    """``model_cfg.input_mode``, with ``auto`` replaced by the convention of the ImageNet
    weights in ``model_cfg.imagenet_init`` (``caffe`` without weights: the paper's)."""
    mode = model_cfg.input_mode
    if mode != "auto":
        return mode
    return weights_convention(model_cfg.imagenet_init) if model_cfg.imagenet_init else "caffe"


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


RANDOM_INIT_REFUSED = (
    "model.imagenet_init is not set, and this configuration trains from ImageNet weights "
    "(model.allow_random_init: false, as in the paper presets): the published numbers rest on "
    "them, and a ResNet-101 from random weights does not train like it. Pass "
    "--set model.imagenet_init=PATH with either the DeepLab ResNet-101 state dict converted "
    "from Caffe (every key prefixed 'Scale.', e.g. 'Scale.conv1.weight', "
    "'Scale.layer1.0.bn1.running_mean'; its classifier 'Scale.layer5.*' is skipped; fed "
    "Caffe-convention input) or a torchvision ResNet-101 state dict ('conv1.weight', "
    "'layer1.0.bn1.running_mean', 'fc.weight', ...; fed torchvision's RGB mean/std). "
    "To train from random weights knowingly: --set model.allow_random_init=true")


def settle_initialisation(model_cfg, fresh: bool = True):
    """A copy of ``model_cfg`` fit to train from: ``input_mode`` ``auto`` replaced by the
    convention of the weights (:func:`resolve_input_mode`), so it is stored as such.

    Raises :class:`WeightsError` with :data:`RANDOM_INIT_REFUSED` when ``fresh`` (the
    network starts from its initialisation, not from a checkpoint) and neither
    ``imagenet_init`` nor ``allow_random_init`` is set; and when the weights file is
    missing or its convention cannot be told.
    """
    import copy
    if fresh and not model_cfg.imagenet_init and not model_cfg.allow_random_init:
        raise WeightsError(RANDOM_INIT_REFUSED)
    if model_cfg.imagenet_init and not Path(model_cfg.imagenet_init).is_file():
        raise WeightsError(f"model.imagenet_init: {model_cfg.imagenet_init}: no such weights file")
    out = copy.deepcopy(model_cfg)
    out.input_mode = resolve_input_mode(model_cfg)
    return out
