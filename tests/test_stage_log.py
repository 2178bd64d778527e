"""benchmarks/stage_log.py: windowed means of a training log, by hand."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("stage_log", ROOT / "benchmarks" / "stage_log.py")
sl = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sl)


def test_window_means_by_hand():
    recs = [{"iter": i, "a": float(i)} for i in (10, 20, 30, 40)] + [{"iter": 50, "b": 1.0}]
    rows = sl.window_means(recs, ["a", "b"], 2)  # spans 10-29 and 30-50 (the last closed)
    assert [(r["from"], r["to"]) for r in rows] == [(10, 29), (30, 50)]
    assert rows[0]["a"] == 15.0 and rows[0]["b"] is None
    assert rows[1]["a"] == 35.0 and rows[1]["b"] == 1.0
    assert sl.window_means(recs, ["a"], 1)[0]["a"] == 25.0
    with pytest.raises(ValueError):
        sl.window_means(recs, ["a"], 0)


def test_main_prints_a_row_per_span_and_refuses_a_broken_log(tmp_path, capsys):
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps({"iter": i, "seg_src": 0.5}) for i in (1, 2, 3, 4)) + "\n")
    assert sl.main([str(log), "--keys", "seg_src,st_trg", "--windows", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].endswith("| 1-2 | 0.500 | - |") and out[3].endswith("| 3-4 | 0.500 | - |")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(SystemExit, match="bad.jsonl: not a readable training log"):
        sl.main([str(bad)])


def test_a_resumed_runs_repeated_iterations_count_once_the_last_record_winning(tmp_path, capsys):
    log = tmp_path / "log.jsonl"
    first = [{"iter": i, "a": 1.0} for i in (10, 20, 30)]
    resumed = [{"iter": i, "a": 3.0} for i in (20, 30, 40)]  # resumed from the checkpoint at 10
    log.write_text("\n".join(json.dumps(r) for r in first) + '\n{"iter": 3' + "\n"
                   + "\n".join(json.dumps(r) for r in resumed) + "\n")
    recs = sl.read_log(log)
    assert [(r["iter"], r["a"]) for r in recs] == [(10, 1.0), (20, 3.0), (30, 3.0), (40, 3.0)]
    assert "1 unreadable line(s) skipped" in capsys.readouterr().err
    assert sl.window_means(recs, ["a"], 1)[0]["a"] == 2.5  # (1 + 3 + 3 + 3) / 4, not 14 / 6
