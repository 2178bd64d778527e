"""``mpscl demo``: the whole product on the built-in phantom, for a new user, on a CPU.

phantom (MR and CT NIfTI) -> prepare both domains -> train plain source-only (what a
segmenter trained on MR alone gives, ``cpu-plain`` preset) and the recommended CPU recipe
(MPSCL with appearance handling of the source slices, ``cpu`` preset), same total
iteration budget -> evaluate both on the CT target -> report with tables, the gain, and
figures. Direction MR -> CT, as the paper's main experiment. The target images
are used unlabelled in training and their labels only for scoring (transductive, as the
MS-CMRSeg providers' protocol allows); no target label chooses anything.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict

from .config import build_config


DEMO_WARMUP_ITERS, DEMO_ITERS = 450, 225


def _stage(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def run_demo(out: str | Path = "mpscl_demo", quick: bool = False, seed: int = 0) -> Dict:
    from .adapt.pipeline import train
    from .data import PreparedDataset, prepare_dataset, write_phantom
    from .evaluate import evaluate_checkpoint, figures

    out = Path(out)
    t_start = time.perf_counter()
    timings: Dict[str, float] = {}
    n_cases = 4 if quick else 10
    # 3/16 of the CPU preset's schedule (its two-thirds warm-up split kept), so the whole demo
    # fits in about 10 minutes on 2 cores of the slowest CPU measured (a quarter took 11.9 min on
    # an AMD EPYC Zen 1, float32; 3/16 took 8.4-10.7 as that shared host's speed drifted:
    # benchmarks/README.md, "The demo")
    sets = [f"train.seed={seed}", f"train.iters={DEMO_ITERS}", f"train.warmup_iters={DEMO_WARMUP_ITERS}"]
    if quick:
        sets += ["train.iters=3", "train.warmup_iters=3", "data.batch_size=2", "train.checkpoint_every=0",
                 "data.size=64"]
    cfg = build_config("cpu", sets=sets)  # the recipe (MPSCL's stages)
    size = cfg.data.size

    _stage(f"1/5 phantom: {n_cases} MR and {n_cases} CT cases -> {out / 'phantom'}")
    t = time.perf_counter()
    if not (out / "phantom" / "ct").is_dir():
        write_phantom(out / "phantom", cases=n_cases, seed=seed, **({"size": (64, 64, 24)} if quick else {}))
    timings["phantom"] = time.perf_counter() - t

    _stage("2/5 prepare both domains (MM-WHS label map: MYO, LAC, LVC, AA)")
    t = time.perf_counter()
    data = {}
    for dom in ("mr", "ct"):
        d = out / "data" / dom
        if not (d / "manifest.json").is_file():
            prepare_dataset(str(out / "phantom" / dom / "case{case}_image.nii.gz"),
                            str(out / "phantom" / dom / "case{case}_label.nii.gz"),
                            "mmwhs", d, size=size)
        data[dom] = PreparedDataset(d)
    timings["prepare"] = time.perf_counter() - t

    runs = {}
    total = cfg.train.iters + cfg.train.warmup_iters
    plain = build_config("cpu-plain", sets=sets + [f"train.iters={total}"])
    for method, what, mcfg in (("source-only", "plain source-only, cpu-plain preset", plain),
                               ("mpscl", "MPSCL recipe, cpu preset", cfg)):
        _stage(f"3/5 train {method} ({what}; MR -> CT, {total} iterations in all)")
        t = time.perf_counter()
        runs[method] = train(data["mr"], data["ct"], method, mcfg, out / "runs" / method)
        timings[f"train {method}"] = time.perf_counter() - t

    _stage("4/5 evaluate on the CT target (3D Dice and ASSD per structure)")
    t = time.perf_counter()
    results = {}
    for method, ckpt in runs.items():
        results[method] = evaluate_checkpoint(ckpt, data["ct"].root, out / "report" / method)
    timings["evaluate"] = time.perf_counter() - t

    _stage("5/5 figures and report")
    t = time.perf_counter()
    rep = out / "report"
    figures.dice_bars({m: r["summary"] for m, r in results.items()}, rep / "dice_per_class.png")
    for method in runs:
        records = [json.loads(line) for log in sorted((out / "runs" / method).glob("*/log.jsonl"))
                   for line in log.read_text().splitlines() if line.strip()]
        figures.training_curves(records, rep / f"curves_{method}.png")
    if not quick:
        figures.tsne_before_after(runs["source-only"], runs["mpscl"], data["mr"], data["ct"],
                                  rep / "tsne_source_only_vs_mpscl.png")
        figures.overlays_for_case(runs["mpscl"], data["ct"], data["ct"].case_ids[0], rep / "overlay_mpscl.png")
    timings["figures"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start
    summary = {m: {"dice_mean": r["summary"]["dice_mean"], "assd_mean": r["summary"]["assd_mean"],
                   "per_class": {c: v["dice"] for c, v in r["summary"]["per_class"].items()}}
               for m, r in results.items()}
    _write_report(rep, summary, timings, cfg)
    print(f"\nplain source-only target Dice {summary['source-only']['dice_mean']:.1f}%   "
          f"MPSCL recipe target Dice {summary['mpscl']['dice_mean']:.1f}%   ({timings['total'] / 60:.1f} min)")
    print(f"report: {rep / 'README.md'}")
    return {"summary": summary, "timings": timings, "report": str(rep / "README.md")}


def _write_report(rep: Path, summary: Dict, timings: Dict, cfg) -> None:
    from .fileio import atomic_write_text
    classes = list(next(iter(summary.values()))["per_class"])
    lines = ["# mpscl demo: phantom MR -> CT", "",
             "Target (CT) 3D Dice (%) per structure; the CT labels were used only for this scoring.", "",
             "| method | " + " | ".join(classes) + " | mean | mean ASSD (vox) |",
             "|---" * (len(classes) + 3) + "|"]
    shown = {"source-only": "source-only (plain: MR alone, no adaptation)",
             "mpscl": "MPSCL recipe (MPSCL + appearance handling, `--preset cpu`)"}
    for m, s in summary.items():
        assd = s["assd_mean"]
        lines.append(f"| {shown.get(m, m)} | " + " | ".join(f"{s['per_class'][c]:.1f}" for c in classes)
                     + f" | {s['dice_mean']:.1f} | {'n/a' if assd is None else f'{assd:.2f}'} |")
    if {"source-only", "mpscl"} <= set(summary):
        gain = summary["mpscl"]["dice_mean"] - summary["source-only"]["dice_mean"]
        lines += ["", f"Gain of the recipe over plain source-only: {gain:+.1f} points of mean target Dice."]
    lines += ["", "Figures: `dice_per_class.png`, `curves_*.png`, `tsne_source_only_vs_mpscl.png`, "
              "`overlay_mpscl.png`; per-case tables in `<method>/metrics.md`.", "",
              "Wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()), "",
              f"Configuration: MPSCL with the CPU preset (`mpscl config --preset cpu`), "
              f"train.warmup_iters={cfg.train.warmup_iters} and train.iters={cfg.train.iters}; "
              f"source-only with `--preset cpu-plain` (no appearance handling) for the same "
              f"{cfg.train.warmup_iters + cfg.train.iters} iterations in one stage. Each run's "
              "`config.yaml` is under `runs/`."]
    atomic_write_text(rep / "README.md", "\n".join(lines) + "\n")
    atomic_write_text(rep / "summary.json", json.dumps({"methods": summary, "timings_s": timings}, indent=2))
