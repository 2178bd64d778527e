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
import re
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import yaml

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


def setting(default: Any, within: Optional[str] = None, choices: Tuple = (),
            yaml_bools: Optional[Dict[bool, str]] = None) -> Any:
    """A config field with its constraint beside it: ``within`` an interval such as
    ``"[0, 1)"`` (``pi`` allowed), or one of ``choices``. ``yaml_bools``: YAML reads on/off
    as booleans; for a string mode they mean these values."""
    meta = {"choices": tuple(choices), "yaml_bools": yaml_bools}
    if within is not None:
        m = re.fullmatch(r"([\[(])\s*([^,]+),\s*([^\])]+)([\])])", within)
        num = lambda t: math.pi if t.strip() == "pi" else float(t)  # noqa: E731
        meta["within"] = (num(m.group(2)), num(m.group(3)), m.group(1) == "[", m.group(4) == "]")
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    # resnet101 (paper), resnet50, resnet34, resnet18
    backbone: str = setting("resnet101", choices=("resnet101", "resnet50", "resnet34", "resnet18"))
    width: int = setting(64, "[8, 256]")  # channels of the stem; 64 is the standard ResNet
    multi_level: bool = True  # auxiliary head on layer3 (DeepLabv2 multi-level, AdvEnt)
    # auto: the convention of the imagenet_init weights (caffe without weights);
    # caffe: [-1,1]->[0,255], BGR, Caffe mean (DeepLab weights); torchvision: [-1,1]->[0,1],
    # RGB, torchvision's mean/std (torchvision weights); plain: grey x3
    input_mode: str = setting("auto", choices=("auto", "caffe", "torchvision", "plain"))
    imagenet_init: Optional[str] = None  # user-supplied ImageNet weights (.pth/.safetensors)
    # false: refuse to train a network without imagenet_init (the paper presets); true: a
    # network without it knowingly starts from random weights (the default of configs that
    # predate this key, and the CPU preset's)
    allow_random_init: bool = True
    # fc (AdvEnt, MR->CT) or patchgan (CT->MR)
    discriminator: str = setting("fc", choices=("fc", "patchgan"))
    disc_width: int = setting(64, "[4, 512]")
    # BatchNorm of the backbone (models/batchnorm.py). live: the authors' code (ADVENT's
    # DeepLabv2): affine frozen, training forwards normalise with the batch's statistics
    # (source and target batches each with their own) and update the running ones;
    # frozen: stored statistics, nothing learns; trainable: plain BatchNorm (CPU preset).
    # Evaluation always uses the running statistics. Under torchrun (live, trainable) each
    # domain is normalised with its global batch's statistics over the ranks. Old configs'
    # freeze_bn: true/false is read as frozen/trainable.
    batchnorm: str = setting("live", choices=("live", "frozen", "trainable"))
    # beyond the paper, 0 = off: a light decoder from layer1 (stride 4) added to the main
    # head's logits, for thin structures (models/deeplabv2.py:Decoder); its channels
    decoder: int = setting(0, "[0, 1024]")


@dataclass
class DataConfig:
    size: int = setting(256, "[32, 2048]")  # in-plane size the network sees
    batch_size: int = setting(4, "[1, 1024]")  # per domain: 4 source + 4 target slices
    augment: bool = False  # random flips/rotations/intensity jitter of training slices
    # beyond the paper: 1 = each slice enters the network with its two neighbours in the volume
    # as the three input channels (2.5-D, SIFA's input layout; edges repeat the end slice);
    # 0 = the slice alone, repeated to three channels
    context: int = setting(0, "[0, 1]")
    # where the neighbours lie: slices (the adjacent slices), or coarser (one physical distance,
    # the coarser domain's median slice spacing; volumes with closer slices interpolate; the
    # distance in mm is recorded in the checkpoint; data/context.py)
    context_spacing: str = setting("slices", choices=("slices", "coarser"))
    # the probability that a training stack's neighbour channels are replaced by the slice
    # itself (both domains; scoring always reads the neighbours), so the network also learns
    # to segment a slice alone and leans less on how one domain's neighbours look
    context_dropout: float = setting(0.0, "[0, 1]")
    num_workers: int = setting(0, "[0, 64]")


@dataclass
class OptimConfig:
    lr: float = setting(2.5e-4, "(0, 1]")
    momentum: float = setting(0.9, "[0, 1)")
    weight_decay: float = setting(5e-4, "[0, 1]")
    power: float = setting(0.9, "[0, 10]")  # poly decay
    head_lr_mult: float = setting(10.0, "(0, 1000]")  # classifier heads learn 10x faster
    lr_d: float = setting(1e-4, "(0, 1]")
    betas_d: Tuple[float, float] = setting((0.9, 0.99))


@dataclass
class LossConfig:
    seg_main: float = setting(1.0, "[0, 1000]")
    seg_aux: float = setting(0.1, "[0, 1000]")
    adversarial: bool = True
    adv_main: float = setting(0.003, "[0, 1000]")
    adv_aux: float = setting(0.00002, "[0, 1000]")
    # beyond the paper: scale both adversarial weights by the discriminator's advantage over
    # chance, 1 - 2 * its recent error rate (adapt/adversarial_gate.py)
    adv_gate: bool = False
    # beyond the paper, 0 = off: this weight times a penalty on the running class shares of the
    # target predictions (mean softmax) outside [1/band, band] times the source labels' shares,
    # in every stage that sees unlabelled target slices (losses/size_prior.py); mpscl.size_prior
    # sets the MPSCL stage's own weight
    size_prior: float = setting(0.0, "[0, 1000]")
    size_prior_band: float = setting(1.5, "[1, 100]")


@dataclass
class MPSCLConfig:
    margin_src: float = setting(0.4, "[0, pi)")
    margin_trg: float = setting(0.2, "[0, pi)")
    temp_src: float = setting(1.0, "(0, 1000]")
    temp_trg: float = setting(1.0, "(0, 1000]")
    base_temp: float = setting(1.0, "(0, 1000]")
    momentum: float = setting(0.2, "[0, 1]")  # prototype EMA: c <- m c + (1 - m) batch_mean
    # pseudo-label selection: top1 - top2 cosine > threshold
    threshold: float = setting(0.25, "[0, 2]")
    lambda_src: float = setting(1.0, "[0, 1000]")
    lambda_trg: float = setting(0.1, "[0, 1000]")
    # paper formula, or "authors" to reproduce their code
    variant: str = setting("paper", choices=("paper", "authors"))
    # LR decay of warm-up + MPSCL (adapt/schedule.py): "authors" (their code: the warm-up
    # decays over train.iters and is stopped at warmup_iters, factor ~0.93 at 4,000 of
    # 50,000; the MPSCL stage restarts from optim.lr over train.iters), "restart" (each stage
    # decays from optim.lr over its own length) or "continue" (one decay over both stages,
    # as a single-stage run of the same budget)
    schedule: str = setting("authors", choices=("authors", "restart", "continue"))
    # Beyond the paper (issue 14), 0 = off: a class-weighted CE on target pixels whose
    # segmenter prediction is confident (softmax >= self_training_threshold) and, with
    # self_training_agree, equals the prototype pseudo-label; computed on the target slice
    # itself ("clean") or on a random-network view of it ("randomised", labels from the clean one)
    self_training: float = setting(0.0, "[0, 1000]")
    self_training_threshold: float = setting(0.9, "[0, 1]")
    self_training_agree: bool = True
    self_training_view: str = setting("clean", choices=("clean", "randomised"))
    # pseudo-labels from a mean teacher (EMA of the segmenter's weights with this momentum,
    # starting from the warm-up) instead of the segmenter itself; 0 = the segmenter, 1 = the
    # warm-up segmenter kept fixed (labels cannot follow the student's drift)
    self_training_teacher: float = setting(0.0, "[0, 1]")
    # class-balanced selection (CBST, Zou et al. ECCV 2018): every class keeps at least this
    # fraction of its most confident predicted pixels in the batch, whatever the threshold
    self_training_class_fraction: float = setting(0.0, "[0, 1]")
    # the teacher's softmax averaged over the target slice and its left-right, up-down and
    # double flips, each flipped back (what `--tta` scores), before the threshold; needs the
    # teacher (the student's extra views would move its BatchNorm statistics)
    self_training_flips: bool = False
    # drop labels where the teacher's argmax breaks anatomical rules learnt from the source
    # labels (which class lies near which, inside which, how thick: adapt/anatomy.py)
    self_training_anatomy: bool = False
    # 0 = off; b > 0: while the teacher's running share of a class over the target slices
    # exceeds b times its share in the source labels, that class's labels are kept only on
    # its most confident pixels, b * source / running of them (adapt/class_prior.py)
    self_training_prior: float = setting(0.0, "[0, 100]")
    # the loss on target slices with half the foreground classes of a source slice pasted in,
    # labelled by the source there and the pseudo-labels elsewhere (DACS; adapt/class_mix.py)
    self_training_mix: bool = False
    # what is pasted: "source" (DACS: the source classes, labelled on every pixel), "source-
    # confident" (the same pixels, labelled only where the mean teacher, on the source slice,
    # is confident and right, as the target's pixels are), "target" (ClassMix: half the
    # teacher's predicted classes of the batch's paired target slice, with its pseudo-labels;
    # no source pixel)
    self_training_mix_pasted: str = setting("source", choices=("source", "source-confident", "target"))
    # Beyond the paper, 0 = off: a projection head (1x1 conv, ReLU, 1x1 conv to this many
    # channels) between the layer4 features and the contrastive loss, prototypes and
    # pseudo-labels, as in SimCLR/SupCon; the post-ReLU features cannot have negative cosines
    projection: int = setting(0, "[0, 4096]")
    # Beyond the paper, 0 = follow loss.size_prior: the size prior's weight in the MPSCL stage
    # alone (band loss.size_prior_band), so the AdvEnt warm-up, AdvEnt and the other methods
    # train without it (benchmarks/README.md, "Twenty-sixth round")
    size_prior: float = setting(0.0, "[0, 1000]")
    # Beyond the paper: which target pixels the target contrastive term keeps. "prototypes"
    # (the paper): top1 - top2 cosine > threshold; "self-training": of those, only where the
    # self-training labels (teacher confident and agreeing) say the same class, which are
    # far more often right; not adopted on validation (benchmarks/README.md, "Thirty-fifth
    # round": level at lambda_trg 0.1, the phantom's cost at 1.0); needs self_training
    target_contrast_labels: str = setting("prototypes", choices=("prototypes", "self-training"))
    # Beyond the paper, 0 = off: the self-training weight of each class whose share of the
    # warm-up model's target predictions lies within loss.size_prior_band of its share in
    # the source labels (measured once, at the stage's start, no target label); the other
    # classes keep mpscl.self_training. Where a structure's predicted share is far from the
    # source's its labels were the wrong ones on validation (adapt/class_trust.py)
    self_training_trusted: float = setting(0.0, "[0, 1000]")


@dataclass
class AppearanceConfig:
    """Appearance handling of SOURCE training slices (data/appearance.py); 0 = off. Each
    transform is applied to a source slice with its probability, FDA -> curve -> network."""
    # Fourier domain adaptation to a random (unlabelled) target slice
    fda: float = setting(0.0, "[0, 1]")
    fda_beta: float = setting(0.01, "[0, 0.5)")  # half-width of the swapped band, fraction of size
    curves: float = setting(0.0, "[0, 1]")  # a random Bezier intensity curve
    curves_monotone: bool = False  # monotone curves only (no folding of intensities)
    gin: float = setting(0.0, "[0, 1]")  # a random shallow convolutional network, mixed (GIN)
    gin_layers: int = setting(4, "[1, 16]")
    # probability that a GIN view is two random networks' views blended by a random smooth
    # field (GIN-IPA's interventional pseudo-correlation augmentation) instead of one
    gin_blend: float = setting(0.0, "[0, 1]")
    # > 0: each source slice enters the batch as two independently randomised views (the
    # second drawn from its own stream), segmented both, and this weight times the symmetric
    # KL divergence between their predictions is added (consistency, as in GIN-IPA)
    consistency: float = setting(0.0, "[0, 100]")


@dataclass
class TrainConfig:
    # iterations of the main stage (every single-stage method, MPSCL stage)
    iters: int = setting(50000, "[0, 1e8]")
    warmup_iters: int = setting(4000, "[0, 1e8]")  # AdvEnt warm-up before MPSCL
    seed: int = setting(1234, "[0, 4294967295]")
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    # bfloat16 autocast: auto (where the hardware runs bf16 natively), bf16, off
    amp: str = setting("auto", choices=("auto", "bf16", "off"), yaml_bools={False: "off", True: "bf16"})
    channels_last: bool = True
    checkpoint_every: int = setting(1000, "[0, 1e8]")
    log_every: int = setting(10, "[1, 1e8]")
    threads: int = setting(0, "[0, 1024]")  # torch CPU threads; 0 = torch default
    # beyond the paper, off: AdaBN (Li et al., 2016). RUN/final.pt gets BatchNorm statistics
    # re-estimated on the unlabelled target training slices, for methods that train on them
    # (AdvEnt, MPSCL; not source-only or the oracle). Training normalises each domain's batch
    # with its own statistics while the running ones end up a mix of both domains; this gives
    # evaluation the target's. A step after training: the stages' checkpoints are unchanged.
    adabn: bool = False


# keys that older versions wrote and nothing read (source validation that was never run):
# dropped when an old run's config.yaml or checkpoint is read, refused in new settings
RETIRED_KEYS = {"train.val_every", "train.val_fraction"}


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


# keys of older configs (run folders, checkpoints) -> (the key now, its value for theirs)
_LEGACY_KEYS = {"model.freeze_bn": ("model.batchnorm", {True: "frozen", False: "trainable"})}


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _type_name(t: Any) -> str:
    """``int``, ``Optional[str]``, ``Tuple[float, float]``: as the field declares it."""
    if typing.get_origin(t) is None and hasattr(t, "__name__"):
        return t.__name__
    return str(t).replace("typing.", "")


def _coerce(key: str, value: Any, f: dataclasses.Field, ftype: Any, where: str) -> Any:
    """Check ``value`` against the field's type hint; return it in that type."""
    bad = ConfigError(f"{where}: {key} must be {_type_name(ftype)}, got {value!r}")
    origin, args = typing.get_origin(ftype), typing.get_args(ftype)
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        ftype = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(ftype), typing.get_args(ftype)
    aliases = f.metadata.get("yaml_bools")
    if isinstance(value, bool) and aliases:
        return aliases[value]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise bad
        return tuple(_coerce(key, v, f, a, where) for v, a in zip(value, args))
    if ftype is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if ftype is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise bad
        return int(value)
    if ftype is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad
        return float(value)
    if ftype is str and not isinstance(value, str):
        raise bad
    return value


def _check(key: str, value: Any, f: dataclasses.Field, where: str) -> None:
    choices, within = f.metadata.get("choices"), f.metadata.get("within")
    if choices and value not in choices:
        raise ConfigError(f"{where}: {key} must be one of {', '.join(choices)}, got {value!r}")
    if within is not None and value is not None:
        lo, hi, lo_in, hi_in = within
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
    if key in RETIRED_KEYS:
        hint = " (retired: it was read by nothing; remove it)"
    return ConfigError(f"{where}: unknown config key {key!r}{hint}")


def set_value(cfg: Config, key: str, value: Any, where: str = "--set") -> None:
    """Set dotted ``key`` (e.g. ``mpscl.margin_src``) on ``cfg`` after validating it."""
    if key in _LEGACY_KEYS and isinstance(value, bool):
        key, value = _LEGACY_KEYS[key][0], _LEGACY_KEYS[key][1][value]
    parts = key.split(".")
    if len(parts) != 2 or not hasattr(cfg, parts[0]) or parts[0].startswith("_"):
        raise _unknown(key, where)
    section = getattr(cfg, parts[0])
    fields = {f.name: f for f in dataclasses.fields(section)}
    if parts[1] not in fields:
        raise _unknown(key, where)
    f = fields[parts[1]]
    value = _coerce(key, value, f, typing.get_type_hints(type(section))[parts[1]], where)
    _check(key, value, f, where)
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


def _check_preset(name: str) -> None:
    if name not in preset_names():
        near = difflib.get_close_matches(name, preset_names(), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"unknown preset {name!r} (available: {', '.join(preset_names())}){hint}")


def _preset_file(name: str) -> Dict[str, Any]:
    _check_preset(name)
    data = yaml.safe_load((resources.files("mpscl.presets") / f"{name}.yaml").read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"preset {name}: expected a mapping of sections")
    return data


def preset_layer(name: str) -> Dict[str, Any]:
    """What preset ``name`` sets over its ``base:`` (its own keys only)."""
    return {k: v for k, v in _preset_file(name).items() if k != "base"}


def load_preset(name: str, _seen: Tuple[str, ...] = ()) -> Config:
    """Defaults <- the preset's ``base:`` chain (a preset names the one it inherits from)
    <- the preset's own keys."""
    if name in _seen:
        raise ConfigError(f"preset {name}: its base chain loops ({' -> '.join(_seen + (name,))})")
    data = _preset_file(name)
    cfg = load_preset(str(data["base"]), _seen + (name,)) if data.get("base") else Config()
    apply_mapping(cfg, preset_layer(name), f"preset {name}")
    return cfg


def without_retired(d: Dict[str, Any]) -> Dict[str, Any]:
    """A config dict written by an older version, less the keys that were retired since."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    for key in RETIRED_KEYS:
        sect, name = key.split(".")
        if isinstance(out.get(sect), dict):
            out[sect].pop(name, None)
    return out


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
    _check_combinations(cfg)
    return cfg


def _check_combinations(cfg: Config) -> None:
    """Settings that are valid alone but not together."""
    if cfg.data.context_spacing != "slices" and cfg.data.context == 0:
        raise ConfigError(f"data.context_spacing={cfg.data.context_spacing} places neighbours, but "
                          "data.context is 0 (no neighbours); set data.context=1")
    if cfg.data.context_dropout > 0 and cfg.data.context == 0:
        raise ConfigError(f"data.context_dropout={cfg.data.context_dropout} drops neighbours, but "
                          "data.context is 0 (no neighbours); set data.context=1")
    c = cfg.mpscl
    if c.target_contrast_labels == "self-training" and (c.self_training <= 0 or c.lambda_trg <= 0):
        raise ConfigError("mpscl.target_contrast_labels=self-training selects the target contrastive "
                          "term's pixels by the self-training labels: it needs mpscl.self_training > 0 "
                          "and mpscl.lambda_trg > 0")
    if c.self_training_trusted > 0 and c.self_training <= 0:
        raise ConfigError("mpscl.self_training_trusted sets the self-training weight of the classes "
                          "whose predicted share is plausible: it needs mpscl.self_training > 0 "
                          "(the weight of the others)")
    if c.self_training_flips and c.self_training > 0 and c.self_training_teacher <= 0:
        raise ConfigError("mpscl.self_training_flips needs a mean teacher (mpscl.self_training_teacher > 0): "
                          "the student's extra flipped views would move its BatchNorm statistics")
    if (c.self_training_mix and c.self_training > 0 and c.self_training_mix_pasted == "source-confident"
            and c.self_training_teacher <= 0):
        raise ConfigError("mpscl.self_training_mix_pasted=source-confident needs a mean teacher "
                          "(mpscl.self_training_teacher > 0): the student's extra view of the source "
                          "slices would move its BatchNorm statistics")


def config_from_dict(d: Dict[str, Any], where: str = "checkpoint") -> Config:
    """The config a run or checkpoint saved (retired keys of older versions ignored)."""
    cfg = Config()
    apply_mapping(cfg, without_retired(d) if isinstance(d, dict) else d, where)
    return cfg


def upgrade_config_dict(d: Dict[str, Any]) -> Dict[str, Any]:
    """A stored config dict as this version writes it: legacy keys mapped (``freeze_bn``),
    keys it predates at their defaults. Returned unchanged when empty or invalid."""
    if not d:
        return d
    try:
        return config_from_dict(d).to_dict()
    except (ConfigError, TypeError, AttributeError):
        return d


def diff_configs(a: Dict[str, Any], b: Dict[str, Any], prefix: str = "") -> List[str]:
    """Dotted keys whose values differ between two config dicts (both read through
    :func:`upgrade_config_dict` first, so a run folder of an older version compares by
    what its settings mean)."""
    if not prefix:
        a, b = upgrade_config_dict(a), upgrade_config_dict(b)
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_configs(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out
