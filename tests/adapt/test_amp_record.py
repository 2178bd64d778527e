"""The arithmetic a stage trains in (``train.amp``): recorded in its checkpoints, kept when a
stage under ``auto`` is resumed on a CPU with other bf16 support, and read back per stage."""
import signal

import pytest
import torch

from mpscl.adapt.provenance import trained_amp
from mpscl.checkpoint import save_checkpoint
from mpscl.config import build_config

TINY = ["data.context=0", "data.context_spacing=slices",  # one slice in: data.context has its own tests
        "data.size=48", "data.batch_size=2", "train.iters=4", "train.log_every=1",
        "train.checkpoint_every=2", "train.threads=1"]


def _trainer(tiny_phantom, out, amp):
    from mpscl.adapt.trainer import Trainer
    from mpscl.data import SliceDataset
    cfg = build_config("cpu", sets=TINY + [f"train.amp={amp}"])
    src, trg = SliceDataset(tiny_phantom["mr"], augment=True), SliceDataset(tiny_phantom["ct"], labelled=False)
    return Trainer(cfg, "source-only", src, trg, out, device=torch.device("cpu"), progress=False)


def _stop_after(t, n):
    step = t.step

    def stop():
        out = step()
        if t.iteration == n - 1:
            t._on_signal(signal.SIGTERM, None)
        return out
    t.step = stop


def _native(monkeypatch, yes):
    import mpscl.runtime
    monkeypatch.setattr(mpscl.runtime, "native_bf16", lambda device: yes)


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_checkpoints_record_the_arithmetic(tiny_phantom, tmp_path, amp):
    final = _trainer(tiny_phantom, tmp_path, amp).fit()
    assert torch.load(final, weights_only=True)["amp"] == amp
    assert torch.load(tmp_path / "last.pt", weights_only=True)["amp"] == amp


def test_auto_keeps_the_arithmetic_a_resumed_stage_started_in(tiny_phantom, tmp_path, monkeypatch, capsys):
    from mpscl.adapt.trainer import Interrupted
    ref = torch.load(_trainer(tiny_phantom, tmp_path / "ref", "off").fit(), weights_only=True)
    _native(monkeypatch, False)  # a CPU without native bf16: auto trains in float32 ...
    t = _trainer(tiny_phantom, tmp_path / "b", "auto")
    assert not t.use_amp
    _stop_after(t, 2)
    with pytest.raises(Interrupted):
        t.fit()
    _native(monkeypatch, True)  # ... resumed on one with it: auto alone would switch to bf16
    t = _trainer(tiny_phantom, tmp_path / "b", "auto")
    assert t.use_amp
    got = torch.load(t.fit(), weights_only=True)
    assert "in off, the arithmetic it started in (train.amp auto gives bf16" in capsys.readouterr().out
    assert got["amp"] == "off" and not t.use_amp
    assert all(torch.equal(v, got["model"][k]) for k, v in ref["model"].items())  # float32 throughout


def test_an_explicit_switch_on_resume_is_obeyed_and_recorded_as_mixed(tiny_phantom, tmp_path, capsys):
    from mpscl.adapt.trainer import Interrupted
    t = _trainer(tiny_phantom, tmp_path, "off")
    _stop_after(t, 2)
    with pytest.raises(Interrupted):
        t.fit()
    t = _trainer(tiny_phantom, tmp_path, "bf16")  # not refused: train.amp is how a run goes
    got = torch.load(t.fit(), weights_only=True)
    assert t.use_amp and got["amp"] == "mixed"
    assert "trained in off so far and goes on in bf16" in capsys.readouterr().out
    t = _trainer(tiny_phantom, tmp_path, "bf16")  # resumed again: stays mixed
    t.try_resume()
    assert t.amp == "mixed"


def test_trained_amp_reads_the_stages_checkpoints(tmp_path):
    def ck(name, **kw):
        save_checkpoint(tmp_path / name / "final.pt", {"iteration": 1, **kw})
        return tmp_path / name / "final.pt"
    warm_off, warm_bf = ck("w1", stage="warmup", amp="off"), ck("w2", stage="warmup", amp="bf16")
    mp_bf, old = ck("m", stage="mpscl", amp="bf16"), ck("old", stage="mpscl")
    assert trained_amp([warm_bf, mp_bf], "off") == "bf16"
    assert trained_amp([warm_off, mp_bf], "bf16") == "warmup off, mpscl bf16"
    assert trained_amp([old], "off") == "off"  # written before it was recorded: the fallback
    assert trained_amp([warm_bf, old], "off") == "warmup bf16, mpscl off"
