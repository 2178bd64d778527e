"""GPU check of the paper preset: ``bash benchmarks/gpu_check.sh`` (or ``python benchmarks/gpu_check.py``).

Trains ``--preset paper-mr2ct`` (DeepLabv2-ResNet-101, live BatchNorm, the authors'
schedule) on the built-in phantom at 256x256, MPSCL end to end (AdvEnt warm-up,
prototypes, MPSCL stage), once in fp32 and once under bf16 autocast, and prints a table:
iterations/s of each stage, peak memory, whether every logged loss stayed finite, and the
first iteration's losses of both precisions side by side. Exits 1 when a run fails or a
loss is not finite, 2 when the device is not there.

Without ``--weights`` the network starts from random weights (``model.allow_random_init``,
said in the table): speed and memory do not depend on the weights' values. With
``--weights PATH`` (DeepLab ``Scale.`` or torchvision ResNet-101) they are loaded as a user
would. A tiny CPU mode for tests: ``--device cpu --iters 3 --size 64 --width 8``
(``--modes fp32`` there: CPUs without native bf16 emulate it, many times slower).
Results: ``--out`` (default ``benchmarks/results/gpu_check``) gets ``result.json`` and
``result.md``.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MODES = {"fp32": "off", "bf16": "bf16"}  # column name -> train.amp


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--iters", type=int, default=150, help="iterations of each stage (default: %(default)s)")
    p.add_argument("--size", type=int, default=256, help="slice size (default: %(default)s)")
    p.add_argument("--width", type=int, default=64, help="ResNet stem width (default: %(default)s, the paper's)")
    p.add_argument("--weights", help="ImageNet weights (DeepLab 'Scale.' or torchvision ResNet-101)")
    p.add_argument("--modes", default="fp32,bf16", help="comma-separated: fp32, bf16 (default: %(default)s)")
    p.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE",
                   help="any other config override, e.g. --set data.batch_size=2 (repeatable)")
    p.add_argument("--work", help="work folder for phantom and runs (default: a temporary one)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check"))
    return p.parse_args(argv)


def prepare_phantom(work: Path, size: int) -> dict:
    from mpscl.data import prepare_dataset, write_phantom
    write_phantom(work / "nifti", cases=3, seed=0, size=(96, 96, 24), log=None)
    out = {}
    for dom in ("mr", "ct"):
        out[dom] = work / dom
        prepare_dataset(str(work / "nifti" / dom / "case{case}_image.nii.gz"),
                        str(work / "nifti" / dom / "case{case}_label.nii.gz"), "mmwhs", out[dom],
                        size=size, log=lambda *a, **k: None)
    return out


def _records(run: Path, stage: str) -> list:
    path = run / stage / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _its(records: list) -> float:
    """Iterations/s: median over the logged iterations, the first two (start-up) left out."""
    times = [r["sec_per_iter"] for r in records[2:] or records]
    return 1.0 / statistics.median(times) if times else float("nan")


def _finite(records: list) -> bool:
    # the log writes a non-finite float as null
    return bool(records) and all(v is not None and (not isinstance(v, float) or math.isfinite(v))
                                 for r in records for v in r.values())


def run_mode(name: str, data: dict, args, work: Path) -> dict:
    from mpscl.adapt.pipeline import train
    from mpscl.config import build_config
    device = torch.device(args.device)
    sets = [f"data.size={args.size}", f"model.width={args.width}", f"train.iters={args.iters}",
            f"train.warmup_iters={args.iters}", f"train.device={args.device}",
            f"train.amp={MODES[name]}", "train.checkpoint_every=0", "train.log_every=1"]
    sets.append(f"model.imagenet_init={args.weights}" if args.weights else "model.allow_random_init=true")
    sets += args.sets
    cfg = build_config("paper-mr2ct", sets=sets)
    run = work / name
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0, error = time.perf_counter(), None
    try:
        train(data["mr"], data["ct"], "mpscl", cfg, run, progress=False, log=lambda s: None)
    except Exception as e:  # reported in the table, and the exit status
        error = f"{type(e).__name__}: {e}"
    wall = time.perf_counter() - t0
    if device.type == "cuda":
        peak, what = torch.cuda.max_memory_allocated(device) / 2**30, "GPU allocated"
    else:
        peak, what = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process RSS (all modes so far)"
    warm, mp = _records(run, "warmup"), _records(run, "mpscl")
    first = {k: v for k, v in (mp[0] if mp else {}).items() if k in ("seg_src", "adv", "mpcl_src", "mpcl_trg")}
    return {"mode": name, "error": error, "wall_s": round(wall, 1),
            "warmup_it_s": _its(warm), "mpscl_it_s": _its(mp), "peak_gib": peak, "peak_of": what,
            "iters": [len(warm), len(mp)], "finite": _finite(warm) and _finite(mp) and error is None,
            "first_mpscl_losses": first, "last_mpscl_losses": {k: mp[-1].get(k) for k in first} if mp else {}}


def table(rows: list, header: dict) -> str:
    lines = [f"GPU check: {header['what']}", f"device {header['device']}; torch {header['torch']}; "
             f"{header['init']}; {header['iters']} iterations per stage at {header['size']}x{header['size']}", "",
             "| mode | warm-up it/s | MPSCL it/s | peak GiB | losses finite | MPSCL iter 1: seg_src, mpcl_src, mpcl_trg | wall s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r["first_mpscl_losses"]
        losses = ", ".join(f"{f[k]:.4g}" if isinstance(f.get(k), float) else "-" for k in ("seg_src", "mpcl_src", "mpcl_trg"))
        lines.append(f"| {r['mode']} | {r['warmup_it_s']:.2f} | {r['mpscl_it_s']:.2f} | {r['peak_gib']:.2f} | "
                     f"{'yes' if r['finite'] else 'NO'} | {losses} | {r['wall_s']} |")
    lines.append(f"\npeak memory: {rows[0]['peak_of'] if rows else ''}")
    for r in rows:
        if r["error"]:
            lines.append(f"{r['mode']} FAILED: {r['error']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: --device {args.device}: CUDA is not available here (use --device cpu "
              f"--iters 3 --size 64 --width 8 for the tiny CPU mode)", file=sys.stderr)
        return 2
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        print(f"gpu_check: unknown mode(s) {bad or modes} (choose from {', '.join(MODES)})", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    header = {"what": "paper-mr2ct (ResNet-101, live BatchNorm, authors' schedule), MPSCL on the phantom",
              "device": f"{args.device} ({name})", "torch": torch.__version__,
              "init": f"weights {args.weights}" if args.weights else "random init (no --weights)",
              "iters": args.iters, "size": args.size, "width": args.width, "sets": args.sets}
    with tempfile.TemporaryDirectory(prefix="mpscl_gpu_check_") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        data = prepare_phantom(work, args.size)
        rows = [run_mode(m, data, args, work) for m in modes]
    text = table(rows, header)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2) + "\n")
    (out / "result.md").write_text(text + "\n")
    print(f"-> {out / 'result.md'}")
    return 0 if all(r["finite"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
