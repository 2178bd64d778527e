"""The adversarial gate (``loss.adv_gate``, beyond the paper): weights x (1 - 2 x D's error)."""
import json
import math

import pytest
import torch

from mpscl.adapt.adversarial_gate import AdversarialGate, discriminator_error
from mpscl.adapt.pipeline import train
from mpscl.config import build_config
from resume_helpers import assert_resume_bit_identical

TINY = ["data.context=0", "data.context_spacing=slices",  # one slice in: data.context has its own tests
        "data.size=48", "data.batch_size=2", "train.iters=4", "train.warmup_iters=2",
        "train.log_every=1", "train.checkpoint_every=2", "train.threads=1"]


def test_gate_is_one_minus_twice_the_bias_corrected_error():
    g = AdversarialGate(momentum=0.5)
    assert g.error is None and g.value == 0.0  # no measurement: no alignment
    g.update(0.4)  # avg 0.2, corrected 0.2 / (1 - 0.5) = 0.4
    assert g.error == pytest.approx(0.4) and g.value == pytest.approx(0.2)
    g.update(0.2)  # avg 0.5 * 0.2 + 0.5 * 0.2 = 0.2, corrected 0.2 / 0.75
    assert g.error == pytest.approx(0.2 / 0.75) and g.value == pytest.approx(1 - 0.4 / 0.75)
    worse = AdversarialGate(momentum=0.0)
    worse.update(0.7)  # worse than chance: clipped to 0
    assert worse.value == 0.0
    worse.update(0.0)  # momentum 0: the last error only; a perfect D: full weight
    assert worse.value == 1.0
    h = AdversarialGate(momentum=0.5)
    h.load_state_dict(g.state_dict())
    assert (h.avg, h.steps, h.value) == (g.avg, g.steps, g.value)
    with pytest.raises(ValueError, match="momentum"):
        AdversarialGate(momentum=1.0)


def test_discriminator_error_counts_each_domain_equally():
    out_s = torch.tensor([[[[-1.0, 2.0], [-3.0, -0.5]]]])  # source (should be < 0): 1 of 4 wrong
    out_t = torch.tensor([[[[1.0, 1.0], [-1.0, -1.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])  # target: 2 of 8 wrong
    assert discriminator_error(out_s, out_t) == pytest.approx(0.5 * (0.25 + 0.25))
    assert discriminator_error(-torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2)) == 0.0


def _trainer(tiny_phantom, sets, stage="advent", **kw):
    from mpscl.adapt.trainer import Trainer
    from mpscl.data import SliceDataset

    cfg = build_config("cpu", sets=TINY + sets)
    src, trg = SliceDataset(tiny_phantom["mr"], augment=True), SliceDataset(tiny_phantom["ct"], labelled=False)
    return Trainer(cfg, stage, src, trg, "unused", device=torch.device("cpu"), progress=False, **kw)


def _gate_at(t, error: float) -> None:
    t.adv_gate.load_state_dict({"momentum": 0.0, "avg": error, "steps": 1})


def test_closed_gate_is_source_only_and_open_gate_is_advent(tiny_phantom):
    def params(t):
        return {k: v.detach().clone() for k, v in t.model.named_parameters()}

    closed = _trainer(tiny_phantom, ["loss.adv_gate=true"])
    _gate_at(closed, 0.5)
    no_adv = _trainer(tiny_phantom, ["loss.adversarial=false"])
    rec = closed.step()
    no_adv.step()
    assert rec["adv_gate"] == 0.0 and rec["adv"] > 0  # the term is computed, weighed 0
    a, b = params(closed), params(no_adv)
    assert all(torch.equal(v, b[k]) for k, v in a.items())  # source segmentation alone

    opened = _trainer(tiny_phantom, ["loss.adv_gate=true"])
    _gate_at(opened, 0.0)
    plain = _trainer(tiny_phantom, [])
    assert plain.adv_gate is None
    rec = opened.step()
    plain.step()
    assert rec["adv_gate"] == 1.0
    a, b = params(opened), params(plain)
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    assert any(not torch.equal(v, params(no_adv)[k]) for k, v in a.items())  # the term acts
    # the discriminator update measured its error and moved the gate's estimate
    assert opened.adv_gate.steps == 2 and 0.0 <= rec["d_error"] <= 1.0
    assert opened.adv_gate.error == pytest.approx(rec["d_error"])  # momentum 0: the last one


def test_a_stage_continues_the_gate_of_the_checkpoint_it_starts_from(tiny_phantom):
    from mpscl.models import build_segmenter

    cfg = build_config("cpu", sets=TINY + ["loss.adv_gate=true"])
    protos = torch.randn(5, build_segmenter(cfg.model, 5).feature_dim)
    warm = _trainer(tiny_phantom, ["loss.adv_gate=true"], stage="warmup", method="mpscl")
    warm.adv_gate.load_state_dict({"momentum": 0.99, "avg": 0.03, "steps": 7})
    t = _trainer(tiny_phantom, ["loss.adv_gate=true"], stage="mpscl", init=warm.state_dict(), prototypes=protos)
    assert t.adv_gate.state_dict() == warm.adv_gate.state_dict()
    fresh = _trainer(tiny_phantom, ["loss.adv_gate=true"], stage="mpscl", prototypes=protos)
    assert fresh.adv_gate.steps == 0


@pytest.mark.slow
def test_gated_mpscl_trains_logs_and_resumes_bit_identically(tiny_phantom, tmp_path):
    cfg = build_config("cpu", sets=TINY + ["loss.adv_gate=true"])
    out = train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", cfg, tmp_path / "run", progress=False)
    for stage in ("warmup", "mpscl"):
        recs = [json.loads(l) for l in (tmp_path / "run" / stage / "log.jsonl").read_text().splitlines()]
        assert all(0.0 <= r["adv_gate"] <= 1.0 and math.isfinite(r["d_error"]) for r in recs)
    ck = torch.load(out, weights_only=True)
    assert ck["adv_gate"]["steps"] == 6  # 2 warm-up + 4 MPSCL iterations, one estimate

    from mpscl.adapt.trainer import Trainer
    from mpscl.data import SliceDataset
    from mpscl.models import build_segmenter

    src, trg = SliceDataset(tiny_phantom["mr"], augment=True), SliceDataset(tiny_phantom["ct"], labelled=False)
    run_cfg = build_config("cpu", sets=TINY + ["loss.adv_gate=true", "train.iters=6"])
    torch.manual_seed(0)
    protos = torch.randn(5, build_segmenter(run_cfg.model, 5).feature_dim)

    def trainer(d):
        return Trainer(run_cfg, "mpscl", src, trg, d, device=torch.device("cpu"), prototypes=protos,
                       progress=False)

    ref = assert_resume_bit_identical(trainer, tmp_path / "resume", entries=("model", "disc_main"))
    got = torch.load(tmp_path / "resume" / "b" / "final.pt", weights_only=True)
    assert got["adv_gate"] == ref["adv_gate"]
