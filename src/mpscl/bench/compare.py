"""``mpscl benchmark``: every method, same backbone, budget and seeds, scored on target test cases.

Suites:
- ``mscmrseg19``: bSSFP (C0) -> LGE cardiac MR from ``../shared/data/mscmrseg19``. Target
  images are used unlabelled in training; LGE 1-5 are the providers' validation cases (the
  only target labels that may inform a choice; this benchmark makes none) and every
  reported number is on LGE 6-45. The checkpoint scored is always the last one.
- ``phantom-mr2ct`` / ``phantom-ct2mr``: the built-in phantom, 12 cases per domain; cases
  1-3 play the validation role, 4-12 are scored.

Budget: every method gets ``warmup_iters + iters`` iterations in all; MPSCL spends
``warmup_iters`` of them on its AdvEnt warm-up and its variants (ablations, the authors'
loss) start from the same seed's warm-up checkpoint, as in the paper. The oracle trains on
the labels of all target cases (test cases included), so it is an optimistic upper bound.

Resumable: a run whose ``metrics.json`` exists is skipped, and an unfinished run resumes
from its last checkpoint, so the benchmark can be completed over several sessions.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .. import methods
from ..config import build_config, preset_layer

SHARED = Path("../shared/data")  # relative to the repository root, where the benchmark is run

VARIANT_OF = "mpscl"  # the method the variants below modify
VARIANTS = {  # name -> ablation switches; all start from the seed's warm-up checkpoint
    "mpscl-no-margin": ["no-margin"],
    "mpscl-no-target-contrastive": ["no-target-contrastive"],
    "mpscl-no-selection": ["no-selection"],
    "mpscl-authors-loss": ["authors-contrastive"],
    # control: the MPSCL stage with both contrastive terms off (AdvEnt continued from the
    # warm-up with fresh optimiser state and the prototype machinery idle)
    "mpscl-no-contrastive": ["no-source-contrastive", "no-target-contrastive"],
}
SUITES = {
    "mscmrseg19": {"test_cases": "6-45", "direction": "C0 -> LGE"},
    "phantom-mr2ct": {"test_cases": "4-12", "direction": "MR -> CT", "source": "mr", "target": "ct"},
    "phantom-ct2mr": {"test_cases": "4-12", "direction": "CT -> MR", "source": "ct", "target": "mr",
                      # the paper's CT -> MR settings, for every method: what presets/paper-ct2mr.yaml
                      # sets over its base, applied on --preset and before the ablation switches
                      # (so e.g. no-margin still zeroes the margins)
                      "settings_from": "paper-ct2mr"},
}


def suite_settings(suite: str) -> Optional[Dict]:
    """The settings a suite applies over the preset (a preset's own keys), or None."""
    name = SUITES[suite].get("settings_from")
    return preset_layer(name) if name else None


def main_methods() -> List[str]:
    return methods.benchmark_methods()


def _machine() -> str:
    from ..runtime import machine_line
    return machine_line()


def _git_commit() -> Optional[str]:
    """HEAD, with ``+dirty`` when the package's tree has uncommitted changes."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              cwd=Path(__file__).parents[1], check=True).stdout.strip()
    try:
        head = git("rev-parse", "--short", "HEAD")
        return head + ("+dirty" if git("status", "--porcelain", "--", ".") else "")
    except Exception:
        return None


def prepare_suite(suite: str, work: Path, size: int, data_root: Path = SHARED) -> Dict[str, Path]:
    """Prepared source/target datasets of a suite under ``work/data`` (made once)."""
    from ..data import prepare_dataset, write_phantom
    out = work / "data"
    if suite == "mscmrseg19":
        root = data_root / "mscmrseg19"
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: the MS-CMRSeg data is not there (see ../shared/data/README.md)")
        dirs = {"source": out / f"c0_{size}", "target": out / f"lge_{size}"}
        for key, seq in (("source", "C0"), ("target", "LGE")):
            if not (dirs[key] / "manifest.json").is_file():
                prepare_dataset(str(root / seq / f"patient{{case}}_{seq}.nii.gz"),
                                str(root / seq / f"patient{{case}}_{seq}_manual.nii.gz"),
                                "mscmrseg", dirs[key], size=size)
        return dirs
    spec = SUITES[suite]
    ph = out / "phantom"
    if not (ph / "ct").is_dir():
        write_phantom(ph, cases=12, seed=2024)
    dirs = {}
    for key in ("source", "target"):
        dom = spec[key]
        dirs[key] = out / f"phantom_{dom}_{size}"
        if not (dirs[key] / "manifest.json").is_file():
            prepare_dataset(str(ph / dom / "case{case}_image.nii.gz"), str(ph / dom / "case{case}_label.nii.gz"),
                            "mmwhs", dirs[key], size=size, log=lambda *a, **k: None)
    return dirs


def plan(seeds: List[int], variant_seeds: List[int]) -> List[Dict]:
    runs = [{"name": m, "method": m, "seed": s, "ablations": []} for s in seeds for m in main_methods()]
    runs += [{"name": v, "method": VARIANT_OF, "seed": s, "ablations": a}
             for s in variant_seeds for v, a in VARIANTS.items()]
    return runs


def run_benchmark(suite: str, results: Path, work: Path, seeds: List[int], variant_seeds: List[int],
                  preset: str = "cpu", sets: Optional[List[str]] = None, only: Optional[List[str]] = None,
                  data_root: Path = SHARED) -> Dict:
    from ..adapt.pipeline import train
    from ..evaluate import evaluate_checkpoint

    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r} (choose from {', '.join(SUITES)})")
    sets = list(sets or [])
    settings = suite_settings(suite)
    suite_layers = [settings] if settings else []
    base = build_config(preset, suite_layers, sets=sets)
    total = base.train.iters + base.train.warmup_iters  # every method's budget
    dirs = prepare_suite(suite, work, base.data.size, data_root)
    results.mkdir(parents=True, exist_ok=True)
    commit = _git_commit()  # the code this process loaded, not HEAD when each run ends
    for r in plan(seeds, variant_seeds):
        if only and r["name"] not in only:
            continue
        res_dir = results / r["name"] / f"seed{r['seed']}"
        if (res_dir / "metrics.json").is_file():
            print(f"[skip] {r['name']} seed {r['seed']}: {res_dir / 'metrics.json'} exists")
            continue
        run_sets = sets + [f"train.seed={r['seed']}"]
        if "warmup_iters" not in methods.get_method(r["method"]).budgets:
            run_sets.append(f"train.iters={total}")  # same total budget as warm-up + MPSCL
        cfg = build_config(preset, suite_layers, sets=run_sets, ablations=r["ablations"])
        run_dir = work / "runs" / suite / r["name"] / f"seed{r['seed']}"
        init = None
        if r["name"] != r["method"]:  # MPSCL variants share the seed's warm-up
            shared = next(s.init_from for s in methods.get_method(r["method"]).stages if s.init_from)
            init = work / "runs" / suite / r["method"] / f"seed{r['seed']}" / shared / "final.pt"
            if not init.is_file():
                print(f"[wait] {r['name']} seed {r['seed']}: needs {init} (run mpscl first)")
                continue
        print(f"\n[run] {suite}: {r['name']} seed {r['seed']}", flush=True)
        t0 = time.perf_counter()
        final = train(dirs["source"], dirs["target"], r["method"], cfg, run_dir, init=init)
        train_s = time.perf_counter() - t0
        metrics = evaluate_checkpoint(final, dirs["target"], res_dir, cases=SUITES[suite]["test_cases"])
        info = {"suite": suite, "run": r["name"], "method": r["method"], "seed": r["seed"],
                "ablations": r["ablations"], "preset": preset, "suite_settings": settings,
                "sets": run_sets,
                "init": str(init) if init else None, "train_seconds": round(train_s, 1),
                "test_cases": SUITES[suite]["test_cases"], "git_commit": commit,
                "machine": _machine(), "dice_mean": metrics["summary"]["dice_mean"]}
        (res_dir / "run.json").write_text(json.dumps(info, indent=2) + "\n")
        print(f"[done] {r['name']} seed {r['seed']}: target Dice {info['dice_mean']:.2f}% "
              f"(train {train_s / 60:.1f} min)")
    return summarise(results, suite)


def _mean_std(v: List[float]):
    v = [x for x in v if x is not None and np.isfinite(x)]
    if not v:
        return None, None
    # sample std (n - 1): the spread a new seed would show; none from one seed
    return float(np.mean(v)), (float(np.std(v, ddof=1)) if len(v) > 1 else None)


def _case_dice(results: Path, name: str) -> Dict[int, Dict[str, float]]:
    """seed -> case -> mean Dice over classes, from each run's metrics.json."""
    out = {}
    for p in sorted((results / name).glob("seed*/metrics.json")):
        cases = json.loads(p.read_text())["cases"]
        out[int(p.parent.name[4:])] = {c["case"]: float(np.mean(list(c["dice"].values()))) for c in cases}
    return out


def paired_cases(results: Path, a: str, b: str) -> Optional[Dict]:
    """Per-case comparison of two methods over the seeds both have.

    Each test case's Dice is averaged over those seeds, then the two methods are compared
    case by case: mean difference, how many cases improve, and the two-sided Wilcoxon
    signed-rank p-value. With seeds of one configuration this measures the test-case
    spread, not the seed spread, so it is read beside the std over seeds.
    """
    from scipy.stats import wilcoxon
    da, db = _case_dice(results, a), _case_dice(results, b)
    seeds = sorted(set(da) & set(db))
    if not seeds:
        return None
    cases = sorted(set.intersection(*(set(da[s]) & set(db[s]) for s in seeds)), key=str)
    if len(cases) < 2:
        return None
    diff = np.array([np.mean([da[s][c] - db[s][c] for s in seeds]) for c in cases])
    p = float(wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
    return {"seeds": seeds, "cases": len(cases), "mean_diff": float(diff.mean()),
            "cases_better": int((diff > 0).sum()), "wilcoxon_p": p}


def _by_seed(method: Dict) -> Dict[int, float]:
    """seed -> mean Dice of one summarised method."""
    return dict(zip(method["seeds"], method["dice_per_seed"]))


def _paired_seeds(a: Dict, b: Dict) -> Optional[Dict]:
    """Mean Dice of ``a`` minus ``b``, seed by seed, over the seeds both have."""
    da, db = _by_seed(a), _by_seed(b)
    seeds = sorted(set(da) & set(db))
    if not seeds:
        return None
    diff = [da[s] - db[s] for s in seeds]
    return {"seeds": seeds, "diff_per_seed": diff, "mean_diff": float(np.mean(diff))}


def summarise(results: Path, suite: str) -> Dict:
    """summary.json / summary.md / dice_per_method.png from every run's metrics.json."""
    from ..evaluate import figures
    from ..fileio import atomic_write_text
    methods: Dict[str, Dict] = {}
    order = main_methods() + list(VARIANTS)
    for name in order:
        runs = sorted((results / name).glob("seed*/metrics.json"))
        if not runs:
            continue
        ms = [json.loads(p.read_text()) for p in runs]
        infos = [json.loads((p.parent / "run.json").read_text()) if (p.parent / "run.json").is_file() else {}
                 for p in runs]
        classes = list(ms[0]["summary"]["per_class"])
        entry = {"runs": len(ms), "seeds": [i.get("seed") for i in infos]}
        entry["dice_per_seed"] = [m["summary"]["dice_mean"] for m in ms]
        entry["dice_mean"], entry["dice_std"] = _mean_std(entry["dice_per_seed"])
        entry["assd_mean"], entry["assd_std"] = _mean_std([m["summary"]["assd_mean"] for m in ms])
        entry["per_class"] = {}
        for c in classes:
            d, ds = _mean_std([m["summary"]["per_class"][c]["dice"] for m in ms])
            a, as_ = _mean_std([m["summary"]["per_class"][c]["assd"] for m in ms])
            entry["per_class"][c] = {"dice": d, "dice_std": ds, "assd": a, "assd_std": as_}
        entry["train_minutes"] = [round(i.get("train_seconds", 0) / 60, 1) for i in infos]
        entry["git_commits"] = sorted({i["git_commit"] for i in infos if i.get("git_commit")})
        methods[name] = entry
    summary = {"suite": suite, "test_cases": SUITES[suite]["test_cases"],
               "direction": SUITES[suite]["direction"], "methods": methods,
               "machine": _machine(),
               "git_commits": sorted({c for m in methods.values() for c in m["git_commits"]})}
    summary["paired"] = {f"mpscl vs {b}": c for b in ("source-only", "advent")
                         if (c := paired_cases(results, "mpscl", b)) is not None}
    # each variant starts from its seed's MPSCL warm-up, so variant - MPSCL is paired by seed
    summary["variants_vs_mpscl"] = {v: c for v in VARIANTS if v in methods and "mpscl" in methods
                                    and (c := _paired_seeds(methods[v], methods["mpscl"])) is not None}
    # the gap closed, over the seeds all three have (an unfinished seed must not tilt it)
    gap_methods = ("source-only", "oracle", "mpscl")
    if all(k in methods for k in gap_methods):
        by_seed = [_by_seed(methods[k]) for k in gap_methods]
        common = sorted(set.intersection(*map(set, by_seed)))
        if common:
            so, orc, mp = (float(np.mean([d[s] for s in common])) for d in by_seed)
            if orc != so:
                summary["mpscl_gap_closed"] = (mp - so) / (orc - so)
                summary["mpscl_gap_closed_seeds"] = common
    atomic_write_text(results / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(results / "summary.md", _markdown(summary))
    if methods:
        figures.dice_bars({k: {"dice_mean": m["dice_mean"], "dice_std": m["dice_std"],
                               "per_class": {c: {"dice": v["dice"], "dice_std": v["dice_std"]}
                                             for c, v in m["per_class"].items()}}
                           for k, m in methods.items()}, results / "dice_per_method.png",
                          title=f"{suite}: target 3D Dice per structure (mean, std over seeds)")
    return summary


def _signed(d: float) -> str:
    """+1.2 / -0.3 / 0.0 (not "-0.0" for a tiny negative difference)."""
    t = f"{d:+.1f}"
    return "0.0" if t in ("+0.0", "-0.0") else t


def _fmt(m, s, digits=1):
    if m is None:
        return "n/a"
    return f"{m:.{digits}f}" if s is None else f"{m:.{digits}f} ({s:.{digits}f})"


def _markdown(summary: Dict) -> str:
    methods = summary["methods"]
    if not methods:
        return "# no finished runs yet\n"
    classes = list(next(iter(methods.values()))["per_class"])
    lines = [f"# {summary['suite']}: {summary['direction']}, scored on target cases {summary['test_cases']}", "",
             "3D Dice (%) and ASSD (voxels), mean (sample std, n - 1) over seeds (no std with one seed); "
             "per seed, the mean over test volumes.", "",
             "| method | runs | " + " | ".join(f"Dice {c}" for c in classes) + " | Dice mean | "
             + " | ".join(f"ASSD {c}" for c in classes) + " | ASSD mean | train min |",
             "|---" * (2 * len(classes) + 5) + "|"]
    for name, m in methods.items():
        pc = m["per_class"]
        lines.append(f"| {name} | {m['runs']} | " + " | ".join(_fmt(pc[c]["dice"], pc[c]["dice_std"]) for c in classes)
                     + f" | **{_fmt(m['dice_mean'], m['dice_std'])}** | "
                     + " | ".join(_fmt(pc[c]["assd"], pc[c]["assd_std"], 2) for c in classes)
                     + f" | {_fmt(m['assd_mean'], m['assd_std'], 2)} | {', '.join(map(str, m['train_minutes']))} |")
    if "mpscl_gap_closed" in summary:
        g = 100 * summary["mpscl_gap_closed"]
        on = f" (seeds {', '.join(map(str, summary['mpscl_gap_closed_seeds']))})"
        if round(g) > 0:
            gap = f"MPSCL closes {g:.0f}% of the source-only -> oracle gap{on}."
        elif round(g) < 0:
            gap = f"MPSCL does not close the source-only -> oracle gap{on}: it widens it by {-g:.0f}% of the gap."
        else:  # "widens it by 0%" read as a loss; say what it is
            gap = f"MPSCL closes none of the source-only -> oracle gap{on} ({g:+.1f}% of the gap)."
        lines += ["", gap]
    if summary.get("paired"):
        lines.append("")
    for name, c in summary.get("paired", {}).items():
        lines.append(f"- {name}, case by case (Dice averaged over seeds {', '.join(map(str, c['seeds']))}): "
                     f"{c['mean_diff']:+.1f} points on average, better on {c['cases_better']} of "
                     f"{c['cases']} cases, Wilcoxon signed-rank p = {c['wilcoxon_p']:.2g}.")
    if summary.get("variants_vs_mpscl"):
        lines += ["", "Each variant minus MPSCL, mean Dice, seed by seed (both start from that seed's warm-up):", ""]
    for name, c in summary.get("variants_vs_mpscl", {}).items():
        per = ", ".join(_signed(d) for d in c["diff_per_seed"])
        lines.append(f"- {name}: {_signed(c['mean_diff'])} (seed{'s' if len(c['seeds']) > 1 else ''} {', '.join(map(str, c['seeds']))}: {per})")
    lines += ["", "`train min`: training minutes per seed; the MPSCL variants start from the seed's "
              "MPSCL warm-up checkpoint, so theirs exclude the shared warm-up."]
    lines += ["", f"Machine: {summary['machine']}; code of the runs: commit "
              f"{', '.join(summary['git_commits']) or 'unknown'} (each run's `run.json` names its own)."]
    return "\n".join(lines) + "\n"
