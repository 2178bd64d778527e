"""A non-finite loss or gradient stops training naming the iteration, the term and the last
good checkpoint, before any weight is updated, and leaves that checkpoint untouched."""
from __future__ import annotations

import hashlib
import re

import pytest
import torch

from mpscl.adapt import steps
from mpscl.checkpoint import load_checkpoint
from mpscl.adapt.trainer import Trainer, TrainingError
from mpscl.cli import main
from mpscl.config import build_config
from mpscl.data import SliceDataset

from reliability_helpers import SIZE, train_argv

SETS = ["data.context=0", "data.context_spacing=slices",  # one slice in: data.context has its own tests
        f"data.size={SIZE}", "data.batch_size=2", "train.iters=4", "train.checkpoint_every=2",
        "train.log_every=1", "train.threads=1", "model.width=8", "train.device=cpu"]


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _trainer(phantom_sets, out, monkeypatch, break_at: int, how: str):
    """A source-only trainer whose main segmentation loss goes bad at 0-based ``break_at``."""
    cfg = build_config("cpu", sets=SETS)
    src = SliceDataset(phantom_sets["mr"], labelled=True, augment=True)
    trg = SliceDataset(phantom_sets["ct"], labelled=False, augment=True)
    t = Trainer(cfg, "source-only", src, trg, out, device=torch.device("cpu"), progress=False)
    real = steps.segmentation_loss
    calls = []

    class InfGrad(torch.autograd.Function):  # finite forward, infinite backward
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g * float("inf")

    def loss(logits, labels):
        v = real(logits, labels)
        calls.append(t.iteration)
        if t.iteration == break_at and calls.count(break_at) == 1:  # the main term only
            return v * float("nan") if how == "nan" else InfGrad.apply(v)
        return v

    monkeypatch.setattr(steps, "segmentation_loss", loss)
    saved = {}
    orig_save = Trainer.save

    def save(self, name="last.pt"):
        p = orig_save(self, name)
        saved[name] = (_sha(p), self.iteration)
        return p

    monkeypatch.setattr(Trainer, "save", save)
    return t, saved


@pytest.mark.parametrize("how", ["nan", "inf-grad"])
def test_non_finite_stops_before_any_update_and_keeps_the_checkpoint(phantom_sets, tmp_path,
                                                                       monkeypatch, how):
    out = tmp_path / "source-only"
    t, saved = _trainer(phantom_sets, out, monkeypatch, break_at=2, how=how)
    with pytest.raises(TrainingError) as e:
        t.fit()
    msg = str(e.value)
    print(f"\n[{how}] {msg}")
    last = out / "last.pt"
    assert "at iteration 3" in msg
    assert f"Last good checkpoint: {last} (iteration 2), left untouched" in msg
    if how == "nan":
        assert "loss term 'seg_src' is nan" in msg
    else:
        assert re.search(r"non-finite gradient of model\.\S+ \(and \d+ more\)", msg)
        assert "every loss term was finite: seg_src=" in msg
    # the checkpoint on disk is the one written at iteration 2, byte for byte, and finite
    assert saved["last.pt"] == (_sha(last), 2)
    ck = load_checkpoint(last)
    assert ck["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert not (out / "final.pt").exists()
    # no weight was updated in memory either (BatchNorm running statistics saw the batch)
    for k, v in t.model.named_parameters():
        assert torch.equal(v.detach(), ck["model"][k]), k


def test_cli_reports_a_nan_loss_with_exit_code_2(phantom_sets, tmp_path, monkeypatch, capsys):
    real = steps.segmentation_loss
    monkeypatch.setattr(steps, "segmentation_loss", lambda *a: real(*a) * float("nan"))
    rc = main(train_argv(phantom_sets, tmp_path / "run", method="source-only"))
    err = capsys.readouterr().err
    assert rc == 2
    assert ("mpscl train: error: source-only: loss term 'seg_src' is nan at iteration 1; stopped "
            "before updating any weight. No checkpoint of this stage was written yet.") in err
