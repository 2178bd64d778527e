"""benchmarks/gpu_check.sh runs end to end in its tiny CPU mode and reports failures by its exit status."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHON=sys.executable)
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=600, **kw)


@pytest.mark.slow
def test_gpu_check_tiny_cpu_mode(tmp_path):
    p = _run("--device", "cpu", "--iters", "2", "--size", "64", "--width", "8", "--modes", "fp32",
             "--set", "data.batch_size=2", "--set", "train.threads=1", "--out", str(tmp_path / "res"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "| mode | warm-up it/s | MPSCL it/s | peak GiB | losses finite |" in p.stdout
    assert "| fp32 |" in p.stdout and "random init (no --weights)" in p.stdout
    res = json.loads((tmp_path / "res" / "result.json").read_text())
    (row,) = res["rows"]
    assert row["finite"] and row["error"] is None and row["iters"] == [2, 2]
    assert row["warmup_it_s"] > 0 and row["mpscl_it_s"] > 0 and row["peak_gib"] > 0
    assert set(row["first_mpscl_losses"]) >= {"seg_src", "mpcl_src"}
    assert (tmp_path / "res" / "result.md").read_text().startswith("GPU check: paper-mr2ct")


@pytest.mark.slow
def test_gpu_check_refuses_what_it_cannot_run(tmp_path):
    import torch
    p = _run("--modes", "fp16", "--device", "cpu", "--out", str(tmp_path))
    assert p.returncode == 2 and "unknown mode" in p.stderr
    if not torch.cuda.is_available():
        p = _run("--device", "cuda", "--out", str(tmp_path))
        assert p.returncode == 2 and "CUDA is not available" in p.stderr
    assert not (tmp_path / "result.json").exists()
