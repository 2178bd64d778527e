"""benchmarks/paired_rows.py: two rows' test scores, seed by seed and case by case, on hand-made results."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("paired_rows", ROOT / "benchmarks" / "paired_rows.py")
paired_rows = importlib.util.module_from_spec(spec)
spec.loader.exec_module(paired_rows)


def _row(root, name, seed, cases):
    d = root / name / f"seed{seed}"
    d.mkdir(parents=True)
    per_case = [{"case": c, "dice": {"A": a, "B": b}} for c, (a, b) in cases.items()]
    mean = sum((a + b) / 2 for a, b in cases.values()) / len(cases)
    (d / "metrics.json").write_text(json.dumps({"cases": per_case, "summary": {"dice_mean": mean}}))


def test_seed_and_case_differences(tmp_path, capsys):
    # row a: case 1 (80, 60) -> 70, case 2 (50, 50) -> 50, case 3 (90, 70) -> 80 on both seeds
    # row b: 66, 52, 80 on seed 1 and 68, 50, 76 on seed 3 (seed 2 only in a: not compared)
    for k in (1, 2, 3):
        _row(tmp_path, "a", k, {1: (80, 60), 2: (50, 50), 3: (90, 70)})
    _row(tmp_path, "b", 1, {1: (66, 66), 2: (52, 52), 3: (80, 80)})
    _row(tmp_path, "b", 3, {1: (68, 68), 2: (50, 50), 3: (76, 76)})
    assert paired_rows.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "| 1 | 66.67 | 66.00 | +0.67 |" in out and "| 3 | 66.67 | 64.67 | +2.00 |" in out
    assert "| 2 |" not in out
    # over seeds 1 and 3, per case: +3.0, -1.0, +2.0 -> mean +1.33, better on 2 of 3
    assert "case by case over seeds 1, 3: +1.33, better on 2 of 3 cases" in out


def test_no_common_seed_is_an_error(tmp_path):
    _row(tmp_path, "a", 1, {1: (80, 60), 2: (50, 50)})
    _row(tmp_path, "b", 2, {1: (80, 60), 2: (50, 50)})
    with pytest.raises(SystemExit, match="no seed<k>/metrics.json in common"):
        paired_rows.main([str(tmp_path / "a"), str(tmp_path / "b")])
