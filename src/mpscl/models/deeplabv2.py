"""DeepLabv2 multi-level segmenter: dilated ResNet + ASPP-style classifier heads.

``Segmenter.forward(x)`` with ``x`` (B,1,H,W) grey slices in [-1, 1] returns
``(features, aux_logits, main_logits)``:

- ``features`` (B,F,h,w): the layer4 output (F = ``feature_dim``, 2048 for ResNet-101;
  h = w = 33 for a 256x256 input), in the compute dtype (bfloat16 under CPU autocast);
- ``aux_logits`` (B,K,H,W) from the head on layer3, or ``None`` when ``multi_level`` is off;
- ``main_logits`` (B,K,H,W) from the head on layer4, plus the optional decoder's from
  layer1 and layer4 (``decoder`` channels; off in the paper).

Logits are upsampled bilinearly (``align_corners=True``) to the input size, always in
float32 so that softmax, entropy and cross-entropy see full precision under autocast.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .resnet import ResNet

# Caffe ImageNet mean in BGR order, as used by the DeepLab ResNet-101 weights.
CAFFE_MEAN_BGR = (104.00699, 116.66877, 122.67891)
# torchvision's ImageNet normalisation of RGB in [0, 1], as its ResNet weights expect it.
TORCHVISION_MEAN_RGB = (0.485, 0.456, 0.406)
TORCHVISION_STD_RGB = (0.229, 0.224, 0.225)
INPUT_MODES = ("caffe", "torchvision", "plain")


class ASPPClassifier(nn.Module):
    """DeepLabv2 classifier: parallel 3x3 convs with dilations 6/12/18/24, outputs summed.

    (B,C,h,w) -> (B,K,h,w). Weights N(0, 0.01), biases zero. All four branches are summed
    (the widely copied PyTorch port returned after the first two; we follow the paper).
    """

    def __init__(self, in_channels: int, num_classes: int,
                 dilations: Sequence[int] = (6, 12, 18, 24)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d, bias=True) for d in dilations)
        for conv in self.branches:
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for conv in self.branches[1:]:
            out = out + conv(x)
        return out


class Decoder(nn.Module):
    """A light DeepLabv3+-style decoder (Chen et al., ECCV 2018) for thin structures: layer4
    features reduced to ``channels``, upsampled to layer1's stride-4 grid and concatenated
    with layer1 reduced to ``channels // 2``, two 3x3 convs, then a 1x1 to K logits whose
    upsampling is ADDED to the ASPP head's (the stride-8 grid of a 128-pixel slice is 17x17,
    coarser than a myocardium's width). The last conv starts at zero, so an untrained decoder leaves the
    segmenter's output exactly as without it."""

    def __init__(self, low_channels: int, high_channels: int, num_classes: int, channels: int) -> None:
        super().__init__()
        relu, half = nn.ReLU(inplace=True), max(1, channels // 2)
        self.reduce_high = nn.Sequential(nn.Conv2d(high_channels, channels, 1), relu)
        self.reduce_low = nn.Sequential(nn.Conv2d(low_channels, half, 1), relu)
        self.fuse = nn.Sequential(nn.Conv2d(channels + half, channels, 3, padding=1), relu,
                                  nn.Conv2d(channels, channels, 3, padding=1), relu)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.classifier.weight)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        high = F.interpolate(self.reduce_high(high), size=low.shape[-2:], mode="bilinear", align_corners=True)
        return self.classifier(self.fuse(torch.cat([self.reduce_low(low), high], 1)))


class Segmenter(nn.Module):
    """DeepLabv2 with an optional auxiliary head on layer3 (AdvEnt's multi-level variant).

    Args:
        num_classes: K, background included.
        backbone: ``resnet101`` (paper), ``resnet50``, ``resnet34`` or ``resnet18``.
        width: stem channels; 64 is the standard ResNet.
        multi_level: build the auxiliary head on layer3.
        input_mode: ``caffe`` ([-1,1] -> [0,255], BGR, minus Caffe mean: what the DeepLab
            ImageNet weights expect), ``torchvision`` ([-1,1] -> [0,1], RGB, minus
            torchvision's mean, over its std: what torchvision's ResNet weights expect) or
            ``plain`` (the grey slice repeated to 3 channels).
        freeze_bn: BatchNorm uses stored statistics and is not trained (DeepLab); used
            only when ``batchnorm`` is not given.
        batchnorm: ``live`` (the authors'), ``frozen`` or ``trainable``; see
            :mod:`mpscl.models.batchnorm`.
        decoder: channels of a :class:`Decoder` added to the main head; 0: none (the paper).
    """

    def __init__(self, num_classes: int, backbone: str = "resnet101", width: int = 64,
                 multi_level: bool = True, input_mode: str = "caffe", freeze_bn: bool = True,
                 batchnorm: Optional[str] = None, decoder: int = 0) -> None:
        super().__init__()
        if input_mode not in INPUT_MODES:
            raise ValueError(f"unknown input_mode {input_mode!r} (available: {', '.join(INPUT_MODES)})")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.input_mode = input_mode
        self.multi_level = multi_level
        self.backbone = ResNet(backbone, width=width, freeze_bn=freeze_bn, batchnorm=batchnorm)
        self.feature_dim = self.backbone.out_channels
        self.aux_head = ASPPClassifier(self.backbone.mid_channels, num_classes) if multi_level else None
        self.main_head = ASPPClassifier(self.backbone.out_channels, num_classes)
        # built last, so the other modules draw the same initial weights with or without it
        self.decoder = Decoder(self.backbone.low_channels, self.backbone.out_channels, num_classes,
                               decoder) if decoder else None
        self.register_buffer("caffe_mean", torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("tv_mean", torch.tensor(TORCHVISION_MEAN_RGB).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("tv_std", torch.tensor(TORCHVISION_STD_RGB).view(1, 3, 1, 1), persistent=False)

    def adapt_input(self, x: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) in [-1,1] -> (B,3,H,W) as the backbone's ImageNet weights expect it. A
        (B,3,H,W) batch (a slice with its neighbours, ``data.context: 1``) keeps its channels."""
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected a (B,1,H,W) grey batch or (B,3,H,W) slices with their "
                             f"neighbours, got shape {tuple(x.shape)}")
        x = x.float()
        if self.input_mode == "plain":
            return x.expand(-1, 3, -1, -1).contiguous()
        if self.input_mode == "torchvision":
            return ((x + 1.0) * 0.5 - self.tv_mean) / self.tv_std  # [-1,1] -> [0,1], RGB
        x = (x + 1.0) * 127.5  # [-1, 1] -> [0, 255]
        rgb = x.expand(-1, 3, -1, -1)
        # RGB -> BGR as the Caffe weights expect. For a grey slice repeated to 3 channels this
        # is the identity; for neighbours it reverses their order, which a network trained
        # and applied the same way does not mind.
        bgr = rgb.flip(1)
        return bgr - self.caffe_mean

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
        size = x.shape[-2:]
        h = self.adapt_input(x)
        if self.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last):
            h = h.contiguous(memory_format=torch.channels_last)
        low, mid, features = self.backbone.levels(h)
        main = self._upsample(self.main_head(features), size)
        if self.decoder is not None:  # each grid upsampled on its own: a zero decoder adds exactly 0
            main = main + self._upsample(self.decoder(low, features), size)
        aux = self._upsample(self.aux_head(mid), size) if self.aux_head is not None else None
        return features, aux, main

    @staticmethod
    def _upsample(logits: torch.Tensor, size) -> torch.Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=True)

    def param_groups(self, lr: float, head_mult: float = 10.0) -> List[Dict[str, Any]]:
        """Parameter groups for ``torch.optim.SGD``: backbone at ``lr``, heads at ``lr * head_mult``.

        Each group carries ``name`` and ``initial_lr`` so a schedule can rescale it as
        ``group["lr"] = group["initial_lr"] * factor``. Parameters with
        ``requires_grad=False`` (frozen BatchNorm) are left out; empty groups are dropped.
        """
        heads = [self.main_head] + [m for m in (self.aux_head, self.decoder) if m is not None]
        groups = [("backbone", [self.backbone], lr), ("heads", heads, lr * head_mult)]
        out = []
        for name, modules, group_lr in groups:
            params = [p for m in modules for p in m.parameters() if p.requires_grad]
            if params:
                out.append({"name": name, "params": params, "lr": group_lr, "initial_lr": group_lr})
        return out
