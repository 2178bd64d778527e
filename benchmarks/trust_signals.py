"""Do label-free signals order the classes' self-training label precision across suites?

    python benchmarks/trust_signals.py lge=LGE.md mr2ct=MR2CT.md ct2mr=CT2MR.md [--lge lge]

Each file is the table `self_training_quality.py --label-free` printed for one suite. Over all
(suite, foreground class) cells: the Spearman rank correlation of each signal with the
precision of the kept labels (flip agreement as it is; the share and pieces ratios as
-|log ratio|, closer to the source taken as better), and whether every MYO cell of the
other suites ranks below every cell of the ``--lge`` suite (benchmarks/README.md, "Which
classes' self-training labels can be trusted, without labels?").
"""
import argparse
import math
from pathlib import Path

from scipy.stats import spearmanr

SIGNALS = {"flip agreement": lambda flip, share, pieces: flip,
           "-|log share ratio|": lambda flip, share, pieces: -abs(math.log(share)),
           "-|log pieces ratio|": lambda flip, share, pieces: -abs(math.log(pieces))}


def read_cells(suite: str, path: Path):
    """(suite, class, precision, flip agreement, share ratio, pieces ratio) per foreground class."""
    cells = []
    for line in path.read_text().splitlines():
        p = [x.strip() for x in line.strip().strip("|").split("|")]
        if len(p) < 11 or p[0] in ("class", "background") or p[0].startswith("---"):
            continue
        cells.append((suite, p[0], float(p[4]), float(p[8]), float(p[9]), float(p[10])))
    if not cells:
        raise SystemExit(f"{path}: no table of self_training_quality.py --label-free in it")
    return cells


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tables", nargs="+", metavar="SUITE=TABLE")
    ap.add_argument("--lge", default="lge", help="the suite whose cells the other suites' MYO must rank below")
    a = ap.parse_args()
    cells = []
    for t in a.tables:
        suite, _, path = t.partition("=")
        if not path:
            raise SystemExit(f"{t}: expected SUITE=TABLE, e.g. lge=lge-warmup.md")
        cells += read_cells(suite, Path(path))
    precision = [c[2] for c in cells]
    print("| signal | Spearman with precision | other suites' MYO below every cell of", a.lge, "|")
    print("|---|---|---|")
    for name, signal in SIGNALS.items():
        values = [signal(*c[3:]) for c in cells]
        rho = spearmanr(precision, values).correlation
        ref = [v for v, c in zip(values, cells) if c[0] == a.lge]
        myo = [v for v, c in zip(values, cells) if c[0] != a.lge and c[1] == "MYO"]
        print(f"| {name} | {rho:+.3f} | {'yes' if ref and all(m < min(ref) for m in myo) else 'no'} |")


if __name__ == "__main__":
    main()
