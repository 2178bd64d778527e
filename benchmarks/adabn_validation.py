"""AdaBN on finished validation runs (issue 14): ``train.adabn`` applied to the final stage of
runs made by ``appearance_validation.py``, scored on the same validation cases.

AdaBN is a step after training (``adapt/pipeline.py:adabn_final``), so it needs no new
training: each run's last stage checkpoint gets BatchNorm statistics re-estimated on the
target training slices exactly as ``train.adabn`` does, and is scored beside the run.

    python benchmarks/adabn_validation.py --suite mscmrseg19 --runs mpscl-gin-longwarm --seeds 1,2 \
        --work bench_work --results benchmarks/results/appearance-validation

Results: RESULTS/<suite>/<run>+adabn/seed<k>/{metrics.json,run.json}; the table of
``appearance_validation.py`` lists them beside the runs.

``--per-volume``: instead, each validation volume is segmented with BatchNorm statistics
re-estimated on its own slices only (test-time statistics, one volume at a time, batches of
16 shuffled with the run's seed); results in RESULTS/<suite>/<run>+volbn/.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from mpscl import methods
from mpscl import checkpoint as checkpoint_io
from mpscl.adapt.pipeline import adabn_final
from mpscl.bench.compare import _git_commit
from mpscl.bench.suites import BUILTIN, SHARED, prepare_builtin
from mpscl.data import SliceDataset, resize_slices
from mpscl.evaluate import evaluate_checkpoint
from mpscl.models.batchnorm import reestimate_statistics
from mpscl.runtime import machine_line

from appearance_validation import VAL_CASES, table


def per_volume_statistics(stage: Path, data_dir: Path, out: Path, cases: str, seed: int) -> dict:
    """Score ``stage`` on ``cases``, each volume with BatchNorm statistics of its own slices."""
    size = int(checkpoint_io.load_checkpoint(stage, map_location="cpu")["config"]["data"]["size"])

    def own_statistics(trained, image):
        model = copy.deepcopy(trained)
        x = torch.from_numpy(resize_slices(np.asarray(image, dtype=np.float32), size, "image"))[:, None]
        reestimate_statistics(model, x, batch_size=16, generator=torch.Generator().manual_seed(seed))
        return model

    return evaluate_checkpoint(stage, data_dir, out, cases=cases, device="cpu", progress=False,
                               per_case=own_statistics)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=sorted(VAL_CASES), default="mscmrseg19")
    ap.add_argument("--runs", required=True, help="comma-separated runs of appearance_validation.py")
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--work", type=Path, default=Path("bench_work"))
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/appearance-validation"))
    ap.add_argument("--per-volume", action="store_true",
                    help="statistics of each validation volume's own slices instead (RUN+volbn)")
    a = ap.parse_args(argv)
    tag = "volbn" if a.per_volume else "adabn"
    for name in [r for r in a.runs.split(",") if r]:
        for seed in [int(s) for s in a.seeds.split(",")]:
            run = a.work / "appearance-runs" / a.suite / name / f"seed{seed}"
            cfg = yaml.safe_load((run / "config.yaml").read_text())
            method = cfg.pop("method")
            stage = run / methods.get_method(method).stages[-1].name / "final.pt"
            if not stage.is_file():
                sys.exit(f"{stage}: no finished run; train it with appearance_validation.py first")
            res = a.results / a.suite / f"{name}+{tag}" / f"seed{seed}"
            dirs = prepare_builtin(BUILTIN[a.suite], a.work, int(cfg["data"]["size"]), SHARED)
            res.mkdir(parents=True, exist_ok=True)
            if a.per_volume:
                m = per_volume_statistics(stage, dirs["target"], res, VAL_CASES[a.suite], int(cfg["train"]["seed"]))
            else:
                trg = SliceDataset(dirs["target"], labelled=False)
                adabn_final(stage, trg, res / "final.pt", "cpu", int(cfg["train"]["seed"]), log=lambda *_: None)
                m = evaluate_checkpoint(res / "final.pt", dirs["target"], res, cases=VAL_CASES[a.suite],
                                        progress=False)
                (res / "final.pt").unlink()  # weights are not results
            before = json.loads((a.results / a.suite / name / f"seed{seed}" / "run.json").read_text())["dice_mean"]
            info = {"suite": a.suite, "run": f"{name}+{tag}", "from": str(stage), "seed": seed,
                    "val_cases": VAL_CASES[a.suite], "git_commit": _git_commit(), "machine": machine_line(),
                    "dice_mean": m["summary"]["dice_mean"], "dice_mean_without": before}
            (res / "run.json").write_text(json.dumps(info, indent=2) + "\n")
            how = "per-volume statistics" if a.per_volume else "AdaBN"
            print(f"[done] {a.suite} {name} seed {seed}: val Dice {before:.2f} -> {info['dice_mean']:.2f} with {how}",
                  flush=True)
    print(table(a.results, a.suite))
    return 0


if __name__ == "__main__":
    sys.exit(main())
