"""Diagnostic (decides nothing): a ``data.context: 1`` run scored on its validation cases with
its neighbours taken at other distances (test time only; the network is not retrained).

    python benchmarks/context_distance.py --run WORK/appearance-runs/mscmrseg19/RUN/seed8 \
        --target WORK/data/lge_128 --suite mscmrseg19 --mm 0 6.5 8

``--mm 0``: adjacent slices (what a run without ``data.context_spacing`` was trained on).
"""
import argparse
import tempfile
from pathlib import Path

from mpscl.checkpoint import load_checkpoint, save_checkpoint
from mpscl.evaluate import evaluate_checkpoint
from mpscl.bench.suites import BUILTIN


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a run folder holding final.pt")
    ap.add_argument("--target", type=Path, required=True, help="the prepared target dataset")
    ap.add_argument("--suite", choices=sorted(BUILTIN), required=True, help="whose validation cases to score")
    ap.add_argument("--mm", type=float, nargs="+", required=True, help="neighbour distances (mm); 0: adjacent")
    a = ap.parse_args()
    ckpt = load_checkpoint(a.run / "final.pt")
    print(f"{a.run}: trained with context_mm {ckpt.get('context_mm')}; cases {BUILTIN[a.suite].val_cases}")
    for mm in a.mm:
        ckpt["context_mm"] = mm or None
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "final.pt"
            save_checkpoint(path, ckpt)
            s = evaluate_checkpoint(path, a.target, Path(d) / "eval", cases=BUILTIN[a.suite].val_cases,
                                    progress=False)["summary"]
        per_class = " ".join(f"{k} {v['dice']:.1f}" for k, v in s["per_class"].items())
        print(f"neighbours at {mm:g} mm: dice_mean {s['dice_mean']:.2f}  {per_class}")


if __name__ == "__main__":
    main()
