"""Paired validation runs for the CPU-recipe research (issue 14): appearance handling, and
target self-training on top of MPSCL.

Every run is scored on VALIDATION cases only: LGE 1-5 (the MS-CMRSeg providers' validation
cases) or phantom cases 1-3 (outside the phantom suites' test split 4-12). Resumable: a run
whose metrics.json exists is skipped. Same budget rule as ``mpscl benchmark``: every method
gets warmup_iters + iters iterations in all. Runs start from ``--preset cpu-plain`` and name
their appearance handling; MPSCL runs whose settings outside ``mpscl.*`` agree share one
warm-up (WORK/appearance-runs/<suite>/warmup-<hash>), so they differ only in the MPSCL stage.

    python benchmarks/appearance_validation.py --suite mscmrseg19 --seeds 1 --runs so,so-gin \
        --work bench_work --results benchmarks/results/appearance-validation

``--list`` prints the runs it knows. Results: RESULTS/<suite>/<run>/seed<k>/{metrics.json,run.json}
and RESULTS/<suite>/table.md (every finished run, mean Dice over the validation cases).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from mpscl.adapt.pipeline import train
from mpscl.bench.compare import _amp, _git_commit
from mpscl.bench.suites import BUILTIN, SHARED, prepare_builtin
from mpscl.config import build_config
from mpscl.evaluate import evaluate_checkpoint
from mpscl.evaluate.label_free import label_free_indicators
from mpscl.runtime import machine_line

VAL_CASES = {name: s.val_cases for name, s in BUILTIN.items()}  # the suites' validation cases

PRESET = "cpu-plain"  # every run names its appearance handling explicitly
GIN = ["appearance.gin=0.5"]
CURVES = ["appearance.curves=0.5"]
FDA = ["appearance.fda=0.5", "appearance.fda_beta=0.01"]
LONGWARM = ["train.warmup_iters=1200", "train.iters=600"]  # the recipe's budget split
LONG2X = ["train.warmup_iters=2400", "train.iters=1200"]  # the same split, twice as long
GENTLE_ST = ["mpscl.self_training=0.3", "mpscl.self_training_view=randomised", "mpscl.self_training_threshold=0.95"]
RECIPE = GIN + LONG2X + GENTLE_ST + ["mpscl.self_training_teacher=0.995"]  # --preset cpu's MPSCL settings
# today's recipe as a run (-ctx1mm, thirty-first round): the later rounds' base and candidates' start
TODAY = RECIPE + ["loss.size_prior=0.1", "data.context=1", "data.context_spacing=coarser"]
RUNS = {  # name -> (method, --set overrides on top of the CPU preset)
    "so": ("source-only", []),
    "so-gin": ("source-only", GIN),
    "so-curves": ("source-only", CURVES),
    "so-curves-mono": ("source-only", CURVES + ["appearance.curves_monotone=true"]),
    "so-fda": ("source-only", FDA),
    "so-gin-curves": ("source-only", GIN + CURVES),
    "so-gin-fda": ("source-only", GIN + FDA),
    "so-gin-curves-fda": ("source-only", GIN + CURVES + FDA),
    "so-gin-all": ("source-only", ["appearance.gin=1.0"]),
    "advent-gin": ("advent", GIN),
    "mpscl": ("mpscl", []),
    "mpscl-gin": ("mpscl", GIN),
    "mpscl-gcf": ("mpscl", GIN + CURVES + FDA),
    # target self-training on top of MPSCL + GIN (mpscl.self_training*, beyond the paper)
    "mpscl-gin-st": ("mpscl", GIN + ["mpscl.self_training=1.0"]),
    "mpscl-gin-st-noagree": ("mpscl", GIN + ["mpscl.self_training=1.0", "mpscl.self_training_agree=false"]),
    "mpscl-gin-st-rand": ("mpscl", GIN + ["mpscl.self_training=1.0", "mpscl.self_training_view=randomised"]),
    "mpscl-gin-st-rand-teacher": ("mpscl", GIN + ["mpscl.self_training=1.0", "mpscl.self_training_view=randomised",
                                                  "mpscl.self_training_teacher=0.99"]),
    "mpscl-gin-st-rand-cb": ("mpscl", GIN + ["mpscl.self_training=1.0", "mpscl.self_training_view=randomised",
                                             "mpscl.self_training_class_fraction=0.5"]),
    "mpscl-gin-proj": ("mpscl", GIN + ["mpscl.projection=128"]),
    # the same 1,800 iterations, two thirds of them AdvEnt warm-up
    "mpscl-gin-longwarm": ("mpscl", GIN + ["train.warmup_iters=1200", "train.iters=600"]),
    # control: the recipe's MPSCL stage with both contrastive terms off (AdvEnt continued from
    # the same warm-up, fresh optimiser state): do the contrastive terms help at all here?
    "mpscl-gin-longwarm-nocon": ("mpscl", GIN + ["train.warmup_iters=1200", "train.iters=600",
                                                 "mpscl.lambda_src=0.0", "mpscl.lambda_trg=0.0"]),
    # a light decoder from layer1 for thin structures (model.decoder, beyond the paper)
    "so-gin-dec": ("source-only", GIN + ["model.decoder=32"]),
    "mpscl-gin-longwarm-dec": ("mpscl", GIN + ["train.warmup_iters=1200", "train.iters=600", "model.decoder=32"]),
    "mpscl-gin-st-rand-gentle": ("mpscl", GIN + ["mpscl.self_training=0.3", "mpscl.self_training_view=randomised",
                                                 "mpscl.self_training_threshold=0.95"]),
    # self-training on the recipe (its longer warm-up selects better pseudo-labels on LGE 1-5)
    "mpscl-gin-longwarm-st-rand-teacher": ("mpscl", GIN + LONGWARM + [
        "mpscl.self_training=1.0", "mpscl.self_training_view=randomised", "mpscl.self_training_teacher=0.99"]),
    "mpscl-gin-longwarm-st-rand-gentle": ("mpscl", GIN + LONGWARM + [
        "mpscl.self_training=0.3", "mpscl.self_training_view=randomised", "mpscl.self_training_threshold=0.95"]),
    # do the contrastive terms bite with the target weight of the source's order (paper: 0.1)?
    "mpscl-gin-longwarm-ltrg1": ("mpscl", GIN + LONGWARM + ["mpscl.lambda_trg=1.0"]),
    # the recipe's MPSCL stage without the adversarial terms (the warm-up keeps them): do
    # they cost on two MR sequences (LGE) what they gain on CT <-> MR?
    "mpscl-gin-longwarm-noadv": ("mpscl", GIN + LONGWARM + ["loss.adversarial=false"]),
    # the recipe with a source-only + GIN warm-up (WARMUP_ONLY below)
    "mpscl-gin-sowarm": ("mpscl", GIN + LONGWARM),
    # fifth round: FDA to target slices beside GIN for the whole recipe (source-only's: so-gin-fda)
    "mpscl-gin-fda-longwarm": ("mpscl", GIN + FDA + LONGWARM),
    # the recipe with its adversarial weights gated by the discriminator's error (loss.adv_gate),
    # warm-up included: align only as much as D finds a gap
    "mpscl-gin-longwarm-gate": ("mpscl", GIN + LONGWARM + ["loss.adv_gate=true"]),
    # the contrastive terms at a SupCon-like temperature (0.1, loss scale T / T_base = 1): with
    # post-ReLU features every cosine is >= 0, so at T = 1 their softmax is nearly flat
    "mpscl-gin-longwarm-t01": ("mpscl", GIN + LONGWARM + [
        "mpscl.temp_src=0.1", "mpscl.temp_trg=0.1", "mpscl.base_temp=0.1"]),
    # sixth round: two randomised views of each source slice kept consistent (symmetric KL,
    # weight 1, the main segmentation term's), warm-up included; source-only's: so-gin-cons
    "mpscl-gin-longwarm-cons": ("mpscl", GIN + LONGWARM + ["appearance.consistency=1.0"]),
    "so-gin-cons": ("source-only", GIN + ["appearance.consistency=1.0"]),
    # seventh round: the recipe with GIN on every source slice (probability 1, as GIN-IPA and
    # SLAug randomise every training image); the mixing weight a ~ U(0, 1) still keeps some
    # views close to the original
    "mpscl-gin1-longwarm": ("mpscl", ["appearance.gin=1.0"] + LONGWARM),
    # eighth round: the recipe trained twice as long (2,400 warm-up + 1,200 MPSCL, the same split)
    "mpscl-gin-long2x": ("mpscl", GIN + LONG2X),
    # ninth round: the recipe on a wider network (stem 24 channels instead of 16: 1.62 M
    # parameters against 0.73 M, about 1.45x the time per iteration on one core)
    "mpscl-gin-longwarm-w24": ("mpscl", GIN + LONGWARM + ["model.width=24"]),
    # eleventh round: the gentle self-training of the fourth round (weight 0.3, threshold 0.95,
    # randomised view, prototype agreement) on the 3,600-iteration recipe's MPSCL stage; it
    # shares the recipe's warm-up, so only the MPSCL stage differs
    "mpscl-gin-long2x-st-gentle": ("mpscl", GIN + LONG2X + GENTLE_ST),
    # twelfth round: the same with class-balanced selection (every predicted class keeps at
    # least its most confident half in the batch): against the left atrium's collapse
    "mpscl-gin-long2x-st-gentle-cb": ("mpscl", GIN + LONG2X + GENTLE_ST + ["mpscl.self_training_class_fraction=0.5"]),
    # thirteenth round: the recipe's pseudo-labels from a teacher instead of the student, against
    # the left atrium's drift onto a distractor: the warm-up segmenter kept fixed, or a slow mean teacher
    "mpscl-gin-long2x-st-gentle-fixed": ("mpscl", GIN + LONG2X + GENTLE_ST + ["mpscl.self_training_teacher=1.0"]),
    "mpscl-gin-long2x-st-gentle-mt999": ("mpscl", GIN + LONG2X + GENTLE_ST + ["mpscl.self_training_teacher=0.999"]),
    # fourteenth round: with the slow teacher guarding against drift, a lower threshold (0.9)
    # gives the classifier more target pixels
    "mpscl-gin-long2x-st-mt999-t90": ("mpscl", GIN + LONG2X + GENTLE_ST + [
        "mpscl.self_training_teacher=0.999", "mpscl.self_training_threshold=0.9"]),
    # fifteenth round: a mean teacher five times faster (time constant ~200 iterations)
    "mpscl-gin-long2x-st-gentle-mt995": ("mpscl", RECIPE),
    # seventeenth round: with the teacher guarding against drift, self-training at full weight
    # (the eleventh round made it gentle, 0.3, against the drift)
    "mpscl-gin-long2x-st-mt995-w1": ("mpscl", RECIPE + ["mpscl.self_training=1.0"]),
    # eighteenth round: the teacher's labels from its softmax averaged over the slice's flips
    # (what --tta scores), at the recipe's weight and at full weight
    "mpscl-gin-long2x-st-mt995-flips": ("mpscl", RECIPE + ["mpscl.self_training_flips=true"]),
    "mpscl-gin-long2x-st-mt995-flips-w1": ("mpscl", RECIPE + [
        "mpscl.self_training_flips=true", "mpscl.self_training=1.0"]),
    # nineteenth round: labels kept only where the teacher's argmax keeps the anatomy learnt
    # from the source labels (adapt/anatomy.py), alone and on top of the flipped labels
    "mpscl-gin-long2x-st-mt995-anat": ("mpscl", RECIPE + ["mpscl.self_training_anatomy=true"]),
    "mpscl-gin-long2x-st-mt995-flips-anat": ("mpscl", RECIPE + [
        "mpscl.self_training_flips=true", "mpscl.self_training_anatomy=true"]),
    # twentieth round: the rules at full weight (seventeenth round's weight)
    "mpscl-gin-long2x-st-mt995-anat-w1": ("mpscl", RECIPE + [
        "mpscl.self_training_anatomy=true", "mpscl.self_training=1.0"]),
    # twenty-first round: the source labels' class shares as a brake on growth (adapt/class_prior.py),
    # bound 1.5, at full weight and at the recipe's weight
    "mpscl-gin-long2x-st-mt995-w1-prior15": ("mpscl", RECIPE + [
        "mpscl.self_training=1.0", "mpscl.self_training_prior=1.5"]),
    "mpscl-gin-long2x-st-mt995-prior15": ("mpscl", RECIPE + ["mpscl.self_training_prior=1.5"]),
    # twenty-second round: the brake at bound 1 (no class labelled beyond the source's share)
    "mpscl-gin-long2x-st-mt995-prior10": ("mpscl", RECIPE + ["mpscl.self_training_prior=1.0"]),
    # twenty-third round: the self-training loss on target slices with half the foreground
    # classes of a source slice pasted in (DACS; adapt/class_mix.py), at full weight (as DACS
    # trains) and at the recipe's weight
    "mpscl-gin-long2x-st-mt995-mix-w1": ("mpscl", RECIPE + [
        "mpscl.self_training_mix=true", "mpscl.self_training=1.0"]),
    "mpscl-gin-long2x-st-mt995-mix": ("mpscl", RECIPE + ["mpscl.self_training_mix=true"]),
    # twenty-fourth round: mixing that keeps the labels' density, the same classes pasted as
    # -mix with labels only where the teacher is confident and right on the source slice,
    # or (ClassMix) the teacher's classes of the paired target slice with its pseudo-labels
    "mpscl-gin-long2x-st-mt995-mix-conf": ("mpscl", RECIPE + [
        "mpscl.self_training_mix=true", "mpscl.self_training_mix_pasted=source-confident"]),
    "mpscl-gin-long2x-st-mt995-mix-trg": ("mpscl", RECIPE + [
        "mpscl.self_training_mix=true", "mpscl.self_training_mix_pasted=target"]),
    # twenty-fifth round: a size prior on the target predictions' class shares (band 1.5 around
    # the source's) in the warm-up and the MPSCL stage (losses/size_prior.py); own warm-ups
    "mpscl-gin-long2x-st-mt995-size01": ("mpscl", RECIPE + ["loss.size_prior=0.1"]),
    "mpscl-gin-long2x-st-mt995-size1": ("mpscl", RECIPE + ["loss.size_prior=1.0"]),
    # twenty-sixth round: the same prior in the MPSCL stage only (the recipe's warm-up, paired)
    "mpscl-gin-long2x-st-mt995-size01-stage": ("mpscl", RECIPE + ["loss.size_prior=0.1"]),
    # twenty-seventh round: full-weight self-training (seventeenth round) under the stage's size
    # prior (mpscl.size_prior: the MPSCL stage only, so the recipe's warm-up is shared)
    "mpscl-gin-long2x-st-mt995-size01-stage-w1": ("mpscl", RECIPE + [
        "mpscl.size_prior=0.1", "mpscl.self_training=1.0"]),
    # twenty-eighth round: the same at the size prior's weight scaled with self-training's
    # (round 26's ratio of about 1:3, 0.1 to 0.3, kept at full weight)
    "mpscl-gin-long2x-st-mt995-size03-stage-w1": ("mpscl", RECIPE + [
        "mpscl.size_prior=0.3", "mpscl.self_training=1.0"]),
    # twenty-ninth round: a prior as strong as the self-training term (fresh seeds 4-6)
    "mpscl-gin-long2x-st-mt995-size1-stage-w1": ("mpscl", RECIPE + [
        "mpscl.size_prior=1.0", "mpscl.self_training=1.0"]),
    # thirtieth round: the recipe with each slice's two neighbours as its input channels
    # (data.context=1, SIFA's 2.5-D input; warm-up included, so its own warm-up)
    "mpscl-gin-long2x-st-mt995-size01-stage-ctx1": ("mpscl", RECIPE + ["loss.size_prior=0.1", "data.context=1"]),
    # thirty-first round: the same neighbours at one physical distance, the coarser domain's
    # slice spacing (data.context_spacing=coarser; C0 8 mm vs LGE 5 mm made "the next slice"
    # a shift of its own)
    "mpscl-gin-long2x-st-mt995-size01-stage-ctx1mm": ("mpscl", TODAY),
    # thirty-second round: half the GIN views two random networks blended by a random smooth
    # field (appearance.gin_blend, GIN-IPA), source slices and the self-training target view;
    # warm-up included, so its own warm-up
    "mpscl-gin-long2x-st-mt995-size01-stage-blend": ("mpscl", RECIPE + [
        "loss.size_prior=0.1", "appearance.gin_blend=0.5"]),
    # thirty-third round: today's recipe (-ctx1mm) with half the training stacks' neighbours
    # replaced by the slice itself (data.context_dropout; both domains; its own warm-up)
    "mpscl-gin-long2x-st-mt995-size01-stage-ctx1mm-drop50": ("mpscl", TODAY + ["data.context_dropout=0.5"]),
    # thirty-fourth round: today's recipe (-ctx1mm) with the same 3,600 iterations split in
    # halves (1,800 warm-up + 1,800 MPSCL) instead of two thirds warm-up (its own warm-up)
    "mpscl-gin-long2x-st-mt995-size01-stage-ctx1mm-split50": ("mpscl", TODAY + [
        "train.warmup_iters=1800", "train.iters=1800"]),
    # thirty-fifth round: today's recipe (-ctx1mm) with the target contrastive term kept to the
    # pixels whose self-training label repeats the prototype label, at the paper's weight and
    # at the source term's (shares the recipe's warm-up)
    "mpscl-gin-long2x-st-mt995-size01-stage-ctx1mm-trgst": ("mpscl", TODAY + [
        "mpscl.target_contrast_labels=self-training"]),
    "mpscl-gin-long2x-st-mt995-size01-stage-ctx1mm-trgst-w1": ("mpscl", TODAY + [
        "mpscl.target_contrast_labels=self-training", "mpscl.lambda_trg=1.0"]),
    # thirty-sixth round: today's recipe (-ctx1mm) with full-weight self-training (1.0) on the
    # classes whose share of the warm-up's target predictions lies within 1.5x of the source
    # labels' (mpscl.self_training_trusted; the others keep 0.3); shares the recipe's warm-up
    "mpscl-gin-long2x-st-mt995-size01-stage-ctx1mm-trusted": ("mpscl", TODAY + [
        "mpscl.self_training_trusted=1.0"]),
    # a null calibration: the recipe's MPSCL stage again from the same warm-up, with two torch
    # threads instead of one (the same computation, summed in another order): what the stage's
    # chaos alone does to a paired difference
    "mpscl-gin-long2x-st-gentle-mt995-threads2": ("mpscl", RECIPE + ["train.threads=2"]),
    "oracle": ("oracle", []),
}
# settings that act on the MPSCL stage only: left out of the shared warm-up
STAGE_ONLY = {"mpscl-gin-longwarm-noadv": ["loss.adversarial=false"],
              "mpscl-gin-long2x-st-gentle-mt995-threads2": ["train.threads=2"],
              "mpscl-gin-long2x-st-mt995-size01-stage": ["loss.size_prior=0.1"],
              "mpscl-gin-long2x-st-mt995-size01-stage-ctx1": ["loss.size_prior=0.1"],
              "mpscl-gin-long2x-st-mt995-size01-stage-ctx1mm": ["loss.size_prior=0.1"],
              "mpscl-gin-long2x-st-mt995-size01-stage-blend": ["loss.size_prior=0.1"],
              "mpscl-gin-long2x-st-mt995-size01-stage-ctx1mm-drop50": ["loss.size_prior=0.1"],
              "mpscl-gin-long2x-st-mt995-size01-stage-ctx1mm-split50": ["loss.size_prior=0.1"],
              "mpscl-gin-long2x-st-mt995-size01-stage-ctx1mm-trgst": ["loss.size_prior=0.1"],
              "mpscl-gin-long2x-st-mt995-size01-stage-ctx1mm-trgst-w1": ["loss.size_prior=0.1"],
              "mpscl-gin-long2x-st-mt995-size01-stage-ctx1mm-trusted": ["loss.size_prior=0.1"]}
# and settings of the warm-up only (not of the MPSCL stage): a source-only + GIN warm-up
WARMUP_ONLY = {"mpscl-gin-sowarm": ["loss.adversarial=false"]}


def run_one(suite: str, name: str, seed: int, work: Path, results: Path, extra) -> None:
    res = results / suite / name / f"seed{seed}"
    if (res / "metrics.json").is_file():
        print(f"[skip] {suite} {name} seed {seed}", flush=True)
        return
    method, sets = RUNS[name]
    layers = [BUILTIN[suite].settings()] if BUILTIN[suite].settings() else []
    base = build_config(PRESET, layers, sets=list(extra))
    sets = list(extra) + list(sets) + [f"train.seed={seed}"]
    if method != "mpscl":
        sets.append(f"train.iters={base.train.iters + base.train.warmup_iters}")
    cfg = build_config(PRESET, layers, sets=sets)
    dirs = prepare_builtin(BUILTIN[suite], work, cfg.data.size, SHARED)
    print(f"[run] {suite} {name} seed {seed}: {method} {' '.join(sets)}", flush=True)
    commit = _git_commit()  # the code this process runs (the checkout may move while it trains)
    t0 = time.perf_counter()
    quiet = dict(progress=False, log=lambda *a, **k: None)
    init = None
    if method == "mpscl":  # runs whose warm-up settings agree share one warm-up (paired)
        warm_sets = [s for s in sets if not s.startswith("mpscl.") and s not in STAGE_ONLY.get(name, [])]
        warm_sets += WARMUP_ONLY.get(name, [])
        key = hashlib.sha256(" ".join(sorted(warm_sets)).encode()).hexdigest()[:10]
        wdir = work / "appearance-runs" / suite / f"warmup-{key}"
        init = train(dirs["source"], dirs["target"], "mpscl", build_config(PRESET, layers, sets=warm_sets),
                     wdir, stage="warmup", **quiet)
    final = train(dirs["source"], dirs["target"], method, cfg, work / "appearance-runs" / suite / name / f"seed{seed}",
                  init=init, **quiet)
    secs = time.perf_counter() - t0
    m = evaluate_checkpoint(final, dirs["target"], res, cases=VAL_CASES[suite], progress=False)
    info = {"suite": suite, "run": name, "method": method, "seed": seed, "sets": sets,
            "val_cases": VAL_CASES[suite], "train_seconds": round(secs, 1), "git_commit": commit,
            "machine": machine_line(), "amp": _amp(cfg, [init, final] if init else [final]),
            "dice_mean": m["summary"]["dice_mean"]}
    # the same target cases' label-free indicators (no label read): which of them follows the
    # paired Dice differences is measured from these (benchmarks/label_free_tracking.py)
    info["label_free"] = label_free_indicators(final, dirs["target"], cases=VAL_CASES[suite],
                                               source_dir=dirs["source"], progress=False)
    (res / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"[done] {suite} {name} seed {seed}: val Dice {info['dice_mean']:.2f} ({secs / 60:.1f} min)", flush=True)


def table(results: Path, suite: str) -> str:
    rows = []
    for d in sorted((results / suite).glob("*/")):
        runs = [json.loads(p.read_text()) for p in sorted(d.glob("seed*/run.json"))]
        if not runs:
            continue
        per = {r["seed"]: r["dice_mean"] for r in runs}
        m = json.loads((d / f"seed{runs[0]['seed']}" / "metrics.json").read_text())["summary"]
        classes = "  ".join(f"{k} {v['dice']:.1f}" for k, v in m["per_class"].items())
        rows.append(f"| {d.name} | {np.mean(list(per.values())):.1f} | "
                    f"{', '.join(f'{s}: {v:.1f}' for s, v in sorted(per.items()))} | {classes} |")
    head = (f"Validation cases {VAL_CASES[suite]} of {suite}, mean 3D Dice (%); per seed; per class of the first seed\n\n"
            "| run | mean | per seed | classes |\n|---|---|---|---|\n")
    text = head + "\n".join(rows) + "\n"
    (results / suite / "table.md").write_text(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=sorted(VAL_CASES), default="mscmrseg19")
    ap.add_argument("--runs", default="", help="comma-separated run names (see --list)")
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--work", type=Path, default=Path("bench_work"))
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/appearance-validation"))
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra KEY=VALUE for every run")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args(argv)
    if a.list:
        for k, (m, s) in RUNS.items():
            print(f"{k:22s} {m:12s} {' '.join(s)}")
        return 0
    for name in [r for r in a.runs.split(",") if r]:
        if name not in RUNS:
            sys.exit(f"unknown run {name!r}; --list shows them")
        for seed in [int(s) for s in a.seeds.split(",")]:
            run_one(a.suite, name, seed, a.work, a.results, a.sets)
    print(table(a.results, a.suite))
    return 0


if __name__ == "__main__":
    sys.exit(main())
