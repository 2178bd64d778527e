"""Dilated ResNet backbones in the DeepLabv2 layout (output stride 8).

Layout shared by every depth (DeepLabv2, as used by AdvEnt and MPSCL):

- stem: conv 7x7 stride 2 -> BatchNorm -> ReLU -> max-pool 3x3 stride 2 padding 1 with
  ``ceil_mode=True`` (so a 256x256 input gives 65x65 after the stem and 33x33 at the end);
- layer1 stride 1, layer2 stride 2, layer3 stride 1 dilation 2, layer4 stride 1 dilation 4
  (every block of layer3/layer4 is dilated, first block included);
- Bottleneck blocks put their stride on the first 1x1 conv (Caffe/DeepLab style), not on
  the 3x3 conv as torchvision does. Weight shapes are identical, so either family of
  ImageNet weights loads; only the sampling grid of ``layer2.0`` differs.

``width`` scales every stage: stem ``width`` channels, stages ``width * (1, 2, 4, 8)``
planes times the block expansion (1 for BasicBlock, 4 for Bottleneck). ``width=64`` is
the standard ResNet (2048 output channels for ResNet-50/101, 512 for ResNet-18/34).

Module names follow torchvision (``conv1``, ``bn1``, ``layerN.i.convJ``, ``layerN.i.bnJ``,
``layerN.i.downsample.{0,1}``) so published state dicts map onto them by name.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple, Type

import torch
from torch import nn

from .batchnorm import FrozenBatchNorm2d, bn_mode_of, norm_layer  # noqa: F401  (re-exported)

# name -> (block kind, blocks per stage)
ARCHS: Dict[str, Tuple[str, Tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}


Norm = Type[nn.BatchNorm2d]


def _conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34); stride on the first, both convs dilated."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, dilation: int,
                 downsample: nn.Module | None, norm: Norm) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = norm(planes)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 (stride here, Caffe style) -> 3x3 dilated -> 1x1 expanding 4x (ResNet-50/101)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, dilation: int,
                 downsample: nn.Module | None, norm: Norm) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = norm(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = norm(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def channels(depth: str, width: int) -> Tuple[int, int]:
    """(layer3, layer4) output channels of the backbone ``depth`` at ``width``."""
    expansion = (BasicBlock if ARCHS[depth][0] == "basic" else Bottleneck).expansion
    return width * 4 * expansion, width * 8 * expansion


class ResNet(nn.Module):
    """Dilated ResNet trunk; ``forward(x (B,3,H,W)) -> (layer3 (B,C3,h,w), layer4 (B,C4,h,w))``.

    ``h = w = ceil(H/8) + 1`` for even ``H`` (33 for 256, 17 for 128). ``out_channels`` is
    C4 and ``mid_channels`` is C3 (2048 and 1024 for the standard ResNet-101).
    ``batchnorm`` is a mode of :mod:`.batchnorm` (``live``, ``frozen``, ``trainable``);
    when it is not given, the older ``freeze_bn`` picks ``frozen`` or ``trainable``.
    """

    def __init__(self, depth: str = "resnet101", width: int = 64, freeze_bn: bool = True,
                 batchnorm: Optional[str] = None) -> None:
        super().__init__()
        if depth not in ARCHS:
            raise ValueError(f"unknown backbone {depth!r} (available: {', '.join(ARCHS)})")
        kind, blocks = ARCHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.batchnorm = batchnorm or bn_mode_of(freeze_bn)
        self.depth, self.width, self.freeze_bn = depth, width, self.batchnorm != "trainable"
        self._norm: Norm = norm_layer(self.batchnorm)
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = self._norm(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self._inplanes = width
        self.layer1 = self._make_layer(block, width, blocks[0], stride=1, dilation=1)
        self.layer2 = self._make_layer(block, width * 2, blocks[1], stride=2, dilation=1)
        self.layer3 = self._make_layer(block, width * 4, blocks[2], stride=1, dilation=2)
        self.layer4 = self._make_layer(block, width * 8, blocks[3], stride=1, dilation=4)
        self.mid_channels, self.out_channels = channels(depth, width)
        self.low_channels = width * block.expansion  # layer1
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes: int, n: int, stride: int, dilation: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                self._norm(planes * block.expansion))
        layers: List[nn.Module] = [block(self._inplanes, planes, stride, dilation, downsample, self._norm)]
        self._inplanes = planes * block.expansion
        for _ in range(1, n):
            layers.append(block(self._inplanes, planes, 1, dilation, None, self._norm))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.levels(x)[1:]

    def levels(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(layer1 at stride 4, layer3, layer4): the first for a decoder's spatial detail."""
        low = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        mid = self.layer3(self.layer2(low))
        return low, mid, self.layer4(mid)
