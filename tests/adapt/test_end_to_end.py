"""Every method trains a few iterations on tiny data on CPU, checkpoints, and stays finite."""
import json
import math

import pytest
import torch

from mpscl.checkpoint import load_checkpoint, load_model
from mpscl.adapt.pipeline import train
from mpscl.adapt.trainer import TrainingError
from mpscl.config import build_config

pytestmark = pytest.mark.slow  # every test here trains (seconds each)

TINY = ["data.size=48", "data.batch_size=2", "train.iters=3", "train.warmup_iters=2",
        "train.log_every=1", "train.checkpoint_every=0", "train.threads=1"]


def _log(path):
    return [json.loads(l) for l in path.read_text().splitlines()]


@pytest.mark.parametrize("method,stages", [
    ("source-only", ["source-only"]), ("advent", ["advent"]), ("oracle", ["oracle"]),
    ("mpscl", ["warmup", "mpscl"]),
])
def test_method_trains_and_checkpoints(tiny_phantom, tmp_path, method, stages):
    cfg = build_config("cpu", sets=TINY)
    final = train(tiny_phantom["mr"], tiny_phantom["ct"], method, cfg, tmp_path / "run", progress=False)
    assert final == tmp_path / "run" / "final.pt" and final.is_file()
    assert (tmp_path / "run" / "config.yaml").read_text().endswith(f"method: {method}\n")
    for st in stages:
        recs = _log(tmp_path / "run" / st / "log.jsonl")
        n = cfg.train.warmup_iters if st == "warmup" else cfg.train.iters
        assert [r["iter"] for r in recs] == list(range(1, n + 1))
        for r in recs:
            assert all(math.isfinite(v) for k, v in r.items() if isinstance(v, float)), r
        assert "seg_src" in recs[-1]
        if st in ("advent", "warmup", "mpscl"):
            assert {"adv", "adv_aux", "d_main", "d_aux"} <= set(recs[-1])
        if st == "mpscl":
            assert {"mpcl_src", "mpcl_trg", "selected"} <= set(recs[-1])
    ck = load_checkpoint(final)
    assert ck["method"] == method and ck["classes"] == ["background", "MYO", "LAC", "LVC", "AA"]
    assert ck["label_values"] == [0, 205, 420, 500, 820] and ck["iteration"] == cfg.train.iters
    model, _ = load_model(final)
    with torch.no_grad():
        _, _, logits = model(torch.zeros(1, 1, 48, 48))
    assert logits.shape == (1, 5, 48, 48) and torch.isfinite(logits).all()
    if method == "mpscl":
        protos = load_checkpoint(tmp_path / "run" / "prototypes.pt")["prototypes"]
        assert protos.shape == (5, model.feature_dim) and torch.isfinite(protos).all()
        assert torch.isfinite(ck["prototypes"]).all()
        # the MPSCL stage started from the warm-up weights, then moved away from them
        warm = load_checkpoint(tmp_path / "run" / "warmup" / "final.pt")
        key = "main_head.branches.0.weight"
        assert not torch.equal(warm["model"][key], ck["model"][key])


def test_finished_stage_is_skipped_and_config_guarded(tiny_phantom, tmp_path, capsys):
    cfg = build_config("cpu", sets=TINY)
    train(tiny_phantom["mr"], tiny_phantom["ct"], "source-only", cfg, tmp_path, progress=False)
    before = (tmp_path / "source-only" / "final.pt").stat().st_mtime_ns
    train(tiny_phantom["mr"], tiny_phantom["ct"], "source-only", cfg, tmp_path, progress=False)
    assert (tmp_path / "source-only" / "final.pt").stat().st_mtime_ns == before
    assert "already finished" in capsys.readouterr().out
    other = build_config("cpu", sets=TINY + ["optim.lr=0.02"])  # (mpscl.* it never reads: test_run_folder_keys)
    with pytest.raises(TrainingError, match=r"differs in: optim.lr\)"):
        train(tiny_phantom["mr"], tiny_phantom["ct"], "source-only", other, tmp_path, progress=False)


def test_ablation_and_variant_start_from_shared_warmup(tiny_phantom, tmp_path):
    cfg = build_config("cpu", sets=TINY)
    train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", cfg, tmp_path / "a", progress=False)
    warm = tmp_path / "a" / "warmup" / "final.pt"
    abl = build_config("cpu", sets=TINY, ablations=["no-margin", "no-adversarial", "authors-contrastive"])
    train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", abl, tmp_path / "b", init=warm, progress=False)
    assert not (tmp_path / "b" / "warmup").exists()
    recs = _log(tmp_path / "b" / "mpscl" / "log.jsonl")
    assert "adv" not in recs[-1] and "mpcl_src" in recs[-1]  # no adversarial term, contrastive kept
    # a warm-up whose BatchNorm mode or input mapping differs would load without error: refused
    other = build_config("cpu", sets=TINY + ["model.batchnorm=live", "model.input_mode=caffe"])
    with pytest.raises(TrainingError, match=r"warmup/final.pt: --init: this checkpoint's segmenter differs "
                                            r"from the config's: model.input_mode=plain \(config: caffe\), "
                                            r"model.batchnorm=trainable \(config: live\); set"):
        train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", other, tmp_path / "c", init=warm, progress=False)
    assert not (tmp_path / "c" / "mpscl").exists() and not (tmp_path / "c" / "prototypes.pt").exists()


def test_mismatched_inputs_are_refused(tiny_phantom, tmp_path):
    with pytest.raises(TrainingError, match="data.size"):
        train(tiny_phantom["mr"], tiny_phantom["ct"], "source-only",
              build_config("cpu", sets=TINY + ["data.size=64"]), tmp_path, progress=False)
    with pytest.raises(TrainingError, match="advent has one stage; methods with stages: mpscl"):
        train(tiny_phantom["mr"], tiny_phantom["ct"], "advent", build_config("cpu", sets=TINY),
              tmp_path, stage="warmup", progress=False)


@pytest.mark.parametrize("mode", ["restart", "continue"])
def test_mpscl_lr_schedule_modes(tiny_phantom, tmp_path, mode):
    cfg = build_config("cpu", sets=TINY + [f"mpscl.schedule={mode}"])
    train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", cfg, tmp_path, progress=False)
    lr = [r["lr"] for st in ("warmup", "mpscl") for r in _log(tmp_path / st / "log.jsonl")]
    base, p = cfg.optim.lr, cfg.optim.power
    if mode == "restart":  # 2 warm-up steps over 2, then 3 MPSCL steps over 3
        want = [base * (1 - i / 2) ** p for i in range(2)] + [base * (1 - i / 3) ** p for i in range(3)]
    else:  # one decay over 5 steps: the MPSCL stage starts where the warm-up stopped
        want = [base * (1 - i / 5) ** p for i in range(5)]
    assert lr == pytest.approx(want)
