"""Networks: DeepLabv2 segmenter on dilated ResNets, output-space discriminators, weight loading."""
from __future__ import annotations

from .deeplabv2 import ASPPClassifier, Segmenter
from .discriminators import build_discriminator
from .pretrained import InitReport, WeightsError, load_imagenet_init
from .resnet import FrozenBatchNorm2d, ResNet

__all__ = ["build_segmenter", "build_discriminator", "load_imagenet_init", "Segmenter", "ResNet",
           "ASPPClassifier", "FrozenBatchNorm2d", "InitReport", "WeightsError"]


def build_segmenter(model_cfg, num_classes: int) -> Segmenter:
    """The segmenter described by ``model_cfg`` (a ``ModelConfig``), with its ImageNet
    initialisation loaded from ``model_cfg.imagenet_init`` when that is set."""
    model = Segmenter(num_classes, backbone=model_cfg.backbone, width=model_cfg.width,
                      multi_level=model_cfg.multi_level, input_mode=model_cfg.input_mode,
                      freeze_bn=model_cfg.freeze_bn)
    model.init_report = None  # an InitReport once ImageNet weights are loaded (for logging)
    if model_cfg.imagenet_init:
        model.init_report = load_imagenet_init(model, model_cfg.imagenet_init)
    return model
