"""Speed benchmark of the MPSCL training iteration (``mpscl bench-speed``).

Measures iterations per second and peak memory of one MPSCL iteration (B source + B
target slices at the preset's size, synthetic inputs) for three execution modes, built
from the same configuration and measured in the same process, alternating:

- ``fp32``: plain float32, contiguous memory format (``train.amp=off``,
  ``train.channels_last=false``);
- ``default``: the configuration as given (``train.amp=auto`` = bfloat16 autocast only
  where the hardware computes bf16 natively; channels_last on);
- ``bf16``: bfloat16 autocast forced (``train.amp=bf16``), channels_last as configured.

The measured code is the production code: a :class:`~mpscl.adapt.trainer.Trainer` of the
``mpscl`` stage running :meth:`~mpscl.adapt.trainer.Trainer.train_iteration`, as ``fit``
does (forward of both
domains, segmentation, adversarial and MPCL losses, prototype EMA, backward, both
optimiser steps, discriminator update). Only the data differ: an in-memory synthetic
dataset (:class:`SyntheticSlices`, no augmentation) stands in for a prepared one, random
prototypes for computed ones, frozen BatchNorm statistics are calibrated on one synthetic
batch in place of ImageNet weights (see :func:`_calibrate_frozen_bn`), and the learning
rates are scaled by ``LR_SCALE`` so that a random init stays finite (same cost).

Peak memory (``peak_mem_mb``) is the same quantity on every device: the tensor bytes the
trainer holds between iterations (weights, buffers, gradients, optimiser moments,
prototypes) plus the highest rise of allocated tensor memory during one iteration: on
CUDA ``max_memory_allocated`` minus the allocation at the start of the iteration; on CPU
the running sum of the allocations and frees the torch profiler records (the same
allocator-level count; process RSS is reported separately, as ``process_peak_rss_mb``).
"""
from __future__ import annotations

import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ..config import Config
from ..data.context import with_context

MODES = ("fp32", "default", "bf16")
LR_SCALE = 1e-3  # see build_trainer
# background + MM-WHS structures, as the real runs
_CLASSES = ["background", "MYO", "LAC", "LVC", "AA"]
_LABEL_VALUES = [0, 205, 420, 500, 820]


class _Prepared:
    classes, label_values, axis, plane = _CLASSES, _LABEL_VALUES, 2, None
    case_ids: list = []  # no cases, so no slice spacing: neighbours are the adjacent slices


class SyntheticSlices:
    """In-memory stand-in of :class:`~mpscl.data.SliceDataset` for the benchmark.

    ``n`` slices (1,N,N) in [-1, 1]; labels are concentric rings, one class each, so every
    class is present at feature resolution; ``labelled=False`` yields -1 labels. With
    ``context`` k each slice comes with its k neighbours either side (the n slices taken as
    one volume), as the preset's network reads them.
    """

    prepared = _Prepared()

    def __init__(self, n: int, size: int, labelled: bool, seed: int = 0, context: int = 0):
        g = torch.Generator().manual_seed(seed)
        k = len(_CLASSES)
        ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        labels, images = [], []
        for _ in range(n):
            cy, cx = (torch.rand(2, generator=g) * 0.2 + 0.4) * size
            r = ((ys - cy) ** 2 + (xs - cx) ** 2).sqrt() / (0.5 * size)
            lab = (k - 1 - (r * (k - 1)).floor().clamp(0, k - 1)).long()  # centre = last class
            img = (lab.float() / (k - 1)) * 1.6 - 0.8 + 0.1 * torch.randn(size, size, generator=g)
            labels.append(lab)
            images.append(img.clamp(-1, 1)[None])
        self.context, self.context_mm = context, None
        self.images = with_context(torch.cat(images), context)  # (n, 2 * context + 1, N, N)
        self.labels = torch.stack(labels) if labelled else torch.full_like(torch.stack(labels), -1)

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, indices: Sequence[int], generator: Optional[torch.Generator] = None):
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return self.images[idx].clone(), self.labels[idx].clone()


def mode_config(cfg: Config, mode: str) -> Config:
    """The configuration of one benchmark mode (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (available: {', '.join(MODES)})")
    c = copy.deepcopy(cfg)
    if mode == "fp32":
        c.train.amp, c.train.channels_last = "off", False
    elif mode == "bf16":
        c.train.amp = "bf16"
    return c


def build_trainer(cfg: Config, device: torch.device, out_dir: Path, lr_scale: float = LR_SCALE):
    """An ``mpscl``-stage Trainer on synthetic data (prototypes random, weights from the seed)."""
    from ..adapt.trainer import Trainer
    from ..models.resnet import ARCHS
    kind, _ = ARCHS[cfg.model.backbone]
    feat = cfg.model.width * 8 * (1 if kind == "basic" else 4)
    n = max(2 * cfg.data.batch_size, 8)
    src = SyntheticSlices(n, cfg.data.size, labelled=True, seed=1, context=cfg.data.context)
    trg = SyntheticSlices(n, cfg.data.size, labelled=False, seed=2, context=cfg.data.context)
    protos = torch.randn(len(_CLASSES), feat, generator=torch.Generator().manual_seed(3))
    cfg = copy.deepcopy(cfg)
    # from a random init on synthetic data the paper's learning rates diverge within a few
    # iterations (they expect ImageNet weights); smaller steps keep every number finite and
    # cost exactly the same
    cfg.optim.lr, cfg.optim.lr_d = cfg.optim.lr * lr_scale, cfg.optim.lr_d * lr_scale
    t = Trainer(cfg, "mpscl", src, trg, out_dir, device=device, prototypes=protos, progress=False)
    _calibrate_frozen_bn(t)
    return t


def _calibrate_frozen_bn(t) -> None:
    """Set the statistics of frozen BatchNorm layers to those of one synthetic batch.

    The paper presets freeze BatchNorm and expect ImageNet weights; from a random init the
    frozen (identity) BatchNorm lets activations of a ResNet-101 grow until the loss is
    NaN within two iterations. Calibrated statistics stand in for the pretrained ones, so
    the benchmark runs finite numbers (NaN/Inf arithmetic may take other code paths); the
    cost of the iteration does not depend on the weights' values.
    """
    from ..models import FrozenBatchNorm2d
    frozen = [m for m in t.model.modules() if isinstance(m, FrozenBatchNorm2d)]
    if not frozen:
        return
    saved = [m.momentum for m in frozen]
    for m in frozen:
        m.training, m.momentum = True, 1.0  # direct flag: FrozenBatchNorm2d.train() refuses
    try:
        x, _ = t.source.batch(list(range(min(len(t.source), t.cfg.data.batch_size))))
        with torch.no_grad():
            t.model(x.to(t.device).contiguous(memory_format=t.memory_format))
    finally:
        for m, mom in zip(frozen, saved):
            m.training, m.momentum = False, mom


def _iterate(t, n: int) -> None:
    for _ in range(n):
        t.train_iteration()  # past the stage's budget the schedule holds the LR at 0: same cost
    if t.device.type == "cuda":
        torch.cuda.synchronize(t.device)


def _state_bytes(t) -> int:
    """Bytes of the tensors the trainer keeps between iterations (each storage once)."""
    seen, total = set(), 0

    def add(x):
        nonlocal total
        if isinstance(x, torch.Tensor):
            key = (x.device, x.untyped_storage().data_ptr())
            if key not in seen:
                seen.add(key)
                total += x.untyped_storage().nbytes()

    for m in t.networks().values():
        for p in m.parameters():
            add(p)
            add(p.grad)
        for b in m.buffers():
            add(b)
    for opt in t.live_optimisers().values():
        for st in opt.state.values():
            for v in st.values():
                add(v)
    add(t.prototypes)
    return total


def _cpu_alloc_peak(fn: Callable[[], None]) -> Optional[int]:
    """Highest rise of live torch CPU tensor bytes while ``fn`` runs (torch profiler)."""
    try:
        from torch.autograd.profiler import profile
        with profile(profile_memory=True) as prof:
            fn()
        events = [(e.start_ns(), e.nbytes()) for e in prof.kineto_results.events()
                  if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")]
    except Exception:  # profiler API differences: report no number rather than a wrong one
        return None
    live = peak = 0
    for _, nbytes in sorted(events):
        live += nbytes
        peak = max(peak, live)
    return peak


def measure_peak_memory(t, iters: int = 1) -> Optional[float]:
    """``peak_mem_mb`` of ``iters`` iterations of trainer ``t`` (see the module docstring)."""
    state = _state_bytes(t)
    if t.device.type == "cuda":
        torch.cuda.synchronize(t.device)
        base = torch.cuda.memory_allocated(t.device)
        torch.cuda.reset_peak_memory_stats(t.device)
        _iterate(t, iters)
        rise = torch.cuda.max_memory_allocated(t.device) - base
    else:
        rise = _cpu_alloc_peak(lambda: _iterate(t, iters))
        if rise is None:
            return None
    return (state + max(0, rise)) / 2**20


def _vm_hwm_mb() -> Optional[float]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def bench_speed(cfg: Config, preset: str, *, iters: int = 10, rounds: int = 3, warmup: int = 2,
                modes: Sequence[str] = MODES, log: Callable[[str], None] = print) -> Dict:
    """Run the benchmark; return the result dict (what ``bench-speed`` writes as JSON).

    Round 0 runs ``warmup`` untimed iterations per mode; the last of them is the one whose
    memory is measured (with ``warmup`` 1 that is the first iteration, whose peak is set by
    the optimisers allocating their state rather than by the activations: use >= 2). Then
    every round runs ``iters`` timed iterations of each mode in turn (fp32, default, bf16,
    fp32, ...). ``it_per_s`` is the median over rounds.
    """
    from ..runtime import machine_info, resolve_device, use_bf16
    if iters < 1 or rounds < 1 or warmup < 1:
        raise ValueError("iters, rounds and warmup must be >= 1")
    modes = list(modes)
    for m in modes:
        mode_config(cfg, m)  # validates the name
    device = resolve_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    res: Dict = {"preset": preset, "machine": machine_info(device),
                 "settings": {"iters_per_round": iters, "rounds": rounds, "warmup": warmup,
                              "batch": f"{cfg.data.batch_size}+{cfg.data.batch_size} slices",
                              "size": cfg.data.size, "backbone": cfg.model.backbone,
                              "width": cfg.model.width, "discriminator": cfg.model.discriminator,
                              "inputs": "synthetic, in memory (no augmentation)"}}
    trainers, speeds, mem = {}, {m: [] for m in modes}, {}
    with tempfile.TemporaryDirectory(prefix="mpscl-bench-") as tmp:
        for r in range(rounds):
            for m in modes:
                if m not in trainers:
                    mc = mode_config(cfg, m)
                    trainers[m] = build_trainer(mc, device, Path(tmp) / m)
                    t = trainers[m]
                    if warmup > 1:
                        _iterate(t, warmup - 1)
                    mem[m] = measure_peak_memory(t, 1)
                t = trainers[m]
                start = time.perf_counter()
                _iterate(t, iters)
                sec = time.perf_counter() - start
                speeds[m].append(iters / sec)
                log(f"round {r + 1}/{rounds}  {m:<7}  {iters / sec:8.3f} it/s  ({sec / iters:.3f} s/it)")
    for m in modes:
        mc = mode_config(cfg, m)
        ips = statistics.median(speeds[m])
        res[m] = {"it_per_s": round(ips, 4), "sec_per_it": round(1.0 / ips, 4),
                  "peak_mem_mb": None if mem[m] is None else round(mem[m], 1),
                  "rounds_it_per_s": [round(v, 4) for v in speeds[m]],
                  "peak_mem_iteration": warmup,
                  "amp_bf16": use_bf16(mc.train.amp, device), "channels_last": mc.train.channels_last,
                  "config": {"train.amp": mc.train.amp, "train.channels_last": mc.train.channels_last}}
    if "fp32" in res and "default" in res:
        res["speedup"] = round(res["default"]["it_per_s"] / res["fp32"]["it_per_s"], 3)
    if "fp32" in res and "bf16" in res:
        res["bf16_speedup"] = round(res["bf16"]["it_per_s"] / res["fp32"]["it_per_s"], 3)
    if device.type == "cpu":
        res["process_peak_rss_mb"] = _vm_hwm_mb()
    try:
        res["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    res["peak_mem_definition"] = (
        "tensor bytes held between iterations (weights, buffers, gradients, optimiser state, "
        "prototypes) + highest rise of allocated tensor memory during one iteration "
        + ("(CUDA max_memory_allocated)" if device.type == "cuda" else "(torch profiler, CPU allocator)"))
    return res


def write_result(res: Dict, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    return out


def summary_lines(res: Dict) -> List[str]:
    m = res["machine"]
    lines = [f"preset {res['preset']}  on {m.get('device_name')}  (torch {m['torch']}, "
             f"{m['torch_threads']} threads, native bf16: {m['native_bf16']})",
             f"{'mode':<8} {'it/s':>9} {'s/it':>9} {'peak MB':>9}  amp  channels_last"]
    for mode in MODES:
        if mode in res:
            r = res[mode]
            mem = "n/a" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.0f}"
            lines.append(f"{mode:<8} {r['it_per_s']:>9.3f} {r['sec_per_it']:>9.3f} {mem:>9}  "
                         f"{'bf16' if r['amp_bf16'] else 'off ':<4} {r['channels_last']}")
    if "speedup" in res:
        lines.append(f"speedup default/fp32: {res['speedup']:.3f}x")
    if "bf16_speedup" in res:
        lines.append(f"bf16 (forced)/fp32:   {res['bf16_speedup']:.3f}x")
    return lines
