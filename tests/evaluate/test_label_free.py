"""Label-free indicators: hand-computed values on hand-built data and models."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mpscl.evaluate.label_free import (entropy_sum, indicators_markdown, label_free_indicators,
                                       overlap_counts, share_gap)

from evaluate_helpers import CLASSES, DummySegmenter, make_dataset


def test_entropy_of_certain_uniform_and_two_way_pixels():
    # K = 4: a certain pixel 0, a uniform one 1, one split between two classes ln2 / ln4 = 0.5
    probs = np.zeros((1, 4, 1, 3), np.float32)
    probs[0, 2, 0, 0] = 1.0
    probs[0, :, 0, 1] = 0.25
    probs[0, :2, 0, 2] = 0.5
    assert entropy_sum(probs) == pytest.approx(0.0 + 1.0 + 0.5, abs=1e-6)


def test_overlap_counts_and_share_gap_by_hand():
    a = np.array([[0, 1, 1], [2, 2, 0]])
    b = np.array([[0, 1, 0], [2, 1, 0]])
    # class 0: both at (0,0),(1,2) -> 2; a has 2, b has 3.  class 1: both (0,1) -> 1; a 2, b 2.
    # class 2: both (1,0) -> 1; a 2, b 1.
    assert overlap_counts(a, b, 3).tolist() == [[2, 2, 3], [1, 2, 2], [1, 2, 1]]
    assert share_gap([0.5, 0.5, 0.0], [1.0, 0.0, 0.0]) == pytest.approx(0.5)
    assert share_gap([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    assert share_gap([1.0, 0.0], [0.0, 1.0]) == 1.0


class _LeftOnly(DummySegmenter):
    """The dummy's classes, but only in columns < ``cols``; background to their right: a model
    that is not mirror-symmetric, so it disagrees with itself on mirrored inputs."""

    def __init__(self, cols: int):
        super().__init__(len(CLASSES))
        self.cols = cols

    def forward(self, x):
        feats, aux, logits = super().forward(x)
        keep = torch.zeros_like(logits)
        keep[..., :self.cols] = 1
        background = F.one_hot(torch.zeros(x.shape[0], *x.shape[-2:], dtype=torch.long), self.k)
        return feats, aux, logits * keep + background.permute(0, 3, 1, 2) * self.scale * (1 - keep)


def _datasets(tmp_path):
    # target: one case, 16x16x2; MYO (1) in columns 2..13 of every row (mirror-symmetric)
    lab = np.zeros((16, 16, 2), np.uint8)
    lab[:, 2:14, :] = 1
    target = make_dataset(tmp_path / "target", {"1": (lab, (1.0, 1.0, 1.0))}, labelled=False)
    # source: 3/4 background, 1/4 MYO (the other classes absent)
    src = np.zeros((16, 16, 1), np.uint8)
    src[:, :4, :] = 1
    source = make_dataset(tmp_path / "source", {"s": (src, (1.0, 1.0, 1.0))})
    return target, source


def test_a_mirror_symmetric_model_agrees_with_itself(tmp_path, fake_checkpoint):
    target, source = _datasets(tmp_path)
    r = label_free_indicators(fake_checkpoint["path"], target, source_dir=source, progress=False)
    # the dummy's logits are 10 x one-hot over K = 4: every pixel has the same entropy
    p = math.exp(10) / (math.exp(10) + 3)
    q = 1 / (math.exp(10) + 3)
    assert r["entropy"] == pytest.approx(-(p * math.log(p) + 3 * q * math.log(q)) / math.log(4), rel=1e-4)
    assert r["flip_agreement"] == {"MYO": 100.0, "LV": None, "RV": None}  # LV, RV never predicted
    assert r["flip_agreement_mean"] == 100.0
    assert r["shares"] == pytest.approx({"background": 0.25, "MYO": 0.75, "LV": 0.0, "RV": 0.0})
    assert r["source_shares"] == pytest.approx({"background": 0.75, "MYO": 0.25, "LV": 0.0, "RV": 0.0})
    assert r["share_gap"] == pytest.approx(0.5)


def test_a_lopsided_model_disagrees_by_the_hand_counted_amount(tmp_path, fake_checkpoint, monkeypatch):
    import mpscl.checkpoint as cp
    target, _ = _datasets(tmp_path)
    monkeypatch.setattr(cp, "load_model", lambda p, device="cpu": (_LeftOnly(12).eval(), fake_checkpoint["ckpt"]))
    r = label_free_indicators(fake_checkpoint["path"], target, progress=False)
    # MYO predicted in columns 2..11 (10 columns); on the mirror image, mirrored back, in 4..13;
    # both in 4..11 (8 columns): Dice 2 * 8 / (10 + 10) = 80 %
    assert r["flip_agreement"]["MYO"] == pytest.approx(80.0)
    assert "share_gap" not in r and "source_shares" not in r
    table = indicators_markdown({"lopsided": r})
    assert table[0].startswith("| model | entropy") and "| lopsided | " in table[2] and "| 80.0 |" in table[2]


def test_the_target_labels_are_never_read(tmp_path, fake_checkpoint):
    # a labelled target whose labels contradict the images: the indicators must not change
    target, _ = _datasets(tmp_path)
    lab = np.zeros((16, 16, 2), np.uint8)
    lab[:, 2:14, :] = 1
    labelled = make_dataset(tmp_path / "labelled", {"1": (lab, (1.0, 1.0, 1.0))})
    z = dict(np.load(labelled / "cases" / "1.npz"))
    z["label"] = np.full_like(z["label"], 3)
    z["label_orig"] = np.full_like(z["label_orig"], 3)
    np.savez_compressed(labelled / "cases" / "1.npz", **z)
    a = label_free_indicators(fake_checkpoint["path"], target, progress=False)
    b = label_free_indicators(fake_checkpoint["path"], labelled, progress=False)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_a_source_with_other_classes_is_refused(tmp_path, fake_checkpoint):
    from mpscl.evaluate import EvaluateError
    target, _ = _datasets(tmp_path)
    other = make_dataset(tmp_path / "other", {"s": (np.zeros((16, 16, 1), np.uint8), (1.0, 1.0, 1.0))},
                         classes=["background", "MYO", "LAC", "LVC"], label_values=[0, 1, 2, 3])
    with pytest.raises(EvaluateError, match="other: source classes"):
        label_free_indicators(fake_checkpoint["path"], target, source_dir=other, progress=False)


def test_the_command_writes_json_and_markdown(tmp_path, fake_checkpoint, capsys):
    from mpscl.cli import main
    target, source = _datasets(tmp_path)
    main(["label-free", "--checkpoint", str(fake_checkpoint["path"]), "--data", str(target),
          "--source", str(source), "--out", str(tmp_path / "lf")])
    rows = json.loads((tmp_path / "lf" / "label_free.json").read_text())
    assert rows[str(fake_checkpoint["path"])]["share_gap"] == pytest.approx(0.5)
    md = (tmp_path / "lf" / "label_free.md").read_text()
    assert "No label of this dataset was used" in md and "| 0.500 |" in md
    assert "| 0.500 |" in capsys.readouterr().out
