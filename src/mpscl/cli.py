"""``mpscl`` command line: parses arguments and calls the library; no logic of its own.

Stages, as in nnU-Net: ``phantom``/``prepare`` -> ``train`` -> ``evaluate``/``predict``;
``demo`` runs them all on the built-in phantom.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from . import __version__
from . import methods  # light: declarations only, step functions load on first use
from .config import ABLATIONS, parse_set  # light: dataclasses and yaml only


def _config_args(p: argparse.ArgumentParser, preset_default: str = "paper-mr2ct") -> None:
    p.add_argument("--preset", default=preset_default,
                   help="base settings: paper-mr2ct, paper-ct2mr or cpu (default: %(default)s)")
    p.add_argument("--config", action="append", default=[], metavar="FILE.yaml",
                   help="YAML overrides, applied after the preset (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="override one value, e.g. --set mpscl.margin_src=0.3 (repeatable)")
    p.add_argument("--ablation", action="append", default=[],
                   choices=list(ABLATIONS), help="the paper's ablations as switches")
    p.add_argument("--iters", type=int, help="iterations of every stage (smoke runs)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")


def _build_config(args):
    from .config import build_config
    sets = list(args.sets)
    if args.iters is not None:
        sets += [f"train.iters={args.iters}", f"train.warmup_iters={args.iters}"]
    if args.seed is not None:
        sets.append(f"train.seed={args.seed}")
    if args.device:
        sets.append(f"train.device={args.device}")
    if getattr(args, "checkpoint_every", None) is not None:
        sets.append(f"train.checkpoint_every={args.checkpoint_every}")
    return build_config(args.preset, args.config, sets, args.ablation)


def cmd_prepare(args) -> None:
    from .data import prepare_dataset
    prepare_dataset(args.images, args.labels, args.classes, args.out, size=args.size,
                    axis=args.axis, strict=args.strict, overwrite=args.overwrite, plane=args.plane)


def cmd_prepare_sifa(args) -> None:
    from .data import prepare_sifa
    prepare_sifa(args.inputs, modality=args.modality, out=args.out, overwrite=args.overwrite)


def cmd_phantom(args) -> None:
    from .data import write_phantom
    write_phantom(args.out, cases=args.cases, seed=args.seed)
    print(f"phantom written to {args.out} (ct/ and mr/, {args.cases} cases each, seed {args.seed})")


def budget_note(method: str, cfg, sets, files=()) -> Optional[str]:
    """Why a single-stage run is shorter than MPSCL's under the same preset, unless the user
    set its length with ``--set`` or a ``--config`` file (``mpscl benchmark`` and ``mpscl demo``
    give every method the sum)."""
    from .config import load_yaml
    if "warmup_iters" in methods.get_method(method).budgets or cfg.train.warmup_iters == 0 \
            or any(parse_set(s)[0] == "train.iters" for s in sets) \
            or any("iters" in (((f if isinstance(f, dict) else load_yaml(f)) or {}).get("train") or {})
                   for f in files):
        return None
    total = cfg.train.iters + cfg.train.warmup_iters
    return (f"note: {method} trains train.iters = {cfg.train.iters} iterations; mpscl under this config "
            f"trains {total} ({cfg.train.warmup_iters} warm-up + {cfg.train.iters}). For a same-budget "
            f"comparison add --set train.iters={total} (mpscl benchmark and mpscl demo do).")


def cmd_train(args) -> None:
    from .adapt.pipeline import train
    cfg = _build_config(args)
    note = None if args.iters is not None or args.stage else budget_note(args.method, cfg, args.sets, args.config)
    if note:
        print(note, file=sys.stderr, flush=True)
    final = train(args.source, args.target, args.method, cfg, args.out, stage=args.stage,
                  init=args.init, progress=not args.no_progress, resume=args.resume)
    print(f"done: {final}")


TTA_HELP = ("test-time flips: average the softmax over each slice and its three flips "
            "(4 forward passes)")


# mpscl.data.orientation.PLANES, spelt out so the CLI starts without importing the data stack
PLANE_CHOICES = ("axial", "coronal", "sagittal")
LCC_HELP = "keep only the largest connected piece of each structure (the others become background)"


def cmd_evaluate(args) -> None:
    from .evaluate import evaluate_checkpoint
    res = evaluate_checkpoint(args.checkpoint, args.data, args.out, cases=args.cases,
                              batch_size=args.batch_size, device=args.device, tta=args.tta,
                              largest_component=args.largest_component)
    s = res["summary"]
    assd = "n/a" if s["assd_mean"] is None else f"{s['assd_mean']:.2f} voxels"
    print(f"mean Dice {s['dice_mean']:.2f}%  mean ASSD {assd}  -> {args.out}")


def cmd_label_free(args) -> None:
    import json
    from pathlib import Path

    from .data import PreparedDataset
    from .evaluate.label_free import indicators_markdown, label_free_indicators, source_label_shares
    from .fileio import atomic_write_text
    # the source's shares read once for every checkpoint (each is checked against the data's classes)
    shares = (source_label_shares(args.source, [str(c) for c in PreparedDataset(args.data).classes])
              if args.source else None)
    rows = {}
    for ckpt in args.checkpoint:
        rows[ckpt] = label_free_indicators(ckpt, args.data, cases=args.cases, source_shares=shares,
                                           batch_size=args.batch_size, device=args.device)
    table = "\n".join(indicators_markdown(rows))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "label_free.json", json.dumps(rows, indent=2) + "\n")
        atomic_write_text(out / "label_free.md", f"# Label-free indicators on {args.data}\n\n"
                          "No label of this dataset was used.\n\n" + table + "\n")
    print(table)


def cmd_predict(args) -> None:
    from .evaluate import predict_files
    for p in predict_files(args.checkpoint, args.inputs, args.output, batch_size=args.batch_size,
                           device=args.device, overwrite=args.overwrite, tta=args.tta,
                           largest_component=args.largest_component, plane=args.plane):
        print(p)


def cmd_demo(args) -> None:
    from .demo import run_demo
    run_demo(args.out, quick=args.quick, seed=args.seed)


def cmd_bench_speed(args) -> None:
    from .bench.speed import bench_speed, summary_lines, write_result
    from .config import build_config
    sets = list(args.sets) + ([f"train.device={args.device}"] if args.device else [])
    cfg = build_config(args.preset, args.config, sets)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    res = bench_speed(cfg, args.preset, iters=args.iters, rounds=args.rounds, warmup=args.warmup,
                      modes=modes)
    print("\n".join(summary_lines(res)))
    print(f"-> {write_result(res, args.out)}")


def _seed_list(spec: str, flag: str):
    """``"1,2,3"``, ``"1-3"`` or ``""`` (none) -> list of ints."""
    from .config import ConfigError
    from .data import DataError
    from .data.dataset import parse_case_spec
    if not spec.strip():
        return []
    try:
        ids = parse_case_spec(spec)
    except DataError:
        ids = []
    if not ids or not all(i.isdigit() for i in ids):
        raise ConfigError(f"{flag} {spec!r}: seeds are integers, e.g. 1,2,3 or 1-3 ('' for none)")
    return [int(i) for i in ids]


def _names(spec):
    """``"a,b"`` -> ``["a", "b"]``; None stays None (the default)."""
    return None if spec is None else [n.strip() for n in spec.split(",") if n.strip()]


def cmd_benchmark(args) -> None:
    from dataclasses import replace
    from pathlib import Path
    from .bench.compare import run_benchmark, table
    from .bench.rows import BenchmarkError, load_rows
    from .bench.suites import BUILTIN, PAIR_ROWS, Suite
    seeds, vseeds = _seed_list(args.seeds, "--seeds"), _seed_list(args.variant_seeds, "--variant-seeds")
    pair = [args.source, args.target, args.name]
    if args.suite and any(pair):
        raise BenchmarkError("--suite or --source/--target/--name, not both")
    if any(pair) and not all(pair):
        raise BenchmarkError("a pair of your own needs --source, --target and --name")
    if args.score and not args.source:
        raise BenchmarkError("--score goes with --source/--target (the built-in suites are labelled)")
    if any(pair):
        # beside the preset's rows, plain source-only (no appearance handling, no adaptation):
        # what the recommended recipe's gain is measured from
        suites = [Suite(args.name, f"{Path(args.source).name} -> {Path(args.target).name}",
                        test_cases=args.test_cases, val_cases=args.val_cases, rows=PAIR_ROWS,
                        recommended="mpscl", baseline=PAIR_ROWS[0].name)]
    else:
        suites = [BUILTIN[s] for s in args.suite or ["mscmrseg19"]]
        split = {k: v for k, v in (("test_cases", args.test_cases), ("val_cases", args.val_cases)) if v}
        suites = [replace(s, **split) for s in suites]
    if args.rows:
        rows, rec = load_rows(args.rows)
        suites = [replace(s, rows=s.rows + tuple(rows), recommended=rec or s.recommended) for s in suites]
    for suite in suites:
        results = Path(args.results) / suite.results_name
        s = run_benchmark(suite, results, Path(args.work), seeds, vseeds, preset=args.preset,
                          sets=args.sets, only=args.only, data_root=Path(args.data_root),
                          source=args.source and Path(args.source), target=args.target and Path(args.target),
                          score=args.score and Path(args.score), methods_sel=_names(args.methods),
                          variants_sel=_names(args.variants), device=args.device)
        print(f"\n{suite.name}: {results / 'summary.md'}")
        print(table(s))


def cmd_config(args) -> None:
    print(_build_config(args).to_yaml(), end="")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mpscl", description=__doc__.splitlines()[0])
    ap.add_argument("--version", action="version", version=f"mpscl {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="phantom -> prepare -> source-only and MPSCL -> report (CPU, minutes)")
    p.add_argument("--out", default="mpscl_demo")
    p.add_argument("--quick", action="store_true", help="a tiny version, for tests")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("phantom", help="write the synthetic CT/MR heart phantom as NIfTI")
    p.add_argument("--out", required=True)
    p.add_argument("--cases", type=int, default=8, help="cases per domain")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_phantom)

    p = sub.add_parser("prepare", help="NIfTI volumes -> prepared dataset (pairs by {case} id)")
    p.add_argument("--images", required=True, help="path pattern with one {case}, e.g. d/patient{case}_C0.nii.gz")
    p.add_argument("--labels", help="label pattern with the same {case}; omit for unlabelled data")
    p.add_argument("--classes", required=True, help="e.g. 200=MYO,500=LV,600=RV, or a preset: mmwhs, mscmrseg")
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--axis", type=int, default=-1, help="slice axis of the stored array (default: last)")
    p.add_argument("--plane", choices=PLANE_CHOICES,
                   help="instead of --axis: reorient each volume to canonical RAS order (axes permuted "
                   "and flipped, not resampled) and cut it in this plane, whatever its stored order; "
                   "prepare both domains with the same plane")
    p.add_argument("--strict", action="store_true", help="refuse label values not in the map")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(fn=cmd_prepare)

    p = sub.add_parser("prepare-sifa", help="SIFA/PnP-AdaNet release (TFRecord slices or npz volumes) -> prepared dataset")
    p.add_argument("inputs", nargs="+", help="TFRecord or npz files, glob patterns, or the release's folder")
    p.add_argument("--modality", required=True, choices=["ct", "mr"])
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(fn=cmd_prepare_sifa)

    p = sub.add_parser("train", help="train a method on prepared source/target datasets")
    p.add_argument("--source", required=True, help="prepared labelled source dataset")
    p.add_argument("--target", required=True, help="prepared target dataset (labels unused except by oracle)")
    p.add_argument("--method", default="mpscl", choices=methods.method_names(),
                   help="; ".join(f"{n}: {methods.get_method(n).help}" for n in methods.method_names()))
    p.add_argument("--out", required=True, help="run folder (resumes automatically when it holds a checkpoint)")
    p.add_argument("--stage", choices=methods.all_stage_names(),
                   help="run one stage of a multi-stage method (mpscl: warmup, prototypes, mpscl)")
    p.add_argument("--init", help="start the later stages from this checkpoint instead of training "
                                  "the stage they start from (mpscl: a warm-up checkpoint)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (an error if it holds no checkpoint); "
                        "without it a run with checkpoints resumes anyway")
    p.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="write RUN/<stage>/last.pt every N iterations (train.checkpoint_every)")
    p.add_argument("--no-progress", action="store_true")
    _config_args(p)
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("evaluate", help="3D Dice and ASSD per structure on a prepared labelled dataset")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--cases", help="case ids, e.g. 6-45 or 1,3,5-7")
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--tta", action="store_true", help=TTA_HELP)
    p.add_argument("--largest-component", action="store_true", help=LCC_HELP)
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("label-free", help="indicators of models on an unlabelled target: entropy, "
                                          "flip agreement, class shares against the source's labels")
    p.add_argument("--checkpoint", required=True, action="append",
                   help="a model (final.pt); repeat to compare several in one table")
    p.add_argument("--data", required=True, help="prepared target dataset (its labels, if any, are not used)")
    p.add_argument("--cases", help="case ids, e.g. 6-45 or 1,3,5-7")
    p.add_argument("--source", help="prepared labelled source dataset: its class shares and the gap to them")
    p.add_argument("--out", help="folder for label_free.json and label_free.md")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.set_defaults(fn=cmd_label_free)

    p = sub.add_parser("predict", help="segment NIfTI volumes; label maps in the input geometry")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("inputs", nargs="+")
    p.add_argument("-o", "--output", required=True, help="output folder (or file for one input)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help=TTA_HELP + "; default: on when the checkpoint was trained on flipped slices "
                   "(data.augment, as in --preset cpu), else off")
    p.add_argument("--largest-component", action="store_true", help=LCC_HELP)
    p.add_argument("--plane", choices=PLANE_CHOICES,
                   help="cut each volume in this plane after reorienting it (labels written back on the "
                   "stored grid); default: the plane the checkpoint's data were prepared in, if any")
    p.set_defaults(fn=cmd_predict)

    p = sub.add_parser("bench-speed", help="iterations/s and peak memory of the MPSCL iteration: "
                                          "fp32 vs the default path vs forced bf16 (synthetic inputs)")
    p.add_argument("--preset", default="cpu", help="settings to measure (default: %(default)s)")
    p.add_argument("--config", action="append", default=[], metavar="FILE.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--iters", type=int, default=10, help="timed iterations per mode and round (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, modes alternating (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations per mode first (default: %(default)s)")
    p.add_argument("--modes", default="fp32,default,bf16", help="comma-separated (default: %(default)s)")
    p.add_argument("--out", required=True, metavar="FILE.json")
    p.set_defaults(fn=cmd_bench_speed)

    from .bench.suites import BUILTIN  # light: declarations only
    p = sub.add_parser("benchmark", help="every method on one source/target pair (your own or a built-in "
                                        "suite), same budget and seeds: summary, paired statistics, figure",
                       description="Compare the methods on your own pair: mpscl benchmark --source DIR "
                                   "--target DIR --name NAME (prepared datasets with the same class map), "
                                   "or on a built-in suite (--suite).")
    p.add_argument("--source", help="prepared labelled source dataset (your own pair)")
    p.add_argument("--target", help="prepared target dataset (your own pair; its labels score the runs)")
    p.add_argument("--name", help="name of your pair: results go to RESULTS/NAME, runs to WORK/runs/NAME")
    p.add_argument("--score", metavar="DIR", help="an unlabelled --target: a labelled prepared dataset "
                                                  "of its test cases to score on")
    p.add_argument("--suite", action="append", choices=list(BUILTIN),
                   help="a built-in pair with its case split, repeatable (default without --source: mscmrseg19)")
    p.add_argument("--test-cases", metavar="SPEC", help="target cases scored, e.g. 6-45 (default: every "
                                                        "target case not in --val-cases)")
    p.add_argument("--val-cases", metavar="SPEC", help="target cases that may inform choices, never scored "
                                                       "(default: none)")
    p.add_argument("--methods", metavar="A,B", help="main rows to run (default: all: source-only, advent, "
                                                    "mpscl, oracle and those of --rows)")
    p.add_argument("--variants", metavar="A,B", help="variant rows to run (MPSCL ablations, the authors' loss): "
                                                     "names, all or none (default: none; all for --suite)")
    p.add_argument("--rows", metavar="FILE.yaml", help="extra rows (method + overrides) and a recommended row")
    p.add_argument("--seeds", default="1,2,3", help="seeds of the main rows (default: %(default)s)")
    p.add_argument("--variant-seeds", default="1", help="seeds of the variant rows (default: %(default)s)")
    p.add_argument("--only", action="append", help="run only these run names (e.g. mpscl, mpscl-no-margin)")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE",
                   help="override one value for every row (repeatable)")
    p.add_argument("--results", default="benchmarks/results", help="where metrics and summaries go: "
                                                                   "RESULTS/NAME (default: %(default)s)")
    p.add_argument("--work", default="bench_work", help="prepared data and run folders (not committed)")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--data-root", default="../shared/data", help="where the built-in suites' data is")
    p.set_defaults(fn=cmd_benchmark)

    p = sub.add_parser("config", help="print the effective configuration of a preset + overrides")
    _config_args(p)
    p.set_defaults(fn=cmd_config)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from .adapt.trainer import Interrupted, TrainingError
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data import DataError
    from .models.pretrained import WeightsError
    from .runtime import DeviceError
    from .bench.rows import BenchmarkError
    from .evaluate.errors import EvaluateError
    known = (ConfigError, CheckpointError, FileNotFoundError, DataError, TrainingError, DeviceError,
             WeightsError, BenchmarkError, EvaluateError)
    try:
        args.fn(args)
    except known as e:
        print(f"mpscl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:  # a checkpoint was written; the exit status names the signal
        print(f"mpscl {args.command}: {e}", file=sys.stderr)
        return 128 + int(e.signum)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
