"""Pseudo-label quality of an MPSCL run's prototypes on labelled VALIDATION cases.

    python benchmarks/pseudo_label_quality.py RUN PREPARED_TARGET --cases 1-5 [--threshold 0.25]

Scores the warm-up model with the initial prototypes (RUN/warmup/final.pt, or the warm-up
RUN/prototypes.pt was computed from when the run started from another's, and RUN/prototypes.pt)
and the final model with its EMA prototypes (RUN/final.pt): share of pixels selected and
accuracy of the selected pseudo-labels, overall and on foreground. Use only the cases the
data providers declare for validation (LGE 1-5 for MS-CMRSeg): a diagnostic, not a score.
"""
import argparse
from pathlib import Path

import torch

from mpscl.checkpoint import load_checkpoint, load_model
from mpscl.adapt.prototypes import downsample_labels, pseudo_label
from mpscl.data import PreparedDataset


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("target", type=Path)
    ap.add_argument("--cases", required=True)
    ap.add_argument("--threshold", type=float, default=0.25)
    a = ap.parse_args()
    ds = PreparedDataset(a.target)
    cases = [ds.case(c) for c in ds.select(a.cases)]
    x = torch.cat([torch.from_numpy(c["image"]) for c in cases])[:, None]
    y = torch.cat([torch.from_numpy(c["label"]).long() for c in cases])
    print("| model (prototypes) | selected | accuracy | foreground selected | foreground accuracy |")
    print("|---|---|---|---|---|")
    warm = a.run / "warmup" / "final.pt"
    if not warm.is_file():  # a run started from another's warm-up (--init): the one its prototypes name
        warm = Path(load_checkpoint(a.run / "prototypes.pt")["from"])
    for name, ckpt, protos in (("warm-up (initial)", warm, a.run / "prototypes.pt"),
                               ("final (EMA)", a.run / "final.pt", None)):
        model, meta = load_model(ckpt)
        p = load_checkpoint(protos)["prototypes"] if protos else meta["prototypes"]
        with torch.no_grad():
            f = torch.cat([model(x[i:i + 32])[0].float() for i in range(0, len(x), 32)])
        yl = downsample_labels(y, f.shape[-2:])
        pl, sel = pseudo_label(f, p, a.threshold)
        fg = yl > 0
        acc = lambda m: (pl[m] == yl[m]).float().mean().item() if m.any() else float("nan")
        print(f"| {name} | {sel.float().mean():.0%} | {acc(sel):.0%} | {sel[fg].float().mean():.0%} | {acc(sel & fg):.0%} |")


if __name__ == "__main__":
    main()
