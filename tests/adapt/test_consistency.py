"""Consistency between two randomised views of each source slice (``appearance.consistency``,
beyond the paper; GIN-IPA, Ouyang et al. IEEE TMI 2022)."""
import json
import math
from types import SimpleNamespace

import pytest
import torch

from mpscl.adapt.pipeline import train
from mpscl.adapt.steps import _consistency_terms, loss_weights
from mpscl.adapt.trainer import Trainer, TrainingError
from mpscl.config import ConfigError, build_config
from mpscl.data import SliceDataset
from resume_helpers import assert_resume_bit_identical

TINY = ["data.context=0", "data.context_spacing=slices",  # one slice in: data.context has its own tests
        "data.size=48", "data.batch_size=2", "train.iters=4", "train.warmup_iters=2",
        "train.log_every=1", "train.checkpoint_every=2", "train.threads=1"]
ON = ["appearance.gin=0.5", "appearance.consistency=1.0"]


def _t(weight):
    return SimpleNamespace(cfg=SimpleNamespace(appearance=SimpleNamespace(consistency=weight)))


def test_the_term_is_the_symmetric_kl_between_the_halves_by_hand():
    # one pixel, two classes; view a: logits (0, 0) -> p = (1/2, 1/2); view b: (ln 3, 0) -> (3/4, 1/4)
    main = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])[:, :, None, None]  # (2 slices, 2, 1, 1)
    kl_ab = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)   # 0.143841
    kl_ba = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # 0.130812
    got = _consistency_terms(_t(1.0), main)["cons_src"]
    assert got.item() == pytest.approx(0.5 * (kl_ab + kl_ba), abs=1e-6)  # 0.137327
    # slice k is paired with slice k + B/2: halves (a, a) and (b, b) are two pairs (a, b)
    two = torch.cat([main[:1], main[:1], main[1:], main[1:]])
    assert _consistency_terms(_t(1.0), two)["cons_src"].item() == pytest.approx(0.5 * (kl_ab + kl_ba), abs=1e-6)
    # the mean over pairs (and pixels): pairs (a, b) and (a, a) give half of it
    pairs = torch.cat([main[:1], main[:1], main[1:], main[:1]])
    assert _consistency_terms(_t(1.0), pairs)["cons_src"].item() == pytest.approx(0.25 * (kl_ab + kl_ba), abs=1e-6)
    assert _consistency_terms(_t(0.0), main) == {}
    assert loss_weights(build_config("cpu", sets=ON)).get("cons_src") == 1.0


def test_settings_are_validated_and_need_a_randomising_transform(tiny_phantom, tmp_path):
    assert build_config("cpu").appearance.consistency == 0.0  # off unless asked
    with pytest.raises(ConfigError, match="appearance.consistency"):
        build_config("cpu", sets=["appearance.consistency=-1"])
    cfg = build_config("cpu-plain", sets=TINY + ["appearance.consistency=1.0"])
    src, trg = SliceDataset(tiny_phantom["mr"]), SliceDataset(tiny_phantom["ct"], labelled=False)
    with pytest.raises(TrainingError, match="appearance.consistency needs a randomising transform"):
        Trainer(cfg, "source-only", src, trg, tmp_path, device=torch.device("cpu"), progress=False)
    # the oracle trains on labelled target slices only, which appearance.* never touches
    lab = SliceDataset(tiny_phantom["ct"])
    assert Trainer(cfg, "oracle", src, lab, tmp_path / "o", device=torch.device("cpu"), progress=False).iters == 4


def test_the_source_batch_holds_the_one_view_batch_then_a_second_view(tiny_phantom, tmp_path):
    src, trg = SliceDataset(tiny_phantom["mr"], augment=True), SliceDataset(tiny_phantom["ct"], labelled=False)

    def batches(sets, i):
        t = Trainer(build_config("cpu", sets=TINY + sets), "source-only", src, trg, tmp_path,
                    device=torch.device("cpu"), progress=False)
        return t._batch(src, "source", i, True), t._batch(trg, "target", i, False)

    (x1, y1), (xt1, _) = batches(["appearance.gin=0.5"], 3)
    (x2, y2), (xt2, _) = batches(ON, 3)
    assert x2.shape[0] == 2 * x1.shape[0] and torch.equal(x2[:2], x1)  # first view: bit for bit
    assert torch.equal(y2, torch.cat([y1, y1])) and torch.equal(xt2, xt1)  # target untouched
    assert not torch.equal(x2[2:], x1)  # an independent draw (p 0.5 each: differ at seed 1234)
    assert torch.equal(batches(ON, 3)[0][0], x2) and not torch.equal(batches(ON, 4)[0][0], x2)


@pytest.mark.slow
def test_consistency_trains_logs_and_the_oracle_is_untouched(tiny_phantom, tmp_path):
    on = build_config("cpu", sets=TINY + ON)
    train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", on, tmp_path / "mpscl", progress=False)
    for stage in ("warmup", "mpscl"):
        recs = [json.loads(line) for line in (tmp_path / "mpscl" / stage / "log.jsonl").read_text().splitlines()]
        assert all(math.isfinite(r["cons_src"]) and r["cons_src"] >= 0 for r in recs)
        assert any(r["cons_src"] > 0 for r in recs)
    # the oracle trains on target slices, which no view touches: the same weights as without
    a = train(tiny_phantom["mr"], tiny_phantom["ct"], "oracle", on, tmp_path / "o1", progress=False)
    b = train(tiny_phantom["mr"], tiny_phantom["ct"], "oracle", build_config("cpu", sets=TINY + ON[:1]),
              tmp_path / "o2", progress=False)
    wa, wb = torch.load(a, weights_only=True)["model"], torch.load(b, weights_only=True)["model"]
    assert all(torch.equal(v, wb[k]) for k, v in wa.items())
    assert "cons_src" not in (tmp_path / "o1" / "oracle" / "log.jsonl").read_text()


@pytest.mark.slow
def test_resume_is_bit_identical_with_two_views(tiny_phantom, tmp_path):
    cfg = build_config("cpu", sets=TINY + ON + ["train.iters=6"])
    src, trg = SliceDataset(tiny_phantom["mr"], augment=True), SliceDataset(tiny_phantom["ct"], labelled=False)

    def trainer(out):
        return Trainer(cfg, "advent", src, trg, out, device=torch.device("cpu"), progress=False)

    assert_resume_bit_identical(trainer, tmp_path, entries=("model", "disc_main"))
