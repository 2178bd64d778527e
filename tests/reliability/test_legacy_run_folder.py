"""A run folder written before ``model.batchnorm`` existed (``freeze_bn``, no
``allow_random_init``) still resumes, and ends as the uninterrupted run does."""
import pytest
import torch
import yaml

from mpscl.checkpoint import load_checkpoint, load_model, save_checkpoint
from mpscl.adapt.pipeline import train
from mpscl.adapt.trainer import Trainer
from mpscl.data import PreparedDataset, SliceDataset
from mpscl.config import build_config

SETS = ["data.context=0", "data.context_spacing=slices",  # one slice in: data.context has its own tests
        "data.size=48", "data.batch_size=2", "model.width=8", "train.iters=3", "train.log_every=1",
        "train.checkpoint_every=2", "train.threads=1",
        "train.device=cpu"]  # CPU: weights compared bit for bit across runs
# (CUDA's atomic adds differ in the last bits)


def _legacy(config: dict) -> dict:
    model = dict(config["model"])
    model["freeze_bn"] = {"trainable": False, "frozen": True}[model.pop("batchnorm")]
    del model["allow_random_init"]
    return {**config, "model": model}


@pytest.mark.slow
def test_old_run_folder_resumes_bit_for_bit(tiny_phantom, tmp_path, capsys):
    cfg = build_config("cpu", sets=SETS)
    whole = load_checkpoint(train(tiny_phantom["mr"], tiny_phantom["ct"], "advent", cfg,
                                  tmp_path / "whole", progress=False))
    # an old run stopped at iteration 2: legacy config.yaml and last.pt, no final.pt
    run = tmp_path / "run"
    src = SliceDataset(PreparedDataset(tiny_phantom["mr"]), labelled=True, augment=cfg.data.augment)
    trg = SliceDataset(PreparedDataset(tiny_phantom["ct"]), labelled=False, augment=cfg.data.augment)
    t = Trainer(cfg, "advent", src, trg, run / "advent", device=torch.device("cpu"), progress=False)
    t.iters = 2
    t.fit()
    (run / "advent" / "final.pt").unlink()
    (run / "config.yaml").write_text(yaml.safe_dump(_legacy(cfg.to_dict()), sort_keys=False) + "method: advent\n")
    last = load_checkpoint(run / "advent" / "last.pt")
    assert last["iteration"] == 2
    last["config"] = _legacy(last["config"])
    save_checkpoint(run / "advent" / "last.pt", {k: v for k, v in last.items() if k not in ("format", "version")})
    assert "freeze_bn: false" in (run / "config.yaml").read_text()

    capsys.readouterr()
    train(tiny_phantom["mr"], tiny_phantom["ct"], "advent", cfg, run, progress=False)
    out = capsys.readouterr().out
    assert "resumed advent from" in out and "at iteration 2" in out
    resumed = load_checkpoint(run / "final.pt")
    assert resumed["iteration"] == 3
    for k, v in whole["model"].items():
        assert torch.equal(resumed["model"][k], v), k
    # an old checkpoint still loads for evaluation, with its BatchNorm mode
    model, _ = load_model(run / "advent" / "last.pt")
    assert model.backbone.batchnorm == "trainable"
    # and an old run with frozen BatchNorm is another configuration than the CPU preset
    last["config"]["model"]["freeze_bn"] = True
    save_checkpoint(run / "advent" / "last.pt", {k: v for k, v in last.items() if k not in ("format", "version")})
    assert load_model(run / "advent" / "last.pt")[0].backbone.batchnorm == "frozen"


def test_old_cpu_preset_folder_continues_with_cpu_plain_and_is_refused_by_cpu(tmp_path):
    """A folder of the CPU preset before its appearance handling: no ``appearance`` section."""
    from mpscl.adapt.pipeline import check_run_config
    from mpscl.adapt.trainer import TrainingError
    old = _legacy(build_config("cpu-plain").to_dict())
    del old["appearance"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False) + "method: mpscl\n")
    check_run_config(tmp_path, build_config("cpu-plain"), "mpscl")  # the same settings: accepted
    with pytest.raises(TrainingError, match=r"differs in: appearance\.gin, data\.context, data\.context_spacing, "
                                            r"mpscl\.self_training, "
                                            r"mpscl\.self_training_teacher, mpscl\.self_training_threshold, mpscl\.self_training_view, "
                                            r"mpscl\.size_prior, train\.iters, train\.warmup_iters\)"):
        check_run_config(tmp_path, build_config("cpu"), "mpscl")
