"""BatchNorm modes of the backbone: what a training forward normalises with, what learns.

| mode | training forward normalises with | running statistics | affine (weight, bias) |
|---|---|---|---|
| ``live`` | the current batch's mean/variance | updated (momentum 0.1) | frozen |
| ``frozen`` | the stored running statistics | never updated | frozen |
| ``trainable`` | the current batch's mean/variance | updated (momentum 0.1) | learnt |

Evaluation (``model.eval()``) always uses the running statistics.

``live`` is what the authors' code runs (ADVENT's DeepLabv2: the affine parameters have
``requires_grad=False`` but the layers stay in training mode). Source and target batches
are forwarded separately, so in training each domain is normalised with its own
statistics (an AdaBN-like effect, also on the target features that make the
pseudo-labels) and the running statistics become a mix of both domains.
``frozen`` is DeepLab's frozen BatchNorm as usually understood; ``trainable`` is plain
``nn.BatchNorm2d`` (the CPU preset, trained from scratch). All three have the state dict
of ``nn.BatchNorm2d``, so weights load and save interchangeably.
"""
from __future__ import annotations

from typing import Dict, Type

import torch
from torch import nn

BN_MODES = ("live", "frozen", "trainable")


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalises with its stored statistics and never learns.

    Its affine parameters have ``requires_grad=False`` and :meth:`train` keeps it in eval
    mode, so ``model.train()`` on a parent neither updates ``running_mean``/``running_var``
    nor uses batch statistics (DeepLab's frozen BatchNorm). The state dict is that of
    ``nn.BatchNorm2d``, so weights load and save interchangeably.
    """

    def __init__(self, num_features: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)
        self.training = False

    def train(self, mode: bool = True) -> "FrozenBatchNorm2d":
        return super().train(False)


class LiveBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm with frozen affine parameters and live statistics (the authors' code).

    In training mode it is ``nn.BatchNorm2d``: it normalises with the batch's mean and
    biased variance and moves ``running_mean``/``running_var`` by ``momentum`` (the
    running variance with the unbiased batch variance); in eval mode it uses the running
    statistics. Only ``weight`` and ``bias`` are fixed (``requires_grad=False``), so an
    optimiser built from trainable parameters leaves them alone.
    """

    def __init__(self, num_features: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)


NORM_LAYERS: Dict[str, Type[nn.BatchNorm2d]] = {
    "live": LiveBatchNorm2d, "frozen": FrozenBatchNorm2d, "trainable": nn.BatchNorm2d}


def norm_layer(mode: str) -> Type[nn.BatchNorm2d]:
    """The BatchNorm class of ``mode`` (one of :data:`BN_MODES`)."""
    if mode not in NORM_LAYERS:
        raise ValueError(f"unknown BatchNorm mode {mode!r} (available: {', '.join(BN_MODES)})")
    return NORM_LAYERS[mode]


def bn_mode_of(freeze_bn: bool) -> str:
    """The mode the old boolean ``freeze_bn`` meant: ``frozen`` (True) or ``trainable``."""
    return "frozen" if freeze_bn else "trainable"


def reestimate_statistics(model: nn.Module, images, batch_size: int = 16, generator=None) -> int:
    """AdaBN (Li et al., 2016): replace every BatchNorm layer's running statistics with those
    of ``images`` (``(T, 1, N, N)``, e.g. a domain's unlabelled training slices).

    The slices go through the model in shuffled batches (``generator``) with the BatchNorm
    layers normalising by each batch's statistics, every mode included (``frozen`` too), and
    accumulating them with equal weights (``momentum=None``): the running mean becomes the
    mean of the batch means, the running variance that of the unbiased batch variances. A
    trailing batch smaller than the others is left out so every batch weighs the same; with
    fewer slices than ``batch_size`` they form one batch. Weights are untouched; the model is
    returned in eval mode. Returns the number of slices used.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    n = int(images.shape[0])
    if not layers or n < 2:
        raise ValueError(f"AdaBN needs BatchNorm layers and at least 2 slices (got {len(layers)} "
                         f"layers, {n} slices)")
    batch = min(int(batch_size), n)
    order = torch.randperm(n, generator=generator)
    used = n - n % batch
    momenta = [m.momentum for m in layers]
    model.eval()
    param = next(model.parameters())
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum, m.training = None, True
        with torch.no_grad():
            for i in range(0, used, batch):
                model(images[order[i:i + batch]].to(param.device, param.dtype))
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.eval()
    return used
