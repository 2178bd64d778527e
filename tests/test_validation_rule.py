"""benchmarks/validation_rule.py: the research's adoption rule, on hand-made results."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("validation_rule", ROOT / "benchmarks" / "validation_rule.py")
rule = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rule)


def test_seed_verdict():
    assert rule.seed_verdict([2.0, -0.5, 0.1]) is True      # mean +0.53, worst -0.5
    assert rule.seed_verdict([4.8, -1.2, 1.5]) is False     # mean +1.7 but one 1.2 behind
    assert rule.seed_verdict([0.3, -0.2, -0.2]) is False    # mean -0.03
    assert rule.seed_verdict([0.5, 0.0, -0.5]) is False     # mean exactly 0 does not beat the base
    assert rule.seed_verdict([3.0, -1.0, 0.0]) is True      # exactly the margin is allowed
    assert rule.seed_verdict([3.0, -1.0, 0.0], margin=0.5) is False
    assert rule.seed_verdict([None, 0.4, 0.2]) is None      # pending
    assert rule.seed_verdict([None, -1.4, 0.2]) is False    # already decided


def _result(root, suite, run, seed, dice):
    d = root / suite / run / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"dice_mean": dice}))


def test_compare_reads_the_results_and_decides(tmp_path):
    for k, base, var in [(1, (70.0, 50.0, 50.0), (71.0, 50.5, 49.5)), (2, (70.0, 55.0, 55.0), (72.0, 53.5, 56.0))]:
        for s, b, v in zip(rule.SUITES, base, var):
            _result(tmp_path, s, "base", k, b)
            _result(tmp_path, s, "var", k, v)
    out = rule.compare(tmp_path, "base", "var")
    assert [r["seed"] for r in out["rows"]] == [1, 2]
    assert out["rows"][0]["diffs"] == pytest.approx([1.0, 0.5, -0.5]) and out["rows"][0]["passes"] is True
    assert out["rows"][1]["mean"] == pytest.approx(0.5) and out["rows"][1]["passes"] is False  # -1.5
    assert out["adopt"] == "no"
    assert rule.compare(tmp_path, "base", "var", margin=2.0)["adopt"] == "yes"
    _result(tmp_path, rule.SUITES[1], "var", 3, 56.0)  # seed 3 only on one suite, base absent
    assert rule.compare(tmp_path, "base", "var", margin=2.0)["adopt"] == "pending"


def test_seed_means_rule():
    rows = [{"diffs": [4.8, -0.4, 1.5]}, {"diffs": [3.2, -1.4, -1.7]}, {"diffs": [7.1, -0.4, 4.8]},
            {"diffs": [None, 9.0, 9.0]}]  # a seed missing a suite is left out
    m = rule.seed_means_verdict(rows)
    assert m["seeds"] == 3 and m["means"] == pytest.approx([5.0333, -0.7333, 1.5333], abs=1e-3)
    assert m["mean"] == pytest.approx(1.9444, abs=1e-3) and m["passes"] is True
    assert rule.seed_means_verdict(rows, min_gain=2.0)["passes"] is False
    assert rule.seed_means_verdict(rows, margin=0.5)["passes"] is False  # MR -> CT -0.73
    assert rule.seed_means_verdict([{"diffs": [None, 1.0, 1.0]}])["passes"] is None


def test_seeds_restrict_both_rules(tmp_path):
    diffs = {1: (4.8, -0.4, 1.5), 2: (3.2, -1.4, -1.7), 4: (2.0, -1.5, 2.0), 5: (2.0, 0.5, 0.0)}
    for k, d in diffs.items():
        for s, v in zip(rule.SUITES, d):
            _result(tmp_path, s, "base", k, 50.0)
            _result(tmp_path, s, "var", k, 50.0 + v)
    out = rule.compare(tmp_path, "base", "var", only=[4, 5])
    assert [r["seed"] for r in out["rows"]] == [4, 5] and out["adopt"] == "no"  # seed 4: -1.5
    m = rule.seed_means_verdict(out["rows"])
    assert m["seeds"] == 2 and m["means"] == pytest.approx([2.0, -0.5, 1.0])
    assert m["mean"] == pytest.approx(2.5 / 3) and m["passes"] is False  # below +1
    assert rule.seed_means_verdict(rule.compare(tmp_path, "base", "var", only=[1, 4])["rows"])["passes"] is True
    assert rule.compare(tmp_path, "base", "var", only=[3])["rows"] == []


def test_class_means_average_the_seeds_metrics(tmp_path):
    for k, (d, myo) in {1: (70.0, 60.0), 2: (74.0, 66.0)}.items():
        p = tmp_path / "lge" / "run" / f"seed{k}"
        p.mkdir(parents=True)
        (p / "metrics.json").write_text(json.dumps(
            {"summary": {"dice_mean": d, "per_class": {"MYO": {"dice": myo}, "LV": {"dice": 80.0}}}}))
    m = rule.class_means(tmp_path, "lge", "run", [1, 2])
    assert m == {"dice": pytest.approx(72.0), "per_class": {"MYO": pytest.approx(63.0), "LV": pytest.approx(80.0)}}
    assert rule.class_means(tmp_path, "lge", "run", [1, 3]) is None  # seed 3 missing


def test_the_base_can_come_from_another_results_folder(tmp_path):
    here, there = tmp_path / "xeon", tmp_path / "amd"
    for s, b, v in zip(rule.SUITES, (70.0, 50.0, 50.0), (70.5, 51.0, 48.0)):
        _result(there, s, "run", 1, b)
        _result(here, s, "run", 1, v)
    out = rule.compare(here, "run", "run", base_results=there)
    assert out["rows"][0]["diffs"] == pytest.approx([0.5, 1.0, -2.0]) and out["adopt"] == "no"
    assert rule.compare(here, "run", "run")["rows"][0]["diffs"] == [0.0, 0.0, 0.0]  # without it: itself


def test_several_results_folders_keep_each_pair_on_one_machine(tmp_path):
    zen3, zen4 = tmp_path / "zen3", tmp_path / "zen4"
    for s in rule.SUITES:  # seed 4: phantom on the Zen 3, LGE on the Zen 4; seed 5 on the Zen 4
        _result(zen4, s, "base", 5, 60.0)
        _result(zen4, s, "var", 5, 61.0)
    for s, b, v in zip(rule.SUITES[1:], (57.0, 59.6), (59.0, 59.9)):
        _result(zen3, s, "base", 4, b)
        _result(zen3, s, "var", 4, v)
        _result(zen4, s, "base", 4, 10.0)  # a stray base on the other machine: never paired
    _result(zen4, rule.SUITES[0], "base", 4, 75.0)
    _result(zen4, rule.SUITES[0], "var", 4, 76.5)
    out = rule.compare([zen3, zen4], "base", "var")
    assert [r["seed"] for r in out["rows"]] == [4, 5]
    assert out["rows"][0]["diffs"] == pytest.approx([1.5, 2.0, 0.3])
    assert out["rows"][1]["diffs"] == pytest.approx([1.0, 1.0, 1.0]) and out["adopt"] == "yes"
    assert rule.holder([zen3, zen4], rule.SUITES[0], "var", 4) == zen4
    assert rule.holder([zen3, zen4], rule.SUITES[1], "var", 4) == zen3
    assert rule.compare(zen3, "base", "var")["rows"][0]["passes"] is None  # LGE missing there
