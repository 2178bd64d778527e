"""The adoption rules of the CPU-recipe research (issue 14), applied to validation results.

Per seed (rounds 1-5): a variant enters the recipe only if, on every seed, its mean Dice over
the three validation suites (LGE 1-5, phantom MR -> CT 1-3, phantom CT -> MR 1-3) is above the
base's and it is nowhere more than ``--margin`` (1.0) points behind.
On the seeds' means (``--seed-means MIN_GAIN``, adopted from round 6 with MIN_GAIN 1.0): each
suite's mean difference over the seeds at least ``-margin`` and the three-suite mean at least
MIN_GAIN. ``--seeds`` restricts both rules to the seeds named (a confirmation on fresh seeds).
Both runs are read from RESULTS/<suite>/<run>/seed<k>/run.json (``appearance_validation.py``,
``adabn_validation.py``); a seed is judged only when both runs have it on all three suites.
``--results`` may be given more than once (seeds trained on different machines): each suite and
seed is read from the first folder holding the variant's run, the base from that same folder,
so a pair never mixes machines.

    python benchmarks/validation_rule.py --base mpscl-gin-longwarm+adabn \
        --variant mpscl-gin-fda-longwarm+adabn --seed-means 1.0 --seeds 4,5 \
        --results benchmarks/results/appearance-validation
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

SUITES = ("mscmrseg19", "phantom-mr2ct", "phantom-ct2mr")


def seed_verdict(diffs: List[Optional[float]], margin: float = 1.0) -> Optional[bool]:
    """One seed passes: the mean difference over the suites is above 0 and none is below
    ``-margin``. With a suite missing (None): False if another is already below ``-margin``,
    else None (pending)."""
    known = [d for d in diffs if d is not None]
    if any(d < -margin for d in known):
        return False
    if len(known) < len(diffs):
        return None
    return sum(known) / len(known) > 0


Folders = Union[Path, Sequence[Path]]


def _dice(results: Path, suite: str, run: str, seed: int) -> Optional[float]:
    p = results / suite / run / f"seed{seed}" / "run.json"
    return json.loads(p.read_text())["dice_mean"] if p.is_file() else None


def _folders(results: Folders) -> List[Path]:
    return [Path(results)] if isinstance(results, (str, Path)) else [Path(r) for r in results]


def holder(results: Folders, suite: str, run: str, seed: int) -> Path:
    """The first folder holding ``run``'s seed on ``suite`` (the first folder if none does)."""
    folders = _folders(results)
    return next((r for r in folders if (r / suite / run / f"seed{seed}" / "run.json").is_file()), folders[0])


def compare(results: Folders, base: str, variant: str, margin: float = 1.0,
            only: Optional[List[int]] = None, base_results: Optional[Path] = None) -> Dict:
    """Per seed of the variant (those in ``only`` if given): its differences to the base on
    each suite and the verdict; ``adopt`` is "yes" (every seed passes), "no" (one fails) or
    "pending". ``results`` is one folder or several (each suite and seed from the first that
    holds the variant's run); the base is read from ``base_results`` where given (say the same
    run trained on another machine), else from the variant's folder."""
    folders = _folders(results)
    seeds = sorted({int(p.name[4:]) for r in folders for s in SUITES for p in (r / s / variant).glob("seed*")})
    if only is not None:
        seeds = [k for k in seeds if k in only]
    rows = []
    for k in seeds:
        where = [holder(folders, s, variant, k) for s in SUITES]
        pairs = [(_dice(base_results or w, s, base, k), _dice(w, s, variant, k)) for s, w in zip(SUITES, where)]
        diffs = [None if b is None or v is None else v - b for b, v in pairs]
        known = [d for d in diffs if d is not None]
        rows.append({"seed": k, "diffs": diffs, "mean": sum(known) / len(known) if known else None,
                     "passes": seed_verdict(diffs, margin)})
    verdicts = [r["passes"] for r in rows]
    adopt = "no" if False in verdicts or not rows else "pending" if None in verdicts else "yes"
    return {"rows": rows, "adopt": adopt}


def seed_means_verdict(rows: List[Dict], margin: float = 1.0, min_gain: float = 1.0) -> Dict:
    """The rule on the seeds' means (adopted in round 6; benchmarks/README.md): over the
    seeds judged on every suite, each suite's mean difference at least ``-margin`` and the
    three-suite mean at least ``min_gain``."""
    full = [r["diffs"] for r in rows if all(d is not None for d in r["diffs"])]
    if not full:
        return {"seeds": 0, "means": None, "mean": None, "passes": None}
    means = [sum(col) / len(col) for col in zip(*full)]
    mean = sum(means) / len(means)
    return {"seeds": len(full), "means": means, "mean": mean,
            "passes": min(means) >= -margin and mean >= min_gain}


def class_means(results: Folders, suite: str, run: str, seeds: List[int],
                paired_with: Optional[str] = None) -> Optional[Dict]:
    """Mean Dice and per-class Dice over ``seeds`` of one run (from each seed's metrics.json,
    in the first of the folders holding it, or holding ``paired_with``'s seed, as ``compare``
    pairs them), or None when a seed is missing."""
    paths = [holder(results, suite, paired_with or run, k) / suite / run / f"seed{k}" / "metrics.json"
             for k in seeds]
    if not seeds or not all(p.is_file() for p in paths):
        return None
    sums = [json.loads(p.read_text())["summary"] for p in paths]
    return {"dice": sum(x["dice_mean"] for x in sums) / len(sums),
            "per_class": {c: sum(x["per_class"][c]["dice"] for x in sums) / len(sums)
                          for c in sums[0]["per_class"]}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--variant", required=True)
    ap.add_argument("--results", type=Path, action="append", default=None,
                    help="results folder; repeat for seeds trained elsewhere (default: "
                         "benchmarks/results/appearance-validation)")
    ap.add_argument("--base-results", type=Path, default=None,
                    help="read the base from this results folder instead of --results")
    ap.add_argument("--margin", type=float, default=1.0)
    ap.add_argument("--seed-means", type=float, metavar="MIN_GAIN", default=None,
                    help="also judge by the seeds' means: every suite >= -margin, the three-suite mean >= MIN_GAIN")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds to judge (default: every seed)")
    ap.add_argument("--per-class", action="store_true",
                    help="also each run's mean and per-class Dice over the seeds judged on every suite")
    a = ap.parse_args(argv)
    only = None if a.seeds is None else [int(k) for k in a.seeds.split(",")]
    a.results = a.results or [Path("benchmarks/results/appearance-validation")]
    out = compare(a.results, a.base, a.variant, a.margin, only, a.base_results)
    base_name = a.base if a.base_results is None else f"{a.base} ({a.base_results})"
    print(f"{a.variant} minus {base_name}, mean Dice on the validation cases\n")
    print("| seed | " + " | ".join(SUITES) + " | mean | passes |")
    print("|---" * (len(SUITES) + 3) + "|")
    word = {True: "yes", False: "no", None: "pending"}
    for r in out["rows"]:
        cells = ["-" if d is None else f"{d:+.1f}" for d in r["diffs"]]
        mean = "-" if r["mean"] is None else f"{r['mean']:+.2f}"
        print(f"| {r['seed']} | " + " | ".join(cells) + f" | {mean} | {word[r['passes']]} |")
    print(f"\nadopt: {out['adopt']} (every seed must pass; a suite missing leaves a seed pending)")
    if a.seed_means is not None:
        m = seed_means_verdict(out["rows"], a.margin, a.seed_means)
        if m["passes"] is None:
            print("seed means: no seed judged on every suite")
        else:
            print(f"seed means over {m['seeds']} seeds: " + ", ".join(f"{v:+.2f}" for v in m["means"])
                  + f"; three-suite mean {m['mean']:+.2f}: {'passes' if m['passes'] else 'fails'}"
                  f" (each >= {-a.margin:+.1f}, mean >= {a.seed_means:+.1f})")
    if a.per_class:
        seeds = [r["seed"] for r in out["rows"] if all(d is not None for d in r["diffs"])]
        print(f"\nmean Dice over seeds {', '.join(map(str, seeds))} (per class)")
        for suite in SUITES:
            for run, where, by in ((a.base, a.base_results or a.results, None if a.base_results else a.variant),
                                   (a.variant, a.results, None)):
                m = class_means(where, suite, run, seeds, paired_with=by)
                if m is not None:
                    cls = ", ".join(f"{c} {v:.1f}" for c, v in m["per_class"].items())
                    print(f"- {suite} {run}: {m['dice']:.2f} ({cls})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
