"""benchmarks/class_proportions.py --windows: how far a class's share in N source slices strays."""
import importlib.util
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # its own imports (rescore_validation)
spec = importlib.util.spec_from_file_location("class_proportions", ROOT / "benchmarks" / "class_proportions.py")
cp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cp)


def test_window_spread_by_hand(capsys):
    ys = np.zeros((4, 2, 2), np.int64)
    ys[0, 0, 0] = 1  # one class-1 pixel in 16: share 1/16; in slice 0 alone 1/4, i.e. 4x
    prior = cp.class_shares(ys, 2)
    cp.window_spread(ys, prior, ["bg", "c1"], [1, 4], draws=400)
    one, all_ = capsys.readouterr().out.splitlines()
    assert one.endswith("| 0.00-4.00x |")  # a quarter of single slices hold it: p10 0, p90 4x
    assert all_.endswith("| 1.00-1.00x |")  # every slice: the global share itself
