"""``mpscl demo --quick``: the README's main job, end to end, in miniature."""
import json

import pytest

from mpscl.cli import main


@pytest.mark.slow
def test_demo_quick_writes_a_report(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rep = tmp_path / "report"
    assert str(rep / "README.md") in out and "MPSCL recipe target Dice" in out
    summary = json.loads((rep / "summary.json").read_text())
    assert set(summary["methods"]) == {"source-only", "mpscl"}
    for m in summary["methods"].values():
        assert 0.0 <= m["dice_mean"] <= 100.0
        assert set(m["per_class"]) == {"MYO", "LAC", "LVC", "AA"}
    for name in ("dice_per_class.png", "curves_mpscl.png", "curves_source-only.png"):
        assert (rep / name).stat().st_size > 5000
    for method in ("source-only", "mpscl"):
        metrics = json.loads((rep / method / "metrics.json").read_text())
        assert len(metrics["cases"]) == 4
    table = (rep / "README.md").read_text()
    assert "| source-only (plain" in table and "| MPSCL recipe" in table
    assert "Gain of the recipe over plain source-only" in table
    # the recipe is the cpu preset (appearance on), the baseline cpu-plain (off)
    import yaml
    runs = tmp_path / "runs"
    assert yaml.safe_load((runs / "mpscl" / "config.yaml").read_text())["appearance"]["gin"] == 0.5
    assert yaml.safe_load((runs / "source-only" / "config.yaml").read_text())["appearance"]["gin"] == 0.0
    # and the recipe's MPSCL stage trains the classifier on its confident target pixels
    assert yaml.safe_load((runs / "mpscl" / "config.yaml").read_text())["mpscl"]["self_training"] == 0.3
