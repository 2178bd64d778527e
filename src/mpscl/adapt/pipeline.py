"""Methods as pipelines of stages, each checkpointed in its own folder of the run.

```
RUN/config.yaml          effective configuration (refused if a different one is there)
RUN/<stage>/last.pt      resumable state, written every train.checkpoint_every iterations
RUN/<stage>/final.pt     the stage's result; a finished stage is skipped on re-run
RUN/<stage>/log.jsonl    losses, learning rate, selected-pixel share; tb/ for TensorBoard
RUN/prototypes.pt        MPSCL: prototypes computed from the warm-up model (source train set)
RUN/final.pt             the method's final model: what ``evaluate`` and ``predict`` take
```
The stages of each method are declared in ``mpscl.methods`` (``mpscl``: warmup (AdvEnt)
-> prototypes -> mpscl; the baselines are one stage); this module runs any of them.
"""
from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import torch

from .. import methods
from ..checkpoint import atomic_write, atomic_write_text, load_checkpoint, load_model, save_checkpoint
from ..config import Config, ConfigError, config_from_dict, load_yaml, without_retired
from ..data import PreparedDataset, SliceDataset
from ..data.context import coarser_spacing
from ..models.batchnorm import reestimate_statistics
from ..models.pretrained import settle_initialisation
from ..runtime import DeviceError, resolve_device, use_bf16
from .distributed import DistContext
from .prototypes import init_prototypes
from .provenance import prototypes_fit, warmup_record
from .trainer import Trainer, TrainingError, training_changes


def _open(path_or_ds, what: str) -> PreparedDataset:
    return path_or_ds if isinstance(path_or_ds, PreparedDataset) else PreparedDataset(path_or_ds)


def run_config_diff(out: Path, cfg: Config, method: str) -> List[str]:
    """The keys (``method`` first) in which run folder ``out`` was made otherwise than ``cfg``
    and ``method`` say; empty for a new folder."""
    path = out / "config.yaml"
    if not path.exists():
        return []
    old = load_yaml(path) or {}
    if not isinstance(old, dict):
        raise TrainingError(f"{path}: not a run configuration (a YAML mapping); choose a new --out")
    old_method = old.pop("method", None)
    diff = training_changes(without_retired(old), cfg, methods.get_method(method))
    return (["method"] if old_method not in (None, method) else []) + diff


def check_run_config(out: Path, cfg: Config, method: str) -> None:
    """A run folder belongs to one method and configuration; refuse to mix."""
    diff = run_config_diff(out, cfg, method)
    path = out / "config.yaml"
    if diff:
        raise TrainingError(f"{path}: this run folder was made with a different configuration "
                            f"(differs in: {', '.join(diff)}); choose a new --out")


def _has_checkpoint(out: Path) -> bool:
    return (out / "config.yaml").is_file() and any(
        p.is_file() for p in [out / "final.pt", out / "prototypes.pt",
                              *out.glob("*/last.pt"), *out.glob("*/final.pt")])


def train(source, target, method: str, cfg: Config, out: Union[str, Path], *,
          stage: Optional[str] = None, init: Optional[Union[str, Path]] = None,
          progress: bool = True, log: Callable[[str], None] = print,
          resume: bool = False) -> Path:
    """Train ``method`` on prepared datasets; return the path of ``RUN/final.pt``.

    A run folder holding checkpoints of the same configuration is always continued;
    ``resume=True`` (``--resume``) also makes it an error when there is nothing to continue.

    ``stage`` runs one stage of a multi-stage method only; ``init`` is the checkpoint its
    later stages start from instead of training the stage they declare (``init_from``): e.g.
    one MPSCL warm-up shared by several MPSCL variants of one benchmark seed.
    """
    try:
        spec = methods.get_method(method)
    except KeyError as e:
        raise TrainingError(str(e.args[0])) from None
    if stage is not None and (len(spec.stages) < 2 or stage not in spec.stage_names()):
        multi = [m for m in methods.method_names() if len(methods.get_method(m).stages) > 1]
        raise TrainingError(f"--stage {stage!r}: " + (
            f"the stages of {method} are {', '.join(spec.stage_names())}" if len(spec.stages) > 1
            else f"{method} has one stage; methods with stages: {', '.join(multi)}"))
    # does the segmenter start from its initialisation (not from an earlier stage's checkpoint)?
    stage_names = [s.name for s in spec.stages]
    fresh = init is None and (stage is None or (stage in stage_names and spec.stage(stage).init_from is None))
    cfg = dataclasses.replace(cfg, model=settle_initialisation(cfg.model, fresh))  # before any data
    out = Path(out)
    try:
        device = resolve_device(cfg.train.device)
    except DeviceError as e:
        raise TrainingError(str(e)) from None
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    dist = DistContext.from_env(device)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.rank % torch.cuda.device_count())
    src, trg = _open(source, "source"), _open(target, "target")
    if not src.labelled:
        raise TrainingError(f"{src.root}: the source dataset has no labels")
    if list(src.classes) != list(trg.classes):
        raise TrainingError(f"class maps differ: source {src.classes} vs target {trg.classes}")
    if spec.needs_target_labels and not trg.labelled:
        raise TrainingError(f"{trg.root}: {method} needs target labels; this dataset has none")
    if src.size != cfg.data.size or trg.size != cfg.data.size:
        raise TrainingError(f"datasets were prepared at {src.size}/{trg.size} px but the config says "
                            f"data.size={cfg.data.size}; re-run prepare with --size {cfg.data.size} "
                            f"or --set data.size={src.size}")
    check_run_config(out, cfg, method)
    if resume and not _has_checkpoint(out):
        raise TrainingError(f"{out}: --resume: nothing to resume (no checkpoint in this run "
                            f"folder); leave out --resume to start a new run")
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", cfg.to_yaml() + f"method: {method}\n")
    context_mm = coarser_spacing([src, trg]) if cfg.data.context_spacing == "coarser" else None
    if cfg.data.context > 0 and cfg.data.context_spacing == "coarser" and context_mm is None:
        # e.g. the SIFA release (no spacing; its records carry their own neighbours)
        log(f"data.context_spacing=coarser: neither {src.root} nor {trg.root} records a slice "
            "spacing; the neighbours are the adjacent slices")
    src_ds = SliceDataset(src, labelled=True, augment=cfg.data.augment, context=cfg.data.context,
                          context_mm=context_mm)
    trg_ds = SliceDataset(trg, labelled=spec.needs_target_labels, augment=cfg.data.augment,
                          context=cfg.data.context, context_mm=context_mm)

    def run_stage(name, init_ckpt=None, prototypes=None) -> Path:
        sdir = out / name
        final = sdir / "final.pt"
        if final.is_file():
            log(f"[{name}] already finished: {final}")
            return final
        t = Trainer(cfg, name, src_ds, trg_ds, sdir, device=device, init=init_ckpt,
                    prototypes=prototypes, dist=dist, progress=progress, method=method)
        return t.fit()

    selected = [stage] if stage else spec.stage_names()
    # with --init, the stages that later ones start from are replaced by that checkpoint
    replaced = {s.init_from for s in spec.stages if s.init_from} if init else set()
    finals: Dict[str, Path] = {}
    final = proto_path = None
    for st in spec.stages:
        wants_protos = st.prototypes and methods.PROTOTYPES in selected
        if st.name in replaced or not (st.name in selected or wants_protos):
            continue
        start = protos = None
        if st.init_from:
            start_path = Path(init) if init else finals.get(st.init_from, out / st.init_from / "final.pt")
            if not start_path.is_file():
                raise TrainingError(f"{start_path}: no {st.init_from} checkpoint; run the "
                                    f"{st.init_from} stage first or pass --init")
            start = load_checkpoint(start_path)
            if init:
                check_init_model(start, start_path, cfg)
        if st.prototypes:
            proto_path = out / "prototypes.pt"
            protos = _prototypes(proto_path, start, start_path, src_ds, device, cfg, dist, log)
        if st.name in selected:
            final = finals[st.name] = run_stage(st.name, init_ckpt=start, prototypes=protos)
    if final is None:
        return proto_path
    if dist.is_main:
        if spec.adabn(cfg) and selected[-1] == spec.stages[-1].name:
            adabn_final(final, trg_ds, out / "final.pt", device, cfg.train.seed, log)
        else:
            with open(final, "rb") as src_f:
                atomic_write(out / "final.pt", lambda f: shutil.copyfileobj(src_f, f))
    dist.barrier()
    return out / "final.pt"


def adabn_final(stage_final: Path, trg_ds: SliceDataset, dest: Path, device, seed: int, log=print) -> None:
    """``dest`` = ``stage_final`` with BatchNorm statistics re-estimated on every slice of
    ``trg_ds`` (unaugmented, shuffled with ``seed``): ``train.adabn``. Deterministic, so
    a re-run writes the same file."""
    model, ckpt = load_model(stage_final, device)
    used = reestimate_statistics(model, trg_ds.images, generator=torch.Generator().manual_seed(seed))
    ckpt = {**ckpt, "model": model.state_dict(),
            "adabn": {"target_slices": used, "stage": stage_final.parent.name}}
    save_checkpoint(dest, ckpt)
    log(f"[adabn] BatchNorm statistics of {dest} re-estimated on {used} target slices")


INIT_MODEL_KEYS = ("backbone", "width", "multi_level", "input_mode", "batchnorm", "decoder")


def check_init_model(start: Dict, path: Path, cfg: Config) -> None:
    """Refuse an ``--init`` checkpoint whose segmenter was built or fed otherwise than the
    config says: a BatchNorm mode or input mapping that differs would load without error
    and silently change what the network computes."""
    from ..models import resolve_input_mode
    try:
        theirs = config_from_dict(start.get("config") or {}, where=f"{path} (config)").model
    except ConfigError as e:
        raise TrainingError(f"{path}: --init: {e}") from None
    ours = cfg.model  # settled by train(): its input_mode is resolved
    if theirs.input_mode == "auto":  # stored unresolved by an older version
        theirs.input_mode = resolve_input_mode(theirs)
    diff = [f"model.{k}={getattr(theirs, k)} (config: {getattr(ours, k)})"
            for k in INIT_MODEL_KEYS if getattr(theirs, k) != getattr(ours, k)]
    if diff:
        raise TrainingError(f"{path}: --init: this checkpoint's segmenter differs from the config's: "
                            f"{', '.join(diff)}; set those keys to match (--set) or start from another checkpoint")


def _prototypes(path: Path, start, start_path: Path, src_ds, device, cfg, dist, log) -> torch.Tensor:
    """The prototypes a stage starts from: ``RUN/prototypes.pt``, computed once per warm-up
    (recomputed, or the run refused, when the file came from another one: provenance.py)."""
    if prototypes_fit(path, start_path, start, log):
        return load_checkpoint(path)["prototypes"]
    protos = compute_prototypes(start, src_ds, device, cfg, log)
    protos = dist.broadcast(protos)  # several ranks: rank 0's, bit for bit
    if dist.is_main:
        save_checkpoint(path, {"prototypes": protos, "classes": src_ds.prepared.classes,
                               **warmup_record(start_path, start)})
    log(f"[prototypes] {tuple(protos.shape)} from {start_path} -> {path}")
    return protos


def compute_prototypes(warm_ckpt, src_ds, device, cfg: Config, log=print) -> torch.Tensor:
    """Per-class mean layer4 feature over the whole source training set (warm-up model)."""
    from ..models import build_segmenter
    model = build_segmenter(config_from_dict(warm_ckpt["config"]).model, len(warm_ckpt["classes"]))
    model.load_state_dict(warm_ckpt["model"])
    model.to(device)
    # the slices as stored: augmentation here would draw from the global RNG, so prototypes
    # would depend on what ran before in the process (and differ on resume)
    plain = copy.copy(src_ds)
    plain.augment = False
    loader = torch.utils.data.DataLoader(plain, batch_size=max(1, cfg.data.batch_size * 4), shuffle=False)
    try:
        return init_prototypes(model, loader, len(warm_ckpt["classes"]), device,
                               amp=use_bf16(cfg.train.amp, device))
    except ValueError as e:
        raise TrainingError(f"{src_ds.prepared.root}: cannot compute the MPSCL prototypes: {e}"
                            f" (use larger slices, --set data.size=..., or more cases)") from e
