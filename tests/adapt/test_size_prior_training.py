"""Training with the size prior on the target predictions (``loss.size_prior``)."""
import json

import pytest
import torch

from mpscl.adapt.pipeline import train
from mpscl.config import build_config


@pytest.mark.slow
@pytest.mark.parametrize("adversarial", [True, False])
def test_advent_with_the_size_prior_logs_it_writes_the_shares_and_trains_differently(tiny_phantom, tmp_path,
                                                                                    adversarial, capsys):
    from test_self_training import TINY

    sets = TINY + ["train.amp=off", "train.iters=3", f"loss.adversarial={str(adversarial).lower()}"]
    runs = {}
    for w in (0.0, 100.0):
        cfg = build_config("cpu", sets=sets + [f"loss.size_prior={w}", "loss.size_prior_band=1.0"])
        runs[w] = train(tiny_phantom["mr"], tiny_phantom["ct"], "advent", cfg, tmp_path / str(w), progress=False)
    rows = [json.loads(l) for l in (tmp_path / "100.0" / "advent" / "log.jsonl").read_text().splitlines()]
    assert all(r["size_trg"] >= 0.0 for r in rows) and any(r["size_trg"] > 0.0 for r in rows)
    shares = json.loads((tmp_path / "100.0" / "advent" / "size_prior.json").read_text())
    assert shares["band"] == 1.0 and set(shares["running_shares"]) == set(shares["source_shares"])
    assert not (tmp_path / "0.0" / "advent" / "size_prior.json").exists()
    wa, wb = (torch.load(runs[w], weights_only=True)["model"] for w in (0.0, 100.0))
    # parameters, not BatchNorm statistics (without D the target forward alone moves those)
    assert any(not torch.equal(v, wb[k]) for k, v in wa.items() if "running_" not in k and "num_batches" not in k)
    if adversarial:  # benchmarks/size_prior_gradients.py reads such a run: three finite rows
        import importlib.util
        from pathlib import Path

        path = Path(__file__).resolve().parents[2] / "benchmarks" / "size_prior_gradients.py"
        spec = importlib.util.spec_from_file_location("size_prior_gradients", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        capsys.readouterr()
        assert mod.main([str(runs[100.0]), str(tiny_phantom["mr"]), str(tiny_phantom["ct"]), "--band", "1.0"]) == 0
        rows = [l for l in capsys.readouterr().out.splitlines() if l[:4] in ("| 1 ", "| 2 ", "| 3 ")]
        assert len(rows) == 3 and all("nan" not in r for r in rows)


@pytest.mark.slow
def test_the_mpscl_stage_continues_the_warm_ups_running_shares(tiny_phantom, tmp_path):
    from mpscl.adapt.trainer import Trainer
    from mpscl.data import SliceDataset
    from mpscl.models import build_segmenter
    from test_self_training import TINY

    cfg = build_config("cpu", sets=TINY + ["train.amp=off", "loss.size_prior=1.0", "loss.size_prior_band=1.0"])
    src, trg = SliceDataset(tiny_phantom["mr"]), SliceDataset(tiny_phantom["ct"], labelled=False)
    warm = Trainer(cfg, "warmup", src, trg, tmp_path / "warmup", device=torch.device("cpu"), progress=False)
    start = warm.size_prior.state_dict()["running"]
    final = torch.load(warm.fit(), weights_only=True)
    assert final["size_prior"]["running"] != start  # the warm-up moved it
    protos = torch.zeros(5, build_segmenter(cfg.model, 5).feature_dim)
    stage = Trainer(cfg, "mpscl", src, trg, tmp_path / "mpscl", device=torch.device("cpu"), init=final,
                    prototypes=protos, progress=False)
    assert stage.size_prior.state_dict()["running"] == final["size_prior"]["running"]


def test_the_mpscl_stage_weight_applies_to_the_mpscl_stage_alone():
    from mpscl import methods
    from mpscl.adapt.steps import loss_weights, size_prior_weight

    mp = methods.get_method("mpscl")
    warmup, stage = mp.stage("warmup"), mp.stage("mpscl")
    only = build_config("cpu", sets=["mpscl.size_prior=0.1"])
    assert [size_prior_weight(only, s) for s in (None, warmup, stage)] == [0.0, 0.0, 0.1]
    assert loss_weights(only, stage)["size_trg"] == 0.1 and loss_weights(only, warmup)["size_trg"] == 0.0
    both = build_config("cpu", sets=["loss.size_prior=2.0", "mpscl.size_prior=0.1"])
    assert [size_prior_weight(both, s) for s in (None, warmup, stage)] == [2.0, 2.0, 0.1]
    every = build_config("cpu", sets=["loss.size_prior=2.0", "mpscl.size_prior=0"])
    assert [size_prior_weight(every, s) for s in (None, warmup, stage)] == [2.0, 2.0, 2.0]
    # AdvEnt never reads mpscl.*: its run folders do not depend on the stage's weight
    from mpscl.adapt.trainer import training_changes

    old = build_config("cpu", sets=["mpscl.size_prior=0"]).to_dict()
    assert training_changes(old, only, methods.get_method("advent")) == []
    assert training_changes(old, only, mp) == ["mpscl.size_prior"]
    assert build_config("cpu").mpscl.size_prior == 0.1 and build_config("cpu").loss.size_prior == 0.0


@pytest.mark.slow
def test_the_stage_only_weight_trains_the_stage_as_loss_size_prior_does_and_leaves_the_warm_up(tiny_phantom,
                                                                                              tmp_path):
    """``mpscl.size_prior`` is what benchmarks/appearance_validation.py's stage-only runs did by
    hand (``loss.size_prior`` in a stage started from a warm-up without it): the same weights."""
    from mpscl.adapt.trainer import Trainer
    from mpscl.data import SliceDataset
    from mpscl.models import build_segmenter
    from test_self_training import TINY

    base = TINY + ["train.amp=off", "loss.size_prior_band=1.0"]
    src, trg = SliceDataset(tiny_phantom["mr"]), SliceDataset(tiny_phantom["ct"], labelled=False)
    cfg = build_config("cpu", sets=base + ["mpscl.size_prior=1.0"])
    warm = Trainer(cfg, "warmup", src, trg, tmp_path / "warmup", device=torch.device("cpu"), progress=False)
    assert warm.size_prior is None
    final = torch.load(warm.fit(), weights_only=True)
    assert final["size_prior"] is None
    protos = torch.zeros(5, build_segmenter(cfg.model, 5).feature_dim)
    got = {}
    for name, sets in {"switch": ["mpscl.size_prior=1.0"], "by-hand": ["loss.size_prior=1.0", "mpscl.size_prior=0"],
                       "off": ["mpscl.size_prior=0"]}.items():
        c = build_config("cpu", sets=base + sets)
        stage = Trainer(c, "mpscl", src, trg, tmp_path / name, device=torch.device("cpu"), init=final,
                        prototypes=protos, progress=False)
        got[name] = torch.load(stage.fit(), weights_only=True)
    rows = [json.loads(l) for l in (tmp_path / "switch" / "log.jsonl").read_text().splitlines()]
    assert any(r["size_trg"] > 0.0 for r in rows)
    assert got["switch"]["size_prior"] == got["by-hand"]["size_prior"]
    assert all(torch.equal(v, got["by-hand"]["model"][k]) for k, v in got["switch"]["model"].items())
    assert any(not torch.equal(v, got["off"]["model"][k]) for k, v in got["switch"]["model"].items()
               if "running_" not in k and "num_batches" not in k)
