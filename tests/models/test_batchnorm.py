"""BatchNorm modes: the authors' ``live`` mode against values computed by hand."""
import math

import pytest
import torch
from torch import nn

from mpscl.config import build_config, diff_configs
from mpscl.models import BN_MODES, FrozenBatchNorm2d, LiveBatchNorm2d, Segmenter
from mpscl.models.batchnorm import norm_layer

EPS = 1e-5


def _batch(values):
    """(B,1,1,1) batch of one channel, one pixel per sample: mean and variance are easy."""
    return torch.tensor(values, dtype=torch.float64).view(-1, 1, 1, 1)


def _live():
    bn = LiveBatchNorm2d(1).double()
    with torch.no_grad():
        bn.weight.fill_(2.0)
        bn.bias.fill_(0.5)
    return bn


def test_live_mode_normalises_each_domain_with_its_own_batch_statistics():
    bn = _live().train()
    src, trg = _batch([1.0, 2.0, 3.0, 4.0]), _batch([10.0, 10.0, 14.0, 14.0])
    src.requires_grad_(True)
    out_s = bn(src)  # source forward, then target forward: two batches, as in the trainer
    out_t = bn(trg)
    # by hand: source mean 2.5, biased variance 1.25; target mean 12, biased variance 4
    exp_s = [2.0 * (v - 2.5) / math.sqrt(1.25 + EPS) + 0.5 for v in (1.0, 2.0, 3.0, 4.0)]
    exp_t = [2.0 * (v - 12.0) / math.sqrt(4.0 + EPS) + 0.5 for v in (10.0, 10.0, 14.0, 14.0)]
    assert torch.allclose(out_s.flatten(), torch.tensor(exp_s, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(out_t.flatten(), torch.tensor(exp_t, dtype=torch.float64), atol=1e-12)
    assert abs(exp_s[0] - (-2.1832708)) < 1e-6 and abs(exp_t[0] - (-1.4999975)) < 1e-6
    # running statistics moved by momentum 0.1 twice, from (0, 1), with unbiased variances
    # (source 5/3, target 16/3): mean 0.9*(0.1*2.5) + 0.1*12 = 1.425,
    # var 0.9*(0.9*1 + 0.1*5/3) + 0.1*16/3 = 0.96 + 0.5333... = 1.49333...
    assert bn.running_mean.item() == pytest.approx(1.425, abs=1e-12)
    assert bn.running_var.item() == pytest.approx(0.9 * (0.9 + 0.5 / 3) + 1.6 / 3, abs=1e-12)
    assert bn.running_var.item() == pytest.approx(1.4933333333, abs=1e-9)
    # affine parameters are frozen: no gradient, while the input gets one
    (out_s.sum() + out_t.sum()).backward()
    assert not bn.weight.requires_grad and not bn.bias.requires_grad
    assert bn.weight.grad is None and bn.bias.grad is None and src.grad is not None
    # evaluation uses the running statistics
    bn.eval()
    x = _batch([3.0])
    expected = 2.0 * (3.0 - 1.425) / math.sqrt(bn.running_var.item() + EPS) + 0.5
    assert bn(x).item() == pytest.approx(expected, abs=1e-12)
    assert bn.running_mean.item() == pytest.approx(1.425, abs=1e-12)  # eval does not move them


def test_frozen_and_trainable_modes_for_contrast():
    frozen = FrozenBatchNorm2d(1).double().train()
    out = frozen(_batch([1.0, 2.0, 3.0, 4.0]))  # stored statistics (0, 1): identity
    assert torch.allclose(out.flatten(), torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64) / math.sqrt(1 + EPS))
    assert frozen.running_mean.item() == 0.0 and not frozen.training
    trainable = norm_layer("trainable")(1).double().train()
    trainable(_batch([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert trainable.weight.grad is not None
    assert set(BN_MODES) == {"live", "frozen", "trainable"}
    with pytest.raises(ValueError, match="live, frozen, trainable"):
        norm_layer("sync")


def test_live_segmenter_per_domain_forward_and_trainable_parameters():
    torch.manual_seed(0)
    model = Segmenter(3, "resnet18", width=8, input_mode="plain", batchnorm="live").train()
    bns = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(type(m) is LiveBatchNorm2d and m.training for m in bns)
    names = {id(p) for g in model.param_groups(1e-3) for p in g["params"]}
    assert not any(id(p) in names for m in bns for p in m.parameters())  # not optimised
    xs = torch.rand(2, 1, 40, 40) * 2 - 1
    xt = torch.rand(2, 1, 40, 40) * 0.2 - 0.9  # another intensity distribution
    before = model.backbone.bn1.running_mean.clone()
    fs = model(xs)[0]
    model(xt)
    assert not torch.equal(model.backbone.bn1.running_mean, before)
    # in one batch with the target, the source features would be normalised differently
    joint = model(torch.cat([xs, xt]))[0][:2]
    assert not torch.allclose(fs, joint, atol=1e-3)
    model.eval()
    frozen_stats = model.backbone.bn1.running_mean.clone()
    with torch.no_grad():
        model(xs)
    assert torch.equal(model.backbone.bn1.running_mean, frozen_stats)


def test_presets_bn_modes_and_legacy_freeze_bn_key():
    assert build_config("paper-mr2ct").model.batchnorm == "live"
    assert build_config("paper-ct2mr").model.batchnorm == "live"
    assert build_config("cpu").model.batchnorm == "trainable"
    assert build_config("cpu", sets=["model.freeze_bn=true"]).model.batchnorm == "frozen"
    assert build_config("paper-mr2ct", sets=["model.freeze_bn=false"]).model.batchnorm == "trainable"
    # a run folder's config.yaml of an older version: freeze_bn, and no key added since
    new = build_config("cpu").to_dict()
    old = {s: dict(v) for s, v in new.items()}
    del old["model"]["batchnorm"], old["model"]["allow_random_init"]
    old["model"]["freeze_bn"] = False
    assert diff_configs(old, new) == []
    old["model"]["freeze_bn"] = True  # an old run with frozen BatchNorm is another config
    assert diff_configs(old, new) == ["model.batchnorm"]


def test_upgrade_leaves_empty_or_foreign_dicts_alone():
    from mpscl.config import upgrade_config_dict
    assert upgrade_config_dict({}) == {}
    foreign = {"model": {"no_such_key": 1}}
    assert upgrade_config_dict(foreign) is foreign
    assert "model" in diff_configs({}, build_config("cpu").to_dict())  # nothing filled in


class _Probe(nn.Module):
    """x -> BatchNorm -> x2 -> BatchNorm: the second layer sees the first one's output."""

    def __init__(self, layer):
        super().__init__()
        self.bn1, self.bn2 = layer(1).double(), layer(1).double()

    def forward(self, x):
        return self.bn2(2.0 * self.bn1(x))


@pytest.mark.parametrize("mode", BN_MODES)
def test_adabn_replaces_running_statistics_with_the_images_batch_averages(mode):
    from mpscl.models.batchnorm import reestimate_statistics

    model = _Probe(norm_layer(mode))
    with torch.no_grad():
        for bn in (model.bn1, model.bn2):
            bn.running_mean.fill_(7.0)
            bn.running_var.fill_(9.0)
            bn.weight.fill_(3.0)
            bn.bias.fill_(-1.0)
    images = _batch([1.0, 3.0, 10.0, 14.0, 100.0])  # 5 slices, batches of 2: the 5th left out
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(5, generator=torch.Generator().manual_seed(0)).tolist()
    used = reestimate_statistics(model, images, batch_size=2, generator=g)
    assert used == 4 and not model.training and not model.bn1.training
    b1, b2 = [images.flatten()[order[:2]], images.flatten()[order[2:4]]]
    mean = (b1.mean() + b2.mean()) / 2
    var = (b1.var(unbiased=True) + b2.var(unbiased=True)) / 2
    assert torch.allclose(model.bn1.running_mean, mean.view(1), atol=1e-12)
    assert torch.allclose(model.bn1.running_var, var.view(1), atol=1e-12)
    # bn2 sees 2 * (3 * (x - batch mean) / batch std - 1) per batch: mean -2, unbiased
    # variance 36 * (n / (n - 1)) * biased / (biased + eps) with n = 2
    got2 = [36.0 * 2.0 * (b.var(unbiased=False) / (b.var(unbiased=False) + EPS)) for b in (b1, b2)]
    assert torch.allclose(model.bn2.running_mean, torch.tensor([-2.0], dtype=torch.float64), atol=1e-9)
    assert torch.allclose(model.bn2.running_var, (sum(got2) / 2).view(1), atol=1e-6)
    assert model.bn1.weight.detach().item() == 3.0 and model.bn1.bias.detach().item() == -1.0  # untouched
    assert model.bn1.momentum == 0.1  # the layers' own momentum back
    # the 5 slices' values are 1, 3, 10, 14, 100: whichever 4 are kept, not the old (7, 9)
    assert float(model.bn1.running_mean) != 7.0


def test_adabn_refuses_what_it_cannot_estimate():
    from mpscl.models.batchnorm import reestimate_statistics

    with pytest.raises(ValueError, match="at least 2 slices"):
        reestimate_statistics(_Probe(nn.BatchNorm2d), _batch([1.0]))
    with pytest.raises(ValueError, match="BatchNorm layers"):
        reestimate_statistics(nn.Conv2d(1, 1, 1).double(), _batch([1.0, 2.0]))
