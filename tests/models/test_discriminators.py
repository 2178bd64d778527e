"""Entropy-map discriminators: output shapes, widths, PatchGAN initialisation."""
import pytest
import torch
from torch import nn

from mpscl.config import ModelConfig
from mpscl.models import build_discriminator


@pytest.mark.parametrize("kind,size,out", [("fc", 256, 8), ("fc", 128, 4),
                                           ("patchgan", 256, 30), ("patchgan", 128, 14)])
def test_output_shapes(kind, size, out):
    d = build_discriminator(ModelConfig(discriminator=kind, disc_width=16), 5)
    with torch.no_grad():
        y = d(torch.rand(2, 5, size, size))
    assert y.shape == (2, 1, out, out)


def test_fc_widths_and_activation():
    d = build_discriminator(ModelConfig(discriminator="fc", disc_width=64), 4)
    convs = [m for m in d if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert convs[0].in_channels == 4
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) for c in convs)
    assert all(m.negative_slope == 0.2 for m in d if isinstance(m, nn.LeakyReLU))


def test_patchgan_layout_and_init():
    torch.manual_seed(0)
    d = build_discriminator(ModelConfig(discriminator="patchgan", disc_width=64), 4)
    convs = [m for m in d if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d) == 3
    w = convs[3].weight
    assert abs(w.mean().item()) < 2e-3 and abs(w.std().item() - 0.02) < 2e-3
    bn = [m for m in d if isinstance(m, nn.BatchNorm2d)][-1]
    assert abs(bn.weight.mean().item() - 1.0) < 0.01 and abs(bn.weight.std().item() - 0.02) < 0.01


def test_unknown_discriminator():
    cfg = ModelConfig()
    cfg.discriminator = "wgan"
    with pytest.raises(ValueError, match="wgan"):
        build_discriminator(cfg, 4)
