"""Per-class self-training weights read off the warm-up (``mpscl.self_training_trusted``)."""
import json
import math

import numpy as np
import pytest
import torch

from mpscl.adapt.class_trust import class_scale, predicted_shares, trusted_classes
from mpscl.config import ConfigError, build_config
from mpscl.losses.segmentation import weighted_cross_entropy
from resume_helpers import assert_resume_bit_identical

from test_self_training import TINY


def test_trusted_classes_within_the_band_either_way():
    # ratios 1.0, 2.0, 0.8333, 0.5556 against a band of 1.5: in, out (grown), in, out (shrunk)
    got = trusted_classes([0.8, 0.1, 0.05, 0.05], [0.8, 0.05, 0.06, 0.09], 1.5)
    assert got.tolist() == [True, False, True, False]
    # the band's edges belong to it: ratio exactly 1.5 and 1 / 1.5
    assert trusted_classes([0.3, 0.2], [0.2, 0.3], 1.5).tolist() == [True, True]
    # a class the source never shows: trusted only while it is never predicted either
    assert trusted_classes([1.0, 0.0], [1.0, 0.0], 1.5).tolist() == [True, True]
    assert trusted_classes([0.9, 0.1], [1.0, 0.0], 1.5).tolist() == [True, False]
    with pytest.raises(ValueError, match="band"):
        trusted_classes([1.0], [1.0], 0.9)
    with pytest.raises(ValueError, match="2 predicted shares but 3"):
        trusted_classes([0.5, 0.5], [0.2, 0.3, 0.5], 1.5)


def test_class_scale_lifts_trusted_classes_to_their_weight():
    got = class_scale(np.array([True, False, True]), 0.3, 1.0)
    assert got.tolist() == pytest.approx([1.0 / 0.3, 1.0, 1.0 / 0.3])
    assert class_scale(np.array([True, False]), 0.3, 0.3).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="> 0"):
        class_scale(np.array([True]), 0.0, 1.0)


def _two_pixel_case():
    # one image of 1 x 2 pixels, 2 classes; pixel 0 labelled 0, pixel 1 labelled 1
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2)
    labels = torch.tensor([[[0, 1]]])
    nll0 = -math.log(math.exp(2) / (math.exp(2) + 1))  # pixel 0, class 0 logit 2 against 0
    nll1 = -math.log(math.e / (1 + math.e))            # pixel 1, class 1 logit 1 against 0
    return logits, labels, nll0, nll1


def test_class_scale_weighs_the_numerator_only():
    logits, labels, nll0, nll1 = _two_pixel_case()
    # one pixel of each class: w = 1 - 1/2 = 0.5 each, normaliser 0.5 + 0.5 = 1
    plain = weighted_cross_entropy(logits, labels)
    assert plain.item() == pytest.approx(0.5 * nll0 + 0.5 * nll1)
    assert weighted_cross_entropy(logits, labels, class_scale=torch.ones(2)).item() == plain.item()
    got = weighted_cross_entropy(logits, labels, class_scale=torch.tensor([3.0, 1.0]))
    assert got.item() == pytest.approx(3 * 0.5 * nll0 + 0.5 * nll1)  # the normaliser stays 1
    got = weighted_cross_entropy(logits, labels, class_scale=torch.tensor([2.0, 2.0]))
    assert got.item() == pytest.approx(2 * plain.item())
    # ignored pixels stay out; one class alone: the plain mean, scaled
    one = torch.tensor([[[0, -1]]])
    assert weighted_cross_entropy(logits, one, class_scale=torch.tensor([3.0, 1.0])).item() == \
        pytest.approx(3 * nll0)


class _Fixed(torch.nn.Module):
    """A 'segmenter' whose main output calls the left half of every slice class 0 and the
    right half class 2 (of 3); records its mode at each call."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        b, _, h, w = x.shape
        logits = torch.zeros(b, 3, h, w)
        logits[:, 0, :, : w // 2] = 1.0
        logits[:, 2, :, w // 2:] = 1.0
        return None, None, logits + 0 * self.w


def test_predicted_shares_count_argmax_pixels_in_eval_mode_and_restore_the_mode():
    m = _Fixed().train()
    got = predicted_shares(m, torch.zeros(5, 1, 4, 6), 3, torch.device("cpu"), batch_size=2)
    assert got.tolist() == [0.5, 0.0, 0.5]
    assert m.modes == [False, False, False] and m.training  # 3 batches of 2, 2, 1


def test_trusted_weight_needs_self_training():
    with pytest.raises(ConfigError, match="self_training_trusted"):
        build_config("cpu", sets=["mpscl.self_training=0", "mpscl.self_training_trusted=1.0"])
    assert build_config("cpu").mpscl.self_training_trusted == 0.0  # off unless asked


def _trainer(cfg, src, trg, out, protos):
    from mpscl.adapt.trainer import Trainer
    return Trainer(cfg, "mpscl", src, trg, out, device=torch.device("cpu"), prototypes=protos, progress=False)


@pytest.fixture
def tiny_data(tiny_phantom):
    from mpscl.data import SliceDataset
    from mpscl.models import build_segmenter
    src, trg = SliceDataset(tiny_phantom["mr"], augment=True), SliceDataset(tiny_phantom["ct"], labelled=False)
    torch.manual_seed(0)
    protos = torch.randn(5, build_segmenter(build_config("cpu", sets=TINY).model, 5).feature_dim)
    return src, trg, protos


ST = ["mpscl.self_training=0.3", "mpscl.self_training_threshold=0.3", "mpscl.self_training_teacher=0.9"]


def test_the_stage_reads_its_factors_off_its_initial_weights_and_records_them(tiny_data, tmp_path):
    from mpscl.adapt.class_prior import class_shares
    src, trg, protos = tiny_data
    cfg = build_config("cpu", sets=TINY + ST + ["mpscl.self_training_trusted=1.0", "loss.size_prior_band=1.5"])
    t = _trainer(cfg, src, trg, tmp_path / "a", protos)
    pred = predicted_shares(t.model, trg.images, 5, torch.device("cpu"))
    source = class_shares(src.labels.numpy(), 5)
    ratio = pred / source
    want = [1.0 / 0.3 if 1 / 1.5 <= r <= 1.5 else 1.0 for r in ratio]
    assert t.st_class_scale.tolist() == pytest.approx(want)
    report = json.loads((tmp_path / "a" / "self_training_trust.json").read_text())
    assert [v["trusted"] for v in report["classes"].values()] == [w > 1 for w in want]
    assert [v["weight"] for v in report["classes"].values()] == [1.0 if w > 1 else 0.3 for w in want]
    assert report["classes"]["background"]["ratio"] == pytest.approx(ratio[0])
    # off: no factors, no record
    t = _trainer(build_config("cpu", sets=TINY + ST), src, trg, tmp_path / "b", protos)
    assert t.st_class_scale is None and not (tmp_path / "b" / "self_training_trust.json").exists()


@pytest.mark.slow
def test_factors_of_one_train_exactly_as_without_and_others_do_not(tiny_data, tmp_path, monkeypatch):
    import mpscl.adapt.trainer as trainer_mod
    src, trg, protos = tiny_data
    off = torch.load(_trainer(build_config("cpu", sets=TINY + ST), src, trg, tmp_path / "off", protos).fit(),
                     weights_only=True)["model"]
    # the trusted weight equal to the base: every factor 1, whatever is trusted
    same = build_config("cpu", sets=TINY + ST + ["mpscl.self_training_trusted=0.3"])
    got = torch.load(_trainer(same, src, trg, tmp_path / "same", protos).fit(), weights_only=True)["model"]
    assert all(torch.equal(off[k], got[k]) for k in off)
    # every class trusted (a band that takes any ratio): the self-training term weighs 1.0, not 0.3
    monkeypatch.setattr(trainer_mod, "trusted_classes", lambda p, s, band: np.ones(len(p), bool))
    lifted = build_config("cpu", sets=TINY + ST + ["mpscl.self_training_trusted=1.0"])
    got = torch.load(_trainer(lifted, src, trg, tmp_path / "lifted", protos).fit(), weights_only=True)["model"]
    assert not all(torch.equal(off[k], got[k]) for k in off)
    full = build_config("cpu", sets=TINY + ST[1:] + ["mpscl.self_training=1.0"])
    ref = torch.load(_trainer(full, src, trg, tmp_path / "full", protos).fit(), weights_only=True)["model"]
    # the same as plain self-training at weight 1.0 up to rounding (the factor 1 / 0.3 times 0.3)
    assert all(torch.allclose(ref[k].float(), got[k].float(), atol=1e-5) for k in ref)


@pytest.mark.slow
def test_resume_is_bit_identical_with_trusted_classes(tiny_data, tmp_path):
    src, trg, protos = tiny_data
    cfg = build_config("cpu", sets=TINY + ST + ["train.iters=6", "mpscl.self_training_trusted=1.0"])
    assert_resume_bit_identical(lambda out: _trainer(cfg, src, trg, out, protos), tmp_path, entries=("model", "teacher"))
