"""Helpers of the reliability tests: the tiny train command, subprocess environment."""
from __future__ import annotations

import os
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
SIZE = 48  # the smallest size at which every phantom class survives at feature resolution
PY = sys.executable


def train_argv(sets, out: Path, *extra: str, method: str = "mpscl") -> list:
    """``mpscl train`` arguments of the tiny reliability runs (CPU preset at width 8, 1 thread)."""
    argv = ["train", "--source", str(sets["mr"]), "--target", str(sets["ct"]),
            "--method", method, "--preset", "cpu", "--device", "cpu", "--no-progress",
            "--out", str(out), "--checkpoint-every", "2"]
    for kv in (f"data.size={SIZE}", "data.batch_size=2", "train.iters=8", "train.warmup_iters=6",
               "train.log_every=1", "train.threads=1", "model.width=8", "model.disc_width=16"):
        argv += ["--set", kv]
    return argv + list(extra)


def subprocess_env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env
