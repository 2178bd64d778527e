"""Diagnostic (decides nothing): per case, how large one class's prediction is against its
truth, and what share of its false positives lie in slices whose truth has none of it.

    python benchmarks/class_beyond_its_end.py --target WORK/data/phantom_ct_128 --cases 1-3 \
        --class LAC --runs WORK/appearance-runs/phantom-mr2ct/RUN/seed8 ...
"""
import argparse
from pathlib import Path

from mpscl.checkpoint import load_model
from mpscl.data import PreparedDataset
from mpscl.data.context import case_step, context_mm_of, context_of
from mpscl.evaluate import predict_volume


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=Path, required=True, help="a prepared, labelled dataset")
    ap.add_argument("--cases", default=None, help="case selection (e.g. 1-3); all by default")
    ap.add_argument("--class", dest="name", required=True, help="the class name (e.g. LAC)")
    ap.add_argument("--runs", type=Path, nargs="+", required=True, help="run folders holding final.pt")
    a = ap.parse_args()
    ds = PreparedDataset(a.target)
    k = [str(c) for c in ds.classes].index(a.name)
    for run in a.runs:
        model, ckpt = load_model(run / "final.pt")
        cells = []
        for cid in ds.select(a.cases):
            d = ds.case(cid)
            y = d["label"]
            p = predict_volume(model, d["image"], device="cpu", context=context_of(ckpt),
                               context_step=case_step(context_mm_of(ckpt), d["meta"]))
            fp = (p == k) & (y != k)
            absent = ~(y == k).reshape(len(y), -1).any(1)  # slices whose truth has none of it
            size = (p == k).sum() / max((y == k).sum(), 1)
            cells.append(f"case {cid}: size {size:.2f}, FP {fp.sum()} ({fp[absent].sum() / max(fp.sum(), 1):.2f} "
                         "in slices without it)")
        print(f"{run}: " + " | ".join(cells))


if __name__ == "__main__":
    main()
