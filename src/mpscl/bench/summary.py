"""``summary.json`` / ``summary.md`` / ``dice_per_method.png`` of a benchmark's results folder.

Read from each run's ``RESULTS/<row>/seed<N>/metrics.json`` and ``run.json`` only, so a
results folder summarises the same way whatever code made its runs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .rows import Row, default_rows, merge_rows
from .suites import BUILTIN, Suite


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


def _machines(infos: List[Dict]) -> str:
    """The machines the runs name (``run.json``), else this one: a summary made elsewhere
    later still says where its numbers came from."""
    seen = list(dict.fromkeys(i["machine"] for i in infos if i.get("machine")))
    if seen:
        return "; ".join(seen)
    from ..runtime import machine_line
    return machine_line()


def _entry(ms: List[Dict], infos: List[Dict]) -> Dict:
    """One row of summary.json from its runs' metrics and run records."""
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
    # bf16 / off / per stage (compare._amp); None from runs older than the record
    entry["amp_per_seed"] = [i.get("amp") for i in infos]
    return entry


def arithmetic_by_seed(methods: Dict) -> Dict[int, Dict[str, List[str]]]:
    """seed -> arithmetic -> the rows trained in it ("not recorded" for runs older than the
    record). Under ``train.amp: auto`` the arithmetic follows the CPU, so rows of one seed
    trained on different machines can differ, and their paired difference mixes the two."""
    out: Dict[int, Dict[str, List[str]]] = {}
    for name, m in methods.items():
        for seed, amp in zip(m["seeds"], m["amp_per_seed"]):
            out.setdefault(seed, {}).setdefault(amp or "not recorded", []).append(name)
    return dict(sorted(out.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))


def _arithmetic_lines(methods: Dict) -> List[str]:
    by_seed = arithmetic_by_seed(methods)
    kinds = {a for rows in by_seed.values() for a in rows}
    if len(kinds) == 1:
        return [f"Arithmetic of every run: {kinds.pop()} (`train.amp`, recorded in each `run.json`)."]
    lines = ["Arithmetic (`train.amp`; under `auto` it follows the CPU, so rows trained on different "
             "machines can differ):"]
    for seed, rows in by_seed.items():
        what = "; ".join(f"{a}: {', '.join(r)}" for a, r in rows.items())
        # an unrecorded arithmetic is unknown, not different
        mixed = len(set(rows) - {"not recorded"}) > 1
        lines.append(f"- seed {seed}: {what}"
                     + (" **(mixed: this seed's paired differences compare two arithmetics)**" if mixed else ""))
    if "not recorded" in kinds:
        lines.append("- not recorded: runs older than the record; their `run.json` does not say.")
    return lines


def summarise(results: Path, suite: Union[str, Suite], rows: Optional[Sequence[Row]] = None,
              skipped: Optional[Dict[str, str]] = None) -> Dict:
    """summary.json / summary.md / dice_per_method.png from every run's metrics.json.

    ``rows``: the suite's rows, in table order (default: the main methods, the MPSCL
    variants, then the suite's own); ``skipped``: row -> why it was not run (a line each).
    """
    from ..evaluate import figures
    from ..fileio import atomic_write_text
    suite = BUILTIN[suite] if isinstance(suite, str) else suite
    rows = list(rows) if rows is not None else merge_rows(default_rows(), suite.rows)
    methods: Dict[str, Dict] = {}
    all_infos: List[Dict] = []
    for row in rows:
        runs = sorted((results / row.name).glob("seed*/metrics.json"))
        if not runs:
            continue
        ms = [json.loads(p.read_text()) for p in runs]
        infos = [json.loads((p.parent / "run.json").read_text()) if (p.parent / "run.json").is_file() else {}
                 for p in runs]
        all_infos += infos
        methods[row.name] = _entry(ms, infos)
    summary = {"suite": suite.name, "test_cases": suite.test_cases or "all",
               "direction": suite.direction, "methods": methods,
               "machine": _machines(all_infos),
               "git_commits": sorted({c for m in methods.values() for c in m["git_commits"]})}
    # per case: MPSCL (and the suite's recommended row) against the two baselines
    leads = list(dict.fromkeys(["mpscl"] + ([suite.recommended] if suite.recommended else [])))
    summary["paired"] = {f"{a} vs {b}": c for a in leads for b in ("source-only", "advent")
                         if a != b and (c := paired_cases(results, a, b)) is not None}
    # a row that starts from another's warm-up is paired with it seed by seed
    for base in dict.fromkeys(r.starts_from for r in rows if r.starts_from):
        summary[f"variants_vs_{base}"] = {
            r.name: c for r in rows if r.starts_from == base and r.name in methods and base in methods
            and (c := _paired_seeds(methods[r.name], methods[base])) is not None}
    # the gap closed, over the seeds all three have (an unfinished seed must not tilt it)
    gap = _gap_share(methods, "source-only", "mpscl")
    if gap and gap["share"] is not None:
        summary["mpscl_gap_closed"], summary["mpscl_gap_closed_seeds"] = gap["share"], gap["seeds"]
    elif gap:  # a share of a negative gap reads as a gain; say there is none
        summary["no_gap_seeds"] = gap["seeds"]
    if suite.recommended and suite.baseline != "source-only":
        summary.update(_recommended_block(methods, suite))
    summary["val_cases"] = suite.val_cases
    if skipped:
        summary["skipped"] = dict(skipped)
    if suite.recommended:
        summary["recommended"] = suite.recommended
    atomic_write_text(results / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(results / "summary.md", _markdown(summary))
    if methods:
        figures.dice_bars({k: {"dice_mean": m["dice_mean"], "dice_std": m["dice_std"],
                               "per_class": {c: {"dice": v["dice"], "dice_std": v["dice_std"]}
                                             for c, v in m["per_class"].items()}}
                           for k, m in methods.items()}, results / "dice_per_method.png",
                          title=f"{suite.name}: target 3D Dice per structure (mean, std over seeds)")
    return summary


def table(summary: Dict) -> str:
    """The terminal's table: one line per row, mean Dice (std over seeds) and mean ASSD."""
    rows = summary["methods"]
    if not rows:
        return "no finished runs yet"
    width = max(len(n) for n in rows) + 2
    lines = [f"{'row':{width}s}runs  Dice mean (std)  ASSD mean (std)"]
    for name, m in rows.items():
        mark = "  <- recommended" if name == summary.get("recommended") else ""
        lines.append(f"{name:{width}s}{m['runs']:4d}  {_fmt(m['dice_mean'], m['dice_std'], 2):15s}  "
                     f"{_fmt(m['assd_mean'], m['assd_std'], 2):15s}{mark}".rstrip())
    for name, why in summary.get("skipped", {}).items():
        lines.append(f"{name:{width}s}   -  skipped: {why}")
    return "\n".join(lines)


def _signed(d: float) -> str:
    """+1.2 / -0.3 / 0.0 (not "-0.0" for a tiny negative difference)."""
    t = f"{d:+.1f}"
    return "0.0" if t in ("+0.0", "-0.0") else t


def _fmt(m, s, digits=1):
    if m is None:
        return "n/a"
    return f"{m:.{digits}f}" if s is None else f"{m:.{digits}f} ({s:.{digits}f})"


def _split_line(summary: Dict) -> str:
    """Which target labels were scored and which may inform choices."""
    val = summary.get("val_cases")
    if val:
        return (f"Target cases {val} may inform choices (validation); this benchmark makes none and "
                f"scores the last checkpoint on cases {summary['test_cases']}.")
    return (f"No target case is set aside for choices (no validation cases); this benchmark makes "
            f"none and scores the last checkpoint on target cases {summary['test_cases']}.")


def _gap_share(methods: Dict, base: str, row: str) -> Optional[Dict]:
    """Share of the ``base`` -> oracle gap that ``row`` closes, over the seeds all three have
    (``share`` None when the oracle is not above ``base``: there is no gap to close)."""
    if not all(k in methods for k in (base, "oracle", row)):
        return None
    by_seed = [_by_seed(methods[k]) for k in (base, "oracle", row)]
    common = sorted(set.intersection(*map(set, by_seed)))
    if not common:
        return None
    b, orc, r = (float(np.mean([d[s] for s in common])) for d in by_seed)
    return {"share": (r - b) / (orc - b) if orc > b else None, "seeds": common}


def _recommended_block(methods: Dict, suite: Suite) -> Dict:
    """The recommended row against the suite's baseline (e.g. plain source-only): the gap it
    closes, and seed by seed against the baseline, source-only and AdvEnt (same seeds)."""
    rec, out = suite.recommended, {"baseline": suite.baseline}
    gaps = {r: g for r in methods if r not in (suite.baseline, "oracle")
            and (g := _gap_share(methods, suite.baseline, r)) is not None}
    if gaps:
        out["gap_closed"] = gaps
    if rec in methods:
        out["recommended_vs"] = {b: c for b in dict.fromkeys((suite.baseline, "source-only", "advent"))
                                 if b in methods and b != rec
                                 and (c := _paired_seeds(methods[rec], methods[b])) is not None}
    return out


def _recommended_lines(summary: Dict) -> List[str]:
    base, lines = summary["baseline"], []
    for row, g in summary.get("gap_closed", {}).items():
        if g["share"] is not None:
            lines.append(f"- {row} closes {int(round(100 * g['share']))}% of the {base} -> oracle gap "
                         f"(seeds {', '.join(map(str, g['seeds']))}).")
    for b, c in summary.get("recommended_vs", {}).items():
        per = ", ".join(_signed(d) for d in c["diff_per_seed"])
        lines.append(f"- {summary['recommended']} minus {b}, mean Dice seed by seed: "
                     f"{_signed(c['mean_diff'])} ({per}).")
    return (["", f"Against the baseline row **{base}**:", ""] + lines) if lines else []


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
    if "no_gap_seeds" in summary:
        lines += ["", f"The oracle is not above source-only (seeds {', '.join(map(str, summary['no_gap_seeds']))}): "
                      "there is no source-only -> oracle gap for MPSCL to close."]
    if summary.get("paired"):
        lines.append("")
    for name, c in summary.get("paired", {}).items():
        lines.append(f"- {name}, case by case (Dice averaged over seeds {', '.join(map(str, c['seeds']))}): "
                     f"{c['mean_diff']:+.1f} points on average, better on {c['cases_better']} of "
                     f"{c['cases']} cases, Wilcoxon signed-rank p = {c['wilcoxon_p']:.2g}.")
    for key in (k for k in summary if k.startswith("variants_vs_")):
        base = key[len("variants_vs_"):]
        if summary[key]:
            shown = "MPSCL" if base == "mpscl" else base
            lines += ["", f"Each variant minus {shown}, mean Dice, seed by seed (both start from that seed's warm-up):", ""]
        for name, c in summary[key].items():
            per = ", ".join(_signed(d) for d in c["diff_per_seed"])
            lines.append(f"- {name}: {_signed(c['mean_diff'])} (seed{'s' if len(c['seeds']) > 1 else ''} "
                         f"{', '.join(map(str, c['seeds']))}: {per})")
    lines += ["", "`train min`: training minutes per seed; the MPSCL variants start from the seed's "
              "MPSCL warm-up checkpoint, so theirs exclude the shared warm-up."]
    lines += ["", _split_line(summary)]
    lines += [f"- {name}: skipped ({why})." for name, why in summary.get("skipped", {}).items()]
    if summary.get("recommended"):
        lines += [f"- Recommended: **{summary['recommended']}** (the suite's choice)."]
    if summary.get("baseline"):
        lines += _recommended_lines(summary)
    lines += [""] + _arithmetic_lines(methods)
    lines += ["", f"Machine: {summary['machine']}; code of the runs: commit "
              f"{', '.join(summary['git_commits']) or 'unknown'} (each run's `run.json` names its own)."]
    return "\n".join(lines) + "\n"
