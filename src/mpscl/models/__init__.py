"""Networks: DeepLabv2 segmenter on dilated ResNets, output-space discriminators, weight loading."""
from __future__ import annotations

from .deeplabv2 import ASPPClassifier, Segmenter
from .discriminators import build_discriminator
from .batchnorm import BN_MODES, FrozenBatchNorm2d, LiveBatchNorm2d
from .pretrained import InitReport, WeightsError, load_imagenet_init, resolve_input_mode
from .resnet import ResNet

__all__ = ["build_segmenter", "build_discriminator", "load_imagenet_init", "Segmenter", "ResNet",
           "ASPPClassifier", "FrozenBatchNorm2d", "LiveBatchNorm2d", "BN_MODES", "InitReport",
           "WeightsError", "resolve_input_mode"]


def build_segmenter(model_cfg, num_classes: int) -> Segmenter:
    """The segmenter described by ``model_cfg`` (a ``ModelConfig``), with its ImageNet
    initialisation loaded from ``model_cfg.imagenet_init`` when that is set."""
    model = Segmenter(num_classes, backbone=model_cfg.backbone, width=model_cfg.width,
                      multi_level=model_cfg.multi_level, input_mode=resolve_input_mode(model_cfg),
                      batchnorm=model_cfg.batchnorm, decoder=model_cfg.decoder)
    model.init_report = None  # an InitReport once ImageNet weights are loaded (for logging)
    if model_cfg.imagenet_init:
        model.init_report = load_imagenet_init(model, model_cfg.imagenet_init)
    return model
