"""Label-free: the share of every class in a run's predictions over ALL target slices, against
the share in the source labels.

    python benchmarks/class_proportions.py PREPARED_SOURCE PREPARED_TARGET RUN [RUN ...] [--truth CASES]

Reads no target label, unless ``--truth CASES`` asks for the truth's shares on those cases for
scale (the providers' validation cases only: LGE 1-5, phantom 1-3). Each RUN's mean teacher (RUN/mpscl/final.pt) when it keeps one, else
its segmenter (RUN/final.pt), in eval mode. A structure the predictions grow onto neighbouring
tissue shows as a share well above the source's (the twentieth round's full-weight runs).
A run trained with ``mpscl.self_training_prior`` also gets a row of its brake at the end of
training (RUN/mpscl/class_prior.json): the running share of each class, its ratio to the
source's share the run measured, and the fraction of the class's pixels whose labels it kept.
``--windows 4,64`` prints how far a class's share in N random source slices strays from its
share in all of them (p10-p90 of the ratio over 2,000 draws, seed 0): how long a running
estimate of the shares must be before its noise is small.

    python benchmarks/class_proportions.py PREPARED_SOURCE PREPARED_TARGET --windows 4,64
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mpscl.adapt.class_prior import class_shares
from mpscl.data import PreparedDataset

from rescore_validation import labels_network


def row(name: str, share: np.ndarray, prior: np.ndarray) -> str:
    return (f"| {name} | " + " | ".join(f"{100 * s:.2f}% ({s / max(p, 1e-12):.2f}x)"
                                       for s, p in zip(share[1:], prior[1:])) + " |")


def window_spread(ys: np.ndarray, prior: np.ndarray, names, sizes, draws: int = 2000) -> None:
    """Rows of p10-p90 of (a class's share in N random source slices) / (its share in all)."""
    rng = np.random.default_rng(0)
    counts = np.stack([np.bincount(y.ravel(), minlength=len(names))[:len(names)] for y in ys])  # (N,K)
    for n in sizes:
        picks = np.stack([rng.choice(len(ys), size=n, replace=False) for _ in range(draws)])
        c = counts[picks].sum(axis=1)
        ratio = c / c.sum(axis=1, keepdims=True) / np.maximum(prior, 1e-12)
        lo, hi = np.percentile(ratio, [10, 90], axis=0)
        print(f"| source share in {n} random slices / in all, p10-p90 | "
              + " | ".join(f"{l:.2f}-{h:.2f}x" for l, h in zip(lo[1:], hi[1:])) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("target", type=Path)
    ap.add_argument("runs", type=Path, nargs="*")
    ap.add_argument("--truth", metavar="CASES", help="also the target labels' shares on these (validation) cases")
    ap.add_argument("--windows", metavar="N,N", help="the spread of a class's share in N random source slices")
    a = ap.parse_intermixed_args()
    src, tgt = PreparedDataset(a.source), PreparedDataset(a.target)
    names = list(src.classes)
    ys = np.concatenate([src.case(c)["label"] for c in src.select(None)])
    prior = class_shares(ys, len(names))
    x = torch.cat([torch.from_numpy(tgt.case(c)["image"]) for c in tgt.select(None)])[:, None]
    print("| run | " + " | ".join(names[1:]) + " |")
    print("|---|" + "---|" * (len(names) - 1))
    print("| source labels | " + " | ".join(f"{100 * p:.2f}%" for p in prior[1:]) + " |")
    if a.windows:
        window_spread(ys, prior, names, [int(n) for n in a.windows.split(",")])
    if a.truth:
        yt = np.concatenate([tgt.case(c)["label"] for c in tgt.select(a.truth)])
        print(row(f"target labels, cases {a.truth}", class_shares(yt, len(names)), prior))
    for run in a.runs:
        net, is_teacher = labels_network(run)
        with torch.no_grad():
            pred = torch.cat([net(x[i:i + 32])[-1].argmax(1) for i in range(0, len(x), 32)]).numpy()
        print(row(f"{run} ({'teacher' if is_teacher else 'segmenter'})", class_shares(pred, len(names)), prior))
        brake = run / "mpscl" / "class_prior.json"
        if brake.is_file():
            b = json.loads(brake.read_text())
            cells = [f"{100 * b['running_shares'][c]:.2f}% ({b['running_shares'][c] / max(b['source_shares'][c], 1e-12):.2f}x, "
                     f"keeps {b['keep_fractions'][c]:.2f})" for c in list(b["source_shares"])[1:]]
            print(f"| {run}: brake's running share, end of training (bound {b['bound']}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
