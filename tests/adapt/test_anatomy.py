"""Anatomical rules learnt from source labels (``mpscl.self_training_anatomy``, adapt/anatomy.py)."""
import json

import numpy as np
import pytest
import torch

from mpscl.adapt.anatomy import AnatomyRules, filter_labels, learn_rules, violations
from mpscl.adapt.pipeline import train
from mpscl.config import build_config

BG, MYO, LV, RV = 0, 1, 2, 3


def heart(rv: bool = False) -> np.ndarray:
    """32 x 32: an 8 x 8 LV square [12:20] in a MYO ring two pixels thick [10:22]; a 12 x 5 RV
    beside it, 3-7 px from MYO."""
    y = np.zeros((32, 32), np.uint8)
    y[10:22, 10:22] = MYO
    y[12:20, 12:20] = LV
    if rv:
        y[10:22, 24:29] = RV
    return y


def test_rules_read_off_a_ring_around_a_square_by_hand():
    r = learn_rules(np.stack([heart()] * 4), 3, ("background", "MYO", "LV"))
    # MYO pixels lie 1 or 2 px (chessboard) from LV; LV's 64 pixels 1 (28), 2 (20), 3 (12) or
    # 4 (4) from MYO: the 0.99 quantile is 4. Both always together: required.
    assert set(r.near) == {(MYO, LV, 2, True), (LV, MYO, 4, True)}
    # the ring's hole holds LV only: neither background nor MYO lies inside a MYO or LV hole
    assert set(r.outside) == {(BG, MYO), (BG, LV), (MYO, LV)}  # LV inside MYO is the anatomy
    # every MYO pixel touches another class (a ring 2 px thick); LV's centre is 4 px in
    assert set(r.width) == {(MYO, 1), (LV, 4)}
    assert "MYO within 2 px of LV" in r.describe() and "MYO not inside LV" in r.describe()
    assert json.loads(json.dumps(r.to_dict()))["width"] == [[MYO, 1], [LV, 4]]


def test_a_class_in_half_of_the_slices_gives_a_rule_only_where_it_is():
    # RV in 4 of 8 slices: typical for MYO (>= 0.5), not required (< 0.95); MYO is in all of
    # RV's; RV's far column is 7 px from MYO and 9 from LV (chessboard)
    y = np.stack([heart(rv=True)] * 4 + [heart()] * 4)
    r = learn_rules(y, 4)
    near = {(k, j): (d, req) for k, j, d, req in r.near}
    assert near[(MYO, RV)][1] is False and near[(RV, MYO)] == (7, True) and near[(RV, LV)] == (9, True)
    # a MYO without RV in its slice breaks no rule; an RV pixel 8 px from MYO does
    p = heart(rv=True).astype(np.int64)
    assert not violations(torch.from_numpy(np.where(p == RV, BG, p))[None], r).any()
    p[10:22, 29] = RV
    bad = violations(torch.from_numpy(p)[None], r)[0].numpy()
    assert bad[10:22, 29].all() and bad.sum() == 12


def test_the_source_itself_breaks_no_rule_and_misplaced_labels_do():
    src = np.stack([heart()] * 4)
    r = learn_rules(src, 3)
    assert not violations(torch.from_numpy(src).long(), r).any()
    p = heart().astype(np.int64)
    p[2, 2] = MYO                 # MYO far from LV: breaks "near"
    p[15, 15] = MYO               # MYO in the cavity: breaks "not inside LV" (and no more)
    p[26:31, 26:31] = LV          # LV island 6+ px from MYO: breaks "near"; its centre is 3 px in
    bad = violations(torch.from_numpy(p)[None], r)[0].numpy()
    assert bad[2, 2] and bad[15, 15] and bad[26:31, 26:31].all()
    assert bad.sum() == 2 + 25
    # without any LV in the slice, MYO breaks its required "near" everywhere
    only_myo = np.where(heart() == LV, BG, heart()).astype(np.int64)
    assert violations(torch.from_numpy(only_myo)[None], r)[0].numpy()[only_myo == MYO].all()


def test_a_myocardium_too_thick_loses_its_inside_only():
    r = AnatomyRules(width=((MYO, 1),))
    p = np.zeros((1, 12, 12), np.int64)
    p[0, 2:9, 2:9] = MYO          # 7 x 7: 2 px or more from another class inside the border
    bad = violations(torch.from_numpy(p), r)[0].numpy()
    assert bad[3:8, 3:8].all() and bad.sum() == 25
    # a slice of MYO only: no other class to measure from, thicker than any width
    assert violations(torch.full((1, 4, 4), MYO), r).all()


def test_filter_drops_only_labels_of_pixels_that_break_a_rule():
    r = AnatomyRules(near=((MYO, LV, 1, True),))
    pred = torch.tensor([[[MYO, LV, BG, MYO]]])
    labels = torch.tensor([[[MYO, -1, BG, MYO]]])
    assert filter_labels(labels, pred, r).tolist() == [[[MYO, -1, BG, -1]]]


def test_too_few_source_pixels_make_no_rule():
    y = np.zeros((1, 32, 32), np.uint8)
    y[0, 10:12, 10:12] = MYO       # 4 pixels
    y[0, 12:14, 10:12] = LV
    r = learn_rules(y, 3)
    assert r.near == () and r.width == () and (MYO, LV) not in r.outside
    assert (BG, LV) in r.outside  # 1,016 background pixels are enough


@pytest.mark.slow
def test_training_with_the_rules_differs_and_writes_them(tiny_phantom, tmp_path, monkeypatch):
    import dataclasses
    from mpscl.adapt import trainer
    from test_self_training import TINY

    # a tiny run's teacher predicts background only, which breaks no learnt rule: one rule
    # more that every background label breaks shows the rules reach the loss
    def learn_and_drop_background(labels, num_classes, classes):
        r = learn_rules(labels, num_classes, classes)
        return dataclasses.replace(r, near=r.near + ((BG, MYO, 0, True),))

    monkeypatch.setattr(trainer, "learn_rules", learn_and_drop_background)
    sets = TINY + ["mpscl.self_training=1.0", "mpscl.self_training_threshold=0.3",
                   "mpscl.self_training_teacher=0.9"]
    runs = {}
    for on in (False, True):
        cfg = build_config("cpu", sets=sets + [f"mpscl.self_training_anatomy={str(on).lower()}"])
        runs[on] = train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", cfg, tmp_path / str(on), progress=False)
    rules = json.loads((tmp_path / "True" / "mpscl" / "anatomy.json").read_text())
    assert rules["near"] and rules["outside"]  # learnt from the phantom's source labels
    assert "background within 0 px of MYO" in rules["described"]
    assert not (tmp_path / "False" / "mpscl" / "anatomy.json").exists()
    wa, wb = (torch.load(runs[o], weights_only=True)["model"] for o in (False, True))
    assert any(not torch.equal(v, wb[k]) for k, v in wa.items())
