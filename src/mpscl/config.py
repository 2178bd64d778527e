"""Typed configuration: presets, YAML files and ``KEY=VALUE`` overrides, validated.

A run's configuration is one :class:`Config` tree. It is built in layers:
dataclass defaults (the paper's MR->CT settings) <- preset YAML <- user YAML <- ``--set``.
Every layer goes through the same validation, so a typo in a key or an out-of-range
value is refused with the file it came from and the nearest valid key.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

METHODS = ("source-only", "advent", "mpscl", "oracle")
ABLATIONS = {
    # name -> overrides; the paper's ablations as switches
    "no-margin": {"mpscl.margin_src": 0.0, "mpscl.margin_trg": 0.0},
    "no-target-contrastive": {"mpscl.lambda_trg": 0.0},
    "no-source-contrastive": {"mpscl.lambda_src": 0.0},
    "no-selection": {"mpscl.threshold": 0.0},
    "no-adversarial": {"loss.adversarial": False},
    "authors-contrastive": {"mpscl.variant": "authors"},
}


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names where it came from."""


@dataclass
class ModelConfig:
    backbone: str = "resnet101"  # resnet101 (paper), resnet50, resnet34, resnet18
    width: int = 64  # channels of the stem; 64 is the standard ResNet
    multi_level: bool = True  # auxiliary head on layer3 (DeepLabv2 multi-level, AdvEnt)
    input_mode: str = "caffe"  # caffe: [-1,1]->[0,255], BGR, Caffe mean; plain: grey x3
    imagenet_init: Optional[str] = None  # user-supplied ImageNet weights (.pth/.safetensors)
    discriminator: str = "fc"  # fc (AdvEnt, MR->CT) or patchgan (CT->MR)
    disc_width: int = 64
    freeze_bn: bool = True  # DeepLab keeps BatchNorm statistics fixed


@dataclass
class DataConfig:
    size: int = 256  # in-plane size the network sees
    batch_size: int = 4  # per domain: 4 source + 4 target slices
    augment: bool = False  # random flips/rotations/intensity jitter of training slices
    num_workers: int = 0


@dataclass
class OptimConfig:
    lr: float = 2.5e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    power: float = 0.9  # poly decay
    head_lr_mult: float = 10.0  # classifier heads learn 10x faster
    lr_d: float = 1e-4
    betas_d: Tuple[float, float] = (0.9, 0.99)


@dataclass
class LossConfig:
    seg_main: float = 1.0
    seg_aux: float = 0.1
    adversarial: bool = True
    adv_main: float = 0.003
    adv_aux: float = 0.00002


@dataclass
class MPSCLConfig:
    margin_src: float = 0.4
    margin_trg: float = 0.2
    temp_src: float = 1.0
    temp_trg: float = 1.0
    base_temp: float = 1.0
    momentum: float = 0.2  # prototype EMA: c <- m c + (1 - m) batch_mean
    threshold: float = 0.25  # pseudo-label selection: top1 - top2 cosine > threshold
    lambda_src: float = 1.0
    lambda_trg: float = 0.1
    variant: str = "paper"  # paper formula, or "authors" to reproduce their code
    # LR decay of warm-up + MPSCL: "restart" (authors' code: each stage decays from optim.lr)
    # or "continue" (one decay over both stages, as a single-stage run of the same budget)
    schedule: str = "restart"


@dataclass
class AppearanceConfig:
    """Appearance handling of SOURCE training slices (docs/METHOD_NOTES.md); 0 = off."""
    fda: float = 0.0  # probability of Fourier domain adaptation to a random target slice
    fda_beta: float = 0.01  # half-width of the swapped low-frequency band, fraction of size
    curves: float = 0.0  # probability of a random Bezier intensity curve
    curves_monotone: bool = False  # monotone curves only (no folding of intensities)
    gin: float = 0.0  # probability of a random shallow convolutional network (GIN)
    gin_layers: int = 4


@dataclass
class TrainConfig:
    iters: int = 50000  # iterations of the main stage (every single-stage method, MPSCL stage)
    warmup_iters: int = 4000  # AdvEnt warm-up before MPSCL
    seed: int = 1234
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    amp: str = "auto"  # bfloat16 autocast: auto (where the hardware runs bf16 natively), bf16, off
    channels_last: bool = True
    checkpoint_every: int = 1000
    log_every: int = 10
    val_every: int = 0  # 0: no source validation during training
    val_fraction: float = 0.0  # share of source cases held out for source validation
    threads: int = 0  # torch CPU threads; 0 = torch default


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    mpscl: MPSCLConfig = field(default_factory=MPSCLConfig)
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> Dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --------------------------------------------------------------------------- choices and ranges
_CHOICES = {
    "model.backbone": ("resnet101", "resnet50", "resnet34", "resnet18"),
    "model.input_mode": ("caffe", "plain"),
    "model.discriminator": ("fc", "patchgan"),
    "mpscl.variant": ("paper", "authors"),
    "mpscl.schedule": ("restart", "continue"),
    "train.amp": ("auto", "bf16", "off"),
}
# key -> (low, high, low inclusive, high inclusive)
_RANGES = {
    "model.width": (8, 256, True, True),
    "model.disc_width": (4, 512, True, True),
    "data.size": (32, 2048, True, True),
    "data.batch_size": (1, 1024, True, True),
    "data.num_workers": (0, 64, True, True),
    "optim.lr": (0.0, 1.0, False, True),
    "optim.momentum": (0.0, 1.0, True, False),
    "optim.weight_decay": (0.0, 1.0, True, True),
    "optim.power": (0.0, 10.0, True, True),
    "optim.head_lr_mult": (0.0, 1000.0, False, True),
    "optim.lr_d": (0.0, 1.0, False, True),
    "loss.seg_main": (0.0, 1e3, True, True),
    "loss.seg_aux": (0.0, 1e3, True, True),
    "loss.adv_main": (0.0, 1e3, True, True),
    "loss.adv_aux": (0.0, 1e3, True, True),
    "mpscl.margin_src": (0.0, math.pi, True, False),
    "mpscl.margin_trg": (0.0, math.pi, True, False),
    "mpscl.temp_src": (0.0, 1e3, False, True),
    "mpscl.temp_trg": (0.0, 1e3, False, True),
    "mpscl.base_temp": (0.0, 1e3, False, True),
    "mpscl.momentum": (0.0, 1.0, True, True),
    "mpscl.threshold": (0.0, 2.0, True, True),
    "mpscl.lambda_src": (0.0, 1e3, True, True),
    "mpscl.lambda_trg": (0.0, 1e3, True, True),
    "appearance.fda": (0.0, 1.0, True, True),
    "appearance.fda_beta": (0.0, 0.5, True, False),
    "appearance.curves": (0.0, 1.0, True, True),
    "appearance.gin": (0.0, 1.0, True, True),
    "appearance.gin_layers": (1, 16, True, True),
    "train.iters": (0, 10**8, True, True),
    "train.warmup_iters": (0, 10**8, True, True),
    "train.seed": (0, 2**32 - 1, True, True),
    "train.checkpoint_every": (0, 10**8, True, True),
    "train.log_every": (1, 10**8, True, True),
    "train.val_every": (0, 10**8, True, True),
    "train.val_fraction": (0.0, 0.9, True, True),
    "train.threads": (0, 1024, True, True),
}


# YAML reads on/off/yes/no as booleans; for these string keys they mean a mode
_BOOL_ALIASES = {"train.amp": {False: "off", True: "bf16"}}


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _coerce(key: str, value: Any, default: Any, ftype: Any, where: str) -> Any:
    """Check ``value`` against the declared type of ``key``; return it in that type."""
    tname = ftype if isinstance(ftype, str) else getattr(ftype, "__name__", str(ftype))
    bad = ConfigError(f"{where}: {key} must be {tname.replace('typing.', '')}, got {value!r}")
    if "Optional" in tname and value is None:
        return None
    if isinstance(value, bool) and key in _BOOL_ALIASES:
        return _BOOL_ALIASES[key][value]
    if "Tuple" in tname:
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            raise bad
        return tuple(float(v) for v in value)
    if tname.startswith("bool") or isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad
        return value
    if tname.startswith("int") or (isinstance(default, int) and not isinstance(default, bool)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise bad
        return int(value)
    if tname.startswith("float") or isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if not math.isfinite(value):
            raise bad
        return float(value)
    if "str" in tname:
        if not isinstance(value, str):
            raise bad
        return value
    return value


def _check(key: str, value: Any, where: str) -> None:
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(f"{where}: {key} must be one of {', '.join(_CHOICES[key])}, got {value!r}")
    if key in _RANGES and value is not None:
        lo, hi, lo_in, hi_in = _RANGES[key]
        ok = (value >= lo if lo_in else value > lo) and (value <= hi if hi_in else value < hi)
        if not ok:
            lb, rb = ("[" if lo_in else "("), ("]" if hi_in else ")")
            raise ConfigError(f"{where}: {key} = {value!r} is out of range {lb}{lo:g}, {hi:g}{rb}")


def valid_keys() -> List[str]:
    keys = []
    for sect in dataclasses.fields(Config):
        for f in dataclasses.fields(sect.default_factory()):
            keys.append(f"{sect.name}.{f.name}")
    return keys


def _unknown(key: str, where: str) -> ConfigError:
    near = difflib.get_close_matches(key, valid_keys(), n=1, cutoff=0.5)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return ConfigError(f"{where}: unknown config key {key!r}{hint}")


def set_value(cfg: Config, key: str, value: Any, where: str = "--set") -> None:
    """Set dotted ``key`` (e.g. ``mpscl.margin_src``) on ``cfg`` after validating it."""
    parts = key.split(".")
    if len(parts) != 2 or not hasattr(cfg, parts[0]) or parts[0].startswith("_"):
        raise _unknown(key, where)
    section = getattr(cfg, parts[0])
    fields = {f.name: f for f in dataclasses.fields(section)}
    if parts[1] not in fields:
        raise _unknown(key, where)
    f = fields[parts[1]]
    value = _coerce(key, value, getattr(section, parts[1]), f.type, where)
    _check(key, value, where)
    setattr(section, parts[1], value)


def apply_mapping(cfg: Config, mapping: Any, where: str) -> None:
    """Apply a nested mapping ``{section: {key: value}}`` (a preset or YAML file)."""
    if mapping is None:
        return
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: expected a mapping of sections, got {type(mapping).__name__}")
    for sect, values in mapping.items():
        if not isinstance(values, dict):
            raise _unknown(str(sect), where) if not hasattr(cfg, str(sect)) else ConfigError(
                f"{where}: section {sect!r} must be a mapping of keys")
        for k, v in values.items():
            set_value(cfg, f"{sect}.{k}", v, where)


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror or e})") from e
    try:
        return yaml.safe_load(text)  # safe loader: no object construction from user files
    except yaml.constructor.ConstructorError as e:
        line = f" (line {e.problem_mark.line + 1})" if e.problem_mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML for a config{line}: {e.problem}; a config "
                          "holds plain values only (numbers, strings, booleans, lists): Python "
                          "object tags are refused and nothing was constructed") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e


def preset_names() -> List[str]:
    return sorted(p.name[:-5] for p in resources.files("mpscl.presets").iterdir()
                  if p.name.endswith(".yaml"))


def load_preset(name: str) -> Config:
    cfg = Config()
    if name not in preset_names():
        near = difflib.get_close_matches(name, preset_names(), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"unknown preset {name!r} (available: {', '.join(preset_names())}){hint}")
    res = resources.files("mpscl.presets") / f"{name}.yaml"
    apply_mapping(cfg, yaml.safe_load(res.read_text()), f"preset {name}")
    return cfg


def parse_set(item: str) -> Tuple[str, Any]:
    """Parse ``KEY=VALUE``; VALUE is read as YAML (numbers, booleans, lists, null)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def build_config(preset: str = "paper-mr2ct", files: Optional[List[Any]] = None,
                 sets: Optional[List[str]] = None, ablations: Optional[List[str]] = None) -> Config:
    """Preset <- YAML files (or ``{section: {key: value}}`` mappings) <- ablation switches
    <- ``KEY=VALUE`` overrides."""
    cfg = load_preset(preset)
    for f in files or []:
        if isinstance(f, dict):
            apply_mapping(cfg, f, "settings")
        else:
            apply_mapping(cfg, load_yaml(f), str(f))
    for a in ablations or []:
        if a not in ABLATIONS:
            raise ConfigError(f"unknown ablation {a!r} (available: {', '.join(ABLATIONS)})")
        for k, v in ABLATIONS[a].items():
            set_value(cfg, k, v, f"ablation {a}")
    for item in sets or []:
        k, v = parse_set(item)
        set_value(cfg, k, v)
    return cfg


def config_from_dict(d: Dict[str, Any], where: str = "checkpoint") -> Config:
    cfg = Config()
    apply_mapping(cfg, d, where)
    return cfg


def diff_configs(a: Dict[str, Any], b: Dict[str, Any], prefix: str = "") -> List[str]:
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_configs(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out
