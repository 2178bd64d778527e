"""Dilated ResNet backbones: shapes, output stride, frozen BatchNorm."""
import pytest
import torch
from torch import nn

from mpscl.models.resnet import ARCHS, FrozenBatchNorm2d, ResNet

EXPANSION = {"resnet18": 1, "resnet34": 1, "resnet50": 4, "resnet101": 4}


@pytest.mark.parametrize("depth", sorted(ARCHS))
def test_shapes_and_output_stride(depth):
    torch.manual_seed(0)
    net = ResNet(depth, width=8).eval()
    with torch.no_grad():
        mid, out = net(torch.randn(2, 3, 64, 64))
    e = EXPANSION[depth]
    assert net.mid_channels == 32 * e and net.out_channels == 64 * e
    assert mid.shape == (2, 32 * e, 9, 9)
    assert out.shape == (2, 64 * e, 9, 9)


def test_128_input_gives_17x17():
    net = ResNet("resnet18", width=8).eval()
    with torch.no_grad():
        _, out = net(torch.randn(1, 3, 128, 128))
    assert out.shape[-2:] == (17, 17)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="resnet152"):
        ResNet("resnet152")


def _bn_stats(net):
    return {k: v.clone() for k, v in net.state_dict().items() if "running" in k}


def test_frozen_bn_keeps_statistics_and_eval_mode():
    torch.manual_seed(0)
    net = ResNet("resnet18", width=8, freeze_bn=True)
    net.train()
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(isinstance(m, FrozenBatchNorm2d) and not m.training for m in bns)
    assert all(not p.requires_grad for m in bns for p in m.parameters())
    before = _bn_stats(net)
    x = torch.randn(2, 3, 64, 64) * 3 + 1
    _, out_train = net(x)
    out_train.sum().backward()
    after = _bn_stats(net)
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        _, out_eval = net.eval()(x)
    torch.testing.assert_close(out_train.detach(), out_eval)


def test_unfrozen_bn_learns_statistics():
    net = ResNet("resnet18", width=8, freeze_bn=False).train()
    before = _bn_stats(net)
    net(torch.randn(2, 3, 64, 64) * 3 + 1)
    after = _bn_stats(net)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad for p in net.parameters())
