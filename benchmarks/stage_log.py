"""Logged training quantities of one or more stages, averaged over windows of iterations: how
a run got where it ended (say the source loss and the share of the teacher's foreground kept
as self-training labels), without target labels.

    python benchmarks/stage_log.py RUN/mpscl/log.jsonl [MORE/log.jsonl ...] \\
        --keys seg_src,st_selected_fg --windows 4

Each log is cut into ``--windows`` equal spans of its logged iterations; a row per log and
span gives the mean of each key over the records in it ("-" where no record has the key).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional


def read_log(path: Path) -> List[Dict]:
    """The log's records in order of iteration, one per iteration: a resumed run logs again
    the iterations after its last checkpoint, and the last record of each is the one that
    counts (as ``mpscl.bench.compare.logged_train_seconds`` reads them). A line cut short by
    a kill is skipped with a note; a log with no readable record is refused."""
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except OSError as e:
        raise SystemExit(f"{path}: not a readable training log ({e})")
    by_iter: Dict[int, Dict] = {}
    skipped = 0
    for line in lines:
        try:
            rec = json.loads(line)
            by_iter[int(rec["iter"])] = rec
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            skipped += 1
    if not by_iter:
        raise SystemExit(f"{path}: not a readable training log (no record with an iteration)")
    if skipped:
        print(f"[note] {path}: {skipped} unreadable line(s) skipped", file=sys.stderr)
    return [by_iter[i] for i in sorted(by_iter)]


def window_means(records: List[Dict], keys: List[str], windows: int) -> List[Dict]:
    """Per span of iterations (``windows`` equal ones between the first and last logged
    iteration, the last closed): its first and last iteration and the mean of each key
    over the records that have it (None where none has)."""
    if windows < 1:
        raise ValueError("windows must be >= 1")
    its = [r["iter"] for r in records]
    if not its:
        return []
    lo, hi = min(its), max(its)
    width = (hi - lo) / windows
    rows = []
    for w in range(windows):
        a, b = lo + w * width, lo + (w + 1) * width
        sel = [r for r in records if a <= r["iter"] < b or (w == windows - 1 and r["iter"] == hi)]
        row: Dict[str, Optional[float]] = {"from": math.ceil(a), "to": hi if w == windows - 1 else math.ceil(b) - 1}
        for k in keys:
            vals = [r[k] for r in sel if k in r]
            row[k] = sum(vals) / len(vals) if vals else None
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("logs", nargs="+", type=Path)
    ap.add_argument("--keys", default="seg_src,st_trg,st_selected,st_selected_fg")
    ap.add_argument("--windows", type=int, default=4)
    a = ap.parse_args(argv)
    keys = [k for k in a.keys.split(",") if k]
    print("| log | iterations | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for path in a.logs:
        for row in window_means(read_log(path), keys, a.windows):
            cells = ["-" if row[k] is None else f"{row[k]:.3f}" for k in keys]
            print(f"| {path} | {row['from']}-{row['to']} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
