"""mpscl: unsupervised domain adaptation for medical image segmentation.

MPSCL (margin preserving self-paced contrastive learning, Liu et al., IEEE JBHI 2022) with
source-only, AdvEnt and target-supervised baselines; 3D Dice/ASSD scoring; NIfTI in and out.

Public API (stable names)::

    mpscl.mpcl_loss, mpscl.update_prototypes, mpscl.pseudo_label   # the method's maths
    mpscl.dice, mpscl.assd                                         # metrics
    mpscl.build_config, mpscl.train, mpscl.evaluate_checkpoint, mpscl.predict_files
    mpscl.prepare_dataset, mpscl.write_phantom, mpscl.PreparedDataset
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> module that defines it; imported on first use so ``mpscl --help`` stays fast
_API = {
    "mpcl_loss": "mpscl.losses",
    "segmentation_loss": "mpscl.losses",
    "entropy_map": "mpscl.losses",
    "update_prototypes": "mpscl.adapt.prototypes",
    "pseudo_label": "mpscl.adapt.prototypes",
    "init_prototypes": "mpscl.adapt.prototypes",
    "dice": "mpscl.evaluate.metrics",
    "assd": "mpscl.evaluate.metrics",
    "evaluate_checkpoint": "mpscl.evaluate",
    "predict_files": "mpscl.evaluate",
    "Config": "mpscl.config",
    "build_config": "mpscl.config",
    "train": "mpscl.adapt.pipeline",
    "load_model": "mpscl.checkpoint",
    "build_segmenter": "mpscl.models",
    "build_discriminator": "mpscl.models",
    "prepare_dataset": "mpscl.data",
    "write_phantom": "mpscl.data",
    "PreparedDataset": "mpscl.data",
    "SliceDataset": "mpscl.data",
}
__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mpscl' has no attribute {name!r}")


def __dir__():
    return __all__
