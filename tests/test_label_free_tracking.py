"""benchmarks/label_free_tracking.py: pairs, orientation and agreement on hand-made results."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("label_free_tracking", ROOT / "benchmarks" / "label_free_tracking.py")
lft = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lft)


def _run(root, suite, run, seed, dice, entropy, flips, gap=None):
    d = root / suite / run / f"seed{seed}"
    d.mkdir(parents=True)
    lf = {"entropy": entropy, "flip_agreement_mean": flips}
    if gap is not None:
        lf["share_gap"] = gap
    (d / "run.json").write_text(json.dumps({"suite": suite, "run": run, "seed": seed,
                                            "dice_mean": dice, "label_free": lf}))


def test_pairs_are_oriented_and_counted_by_hand(tmp_path):
    # seed 1: b beats a by 4 Dice; b has lower entropy (agrees), lower flip agreement (disagrees)
    _run(tmp_path, "s", "a", 1, 60.0, 0.10, 80.0, 0.05)
    _run(tmp_path, "s", "b", 1, 64.0, 0.08, 78.0, 0.02)
    # seed 2: b loses by 2; higher entropy (agrees), lower flip agreement (agrees), gap equal (tie)
    _run(tmp_path, "s", "a", 2, 62.0, 0.10, 80.0, 0.04)
    _run(tmp_path, "s", "b", 2, 60.0, 0.12, 75.0, 0.04)
    # a run of another seed alone forms no pair; a run without indicators is left out
    _run(tmp_path, "s", "a", 3, 50.0, 0.1, 70.0)
    d = tmp_path / "s" / "c" / "seed1"
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"suite": "s", "run": "c", "seed": 1, "dice_mean": 99.0}))

    runs = lft.load_runs(tmp_path)
    assert sorted(runs) == [("s", 1), ("s", 2), ("s", 3)] and sorted(runs[("s", 1)]) == ["a", "b"]
    rows = lft.pair_differences(runs[("s", 1)])
    assert rows == [pytest.approx({"dice": 4.0, "-entropy": 0.02, "flip agreement": -2.0, "-share gap": 0.03})]
    all_rows = rows + lft.pair_differences(runs[("s", 2)]) + lft.pair_differences(runs[("s", 3)])
    assert lft.agreement(all_rows, "-entropy")[:2] == (2, 2)
    assert lft.agreement(all_rows, "flip agreement")[:2] == (1, 2)
    assert lft.agreement(all_rows, "-share gap")[:2] == (1, 2)  # the tie counts as disagreeing
    lines = lft.report(tmp_path)
    assert lines[2] == "| s | 2 | 2/2 | 1/2 | 1/2 |" and lines[3] == "| all | 2 | 2/2 | 1/2 | 1/2 |"


def test_correlation_from_three_pairs_and_the_empty_folder(tmp_path, capsys):
    rows = [{"dice": 1.0, "x": 2.0}, {"dice": 2.0, "x": 4.0}, {"dice": -1.0, "x": -2.0}]
    agree, n, r = lft.agreement(rows, "x")
    assert (agree, n) == (3, 3) and r == pytest.approx(1.0)
    assert lft.main(["--results", str(tmp_path)]) == 1
    assert "no run.json with label-free indicators" in capsys.readouterr().err
