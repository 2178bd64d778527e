"""Two rows' scores on the same test cases, seed by seed and case by case (issue 14).

Each argument is a folder of ``seed<k>/metrics.json`` (a benchmark row, a
``rescore_validation.py --test-cases`` unit, ...). Prints each shared seed's mean Dice and
their difference, then the benchmark summary's case-by-case comparison
(``bench.summary.paired_cases``: Dice averaged over classes, then over the seeds; Wilcoxon):

    python benchmarks/paired_rows.py \\
        benchmarks/results/test-pairs-zen3/mscmrseg19/mpscl-gin-long2x-st-mt995-size01-stage-test \\
        benchmarks/results/mscmrseg19/float32-zen3/source-only
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mpscl.bench.summary import paired_cases


def seed_means(row: Path) -> dict:
    return {int(p.parent.name[4:]): json.loads(p.read_text())["summary"]["dice_mean"]
            for p in sorted(row.glob("seed*/metrics.json"))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="the row to compare")
    ap.add_argument("b", type=Path, help="the row it is compared with")
    args = ap.parse_args(argv)
    ma, mb = seed_means(args.a), seed_means(args.b)
    seeds = sorted(set(ma) & set(mb))
    if not seeds:
        raise SystemExit(f"{args.a} and {args.b}: no seed<k>/metrics.json in common")
    print("| seed | a | b | a - b |\n|---|---|---|---|")
    for k in seeds:
        print(f"| {k} | {ma[k]:.2f} | {mb[k]:.2f} | {ma[k] - mb[k]:+.2f} |")
    # paired_cases reads RESULTS/<name>/seed*/: with RESULTS "." a name may be any folder path
    c = paired_cases(Path("."), str(args.a), str(args.b))
    if c:
        print(f"\ncase by case over seeds {', '.join(map(str, c['seeds']))}: {c['mean_diff']:+.2f}, "
              f"better on {c['cases_better']} of {c['cases']} cases, Wilcoxon p = {c['wilcoxon_p']:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
