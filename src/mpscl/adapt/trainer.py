"""The trainer: owns every piece of state of one training stage and checkpoints it whole.

State = the networks and optimisers the stage declares (``mpscl.methods``: the segmenter
``model`` and, say, AdvEnt's discriminators), prototypes, iteration and the RNG; each
network and optimiser is saved under its declared name.
Batches and augmentations are pure functions of (seed, iteration) (see ``sampling``), so
a run killed at any point and resumed from its last checkpoint continues exactly as the
uninterrupted run would have.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import signal
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from .. import methods
from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import Config, diff_configs, without_retired
from ..data import appearance
from ..data.context import coarser_spacing, drop_context
from ..fileio import atomic_write_text
from ..models import build_segmenter
from ..runtime import use_bf16
from .adversarial_gate import AdversarialGate
from .anatomy import AnatomyRules, learn_rules
from .class_mix import class_mix_mask
from .class_prior import ClassSharePrior, class_shares
from .class_trust import class_scale, predicted_shares, trust_report, trusted_classes
from .distributed import DistContext
from .sampling import batch_indices, sample_generator
from .schedule import set_poly_lr, stage_schedule
from .steps import size_prior_weight

# keys that change how a run is executed or logged, not what it computes
# train.amp among them like train.device: what each stage trained in is recorded in its
# checkpoints ("amp"), and a resumed stage may be switched (recorded as "mixed")
RUNTIME_KEYS = {"train.device", "train.threads", "train.log_every", "train.checkpoint_every",
                "data.num_workers", "train.amp"}
# keys read only after the last stage, to make RUN/final.pt from its checkpoint: a run folder
# trained without them is continued (nothing retrained), RUN/final.pt is made again
AFTER_TRAINING_KEYS = {"train.adabn"}


def training_changes(old: Dict, cfg: Config, method: methods.Method) -> List[str]:
    """Keys in which a recorded config ``old`` differs from ``cfg`` in what ``method`` trains:
    not how a run goes (RUNTIME_KEYS), what is done after it (AFTER_TRAINING_KEYS) or a
    budget the method never reads, nor ``appearance.*`` for a method that never trains on
    source slices (the oracle), since those transforms act on source slices only, nor
    ``mpscl.*`` for a method without an MPSCL stage."""
    ignore = RUNTIME_KEYS | AFTER_TRAINING_KEYS | set(method.unspent_budgets)
    return [k for k in diff_configs(old, cfg.to_dict())
            if k not in ignore and k.split(".")[0] not in method.unread_sections]


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, a config mismatch on resume, ...)."""


class Interrupted(RuntimeError):
    """SIGINT/SIGTERM arrived; a checkpoint was written before raising."""

    def __init__(self, signum: int, checkpoint: Path, iteration: Optional[int] = None):
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        at = f" at iteration {iteration}" if iteration is not None else ""
        super().__init__(f"stopped by {name}{at}; state saved to {checkpoint}. Run the same "
                         f"command again (or add --resume) to continue from there")
        self.signum, self.checkpoint = signum, checkpoint


class Trainer:
    def __init__(self, cfg: Config, stage: str, source, target, out_dir: Path, *,
                 device: torch.device, init: Optional[Dict] = None,
                 prototypes: Optional[torch.Tensor] = None, dist: Optional[DistContext] = None,
                 progress: bool = True, method: Optional[str] = None):
        try:
            spec_method, self.spec = methods.find_stage(stage, method)
        except KeyError as e:
            raise TrainingError(str(e.args[0])) from None
        self.cfg, self.stage, self.method_spec = cfg, stage, spec_method
        # appearance.* acts on source slices only: a method that sees none (the oracle) ignores it
        if spec_method.sees_source and cfg.appearance.consistency > 0 and not appearance.enabled(cfg.appearance):
            raise TrainingError("appearance.consistency needs a randomising transform (appearance.gin, "
                                "curves or fda above 0): without one both views are the same slice")
        self.step_fn = methods.resolve(self.spec.step)
        self.out_dir, self.device = Path(out_dir), device
        self.dist = dist or DistContext()
        self.progress = progress and self.dist.is_main
        self.source, self.target = source, target  # SliceDatasets
        for ds in (source, target):
            if getattr(ds, "context", 0) != cfg.data.context:
                raise TrainingError(f"{ds.prepared.root}: its slices have context {getattr(ds, 'context', 0)} "
                                    f"but data.context is {cfg.data.context} (SliceDataset(..., context=))")
        self.context_mm = getattr(source, "context_mm", None)  # mm between neighbours; None: adjacent
        if getattr(target, "context_mm", None) != self.context_mm:
            raise TrainingError(f"source neighbours lie {self.context_mm} mm apart but target ones "
                                f"{getattr(target, 'context_mm', None)} mm (SliceDataset(..., context_mm=))")
        # coarser without a distance only where no case records a spacing (adjacent slices then)
        if ((self.context_mm is not None) != (cfg.data.context_spacing != "slices")
                and not (self.context_mm is None
                         and coarser_spacing([source.prepared, target.prepared]) is None)):
            raise TrainingError(f"data.context_spacing is {cfg.data.context_spacing} but the datasets' "
                                f"neighbours lie {self.context_mm or 'one slice'} apart "
                                "(SliceDataset(..., context_mm=))")
        self.classes = list(source.prepared.classes)
        self.label_values = list(source.prepared.label_values)
        self.num_classes = len(self.classes)
        self.axis = source.prepared.axis  # slice axis the model was trained on (predict uses it)
        self.plane = getattr(source.prepared, "plane", None)  # the plane volumes were cut in
        if getattr(target.prepared, "plane", None) != self.plane:
            raise TrainingError(f"source slices are cut in the {self.plane or 'stored-axis'} plane but "
                                f"target slices in the {target.prepared.plane or 'stored-axis'} plane; "
                                "prepare both domains with the same --plane")
        budgets = [getattr(cfg.train, s.budget) for s in spec_method.stages]
        index = spec_method.stages.index(self.spec)
        self.iters = budgets[index]
        self.lr_offset, self.lr_total = stage_schedule(budgets, index, spec_method.decay_mode(cfg))
        self.use_amp = use_bf16(cfg.train.amp, device)
        # the arithmetic this stage trains in, recorded in its checkpoints ("mixed" once a
        # resume switched it); under train.amp auto it depends on the machine
        self.amp = "bf16" if self.use_amp else "off"
        self._resume_note = ""
        self.memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.stats: Dict[str, float] = {}
        self._terms: Dict[str, torch.Tensor] = {}

        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        # networks by name, in declared order (the order their initial weights are drawn);
        # one the config turns off (e.g. loss.adversarial=false) is None
        self.nets: Dict[str, Optional[torch.nn.Module]] = {
            "model": build_segmenter(cfg.model, self.num_classes)}
        for name, build in self.spec.networks.items():
            self.nets[name] = methods.resolve(build)(cfg, self.num_classes)
        if init is not None:  # previous stage's checkpoint (MPSCL starts from the warm-up)
            for name, net in self.nets.items():
                if net is not None and init.get(name) is not None:
                    net.load_state_dict(init[name])
        for m in self.networks().values():
            self.dist.sync_batchnorm(m)  # several ranks: BatchNorm sees the global batch
            m.to(device, memory_format=self.memory_format)
        self.optimisers: Dict[str, Optional[torch.optim.Optimizer]] = {}
        for name, o in self.spec.optimisers.items():
            live = [self.nets[n] for n in o.networks if self.nets.get(n) is not None]
            self.optimisers[name] = methods.resolve(o.build)(cfg, live) if live else None
        # loss.adv_gate: the adversarial weights follow the discriminator's error; a stage
        # that starts from another (MPSCL from its warm-up) continues its estimate
        self.adv_gate: Optional[AdversarialGate] = None
        if cfg.loss.adv_gate and self.nets.get("disc_main") is not None:
            self.adv_gate = AdversarialGate()
            if init is not None and init.get("adv_gate") is not None:
                self.adv_gate.load_state_dict(init["adv_gate"])
        self.prototypes = None
        if self.spec.prototypes:
            if prototypes is None:
                raise TrainingError(f"the {stage} stage needs initial prototypes (run the prototype stage)")
            self.prototypes = prototypes.detach().float().to(device).clone()
        # mpscl.self_training_anatomy: rules read off the source labels, the same on every rank
        # and on resume (the same slices)
        self.anatomy: Optional[AnatomyRules] = None
        c = cfg.mpscl
        if self.spec.prototypes and c.self_training > 0 and c.self_training_anatomy:
            self.anatomy = learn_rules(source.labels.numpy(), self.num_classes, self.classes)
        # mpscl.self_training_prior: the source labels' class shares, a running target estimate
        self.class_prior: Optional[ClassSharePrior] = None
        if self.spec.prototypes and c.self_training > 0 and c.self_training_prior > 0:
            self.class_prior = ClassSharePrior(self.source_shares, c.self_training_prior)
        # loss.size_prior: the running class shares of the target predictions, in every stage
        # that sees unlabelled target slices (mpscl.size_prior: the MPSCL stage's own weight);
        # they start at the source's, and a stage that starts from another's network (MPSCL
        # from its warm-up) continues that estimate where that stage kept one
        self.size_prior: Optional[ClassSharePrior] = None
        if size_prior_weight(cfg, self.spec) > 0 and "target" in self.spec.inputs:
            self.size_prior = ClassSharePrior(self.source_shares, cfg.loss.size_prior_band)
            if init is not None and init.get("size_prior") is not None:
                self.size_prior.load_state_dict(init["size_prior"])
        # mpscl.self_training_trusted: per-class self-training factors read off the stage's
        # initial (warm-up) weights on every target slice, before any resume state is loaded
        self.st_class_scale: Optional[torch.Tensor] = None
        if self.spec.prototypes and c.self_training > 0 and c.self_training_trusted > 0:
            self.st_class_scale = self._trusted_class_scale()
        self.iteration = 0
        self._stop_signal: Optional[int] = None
        self.last_checkpoint: Optional[Path] = None
        self._last_saved_iter = 0

    # ------------------------------------------------------------------ helpers
    @functools.cached_property
    def source_shares(self):
        """The source labels' class shares, the reference of the priors and trusted classes."""
        return class_shares(self.source.labels.numpy(), self.num_classes)

    def _trusted_class_scale(self) -> torch.Tensor:
        c, band = self.cfg.mpscl, self.cfg.loss.size_prior_band
        src = self.source_shares
        pred = predicted_shares(self.model, self.target.images, self.num_classes, self.device)
        trusted = trusted_classes(pred, src, band)
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            report = trust_report(self.classes, pred, src, trusted, band, c.self_training, c.self_training_trusted)
            atomic_write_text(self.out_dir / "self_training_trust.json", json.dumps(report, indent=1) + "\n")
        return class_scale(trusted, c.self_training, c.self_training_trusted)

    @property
    def model(self) -> torch.nn.Module:
        return self.nets["model"]

    def networks(self) -> Dict[str, torch.nn.Module]:
        """Every network this stage trains, by name, the segmenter first."""
        return {n: m for n, m in self.nets.items() if m is not None}

    def _others(self):
        """The networks besides the segmenter (e.g. AdvEnt's discriminators)."""
        return [m for n, m in self.networks().items() if n != "model"]

    def live_optimisers(self) -> Dict[str, torch.optim.Optimizer]:
        return {n: o for n, o in self.optimisers.items() if o is not None}

    def autocast(self):
        if not self.use_amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _batch(self, ds, domain: str, i: int, labelled: bool):
        idx = batch_indices(self.cfg.train.seed, domain, i, self.cfg.data.batch_size, len(ds),
                            self.dist.rank, self.dist.world_size)
        seed, first = self.cfg.train.seed + (0 if domain == "source" else 7), self.dist.rank * len(idx)
        # augmentation seeded per position in the global batch: a rank's share is augmented
        # exactly as in one process with the whole global batch
        parts = [ds.batch([j], generator=sample_generator(seed, i, first + k)) for k, j in enumerate(idx)]
        x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        if self.cfg.data.context_dropout > 0:  # its own stream (+ 37), before any appearance view
            p_drop = self.cfg.data.context_dropout
            x = self._per_sample(x, seed + 37, i, lambda s, g: drop_context(s, p_drop, g))
        if domain == "source" and appearance.enabled(self.cfg.appearance):
            # its own streams (seed + 13; + 17 for a second view), so the geometric augmentation
            # is unchanged by the switches
            views = [self._per_sample(x, seed + off, i, lambda s, g: appearance.randomise(
                s, self.cfg.appearance, g, self.target.images)) for off in self.view_streams]
            x, y = torch.cat(views), torch.cat([y] * len(views))
        x = x.to(self.device).contiguous(memory_format=self.memory_format)
        return x, (y.to(self.device) if labelled else None)

    @property
    def view_streams(self):
        """Seed offsets of the randomised views of each source slice: one, or two with
        ``appearance.consistency`` (the first is the one-view batch, bit for bit)."""
        return (13, 17) if self.cfg.appearance.consistency > 0 else (13,)

    def target_view(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """A random-network view (GIN, always applied; blended as ``appearance.gin_blend``
        asks) of the target batch ``x`` of iteration ``i``, drawn per global batch position
        from its own stream (seed + 29)."""
        view = self._per_sample(x.cpu(), self.cfg.train.seed + 29, i,
                                lambda s, g: appearance.gin_view(s, self.cfg.appearance, g))
        return view.to(self.device).contiguous(memory_format=self.memory_format)

    def mix_masks(self, y: torch.Tensor, i: int) -> torch.Tensor:
        """Which pixels of each source slice of iteration ``i`` (labels ``y``) are pasted
        onto its target slice (``mpscl.self_training_mix``), from their own stream (seed + 31)."""
        return self._per_sample(y.cpu(), self.cfg.train.seed + 31, i, class_mix_mask).to(self.device)

    def _per_sample(self, x: torch.Tensor, seed: int, i: int, fn) -> torch.Tensor:
        """``fn(slice, generator)`` on every slice of the batch ``x`` of iteration ``i``, each
        drawn from ``sample_generator(seed, i, position in the global batch)``: a rank's
        share gets exactly what one process with the whole global batch would draw."""
        first = self.dist.rank * len(x)
        return torch.stack([fn(x[k], sample_generator(seed, i, first + k)) for k in range(len(x))])

    def backward(self, terms: Dict[str, torch.Tensor], total: torch.Tensor) -> None:
        """Refuse non-finite losses before they touch any weight, then backpropagate."""
        bad = next((n for n, v in terms.items() if not torch.isfinite(v.detach()).all()), None)
        # every rank must take the same decision, or the others would hang in the all-reduce
        if self.dist.broadcast_flag(bad is not None):
            what = (f"loss term {bad!r} is {terms[bad].item()}" if bad is not None
                    else "a loss term is not finite on another rank")
            raise TrainingError(f"{self.stage}: {what} at iteration {self.iteration + 1}; "
                                f"stopped before updating any weight. {self._last_good()}")
        total.backward()

    def _last_good(self) -> str:
        if self.last_checkpoint is None:
            return "No checkpoint of this stage was written yet."
        return (f"Last good checkpoint: {self.last_checkpoint} (iteration {self._last_saved_iter}), "
                f"left untouched.")

    def check_gradients(self) -> None:
        """A finite loss can still give Inf/NaN gradients: refuse them before any step."""
        named = [(f"{tag}.{n}", p.grad) for tag, m in self.networks().items()
                 for n, p in m.named_parameters() if p.grad is not None]
        if not named:
            return
        grads = [g.detach() for _, g in named]
        norm_fn = getattr(torch, "_foreach_norm", None)
        norms = torch.stack(norm_fn(grads) if norm_fn else [torch.linalg.vector_norm(g) for g in grads])
        finite = torch.isfinite(norms)
        if bool(finite.all()):
            return
        bad = [n for (n, _), ok in zip(named, finite.tolist()) if not ok]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise TrainingError(
            f"{self.stage}: non-finite gradient of {bad[0]}{more} at iteration {self.iteration + 1} "
            f"(every loss term was finite: {', '.join(f'{k}={float(v.detach()):.4g}' for k, v in self._terms.items())}); "
            f"stopped before updating any weight. {self._last_good()}")

    def check_finite(self, terms: Dict[str, torch.Tensor], what: str) -> Dict[str, torch.Tensor]:
        """Refuse a non-finite term computed after the main backward (e.g. a discriminator
        loss); checked before any optimiser steps, so nothing has been applied yet."""
        for name, v in terms.items():
            if not torch.isfinite(v).all():
                raise TrainingError(f"{self.stage}: {what} {name!r} is {v.item()} at "
                                    f"iteration {self.iteration + 1}; stopped before updating "
                                    f"any weight. {self._last_good()}")
        return terms

    # ------------------------------------------------------------------ one iteration
    def train_iteration(self) -> Dict[str, float]:
        """One iteration at the stage's scheduled learning rate; what ``fit`` and the speed
        benchmark run. Returns the loss terms and statistics, plus ``lr_factor``."""
        at = self.lr_offset + self.iteration
        factors = [set_poly_lr(o, at, self.lr_total, self.cfg.optim.power)
                   for o in self.live_optimisers().values()]
        out = self.step()
        self.iteration += 1
        return {**out, "lr_factor": factors[0]}

    def _inputs(self, i: int):
        """The batches of iteration ``i`` the stage's step takes, in declared order."""
        out = []
        for spec in self.spec.inputs:
            domain, labelled = methods.INPUTS[spec]
            x, y = self._batch(self.source if domain == "source" else self.target, domain, i, labelled)
            out += [x, y] if labelled else [x]
        return out

    def step(self) -> Dict[str, float]:
        """One iteration at the current learning rates (``train_iteration`` sets them)."""
        i = self.iteration
        for m in self.networks().values():
            m.train()
        for o in self.live_optimisers().values():
            o.zero_grad(set_to_none=True)
        self.stats = {}
        terms = self.step_fn(self, *self._inputs(i))
        self.dist.average_gradients(self.model.parameters())
        self.dist.average_gradients(p for d in self._others() for p in d.parameters())
        self._terms = terms
        self.check_gradients()
        for o in self.live_optimisers().values():
            o.step()
        out = {k: float(v.detach()) for k, v in terms.items()}
        out.update(self.stats)
        return self.dist.mean_over_ranks(out)  # several ranks: the global batch's values

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict:
        return {
            "method": self.method_spec.name, "stage": self.stage, "iteration": self.iteration,
            "config": self.cfg.to_dict(), "classes": self.classes, "label_values": self.label_values,
            "axis": self.axis, "plane": self.plane, "context_mm": self.context_mm,
            **{n: (m.state_dict() if m is not None else None) for n, m in self.nets.items()},
            **{n: (o.state_dict() if o is not None else None) for n, o in self.optimisers.items()},
            "prototypes": self.prototypes.cpu() if self.prototypes is not None else None,
            "adv_gate": self.adv_gate.state_dict() if self.adv_gate is not None else None,
            "class_prior": self.class_prior.state_dict() if self.class_prior is not None else None,
            "size_prior": self.size_prior.state_dict() if self.size_prior is not None else None,
            "rng_torch": torch.get_rng_state(),
            "world_size": self.dist.world_size, "amp": self.amp,
        }

    def load_state_dict(self, s: Dict) -> None:
        for name, part in (*self.networks().items(), *self.live_optimisers().items()):
            if s.get(name) is None:
                raise TrainingError(f"checkpoint of stage {s.get('stage')!r} holds no {name!r}")
            part.load_state_dict(s[name])
        if s.get("prototypes") is not None:
            self.prototypes = s["prototypes"].float().to(self.device)
        if self.adv_gate is not None:
            if s.get("adv_gate") is None:
                raise TrainingError(f"checkpoint of stage {s.get('stage')!r} holds no adversarial gate state")
            self.adv_gate.load_state_dict(s["adv_gate"])
        if self.class_prior is not None:
            if s.get("class_prior") is None:
                raise TrainingError(f"checkpoint of stage {s.get('stage')!r} holds no class-share prior state")
            self.class_prior.load_state_dict(s["class_prior"])
        if self.size_prior is not None:
            if s.get("size_prior") is None:
                raise TrainingError(f"checkpoint of stage {s.get('stage')!r} holds no size-prior state")
            self.size_prior.load_state_dict(s["size_prior"])
        torch.set_rng_state(s["rng_torch"])
        self.iteration = int(s["iteration"])

    def save(self, name: str = "last.pt") -> Path:
        path = self.out_dir / name
        if self.dist.is_main:
            save_checkpoint(path, self.state_dict())
        self.dist.barrier()
        self.last_checkpoint, self._last_saved_iter = path, self.iteration
        return path

    def try_resume(self) -> bool:
        """Continue from ``last.pt`` when it exists; refuse one from a different config."""
        path = self.out_dir / "last.pt"
        if not path.is_file():
            return False
        s = load_checkpoint(path, map_location="cpu")
        old = without_retired(s.get("config") or {})
        diff = training_changes(old, self.cfg, self.method_spec)
        if diff or s.get("stage") != self.stage:
            raise TrainingError(
                f"{path}: cannot resume: it was written by a different configuration "
                f"(differs in: {', '.join(diff) or 'stage'}). Use a new --out, or the same settings.")
        if int(s.get("world_size", 1)) != self.dist.world_size:  # another global batch
            raise TrainingError(
                f"{path}: cannot resume: it was written by {s.get('world_size', 1)} process(es), "
                f"this run has {self.dist.world_size}; resume with the same number of processes")
        self.load_state_dict(s)
        self._resume_arithmetic(s.get("amp"))
        self.last_checkpoint, self._last_saved_iter = path, self.iteration
        return True

    def _resume_arithmetic(self, saved: Optional[str]) -> None:
        """Under ``train.amp: auto`` a resumed stage keeps the arithmetic it started in, so a
        run resumed on a CPU with another bf16 support stays one arithmetic; an explicit
        ``train.amp`` that changes it is obeyed and the stage is recorded as "mixed"."""
        if saved not in ("bf16", "off", "mixed") or saved == self.amp:
            return
        here = self.amp
        if saved == "mixed":
            self.amp = "mixed"
        elif self.cfg.train.amp == "auto":
            self.use_amp, self.amp = saved == "bf16", saved
            self._resume_note = (f" in {saved}, the arithmetic it started in (train.amp auto gives "
                                 f"{here} on this machine; set train.amp={here} to switch)")
        else:
            self.amp = "mixed"
            self._resume_note = (f"; it trained in {saved} so far and goes on in {here} "
                                 f"(train.amp={self.cfg.train.amp}): its arithmetic is recorded as mixed")

    # ------------------------------------------------------------------ loop
    def _on_signal(self, signum, frame):
        self._stop_signal = signum

    def fit(self) -> Path:
        """Train to ``self.iters``, checkpointing; returns the path of the stage's final.pt."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:  # temp files of checkpoints whose writing was killed
            for stale in self.out_dir.glob(".*.pt.*.tmp"):
                stale.unlink(missing_ok=True)
        resumed = self.try_resume()
        if self.anatomy is not None and self.dist.is_main:
            atomic_write_text(self.out_dir / "anatomy.json", json.dumps(self.anatomy.to_dict(), indent=1) + "\n")
        log = _Log(self.out_dir, self.iteration, enabled=self.dist.is_main)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=self.iters, initial=self.iteration, desc=self.stage, unit="it",
                       dynamic_ncols=True, leave=True)
        if resumed and self.dist.is_main:
            msg = (f"resumed {self.stage} from {self.last_checkpoint} at iteration {self.iteration}"
                   f"{self._resume_note}")
            if bar is not None:
                bar.write(msg)
            else:
                print(msg, flush=True)
        every = self.cfg.train.checkpoint_every
        try:
            t0 = time.perf_counter()
            while self.iteration < self.iters:
                terms = self.train_iteration()
                lr = terms.pop("lr_factor")
                if self.iteration % self.cfg.train.log_every == 0 or self.iteration == self.iters:
                    rec = {"iter": self.iteration, "stage": self.stage,
                           "lr": self.cfg.optim.lr * lr, **terms,
                           "sec_per_iter": (time.perf_counter() - t0) / max(1, self.cfg.train.log_every)}
                    log.write(rec)
                    t0 = time.perf_counter()
                    if bar is not None:
                        bar.set_postfix({k: f"{v:.3g}" for k, v in terms.items()
                                         if k in ("seg_src", "mpcl_src", "mpcl_trg", "adv", "selected")})
                if bar is not None:
                    bar.update(1)
                stop = self.dist.broadcast_flag(self._stop_signal is not None)
                if stop:
                    path = self.save()
                    raise Interrupted(self._stop_signal or signal.SIGTERM, path, self.iteration)
                if every and self.iteration % every == 0 and self.iteration < self.iters:
                    self.save()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if bar is not None:
                bar.close()
            log.close()
        self.save()
        final = self.out_dir / "final.pt"
        if self.dist.is_main:
            save_checkpoint(final, self.state_dict())
            if self.class_prior is not None:  # where the running shares ended, beside the source's
                atomic_write_text(self.out_dir / "class_prior.json",
                                  json.dumps(self.class_prior.to_dict(self.classes), indent=1) + "\n")
            if self.size_prior is not None:  # the target predictions' running shares at the end
                shares = self.size_prior.to_dict(self.classes)
                shares = {k: shares[k] for k in ("window_slices", "source_shares", "running_shares")}
                atomic_write_text(self.out_dir / "size_prior.json",
                                  json.dumps({"band": self.size_prior.bound, **shares}, indent=1) + "\n")
        self.dist.barrier()
        self.dist.debug_dump(self.stage, self.state_dict)
        return final


class _Log:
    """JSON-lines log + TensorBoard scalars; on resume, entries past the checkpoint are dropped."""

    def __init__(self, out_dir: Path, iteration: int, enabled: bool = True):
        self.enabled = enabled
        self.path = out_dir / "log.jsonl"
        self.tb = None
        if not enabled:
            return
        if self.path.exists():
            keep = []
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line).get("iter", 0) <= iteration:
                        keep.append(line)
                except json.JSONDecodeError:
                    pass  # a line cut by a kill
            self.path.write_text("".join(l + "\n" for l in keep))
        self.f = open(self.path, "a")
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(out_dir / "tb"), purge_step=iteration + 1)
        except Exception:  # TensorBoard is optional at run time
            self.tb = None

    def write(self, rec: Dict) -> None:
        if not self.enabled:
            return
        self.f.write(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                 for k, v in rec.items()}) + "\n")
        self.f.flush()
        if self.tb is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k not in ("iter",):
                    self.tb.add_scalar(f"{rec['stage']}/{k}", v, rec["iter"])

    def close(self) -> None:
        if not self.enabled:
            return
        self.f.close()
        if self.tb is not None:
            self.tb.close()
