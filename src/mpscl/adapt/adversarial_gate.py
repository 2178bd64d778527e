"""A gate on the adversarial terms: align only as much as the discriminator finds a gap.

With ``loss.adv_gate`` the generator's adversarial weights are multiplied by
``g = clip(1 - 2 * err, 0, 1)``, where ``err`` is the main discriminator's recent pixel
error rate (source and target maps weighed equally). ``1 - 2 err`` is half the proxy
A-distance of Ben-David et al. (2010), the estimate of the domain gap that DAAN (Yu et al.,
ICDM 2019) uses to weigh its adversarial terms. The hypothesis it tests: a discriminator at
chance (err 0.5) cannot tell the entropy maps of the two domains apart, so aligning them
further would only add noise (on two MR sequences, C0 -> LGE, the adversarial warm-up cost
about 3 points of Dice on the validation cases while its discriminator stayed near chance; on
CT <-> MR it helped). Validation rejected it (docs/METHOD_NOTES.md): the gate behaves as a
feedback loop and ended at similar values on both kinds of gap. Off in every preset.

``err`` is an exponential moving average (``momentum`` per iteration, bias-corrected like
Adam's, so the first measurement counts fully); before any measurement the gate is 0. Its
state travels in the checkpoint, so a resumed run gates exactly as an uninterrupted one, and
MPSCL's stage starts from its warm-up's estimate.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch


def discriminator_error(out_source: torch.Tensor, out_target: torch.Tensor) -> float:
    """Pixel error rate of a discriminator whose logits say target (> 0) or source (< 0),
    the mean of its error on the source maps and on the target maps."""
    err_s = (out_source.detach().float() > 0).float().mean()
    err_t = (out_target.detach().float() < 0).float().mean()
    return float(0.5 * (err_s + err_t))


class AdversarialGate:
    def __init__(self, momentum: float = 0.99) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"gate momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.avg = 0.0      # EMA of the error, not yet bias-corrected
        self.steps = 0      # measurements so far

    def update(self, error: float) -> None:
        self.avg = self.momentum * self.avg + (1.0 - self.momentum) * float(error)
        self.steps += 1

    @property
    def error(self) -> Optional[float]:
        """The bias-corrected recent error rate (None before any measurement)."""
        if self.steps == 0:
            return None
        return self.avg / (1.0 - self.momentum ** self.steps)

    @property
    def value(self) -> float:
        """The factor on the adversarial weights, in [0, 1]."""
        err = self.error
        if err is None:
            return 0.0
        return min(1.0, max(0.0, 1.0 - 2.0 * err))

    def state_dict(self) -> Dict[str, float]:
        return {"momentum": self.momentum, "avg": self.avg, "steps": self.steps}

    def load_state_dict(self, s: Dict[str, float]) -> None:
        self.momentum, self.avg, self.steps = float(s["momentum"]), float(s["avg"]), int(s["steps"])
