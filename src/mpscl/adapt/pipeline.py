"""Methods as pipelines of stages, each checkpointed in its own folder of the run.

```
RUN/config.yaml          effective configuration (refused if a different one is there)
RUN/<stage>/last.pt      resumable state, written every train.checkpoint_every iterations
RUN/<stage>/final.pt     the stage's result; a finished stage is skipped on re-run
RUN/<stage>/log.jsonl    losses, learning rate, selected-pixel share; tb/ for TensorBoard
RUN/prototypes.pt        MPSCL: prototypes computed from the warm-up model (source train set)
RUN/final.pt             the method's final model: what ``evaluate`` and ``predict`` take
```
``mpscl``: warmup (AdvEnt) -> prototypes -> mpscl. Every other method is one stage.
"""
from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Callable, List, Optional, Union

import torch

from ..config import Config, config_from_dict, diff_configs, load_yaml, METHODS
from ..data import PreparedDataset, SliceDataset
from .checkpoint import atomic_write, atomic_write_text, load_checkpoint, save_checkpoint
from .distributed import DistContext
from .prototypes import init_prototypes
from .trainer import RUNTIME_KEYS, Trainer, TrainingError, resolve_device, use_bf16

MPSCL_STAGES = ("warmup", "prototypes", "mpscl")


def _open(path_or_ds, what: str) -> PreparedDataset:
    return path_or_ds if isinstance(path_or_ds, PreparedDataset) else PreparedDataset(path_or_ds)


def _check_run_config(out: Path, cfg: Config, method: str) -> None:
    """A run folder belongs to one method and configuration; refuse to mix."""
    path = out / "config.yaml"
    if not path.exists():
        return
    old = load_yaml(path) or {}
    if not isinstance(old, dict):
        raise TrainingError(f"{path}: not a run configuration (a YAML mapping); choose a new --out")
    old_method = old.pop("method", None)
    for section, defaults in Config().to_dict().items():  # sections added since: their defaults
        old.setdefault(section, defaults)
    diff = [k for k in diff_configs(old, cfg.to_dict()) if k not in RUNTIME_KEYS]
    if old_method not in (None, method):
        diff.insert(0, "method")
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

    ``stage`` runs one stage of ``mpscl`` only; ``init`` is a warm-up checkpoint to start
    the MPSCL stages from (e.g. shared by several MPSCL variants of one benchmark seed).
    """
    if method not in METHODS:
        raise TrainingError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    if stage is not None and (method != "mpscl" or stage not in MPSCL_STAGES):
        raise TrainingError(f"--stage {stage!r}: only mpscl has stages ({', '.join(MPSCL_STAGES)})")
    out = Path(out)
    device = resolve_device(cfg.train.device)
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
    if method == "oracle" and not trg.labelled:
        raise TrainingError(f"{trg.root}: the oracle needs target labels; this dataset has none")
    if src.size != cfg.data.size or trg.size != cfg.data.size:
        raise TrainingError(f"datasets were prepared at {src.size}/{trg.size} px but the config says "
                            f"data.size={cfg.data.size}; re-run prepare with --size {cfg.data.size} "
                            f"or --set data.size={src.size}")
    _check_run_config(out, cfg, method)
    if resume and not _has_checkpoint(out):
        raise TrainingError(f"{out}: --resume: nothing to resume (no checkpoint in this run "
                            f"folder); leave out --resume to start a new run")
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", cfg.to_yaml() + f"method: {method}\n")
    src_ds = SliceDataset(src, labelled=True, augment=cfg.data.augment)
    trg_ds = SliceDataset(trg, labelled=(method == "oracle"), augment=cfg.data.augment)

    def run_stage(name, init_ckpt=None, prototypes=None) -> Path:
        sdir = out / name
        final = sdir / "final.pt"
        if final.is_file():
            log(f"[{name}] already finished: {final}")
            return final
        t = Trainer(cfg, name, src_ds, trg_ds, sdir, device=device, init=init_ckpt,
                    prototypes=prototypes, dist=dist, progress=progress, method=method)
        return t.fit()

    if method != "mpscl":
        final = run_stage(method)
    else:
        stages: List[str] = [stage] if stage else list(MPSCL_STAGES)
        warm = Path(init) if init else out / "warmup" / "final.pt"
        final = None
        if "warmup" in stages and not init:
            warm = run_stage("warmup")
            final = warm
        if "prototypes" in stages or "mpscl" in stages:
            proto_path = out / "prototypes.pt"
            if not warm.is_file():
                raise TrainingError(f"{warm}: no warm-up checkpoint; run the warmup stage first or pass --init")
            warm_ckpt = load_checkpoint(warm)
            if proto_path.is_file():
                protos = load_checkpoint(proto_path)["prototypes"]
            else:
                protos = compute_prototypes(warm_ckpt, src_ds, device, cfg, log)
                protos = dist.broadcast(protos)  # several ranks: rank 0's, bit for bit
                if dist.is_main:
                    save_checkpoint(proto_path, {"prototypes": protos, "classes": src.classes,
                                                 "from": str(warm)})
                log(f"[prototypes] {tuple(protos.shape)} from {warm} -> {proto_path}")
            if "mpscl" in stages:
                final = run_stage("mpscl", init_ckpt=warm_ckpt, prototypes=protos)
        if final is None:
            return proto_path
    if dist.is_main:
        with open(final, "rb") as src_f:
            atomic_write(out / "final.pt", lambda f: shutil.copyfileobj(src_f, f))
    dist.barrier()
    return out / "final.pt"


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
