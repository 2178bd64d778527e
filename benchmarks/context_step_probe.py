"""How a model trained with ``data.context`` scores when the neighbours are read at another
distance (a diagnostic on validation cases; it chooses nothing).

Each checkpoint is scored on the selected cases of a labelled prepared dataset with the
neighbour channels built in several ways:

- ``trained``: as training and ``mpscl evaluate`` build them (the checkpoint's distance in mm,
  linearly interpolated between slices where that is not a whole number of slices);
- ``nearest``: the same distance rounded to whole slices per case (no interpolation);
- ``adjacent``: the adjacent slices, whatever the spacing;
- ``centre``: every channel the slice itself (no neighbour information at all);
- ``x0.5`` / ``x1.5``: half / one and a half times the trained distance (interpolated).

    python benchmarks/context_step_probe.py bench_work/data/lge_128 --cases 1-5 \\
        bench_work/appearance-runs/mscmrseg19/mpscl-gin-long2x-st-mt995-size01-stage-ctx1mm/seed10 ...

Prints a table of mean 3D Dice (%) per run and mode, and the mean over runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from mpscl import checkpoint as checkpoint_io
from mpscl.data import PreparedDataset, context_of, from_slices
from mpscl.data.context import case_slice_spacing, context_mm_of, slice_step, with_context
from mpscl.evaluate.inference import predict_volume
from mpscl.evaluate.metrics import score_case

MODES = ("trained", "nearest", "adjacent", "centre", "x0.5", "x1.5")


def step_for(mode: str, context_mm, spacing) -> float:
    trained = slice_step(context_mm, spacing)
    if mode == "trained":
        return trained
    if mode == "nearest":
        return float(max(1, round(trained)))
    if mode == "adjacent":
        return 1.0
    if mode == "x0.5":
        return trained * 0.5
    if mode == "x1.5":
        return trained * 1.5
    raise ValueError(mode)


def score_run(final: Path, ds: PreparedDataset, ids, modes) -> dict:
    model, ckpt = checkpoint_io.load_model(final, "cpu")
    context, context_mm = context_of(ckpt), context_mm_of(ckpt)
    if not context:
        raise SystemExit(f"{final}: trained without data.context; nothing to probe")
    classes = [str(c) for c in ds.classes]
    out = {}
    for mode in modes:
        dice = []
        for cid in ids:
            case = ds.case(cid)
            meta, gt, img = case["meta"], case["label_orig"], case["image"]
            if mode == "centre":
                stacks = np.repeat(img[:, None], 2 * context + 1, axis=1)
            elif case.get("neighbours") is not None:
                raise SystemExit(f"{ds.root}: cases carry stored neighbours; their distance is fixed")
            else:
                stacks = with_context(img, context, step_for(mode, context_mm, case_slice_spacing(meta)))
            plane = [n for d, n in enumerate(gt.shape) if d != int(meta["axis"])]
            pred = from_slices(predict_volume(model, np.ascontiguousarray(stacks), device="cpu",
                                              out_shape=plane, input_size=(ckpt.get("config") or {}).get("data", {}).get("size"),
                                              context=context), meta)
            s = score_case(pred, gt, classes, meta.get("spacing"))
            dice.append(np.nanmean([s["dice"][c] for c in classes[1:]]))
        out[mode] = float(np.mean(dice))  # score_case gives Dice in %
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="labelled prepared dataset")
    ap.add_argument("runs", type=Path, nargs="+", help="run folders holding final.pt")
    ap.add_argument("--cases", default=None, help="e.g. 1-5 (validation cases only)")
    ap.add_argument("--modes", default=",".join(MODES))
    args = ap.parse_args(argv)
    ds = PreparedDataset(args.data)
    ids = ds.select(args.cases)
    modes = args.modes.split(",")
    print("| run | " + " | ".join(modes) + " |\n|---|" + "---|" * len(modes))
    rows = []
    for run in args.runs:
        r = score_run(run / "final.pt", ds, ids, modes)
        rows.append(r)
        print(f"| {run} | " + " | ".join(f"{r[m]:.2f}" for m in modes) + " |", flush=True)
    print("| mean | " + " | ".join(f"{np.mean([r[m] for r in rows]):.2f}" for m in modes) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
