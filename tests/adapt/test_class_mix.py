"""Cross-domain class mixing for self-training (``mpscl.self_training_mix``, adapt/class_mix.py)."""
import json

import pytest
import torch

from mpscl.adapt.class_mix import class_mix, class_mix_mask
from mpscl.adapt.pipeline import train
from mpscl.config import build_config


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
