"""``train.adabn``: the final model's BatchNorm statistics re-estimated on the target."""
import pytest
import torch

from mpscl.adapt.pipeline import train
from mpscl.config import build_config
from mpscl.data import SliceDataset
from mpscl.models.batchnorm import reestimate_statistics

TINY = ["data.context=0", "data.context_spacing=slices",  # one slice in: data.context has its own tests
        "data.size=48", "data.batch_size=2", "train.iters=4", "train.warmup_iters=2",
        "train.log_every=1", "train.checkpoint_every=2", "train.threads=1",
        "train.device=cpu", "train.adabn=false"]  # CPU: weights compared bit for bit across runs
# (CUDA's atomic adds differ in the last bits)


def _load(path):
    return torch.load(path, weights_only=True)


def _is_bn_stat(key):
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


@pytest.mark.slow
def test_adabn_final_model_has_target_statistics_and_nothing_is_retrained(tiny_phantom, tmp_path):
    src, trg = tiny_phantom["mr"], tiny_phantom["ct"]
    out = tmp_path / "advent"
    plain = train(src, trg, "advent", build_config("cpu", sets=TINY), out, progress=False)
    stage = out / "advent" / "final.pt"
    before = stage.read_bytes()
    w_plain = _load(plain)["model"]
    assert "adabn" not in _load(plain)
    # the same folder with the switch on: continued (the key does not change the stage), the
    # stage's checkpoint untouched, RUN/final.pt made again with the target's statistics
    lines = []
    on = build_config("cpu", sets=TINY + ["train.adabn=true"])
    final = train(src, trg, "advent", on, out, progress=False, log=lines.append)
    assert stage.read_bytes() == before and any("already finished" in l for l in lines)
    ck = _load(final)
    assert ck["adabn"] == {"target_slices": 48, "stage": "advent"}  # 3 cases x 16 slices
    w = ck["model"]
    assert all(torch.equal(v, w_plain[k]) for k, v in w.items() if not _is_bn_stat(k))
    assert not torch.equal(w["backbone.bn1.running_mean"], w_plain["backbone.bn1.running_mean"])
    # equal to re-estimating by hand on the target's unaugmented slices, shuffled with the seed
    from mpscl.checkpoint import load_model
    model, _ = load_model(stage)
    images = SliceDataset(trg, labelled=False).images
    reestimate_statistics(model, images, generator=torch.Generator().manual_seed(on.train.seed))
    assert all(torch.equal(v, w[k]) for k, v in model.state_dict().items())
    # deterministic: a third call writes the same weights
    again = _load(train(src, trg, "advent", on, out, progress=False))["model"]
    assert all(torch.equal(v, w[k]) for k, v in again.items())
    # and off again: back to the stage's own statistics
    off = _load(train(src, trg, "advent", build_config("cpu", sets=TINY), out, progress=False))
    assert "adabn" not in off and all(torch.equal(v, w_plain[k]) for k, v in off["model"].items())


@pytest.mark.slow
def test_adabn_leaves_methods_that_never_see_unlabelled_target_images(tiny_phantom, tmp_path):
    on = build_config("cpu", sets=TINY + ["train.adabn=true"])
    for method in ("source-only", "oracle"):
        final = train(tiny_phantom["mr"], tiny_phantom["ct"], method, on, tmp_path / method, progress=False)
        stage = tmp_path / method / method / "final.pt"
        assert final.read_bytes() == stage.read_bytes()
    # an MPSCL warm-up trained alone is not the method's result: left as trained
    warm = train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", on, tmp_path / "warm",
                 stage="warmup", progress=False)
    assert warm.read_bytes() == (tmp_path / "warm" / "warmup" / "final.pt").read_bytes()


def test_adabn_is_a_switch_no_preset_turns_on():
    # the CPU recipe dropped it with its longer schedule (benchmarks/README.md, "Tenth round")
    for preset in ("cpu", "cpu-plain", "paper-mr2ct", "paper-ct2mr"):
        assert build_config(preset).train.adabn is False



@pytest.mark.slow
def test_the_adabn_method_is_source_only_then_the_target_statistics(tiny_phantom, tmp_path):
    # the AdaBN baseline (Li et al. 2016) as its own method: whatever train.adabn says
    src, trg = tiny_phantom["mr"], tiny_phantom["ct"]
    cfg = build_config("cpu", sets=TINY)  # train.adabn off
    so = train(src, trg, "source-only", cfg, tmp_path / "so", progress=False)
    ab = train(src, trg, "adabn", cfg, tmp_path / "ab", progress=False)
    stage_so = _load(tmp_path / "so" / "source-only" / "final.pt")["model"]
    stage_ab = _load(tmp_path / "ab" / "source-only" / "final.pt")["model"]
    assert all(torch.equal(v, stage_ab[k]) for k, v in stage_so.items())  # the same training
    ck, w_so = _load(ab), _load(so)["model"]
    assert ck["adabn"]["stage"] == "source-only" and "adabn" not in _load(so)
    assert all(torch.equal(v, w_so[k]) for k, v in ck["model"].items() if not _is_bn_stat(k))
    assert not torch.equal(ck["model"]["backbone.bn1.running_var"], w_so["backbone.bn1.running_var"])
