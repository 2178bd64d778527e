"""Anatomical rules learnt from the source labels, to filter target self-training labels.

Beyond the paper (issue 14). A confident teacher can still put a structure where anatomy
does not: on the phantom MR -> CT, 57% of the kept MYO labels were background; on CT -> MR,
about a fifth lay in the LV cavity. Intensity-based signals (threshold, flips, random-network
views) did not pick them out; where the structures lie relative to each other might. Three
kinds of rule, all read off the source label slices, so nothing is named by hand and no
target label is used:

- ``near (k, j, r, required)``: a pixel of class k lies within ``r`` pixels (chessboard
  distance) of class j, in a slice that holds j. Learnt where j is present in at least
  ``typical`` of the source slices that hold k; ``r`` is the ``quantile`` of the distances
  of k's pixels to j there. ``required`` where j is present in at least ``co_occurrence``
  of them: then k is also wrong in a slice without j.
- ``outside (k, j)``: a pixel of class k never lies in a hole of class j (a region j
  surrounds in the slice, e.g. myocardium inside the LV cavity). Learnt where at most
  ``enclosed_max`` of k's pixels do so in the source slices holding j.
- ``width (k, w)``: a pixel of class k lies within ``w`` pixels of a pixel of another class
  (a structure no thicker than the source's; a myocardium predicted as a filled disk is
  not). ``w`` is the ``quantile`` of the distances of k's pixels to the nearest other pixel.

A target label of class k is dropped where the teacher's own argmax breaks a rule of k.
"""
import math
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np
import torch
from scipy import ndimage

# too few source pixels to call a relation a rule
MIN_PIXELS = 200


@dataclass(frozen=True)
class AnatomyRules:
    near: Tuple[Tuple[int, int, int, bool], ...] = ()   # (k, j, radius, required)
    outside: Tuple[Tuple[int, int], ...] = ()     # (k, j)
    width: Tuple[Tuple[int, int], ...] = ()       # (k, w)
    classes: Tuple[str, ...] = field(default=())  # names, for describe()

    def describe(self) -> List[str]:
        name = (lambda i: self.classes[i]) if self.classes else str
        return ([f"{name(k)} within {r} px of {name(j)}{'' if req else ' where there is one'}"
                 for k, j, r, req in self.near]
                + [f"{name(k)} not inside {name(j)}" for k, j in self.outside]
                + [f"{name(k)} at most {w} px from another class" for k, w in self.width])

    def to_dict(self) -> Dict:
        return {"near": [list(r) for r in self.near], "outside": [list(r) for r in self.outside],
                "width": [list(r) for r in self.width],
                "described": self.describe()}


def _holes(mask: np.ndarray) -> np.ndarray:
    return ndimage.binary_fill_holes(mask) & ~mask


def learn_rules(labels: np.ndarray, num_classes: int, classes=(), co_occurrence: float = 0.95,
                typical: float = 0.5, quantile: float = 0.99, enclosed_max: float = 0.001) -> AnatomyRules:
    """Rules from source label slices ``labels`` (N,H,W) of class ids 0..num_classes-1
    (0 the background: it gets ``outside`` rules, no ``near`` ones)."""
    labels = np.asarray(labels)
    present = np.stack([(labels == k).any(axis=(1, 2)) for k in range(num_classes)], axis=1)  # (N,K)
    near_d: Dict[Tuple[int, int], List[np.ndarray]] = {}
    inside = np.zeros((num_classes, num_classes), np.int64)
    total = np.zeros((num_classes, num_classes), np.int64)
    widths: Dict[int, List[np.ndarray]] = {k: [] for k in range(1, num_classes)}
    for s, y in enumerate(labels):
        for k in range(1, num_classes):
            if present[s, k] and not (y == k).all():  # a class filling the slice has no width
                widths[k].append(ndimage.distance_transform_cdt(y == k, metric="chessboard")[y == k])
        for j in range(1, num_classes):
            if not present[s, j]:
                continue
            d = ndimage.distance_transform_cdt(y != j, metric="chessboard")
            holes = _holes(y == j)
            for k in range(num_classes):
                if k == j or not present[s, k]:
                    continue
                of_k = y == k
                total[k, j] += of_k.sum()
                inside[k, j] += (of_k & holes).sum()
                if k > 0:
                    near_d.setdefault((k, j), []).append(d[of_k])
    near, outside = [], []
    for k in range(1, num_classes):
        with_k = present[:, k].sum()
        for j in range(1, num_classes):
            both = (present[:, k] & present[:, j]).sum()
            if j == k or with_k == 0 or both < typical * with_k:
                continue
            d = np.concatenate(near_d[(k, j)])
            if d.size >= MIN_PIXELS:
                near.append((k, j, int(math.ceil(np.quantile(d, quantile))), bool(both >= co_occurrence * with_k)))
    for k in range(num_classes):
        for j in range(1, num_classes):
            if j != k and total[k, j] >= MIN_PIXELS and inside[k, j] <= enclosed_max * total[k, j]:
                outside.append((k, j))
    width = [(k, int(math.ceil(np.quantile(np.concatenate(w), quantile)))) for k, w in widths.items()
             if sum(v.size for v in w) >= MIN_PIXELS]
    return AnatomyRules(tuple(near), tuple(outside), tuple(width), tuple(str(c) for c in classes))


def _violations_2d(p: np.ndarray, rules: AnatomyRules) -> np.ndarray:
    bad = np.zeros(p.shape, bool)
    to_class = {}  # j -> chessboard distance of every pixel to the nearest pixel of j

    def dist_to(j):
        if j not in to_class:
            to_class[j] = ndimage.distance_transform_cdt(p != j, metric="chessboard")
        return to_class[j]

    for k, w in rules.width:
        of_k = p == k
        if of_k.all():  # no other class in the slice: infinitely thick (cdt would give -1)
            bad |= of_k
        elif of_k.any():
            bad |= of_k & (ndimage.distance_transform_cdt(of_k, metric="chessboard") > w)
    for k, j, r, required in rules.near:
        of_k = p == k
        if not of_k.any():
            continue
        if not (p == j).any():  # distance_transform_cdt gives -1 without a j pixel
            if required:
                bad |= of_k
            continue
        bad |= of_k & (dist_to(j) > r)
    for j in sorted({j for _, j in rules.outside}):
        holes = _holes(p == j)
        if holes.any():
            for k in (k for k, jj in rules.outside if jj == j):
                bad |= (p == k) & holes
    return bad


def violations(pred: torch.Tensor, rules: AnatomyRules) -> torch.Tensor:
    """(B,H,W) bool: pixels whose class in ``pred`` (B,H,W) breaks one of its rules."""
    p = pred.detach().cpu().numpy()
    return torch.from_numpy(np.stack([_violations_2d(s, rules) for s in p])).to(pred.device)


def filter_labels(labels: torch.Tensor, pred: torch.Tensor, rules: AnatomyRules) -> torch.Tensor:
    """``labels`` (B,H,W; -1 ignored) with -1 where ``pred`` breaks the rules."""
    return torch.where(violations(pred, rules), torch.full_like(labels, -1), labels)
