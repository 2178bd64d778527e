"""Label-free: the share of every class in a run's predictions over ALL target slices, against
the share in the source labels.

    python benchmarks/class_proportions.py PREPARED_SOURCE PREPARED_TARGET RUN [RUN ...]

Reads no target label. Each RUN's mean teacher (RUN/mpscl/final.pt) when it keeps one, else
its segmenter (RUN/final.pt), in eval mode. A structure the predictions grow onto neighbouring
tissue shows as a share well above the source's (the twentieth round's full-weight runs).
"""
import argparse
import copy
from pathlib import Path

import numpy as np
import torch

from mpscl.checkpoint import load_checkpoint, load_model
from mpscl.data import PreparedDataset


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("target", type=Path)
    ap.add_argument("runs", type=Path, nargs="+")
    a = ap.parse_args()
    src, tgt = PreparedDataset(a.source), PreparedDataset(a.target)
    names = list(src.classes)
    ys = np.concatenate([src.case(c)["label"] for c in src.select(None)])
    prior = np.bincount(ys.ravel(), minlength=len(names)) / ys.size
    x = torch.cat([torch.from_numpy(tgt.case(c)["image"]) for c in tgt.select(None)])[:, None]
    print("| run | " + " | ".join(names[1:]) + " |")
    print("|---|" + "---|" * (len(names) - 1))
    print("| source labels | " + " | ".join(f"{100 * p:.2f}%" for p in prior[1:]) + " |")
    for run in a.runs:
        net, _ = load_model(run / "final.pt")
        teacher = (load_checkpoint(run / "mpscl" / "final.pt").get("teacher")
                   if (run / "mpscl" / "final.pt").is_file() else None)
        if teacher:
            net = copy.deepcopy(net)
            net.load_state_dict(teacher)
        net.eval()
        with torch.no_grad():
            pred = torch.cat([net(x[i:i + 32])[-1].argmax(1) for i in range(0, len(x), 32)]).numpy()
        share = np.bincount(pred.ravel(), minlength=len(names)) / pred.size
        print(f"| {run} ({'teacher' if teacher else 'segmenter'}) | "
              + " | ".join(f"{100 * s:.2f}% ({s / max(p, 1e-12):.2f}x)" for s, p in zip(share[1:], prior[1:])) + " |")


if __name__ == "__main__":
    main()
