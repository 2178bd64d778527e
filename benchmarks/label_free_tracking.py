"""Does a label-free indicator follow the paired Dice differences? (issue 14; decides nothing alone)

Reads RESULTS/<suite>/<run>/seed<k>/run.json as ``appearance_validation.py`` writes them since
the indicators were added (``label_free``: ``mpscl.evaluate.label_free``). Every two runs of
the same suite and seed form a pair (they share the seed, and stage-only runs their warm-up).
For each indicator, oriented so that larger should mean better (``-entropy``,
``flip_agreement_mean``, ``-share_gap``), a pair agrees when the indicator's difference has the
sign of the Dice difference. Printed per suite and over all: agreeing pairs / pairs (ties in
either count as disagreeing), and the Pearson correlation of the two differences.

    python benchmarks/label_free_tracking.py --results benchmarks/results/validation-3600-zen4-bf16
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

# name -> (key in run.json's label_free, sign that makes larger better)
INDICATORS = {"-entropy": ("entropy", -1.0), "flip agreement": ("flip_agreement_mean", 1.0),
              "-share gap": ("share_gap", -1.0)}


def load_runs(results: Path) -> Dict[Tuple[str, int], Dict[str, Dict]]:
    """{(suite, seed): {run: run.json}} for the runs that carry label-free indicators."""
    out: Dict[Tuple[str, int], Dict[str, Dict]] = {}
    for p in sorted(Path(results).glob("*/*/seed*/run.json")):
        r = json.loads(p.read_text())
        if "label_free" in r:
            out.setdefault((r["suite"], int(r["seed"])), {})[r["run"]] = r
    return out


def pair_differences(runs: Dict[str, Dict]) -> List[Dict[str, Optional[float]]]:
    """Every pair (a, b) of one suite and seed: Dice b - a and each oriented indicator b - a."""
    rows = []
    for a, b in itertools.combinations(sorted(runs), 2):
        ra, rb = runs[a], runs[b]
        row: Dict[str, Optional[float]] = {"dice": rb["dice_mean"] - ra["dice_mean"]}
        for name, (key, sign) in INDICATORS.items():
            va, vb = ra["label_free"].get(key), rb["label_free"].get(key)
            row[name] = None if va is None or vb is None else sign * (vb - va)
        rows.append(row)
    return rows


def agreement(rows: Sequence[Dict[str, Optional[float]]], name: str) -> Tuple[int, int, Optional[float]]:
    """(pairs whose indicator difference has the Dice difference's sign, pairs, Pearson r)."""
    pairs = [(r["dice"], r[name]) for r in rows if r[name] is not None]
    agree = sum(1 for d, v in pairs if d * v > 0)
    if len(pairs) < 3:
        return agree, len(pairs), None
    d, v = np.array(pairs, dtype=float).T
    r = None if d.std() == 0 or v.std() == 0 else float(np.corrcoef(d, v)[0, 1])
    return agree, len(pairs), r


def report(results: Path) -> List[str]:
    by_key = load_runs(results)
    suites: Dict[str, List[Dict]] = {}
    for (suite, _), runs in sorted(by_key.items()):
        suites.setdefault(suite, []).extend(pair_differences(runs))
    suites["all"] = [r for rows in list(suites.values()) for r in rows]
    lines = ["| suite | pairs | " + " | ".join(f"{n}: agree / r" for n in INDICATORS) + " |",
             "|---|---|" + "---|" * len(INDICATORS)]
    for suite, rows in suites.items():
        cells = []
        for name in INDICATORS:
            agree, n, r = agreement(rows, name)
            cells.append(f"{agree}/{n}" + ("" if r is None else f" / {r:+.2f}"))
        lines.append(f"| {suite} | {len(rows)} | " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, type=Path)
    args = ap.parse_args(argv)
    if not load_runs(args.results):
        print(f"{args.results}: no run.json with label-free indicators (runs before they were "
              "recorded have none)", file=sys.stderr)
        return 1
    print("\n".join(report(args.results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
