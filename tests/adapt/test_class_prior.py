"""The source labels' class shares as a brake on self-training (``mpscl.self_training_prior``,
adapt/class_prior.py): values worked out by hand."""
import json

import numpy as np
import pytest
import torch

from mpscl.adapt.class_prior import ClassSharePrior, cap_labels, class_shares
from mpscl.adapt.pipeline import train
from mpscl.config import build_config


def test_class_shares_count_labelled_pixels_only():
    y = np.array([[0, 0, 0, 1], [1, 2, -1, -1]])
    assert np.allclose(class_shares(y, 4), [3 / 6, 2 / 6, 1 / 6, 0.0])
    with pytest.raises(ValueError, match="no labelled pixel"):
        class_shares(np.full((2, 2), -1), 3)


def test_the_running_share_starts_at_the_prior_and_moves_by_the_batch_over_the_window():
    p = ClassSharePrior([0.5, 0.5], bound=1.0, window=8)
    assert torch.equal(p.keep_fractions(), torch.ones(2))  # no evidence, no cap
    p.update(torch.tensor([1.0, 3.0]), slices=4)  # momentum 1 - 4/8 = 0.5
    assert torch.allclose(p.running, torch.tensor([0.375, 0.625], dtype=torch.float64))
    # class 1 runs at 0.625 against 1.0 * 0.5 allowed: keep 0.5 / 0.625 = 0.8 of its pixels
    assert torch.allclose(p.keep_fractions(), torch.tensor([1.0, 0.8], dtype=torch.float64))
    p.update(torch.tensor([0.0, 0.0]), slices=4)  # an empty batch tells nothing
    assert torch.allclose(p.running, torch.tensor([0.375, 0.625], dtype=torch.float64))
    p.update(torch.tensor([9.0, 1.0]), slices=8)  # a batch as large as the window replaces it
    assert torch.allclose(p.running, torch.tensor([0.9, 0.1], dtype=torch.float64))
    # the bound: class 0 at 0.9 against 1.5 * 0.5 = 0.75 allowed keeps 0.75 / 0.9
    q = ClassSharePrior([0.5, 0.5], bound=1.5, window=8)
    q.load_state_dict(p.state_dict())
    assert torch.allclose(q.keep_fractions(), torch.tensor([0.75 / 0.9, 1.0], dtype=torch.float64))


def test_cap_keeps_the_most_confident_fraction_of_a_class_and_nothing_else_changes():
    pred = torch.tensor([[1, 1, 1, 1, 1, 0, 2, 2]])
    conf = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]])
    labels = torch.tensor([[1, 1, 1, 1, 1, 0, -1, 2]])
    # class 1 keeps 40%: the 0.6 quantile of its confidences is 0.3 + 0.4 * 0.1 = 0.34
    out = cap_labels(labels, pred, conf, torch.tensor([1.0, 0.4, 1.0]))
    assert out.tolist() == [[-1, -1, -1, 1, 1, 0, -1, 2]]
    assert labels.tolist() == [[1, 1, 1, 1, 1, 0, -1, 2]]  # the input is left alone
    # a fraction of 1 for every class changes nothing, one of 0 drops all but the most confident
    assert torch.equal(cap_labels(labels, pred, conf, torch.ones(3)), labels)
    assert cap_labels(labels, pred, conf, torch.tensor([1.0, 0.0, 1.0])).tolist() == [[-1, -1, -1, -1, 1, 0, -1, 2]]


def test_bad_settings_and_state_are_refused():
    with pytest.raises(ValueError, match="bound"):
        ClassSharePrior([0.5, 0.5], bound=0.0)
    with pytest.raises(ValueError, match="3 classes, expected 2"):
        ClassSharePrior([0.5, 0.5], bound=1.0).load_state_dict({"running": [0.2, 0.3, 0.5]})


@pytest.mark.slow
def test_training_with_the_prior_differs_and_writes_the_shares(tiny_phantom, tmp_path):
    from test_self_training import TINY

    # a tiny run's teacher calls nearly every pixel background, about 1.3x the phantom
    # source's share: a bound of 0.5 caps the background labels from the first step
    sets = TINY + ["mpscl.self_training=1.0", "mpscl.self_training_threshold=0.3",
                   "mpscl.self_training_teacher=0.9"]
    runs = {}
    for b in (0.0, 0.5):
        cfg = build_config("cpu", sets=sets + [f"mpscl.self_training_prior={b}"])
        runs[b] = train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", cfg, tmp_path / str(b), progress=False)
    rec = json.loads((tmp_path / "0.5" / "mpscl" / "class_prior.json").read_text())
    assert rec["bound"] == 0.5 and abs(sum(rec["source_shares"].values()) - 1) < 1e-9
    bg = next(iter(rec["keep_fractions"]))
    assert rec["running_shares"][bg] > 0.5 * rec["source_shares"][bg] and rec["keep_fractions"][bg] < 1
    assert not (tmp_path / "0.0" / "mpscl" / "class_prior.json").exists()
    wa, wb = (torch.load(runs[b], weights_only=True)["model"] for b in (0.0, 0.5))
    assert any(not torch.equal(v, wb[k]) for k, v in wa.items())
