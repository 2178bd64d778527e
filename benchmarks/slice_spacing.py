"""Slice spacing and slice count of prepared datasets (what ``data.context`` neighbours mean in mm).

    python benchmarks/slice_spacing.py bench_work/data/c0_128 bench_work/data/lge_128
"""
import sys

import numpy as np

from mpscl.data import PreparedDataset
from mpscl.data.context import case_slice_spacing


def main(paths):
    for path in paths:
        ds = PreparedDataset(path)
        metas = [ds.meta(c) for c in ds.select(None)]
        gap = [case_slice_spacing(m) for m in metas]
        n = [int(m["slices"]) for m in metas]
        print(f"{path}: {len(metas)} cases; slice spacing median {np.median(gap):.1f} mm "
              f"({min(gap):.1f}-{max(gap):.1f}); slices median {np.median(n):.0f} ({min(n)}-{max(n)})")


if __name__ == "__main__":
    main(sys.argv[1:])
