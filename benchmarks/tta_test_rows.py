"""The benchmark's GIN rows scored again on the TEST cases with test-time flips (``--tta``),
nothing trained: does the ranking of the rows hold when every one of them is scored that way?

Each run's ``final.pt`` is looked up in the ``--work`` folders in the order given (the first
``runs/<suite>/<row>/seed<k>/final.pt`` found). Before its flips are scored, the run is
scored plainly and must reproduce the committed ``RESULTS/<folder>/<row>/seed<k>/run.json``
``dice_mean``, so a checkpoint that is not the committed row's is refused. Writes
RESULTS/<folder>/tta-flips/<row>/seed<k>/ (metrics.*, run.json) and prints the table:

    python benchmarks/tta_test_rows.py --suite mscmrseg19 --work bench_work --seeds 1,2,3
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from mpscl.bench.compare import _git_commit
from mpscl.bench.suites import BUILTIN, SHARED, prepare_builtin
from mpscl.checkpoint import load_checkpoint
from mpscl.evaluate import evaluate_checkpoint
from mpscl.runtime import machine_line

ROWS = ("source-only", "advent", "source-only-adabn", "mpscl")


def find_run(works, suite: str, row: str, seed: int) -> Path:
    for w in works:
        f = Path(w) / "runs" / suite / row / f"seed{seed}" / "final.pt"
        if f.is_file():
            return f
    raise SystemExit(f"no final.pt of {suite} {row} seed {seed} in {', '.join(map(str, works))}")


def score(suite: str, row: str, seed: int, works, results: Path) -> float:
    s = BUILTIN[suite]
    committed = json.loads((results / s.results_name / row / f"seed{seed}" / "run.json").read_text())
    final = find_run(works, suite, row, seed)
    dirs = prepare_builtin(s, Path(works[0]), load_checkpoint(final)["config"]["data"]["size"], SHARED)
    with tempfile.TemporaryDirectory() as tmp:
        plain = evaluate_checkpoint(final, dirs["target"], tmp, cases=s.test_cases, progress=False)
    if abs(plain["summary"]["dice_mean"] - committed["dice_mean"]) > 1e-6:
        raise SystemExit(f"{final}: scores {plain['summary']['dice_mean']:.4f} plainly, the committed "
                         f"row {committed['dice_mean']:.4f}: not that row's checkpoint")
    res = results / s.results_name / "tta-flips" / row / f"seed{seed}"
    res.mkdir(parents=True, exist_ok=True)
    m = evaluate_checkpoint(final, dirs["target"], res, cases=s.test_cases, progress=False, tta=True)
    info = {"suite": suite, "run": row, "seed": seed, "scored": "test-time flips", "checkpoint": str(final),
            "test_cases": s.test_cases, "dice_mean_plain": committed["dice_mean"],
            "dice_mean": m["summary"]["dice_mean"], "git_commit": _git_commit(), "machine": machine_line()}
    (res / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"[done] {suite} {row} seed {seed}: {committed['dice_mean']:.2f} -> {info['dice_mean']:.2f} with flips",
          flush=True)
    return info["dice_mean"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=sorted(BUILTIN), required=True)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--work", action="append", required=True, help="benchmark work folder(s), in priority order")
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    a = ap.parse_args(argv)
    seeds = [int(k) for k in a.seeds.split(",")]
    table = {row: [score(a.suite, row, k, a.work, a.results) for k in seeds] for row in a.rows.split(",")}
    print(f"\n{a.suite}, test cases {BUILTIN[a.suite].test_cases}, mean Dice with test-time flips")
    for row, v in table.items():
        print(f"{row:20s} {np.mean(v):6.2f}   " + "  ".join(f"{x:6.2f}" for x in v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
