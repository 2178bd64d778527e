"""Output-space discriminators on entropy maps: (B,K,H,W) -> (B,1,h,w) real/fake logits.

- ``fc``: AdvEnt's fully-convolutional discriminator, five 4x4 stride-2 convs
  (ndf, 2ndf, 4ndf, 8ndf, 1) with LeakyReLU(0.2) between; h = H/32 (8x8 for 256x256).
- ``patchgan``: pix2pix's NLayerDiscriminator with n_layers=3 and BatchNorm:
  three 4x4 stride-2 convs (ndf, 2ndf, 4ndf), a 4x4 stride-1 conv (8ndf), a 4x4 stride-1
  conv to 1; convs N(0, 0.02), BatchNorm weights N(1, 0.02), biases zero;
  h = H/8 - 2 (30x30 for 256x256).
"""
from __future__ import annotations

from torch import nn


def fc_discriminator(num_classes: int, ndf: int = 64) -> nn.Sequential:
    """AdvEnt FC-D; PyTorch's default conv initialisation, as published."""
    widths = [num_classes, ndf, ndf * 2, ndf * 4, ndf * 8]
    layers = []
    for cin, cout in zip(widths[:-1], widths[1:]):
        layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
    layers.append(nn.Conv2d(widths[-1], 1, 4, stride=2, padding=1))
    return nn.Sequential(*layers)


def patchgan_discriminator(num_classes: int, ndf: int = 64) -> nn.Sequential:
    """70x70 PatchGAN (n_layers=3, BatchNorm; convs before BatchNorm have no bias)."""
    layers = [nn.Conv2d(num_classes, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
    for cin, cout, stride in ((ndf, ndf * 2, 2), (ndf * 2, ndf * 4, 2), (ndf * 4, ndf * 8, 1)):
        layers += [nn.Conv2d(cin, cout, 4, stride=stride, padding=1, bias=False),
                   nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]
    layers.append(nn.Conv2d(ndf * 8, 1, 4, stride=1, padding=1))
    net = nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return net


DISCRIMINATORS = {"fc": fc_discriminator, "patchgan": patchgan_discriminator}


def build_discriminator(model_cfg, num_classes: int) -> nn.Module:
    """The discriminator named by ``model_cfg.discriminator``, ``model_cfg.disc_width`` wide."""
    kind = model_cfg.discriminator
    if kind not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator {kind!r} (available: {', '.join(DISCRIMINATORS)})")
    return DISCRIMINATORS[kind](num_classes, model_cfg.disc_width)
