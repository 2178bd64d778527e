"""Which classes' self-training labels to trust, read off the warm-up without target labels.

Beyond the paper (issue 14, ``mpscl.self_training_trusted``). Full-weight self-training gains
on MS-CMRSeg LGE in every seed tried and costs the phantom, whose myocardium labels are wrong
on about half their pixels where LGE's classes are right on 95% (benchmarks/README.md,
"Self-training labels, class by class"). On validation cases, the structures whose labels
were wrong were those whose share of the warm-up model's target predictions lay far from
their share in the source labels (an over-grown or a shrunken structure): "Which classes'
self-training labels can be trusted, without labels?". Anatomy varies less between
modalities than appearance, so the source's proportions are the prior (as for
``loss.size_prior``).

At the MPSCL stage's start (the warm-up's weights, eval mode, every target training slice,
no label) each class's predicted share is compared with the source's; a class within
``band`` (ratio in [1/band, band]) is trusted and its self-training terms carry the weight
``trusted`` instead of the base weight, by a per-class factor ``trusted / base`` on the
cross-entropy's numerator (``losses.segmentation.weighted_cross_entropy(class_scale=)``).
Background is a class like the others. Fixed for the stage, so resume and several ranks
see the same factors (each computes them from the same weights and slices).
"""
from typing import Dict, Sequence

import numpy as np
import torch


@torch.no_grad()
def predicted_shares(model: torch.nn.Module, images: torch.Tensor, num_classes: int,
                     device: torch.device, batch_size: int = 32) -> np.ndarray:
    """(K,) share of each class among the argmax pixels of ``model`` (eval mode, float32) on
    ``images`` (T, C, N, N); the model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    counts = torch.zeros(num_classes, dtype=torch.float64)
    try:
        for i in range(0, len(images), batch_size):
            logits = model(images[i:i + batch_size].to(device))[-1]
            counts += torch.bincount(logits.argmax(1).flatten().cpu(), minlength=num_classes).double()
    finally:
        model.train(was_training)
    return (counts / counts.sum().clamp_min(1.0)).numpy()


def trusted_classes(predicted: Sequence[float], source: Sequence[float], band: float) -> np.ndarray:
    """(K,) bool: the predicted share within ``band`` times the source share either way. A class
    the source never shows is trusted only if it is never predicted either."""
    if band < 1:
        raise ValueError(f"trusted_classes: band must be >= 1, got {band}")
    p, s = np.asarray(predicted, float), np.asarray(source, float)
    if p.shape != s.shape:
        raise ValueError(f"trusted_classes: {p.shape[0]} predicted shares but {s.shape[0]} source shares")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(s > 0, p / np.where(s > 0, s, 1.0), np.where(p > 0, np.inf, 1.0))
    return (ratio >= 1.0 / band) & (ratio <= band)


def class_scale(trusted: np.ndarray, base: float, weight: float) -> torch.Tensor:
    """(K,) factors on the self-training term (weight ``base``): ``weight / base`` for trusted
    classes, 1 for the others."""
    if base <= 0:
        raise ValueError(f"class_scale: the base self-training weight must be > 0, got {base}")
    return torch.where(torch.as_tensor(np.asarray(trusted, bool)),
                       torch.tensor(weight / base, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))


def trust_report(classes: Sequence[str], predicted: Sequence[float], source: Sequence[float],
                 trusted: np.ndarray, band: float, base: float, weight: float) -> Dict:
    """What the stage decided, for its ``self_training_trust.json``."""
    return {"band": band, "base_weight": base, "trusted_weight": weight,
            "classes": {str(n): {"predicted_share": float(p), "source_share": float(s),
                                 "ratio": (float(p / s) if s > 0 else None), "trusted": bool(t),
                                 "weight": weight if t else base}
                        for n, p, s, t in zip(classes, predicted, source, trusted)}}
