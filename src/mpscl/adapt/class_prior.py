"""The source labels' class shares as a brake on target self-training's growth.

Beyond the paper (issue 14). At full weight a confident teacher grows a structure onto
neighbouring tissue of the same intensity and its own labels confirm the growth: on the
phantom MR -> CT (seed 3, validation cases) it called 33,216 pixels left atrium where
14,814 are, against 17,885 at weight 0.3. Where a structure lies cannot stop this (the grown
region stays next to where it belongs); how much of it there is can. The class shares of
the source labels are a prior that needs no target label (size priors in constrained
domain adaptation, Bateson et al., IEEE TMI 2021).

The teacher's predicted share of class k over the target slices is estimated as a running
mean (``window`` slices: one batch of 4 is far too noisy, its share of a class spans
0-2.3x the global one in the phantom MR's source labels, 64 slices 0.7-1.3x:
benchmarks/class_proportions.py --windows). While it exceeds
``bound`` times k's source share, k's labels are kept only on its most confident
``bound * source / running`` fraction of the pixels the teacher calls k: labels stop
confirming growth beyond what the source makes plausible, and the rest are ignored, not
relabelled. Beside a confidence threshold the cap changes nothing while the threshold
already keeps fewer of k's pixels than the cap would (at bound 1.5 and the CPU recipe's
0.95 it never reached LGE or the phantom MR -> CT: benchmarks/README.md, twenty-first round).
"""
from typing import Dict

import numpy as np
import torch

from ..data.labelmap import class_shares  # noqa: F401  (used here and by its importers)


class ClassSharePrior:
    """Running class shares of the teacher's predictions against the source's (module doc)."""

    def __init__(self, source_shares, bound: float, window: float = 64.0):
        if bound <= 0:
            raise ValueError(f"ClassSharePrior: bound must be > 0, got {bound}")
        self.source = torch.as_tensor(np.asarray(source_shares), dtype=torch.float64)
        self.bound, self.window = float(bound), float(window)
        self.running = self.source.clone()  # starts at the prior: no cap before any evidence

    def update(self, counts: torch.Tensor, slices: int) -> None:
        """Fold in one batch: ``counts`` (K,) pixels the teacher calls each class in ``slices``
        target slices (the global batch under DDP)."""
        counts = counts.detach().to(torch.float64).cpu()
        if counts.sum() <= 0:
            return
        m = max(0.0, 1.0 - slices / self.window)
        self.running = m * self.running + (1.0 - m) * counts / counts.sum()

    def keep_fractions(self) -> torch.Tensor:
        """(K,) the share of each class's predicted pixels whose labels are kept (1 = no cap)."""
        allowed = self.bound * self.source
        frac = torch.where(self.running > allowed, allowed / self.running.clamp_min(1e-12),
                           torch.ones_like(self.running))
        return frac.clamp(0.0, 1.0)

    def state_dict(self) -> Dict:
        return {"running": self.running.tolist()}

    def load_state_dict(self, s: Dict) -> None:
        running = torch.tensor(s["running"], dtype=torch.float64)
        if running.shape != self.source.shape:
            raise ValueError(f"class prior state has {running.numel()} classes, expected {self.source.numel()}")
        self.running = running

    def to_dict(self, classes=()) -> Dict:
        names = list(classes) or [str(k) for k in range(self.source.numel())]
        return {"bound": self.bound, "window_slices": self.window,
                "source_shares": dict(zip(names, self.source.tolist())),
                "running_shares": dict(zip(names, self.running.tolist())),
                "keep_fractions": dict(zip(names, self.keep_fractions().tolist()))}


def cap_labels(labels: torch.Tensor, pred: torch.Tensor, conf: torch.Tensor,
               fractions: torch.Tensor) -> torch.Tensor:
    """``labels`` (B,H,W; -1 ignored) with class k's labels dropped outside the most confident
    ``fractions[k]`` of the pixels ``pred`` calls k (confidence ``conf``, the same shape)."""
    out = labels.clone()
    for k, f in enumerate(fractions.tolist()):
        if f >= 1.0:
            continue
        of_k = pred == k
        if not of_k.any():
            continue
        cut = torch.quantile(conf[of_k].float(), 1.0 - f)
        out[of_k & (conf < cut) & (out == k)] = -1
    return out
