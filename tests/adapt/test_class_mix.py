"""Cross-domain class mixing for self-training (``mpscl.self_training_mix``, adapt/class_mix.py)."""
import json

import pytest
import torch

from mpscl.adapt.class_mix import class_mix, class_mix_mask, confident_source_labels, pair_partners
from mpscl.adapt.pipeline import train
from mpscl.config import ConfigError, build_config


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_the_mask_takes_half_the_foreground_classes_rounded_up_and_never_the_background():
    y = torch.tensor([[0, 0, 1, 1], [2, 2, 3, 0], [3, 3, 1, 0]])
    seen = set()
    for seed in range(40):
        m = class_mix_mask(y, _gen(seed))
        chosen = set(torch.unique(y[m]).tolist())
        assert len(chosen) == 2 and 0 not in chosen  # ceil(3 / 2) of classes 1, 2, 3
        assert torch.equal(m, torch.isin(y, torch.tensor(sorted(chosen))))  # every pixel of them
        seen |= chosen
        assert torch.equal(m, class_mix_mask(y, _gen(seed)))  # the generator decides
    assert seen == {1, 2, 3}
    one = torch.tensor([[0, 2], [2, 0]])
    assert torch.equal(class_mix_mask(one, _gen(0)), one == 2)  # ceil(1 / 2) = 1: the only class
    assert not class_mix_mask(torch.zeros(3, 3, dtype=torch.long), _gen(0)).any()


def test_mixing_pastes_source_pixels_and_labels_and_keeps_the_target_elsewhere():
    xs, ys = torch.full((1, 1, 2, 3), 5.0), torch.tensor([[[1, 2, 0], [1, 0, 2]]])
    xt, yt = torch.zeros(1, 1, 2, 3), torch.tensor([[[-1, 0, 3], [3, -1, -1]]])
    m = torch.tensor([[[True, False, False], [True, False, False]]])
    x, y = class_mix(xs, ys, xt, yt, m)
    assert x.tolist() == [[[[5.0, 0.0, 0.0], [5.0, 0.0, 0.0]]]]
    assert y.tolist() == [[[1, 0, 3], [1, -1, -1]]]
    assert yt.tolist() == [[[-1, 0, 3], [3, -1, -1]]]  # the inputs are left alone
    with pytest.raises(ValueError, match="shapes differ"):
        class_mix(xs, ys, xt[..., :2], yt, m)


def test_confident_source_labels_keep_only_confident_and_right_pixels():
    ys = torch.tensor([[[1, 2, 0, 1]]])
    # softmax of three classes per pixel: confident right, confident wrong, unsure, exactly at 0.9
    probs = torch.tensor([[[0.05, 0.9, 0.05], [0.05, 0.9, 0.05], [0.5, 0.3, 0.2], [0.05, 0.9, 0.05]]])
    probs = probs.permute(0, 2, 1)[:, :, None]  # (1, 3, 1, 4)
    assert confident_source_labels(probs, ys, 0.9).tolist() == [[[1, -1, -1, 1]]]
    assert confident_source_labels(probs, ys, 0.95).tolist() == [[[-1, -1, -1, -1]]]
    assert confident_source_labels(probs, ys, 0.4).tolist() == [[[1, -1, 0, 1]]]
    assert ys.tolist() == [[[1, 2, 0, 1]]]
    with pytest.raises(ValueError, match="do not match"):
        confident_source_labels(probs, ys[..., :3], 0.9)


def test_pair_partners_swap_neighbours_and_leave_an_odd_last_slice_alone():
    assert pair_partners(4).tolist() == [1, 0, 3, 2]
    assert pair_partners(3).tolist() == [1, 0, 2]
    assert pair_partners(1).tolist() == [0]
    # an even share per rank pairs as the whole global batch does (DDP)
    assert torch.cat([pair_partners(2), pair_partners(2) + 2]).tolist() == pair_partners(4).tolist()


def test_source_confident_mixing_needs_a_mean_teacher():
    on = ["mpscl.self_training=0.3", "mpscl.self_training_mix=true", "mpscl.self_training_mix_pasted=source-confident"]
    with pytest.raises(ConfigError, match="needs a mean teacher"):
        build_config("cpu", sets=on + ["mpscl.self_training_teacher=0"])
    assert build_config("cpu", sets=on).mpscl.self_training_mix_pasted == "source-confident"


def test_mix_masks_are_deterministic_per_iteration_and_position(tiny_phantom):
    from mpscl.adapt.trainer import Trainer
    from mpscl.data import SliceDataset
    from test_self_training import TINY

    cfg = build_config("cpu", sets=TINY)
    src, trg = SliceDataset(tiny_phantom["mr"]), SliceDataset(tiny_phantom["ct"], labelled=False)
    t = Trainer(cfg, "source-only", src, trg, "unused", device=torch.device("cpu"), progress=False)
    y = torch.tensor([[0, 1, 2, 3, 4]] * 5).repeat(4, 1, 1)  # four classes: two are drawn
    m = t.mix_masks(y, 5)
    assert m.shape == y.shape and m.dtype == torch.bool
    assert torch.equal(m, t.mix_masks(y, 5)) and torch.equal(t.mix_masks(y[:1], 5), m[:1])
    assert any(not torch.equal(t.mix_masks(y, i), m) for i in range(6, 12))


@pytest.mark.slow
@pytest.mark.parametrize("view", ["clean", "randomised"])
def test_the_pasted_source_pixels_train_even_where_no_target_label_passes(tiny_phantom, tmp_path, view):
    from test_self_training import TINY

    # threshold 1: no target pixel is confident enough, so without mixing the term is 0;
    # float32 (train.amp=off) so that no softmax rounds up to 1
    sets = TINY + ["train.amp=off", "mpscl.self_training=1.0", "mpscl.self_training_threshold=1.0",
                   "mpscl.self_training_teacher=0.9", f"mpscl.self_training_view={view}"]
    st, runs = {}, {}
    for mix in (False, True):
        cfg = build_config("cpu", sets=sets + [f"mpscl.self_training_mix={str(mix).lower()}"])
        out = tmp_path / str(mix)
        runs[mix] = train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", cfg, out, progress=False)
        st[mix] = [json.loads(l)["st_trg"] for l in (out / "mpscl" / "log.jsonl").read_text().splitlines()]
    assert all(v == 0.0 for v in st[False])
    assert all(v >= 0.0 for v in st[True]) and any(v > 0.0 for v in st[True])
    wa, wb = (torch.load(runs[m], weights_only=True)["model"] for m in (False, True))
    assert any(not torch.equal(v, wb[k]) for k, v in wa.items())


def _train_tiny(tiny_phantom, out, sets):
    """An MPSCL run on the tiny phantom: its final checkpoint and its stage's log records."""
    from test_self_training import TINY

    final = train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", build_config("cpu", sets=TINY + sets), out,
                  progress=False)
    return final, [json.loads(l) for l in (out / "mpscl" / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_label_keeping_mixes_add_no_label_where_no_target_label_passes(tiny_phantom, tmp_path):
    # threshold 1 (float32): no teacher label passes, so pasted classes that keep the labels'
    # density (source-confident, target) leave the term at 0, while DACS's full labels train it
    sets = ["train.amp=off", "mpscl.self_training=1.0", "mpscl.self_training_threshold=1.0",
            "mpscl.self_training_teacher=0.9", "mpscl.self_training_mix=true"]
    for pasted in ("source-confident", "target"):
        _, rows = _train_tiny(tiny_phantom, tmp_path / pasted, sets + [f"mpscl.self_training_mix_pasted={pasted}"])
        assert all(r["st_trg"] == 0.0 and r["st_mixed_fg"] == 0.0 for r in rows), pasted


@pytest.mark.slow
def test_source_confident_mixing_changes_the_training(tiny_phantom, tmp_path):
    # threshold 0, no prototype agreement: every teacher label passes; the pasted source
    # pixels (labelled where this barely trained teacher is right) change what is trained on
    sets = ["train.amp=off", "mpscl.self_training=1.0", "mpscl.self_training_threshold=0.0",
            "mpscl.self_training_agree=false", "mpscl.self_training_teacher=0.9"]
    off, _ = _train_tiny(tiny_phantom, tmp_path / "off", sets)
    on, rows = _train_tiny(tiny_phantom, tmp_path / "on", sets + [
        "mpscl.self_training_mix=true", "mpscl.self_training_mix_pasted=source-confident"])
    assert all(0.0 <= r["st_mixed_fg"] <= 1.0 for r in rows)
    wa, wb = (torch.load(p, weights_only=True)["model"] for p in (off, on))
    assert any(not torch.equal(v, wb[k]) for k, v in wa.items())


def test_target_mixing_pastes_the_partners_predicted_classes_with_its_pseudo_labels():
    from types import SimpleNamespace

    from mpscl.adapt.steps import _mixed_slices

    cfg = build_config("cpu", sets=["mpscl.self_training=0.3", "mpscl.self_training_mix=true",
                                    "mpscl.self_training_mix_pasted=target"])
    drawn = []

    def masks(y, i):  # stands in for Trainer.mix_masks: paste class 2 of whatever it is given
        drawn.append((y.clone(), i))
        return y == 2

    t = SimpleNamespace(cfg=cfg, iteration=7, mix_masks=masks)
    xt = torch.arange(3.0)[:, None, None, None].expand(3, 1, 1, 3).clone()  # slice k is all k
    pred = torch.tensor([[[2, 0, 1]], [[0, 2, 2]], [[2, 2, 2]]])
    labels = torch.tensor([[[2, -1, 1]], [[0, -1, 2]], [[-1, 2, 2]]])
    x, y = _mixed_slices(t, None, None, xt, labels, pred, None)
    assert torch.equal(drawn[0][0], pred[[1, 0, 2]]) and drawn[0][1] == 7  # the partners' argmax
    assert x[:, 0, 0].tolist() == [[0.0, 1.0, 1.0], [0.0, 1.0, 1.0], [2.0, 2.0, 2.0]]
    assert y[:, 0].tolist() == [[2, -1, 2], [2, -1, 2], [-1, 2, 2]]  # -1 travels with its pixel
