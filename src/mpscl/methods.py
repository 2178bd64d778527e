"""What a method is, in one place: the registry of methods and their stages.

A method is a sequence of stages. A stage declares its step function (one iteration),
the batches that function takes, the networks it trains besides the segmenter and their
optimisers, its iteration budget, and what it starts from (an earlier stage's final
checkpoint, class prototypes computed with that checkpoint's model). The trainer, the
pipeline, the learning-rate schedule, the command line's choices and the method comparison
read these declarations; none of them names a method.

Adding a method: write its step function, then ``register(Method(...))`` next to the
built-in ones below (or in the step's own module, imported by the caller). Functions are
named as ``"module:attribute"`` strings, resolved on first use, so that ``mpscl --help``
builds its choices without importing torch; a callable works as well.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

Ref = Union[str, Callable[..., Any]]

# what a stage's step takes, in order: images and labels of a domain, or target images only
INPUTS = {"source": ("source", True), "target": ("target", False), "target+labels": ("target", True)}
PROTOTYPES = "prototypes"  # the pseudo-stage that computes a stage's initial prototypes


def resolve(ref: Ref) -> Callable[..., Any]:
    """``"package.module:name"`` -> that object; a callable as it is."""
    if callable(ref):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Optimiser:
    """One optimiser over some of a stage's networks; ``None`` when all of them are off."""
    networks: Tuple[str, ...]
    build: Ref  # (cfg, [modules]) -> torch.optim.Optimizer, every group with its initial_lr


SEGMENTER_SGD = {"opt": Optimiser(("model",), "mpscl.adapt.networks:segmenter_sgd")}
ENTROPY_DISCRIMINATORS = {  # AdvEnt: one discriminator per output level, off with loss.adversarial
    "disc_main": "mpscl.adapt.networks:discriminator_main",
    "disc_aux": "mpscl.adapt.networks:discriminator_aux",
}
ADVERSARIAL_OPTIMISERS = {
    **SEGMENTER_SGD,
    "opt_d": Optimiser(tuple(ENTROPY_DISCRIMINATORS), "mpscl.adapt.networks:discriminator_adam"),
}


@dataclass(frozen=True)
class Stage:
    name: str
    step: Ref  # (trainer, *batches) -> loss terms; calls trainer.backward itself
    inputs: Tuple[str, ...] = ("source",)  # keys of INPUTS
    # networks besides the segmenter ("model"): name -> (cfg, num_classes) -> module or None
    networks: Mapping[str, Ref] = field(default_factory=dict)
    optimisers: Mapping[str, Optimiser] = field(default_factory=lambda: dict(SEGMENTER_SGD))
    budget: str = "iters"  # its iterations are cfg.train.<budget>
    init_from: Optional[str] = None  # earlier stage whose final checkpoint it starts from
    prototypes: bool = False  # needs class prototypes computed with init_from's model

    def __post_init__(self):
        unknown = [i for i in self.inputs if i not in INPUTS]
        if unknown:
            raise ValueError(f"stage {self.name}: unknown inputs {unknown} (known: {', '.join(INPUTS)})")
        if self.prototypes and not self.init_from:
            raise ValueError(f"stage {self.name}: prototypes are computed from init_from's model")

    @property
    def network_names(self) -> Tuple[str, ...]:
        return ("model", *self.networks)


@dataclass(frozen=True)
class Method:
    name: str
    stages: Tuple[Stage, ...]
    help: str = ""
    # config key of the LR decay mode across stages ("restart" or "continue"); None: restart
    decay_key: Optional[str] = None
    benchmark: bool = False  # one of the main methods ``mpscl benchmark`` compares
    # its final model always gets the target's BatchNorm statistics (AdaBN), whatever
    # train.adabn says (which acts on the methods that train on unlabelled target images)
    target_statistics: bool = False

    def __post_init__(self):
        names = [s.name for s in self.stages]
        for s in self.stages:
            if s.init_from is not None and s.init_from not in names[:names.index(s.name)]:
                raise ValueError(f"method {self.name}: stage {s.name} starts from "
                                 f"{s.init_from!r}, which is not an earlier stage")

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def stage_names(self) -> List[str]:
        """Stages as ``--stage`` accepts them, the prototype computation included."""
        out = []
        for s in self.stages:
            out += [PROTOTYPES, s.name] if s.prototypes else [s.name]
        return out

    @property
    def needs_target_labels(self) -> bool:
        return any("target+labels" in s.inputs for s in self.stages)

    @property
    def sees_unlabelled_target(self) -> bool:
        """Does a stage train on target images without their labels (an adaptation method)?"""
        return any("target" in s.inputs for s in self.stages)

    @property
    def sees_source(self) -> bool:
        """Does a stage train on source images? (``appearance.*`` acts on source slices only.)"""
        return any("source" in s.inputs for s in self.stages)

    @property
    def reads_mpscl_settings(self) -> bool:
        """Does a stage read ``mpscl.*`` (a stage that needs class prototypes, i.e. an MPSCL
        stage, or the LR decay mode across stages)? AdvEnt, source-only and the oracle never
        do, so their run folders do not depend on them."""
        return any(s.prototypes for s in self.stages) or (self.decay_key or "").startswith("mpscl.")

    @property
    def unread_sections(self) -> Tuple[str, ...]:
        """Config sections this method never reads, so its run folders and benchmark rows do not
        depend on them: ``appearance`` without source slices (the oracle), ``mpscl`` without an
        MPSCL stage."""
        unread = {"appearance": not self.sees_source, "mpscl": not self.reads_mpscl_settings}
        return tuple(section for section, is_unread in unread.items() if is_unread)

    @property
    def reads_adabn_setting(self) -> bool:
        """Does ``train.adabn`` decide this method's final model? (It acts on the methods that
        train on unlabelled target images; a ``target_statistics`` method always has AdaBN.)"""
        return self.sees_unlabelled_target and not self.target_statistics

    def adabn(self, cfg) -> bool:
        """Does this method's final model get the target's BatchNorm statistics under ``cfg``?"""
        return self.target_statistics or (self.reads_adabn_setting and cfg.train.adabn)

    @property
    def budgets(self) -> Tuple[str, ...]:
        """The ``train.*`` keys that set this method's iterations."""
        return tuple(dict.fromkeys(s.budget for s in self.stages))

    @property
    def unspent_budgets(self) -> Tuple[str, ...]:
        """Dotted budget keys of other registered methods that this one never reads (e.g.
        ``train.warmup_iters`` for source-only): a run folder does not depend on them."""
        every = {s.budget for m in _REGISTRY.values() for s in m.stages}
        return tuple(f"train.{b}" for b in sorted(every - set(self.budgets)))

    def decay_mode(self, cfg) -> str:
        if self.decay_key is None:
            return "restart"
        section, key = self.decay_key.split(".")
        return getattr(getattr(cfg, section), key)


_REGISTRY: Dict[str, Method] = {}


def register(method: Method, replace: bool = False) -> Method:
    if method.name in _REGISTRY and not replace:
        raise ValueError(f"method {method.name!r} is already registered")
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def get_method(name: str) -> Method:
    if name not in _REGISTRY:
        raise KeyError(f"unknown method {name!r} (choose from {', '.join(_REGISTRY)})")
    return _REGISTRY[name]


def method_names() -> List[str]:
    return list(_REGISTRY)


def benchmark_methods() -> List[str]:
    return [m.name for m in _REGISTRY.values() if m.benchmark]


def all_stage_names() -> List[str]:
    """Every ``--stage`` value some multi-stage method accepts."""
    return list(dict.fromkeys(n for m in _REGISTRY.values() if len(m.stages) > 1
                              for n in m.stage_names()))


def find_stage(stage: str, method: Optional[str] = None) -> Tuple[Method, Stage]:
    """The stage ``stage`` of ``method`` (or of the first method that has such a stage)."""
    candidates = [get_method(method)] if method is not None else list(_REGISTRY.values())
    for m in candidates:
        if any(s.name == stage for s in m.stages):
            return m, m.stage(stage)
    raise KeyError(f"unknown stage {stage!r}" + (f" of method {method}" if method else ""))


# --------------------------------------------------------------------------- built-in methods
_STEPS = "mpscl.adapt.steps"
ADVENT = Stage("advent", f"{_STEPS}:advent_step", inputs=("source", "target"),
               networks=ENTROPY_DISCRIMINATORS, optimisers=ADVERSARIAL_OPTIMISERS)

register(Method("source-only", (Stage("source-only", f"{_STEPS}:supervised_step"),),
                help="source labels only (lower bound)", benchmark=True))
register(Method("adabn", (Stage("source-only", f"{_STEPS}:supervised_step"),),
                help="source labels, then the target's BatchNorm statistics (AdaBN)",
                target_statistics=True))
register(Method("advent", (ADVENT,), help="entropy-map adversarial alignment", benchmark=True))
register(Method("mpscl", (
    replace(ADVENT, name="warmup", budget="warmup_iters"),
    replace(ADVENT, name="mpscl", step=f"{_STEPS}:mpscl_step", init_from="warmup", prototypes=True,
            networks={**ENTROPY_DISCRIMINATORS, "teacher": "mpscl.adapt.networks:self_training_teacher",
                      "projector": "mpscl.adapt.networks:projection_head"},
            optimisers={**ADVERSARIAL_OPTIMISERS,
                        "opt_proj": Optimiser(("projector",), "mpscl.adapt.networks:projection_sgd")}),
), help="AdvEnt warm-up -> prototypes -> margin preserving contrastive learning",
    decay_key="mpscl.schedule", benchmark=True))
register(Method("oracle", (Stage("oracle", f"{_STEPS}:supervised_step", inputs=("target+labels",)),),
                help="target labels (upper bound)", benchmark=True))
