"""Builders a stage declares (see ``mpscl.methods``): its extra networks and its optimisers."""
from __future__ import annotations

import dataclasses
from typing import List, Optional

import torch

from ..models import build_discriminator, build_segmenter, resolve_input_mode
from ..models.resnet import channels


def discriminator_main(cfg, num_classes: int) -> Optional[torch.nn.Module]:
    """AdvEnt's discriminator of the main output's entropy map (off: ``loss.adversarial``)."""
    return build_discriminator(cfg.model, num_classes) if cfg.loss.adversarial else None


def discriminator_aux(cfg, num_classes: int) -> Optional[torch.nn.Module]:
    """The same for the auxiliary output, when the segmenter has one."""
    if not (cfg.loss.adversarial and cfg.model.multi_level):
        return None
    return build_discriminator(cfg.model, num_classes)


def self_training_teacher(cfg, num_classes: int) -> Optional[torch.nn.Module]:
    """The mean teacher of MPSCL's target self-training (``mpscl.self_training_teacher``);
    not optimised: its weights follow the segmenter's (steps.update_teacher)."""
    c = cfg.mpscl
    if not (c.self_training > 0 and c.self_training_teacher > 0):
        return None
    # its weights are the segmenter's from the stage's first step: no ImageNet file to read
    # (the input mapping stays the one those weights set)
    model_cfg = dataclasses.replace(cfg.model, input_mode=resolve_input_mode(cfg.model), imagenet_init=None)
    return build_segmenter(model_cfg, num_classes).requires_grad_(False)


def projection_head(cfg, num_classes: int) -> Optional[torch.nn.Module]:
    """MPSCL's optional projection head (``mpscl.projection`` output channels)."""
    d = cfg.mpscl.projection
    if d <= 0:
        return None
    c = channels(cfg.model.backbone, cfg.model.width)[1]  # the segmenter's feature_dim
    return torch.nn.Sequential(torch.nn.Conv2d(c, c, 1), torch.nn.ReLU(inplace=True), torch.nn.Conv2d(c, d, 1))


def projection_sgd(cfg, modules: List[torch.nn.Module]) -> torch.optim.Optimizer:
    """The projection head at the segmenter heads' rate (``optim.lr x head_lr_mult``)."""
    o = cfg.optim
    return _with_initial_lr(torch.optim.SGD([p for m in modules for p in m.parameters()],
                                            lr=o.lr * o.head_lr_mult, momentum=o.momentum,
                                            weight_decay=o.weight_decay))


def segmenter_sgd(cfg, modules: List[torch.nn.Module]) -> torch.optim.Optimizer:
    """DeepLab's SGD; the heads at ``optim.head_lr_mult`` times the backbone's rate."""
    o, (model,) = cfg.optim, modules
    return torch.optim.SGD(model.param_groups(o.lr, o.head_lr_mult), lr=o.lr,
                           momentum=o.momentum, weight_decay=o.weight_decay)


def discriminator_adam(cfg, modules: List[torch.nn.Module]) -> torch.optim.Optimizer:
    o = cfg.optim
    return _with_initial_lr(torch.optim.Adam([p for m in modules for p in m.parameters()], lr=o.lr_d,
                                             betas=tuple(o.betas_d)))


def _with_initial_lr(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Record each group's rate as the ``initial_lr`` the poly schedule scales."""
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    return opt
