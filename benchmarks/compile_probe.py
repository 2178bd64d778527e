"""Does ``torch.compile`` speed up the CPU recipe's MPSCL iteration? (a probe; decides nothing alone)

Builds two trainers of the ``mpscl`` stage from one preset on the synthetic slices of
``mpscl bench-speed`` (same seed, same configuration): one eager, one whose networks are
compiled in place (``nn.Module.compile``, inductor). Times the first iterations of the
compiled one (the compilation), then alternates rounds of ``--iters`` iterations between
the two in the same process, so their ratio is measured under the same conditions.

    python benchmarks/compile_probe.py --preset cpu --iters 20 --rounds 3
"""
from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mpscl.bench.speed import build_trainer
from mpscl.config import load_preset


def _rate(t, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        t.train_iteration()
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_preset(args.preset)
    trainers = {mode: build_trainer(cfg, torch.device("cpu"), Path(tempfile.mkdtemp()))
                for mode in ("eager", "compiled")}
    for net in trainers["compiled"].networks().values():
        net.compile()
    for mode, t in trainers.items():
        start = time.perf_counter()
        t.train_iteration()
        t.train_iteration()
        print(f"{mode:9s} first two iterations {time.perf_counter() - start:6.1f} s", flush=True)
    rates = {mode: [] for mode in trainers}
    for r in range(args.rounds):
        for mode, t in trainers.items():
            rates[mode].append(_rate(t, args.iters))
            print(f"round {r + 1}/{args.rounds}  {mode:9s} {rates[mode][-1]:.3f} it/s", flush=True)
    med = {mode: statistics.median(v) for mode, v in rates.items()}
    print(f"preset {args.preset} on {platform.processor() or platform.machine()} "
          f"(torch {torch.__version__}, {args.threads} threads): eager {med['eager']:.3f} it/s, "
          f"compiled {med['compiled']:.3f} it/s, compiled/eager {med['compiled'] / med['eager']:.2f}x")


if __name__ == "__main__":
    main()
