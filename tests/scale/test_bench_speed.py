"""``mpscl bench-speed``: the JSON it writes, on a tiny configuration (seconds)."""
from __future__ import annotations

import json

import pytest
import torch

from mpscl.cli import main


@pytest.mark.slow
def test_bench_speed_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "speed.json"
    threads = torch.get_num_threads()
    try:
        rc = main(["bench-speed", "--preset", "cpu", "--iters", "1", "--rounds", "2", "--warmup", "2",
                   "--device", "cpu", "--set", "data.size=32", "--set", "model.width=8",
                   "--set", "model.disc_width=8", "--set", "data.batch_size=2",
                   "--set", "train.threads=1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["preset"] == "cpu"
    assert res["machine"]["torch_threads"] == 1
    for key in ("cpu", "torch", "device", "native_bf16", "torch_threads"):
        assert key in res["machine"]
    for mode in ("fp32", "default", "bf16"):
        r = res[mode]
        assert r["it_per_s"] > 0 and len(r["rounds_it_per_s"]) == 2
        assert r["peak_mem_mb"] is None or r["peak_mem_mb"] > 0
    assert (res["fp32"]["amp_bf16"], res["fp32"]["channels_last"]) == (False, False)
    assert (res["bf16"]["amp_bf16"], res["bf16"]["channels_last"]) == (True, True)
    assert res["default"]["config"] == {"train.amp": "auto", "train.channels_last": True}
    assert abs(res["speedup"] - res["default"]["it_per_s"] / res["fp32"]["it_per_s"]) < 0.01
    assert res["settings"]["batch"] == "2+2 slices"
    assert "speedup default/fp32" in capsys.readouterr().out
