"""Label-free indicators of a segmenter on target volumes: no target label is used.

A user adapting to unlabelled scans cannot score the result. What can be measured without
labels is how the model behaves there, with the signals the unsupervised-validation
literature uses to compare adapted models:

- ``entropy``: mean per-pixel entropy of the softmax, divided by log K (0: every pixel
  certain, 1: uniform). Lower is surer; AdvEnt minimises it, so it is partly a training
  target, not only a witness.
- ``flip_agreement``: per structure, the Dice (%) between the prediction of the volume and
  that of its left-right mirror image mirrored back, voxels pooled over the volumes. A model
  whose target features depend on appearance it never learned tends to disagree with itself.
- ``shares``: each structure's share of all predicted voxels, beside its share of the source
  labels (``source_shares``); ``share_gap`` is half the L1 distance between the two
  distributions over all classes, background included (0: same proportions, 1: disjoint).
  Anatomy differs less between modalities than appearance, so a large gap flags a
  structure over- or under-segmented (the target's true proportions may differ).

They rank models; they do not replace a score: a collapsed model can be sure and stable.
How well each tracks target Dice is measured, not assumed (``benchmarks/README.md``,
"Label-free indicators").
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from .. import checkpoint as checkpoint_io
from ..data import PreparedDataset, context_of
from ..data.context import case_stacks, context_mm_of
from ..data.labelmap import class_shares
from .errors import EvaluateError
from .inference import predict_volume, resolve_device
from .report import model_input_size


def entropy_sum(probs: np.ndarray) -> float:
    """Sum over pixels of the softmax entropy / log K of ``probs`` (S, K, H, W)."""
    k = probs.shape[1]
    p = np.clip(probs.astype(np.float64), 1e-12, 1.0)
    return float(-(probs * np.log(p)).sum() / math.log(k))


def overlap_counts(a: np.ndarray, b: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, 3) per class: voxels in both, in ``a``, in ``b`` (class ids of equal shape)."""
    out = np.zeros((num_classes, 3), dtype=np.int64)
    for c in range(num_classes):
        in_a, in_b = a == c, b == c
        out[c] = (np.count_nonzero(in_a & in_b), np.count_nonzero(in_a), np.count_nonzero(in_b))
    return out


def share_gap(p: Sequence[float], q: Sequence[float]) -> float:
    """Half the L1 distance between two distributions (total variation)."""
    return 0.5 * float(np.abs(np.asarray(p, float) - np.asarray(q, float)).sum())


def _dice(both: int, a: int, b: int) -> Optional[float]:
    return None if a + b == 0 else 200.0 * both / (a + b)


def source_label_shares(data_dir, classes: Sequence[str], cases: Optional[str] = None) -> np.ndarray:
    """Class shares of a labelled prepared (source) dataset's slice labels (its classes must be
    ``classes``)."""
    ds = PreparedDataset(data_dir)
    if not ds.labelled:
        raise EvaluateError(f"{data_dir}: the source dataset has no labels to take class shares from")
    if [str(c) for c in ds.classes] != list(classes):
        raise EvaluateError(f"{data_dir}: source classes {list(ds.classes)} differ from the target's "
                            f"{list(classes)}; prepare both with the same class map")
    return class_shares(np.concatenate([ds.case(cid)["label"].ravel() for cid in ds.select(cases)]),
                        len(classes))


def label_free_indicators(checkpoint, data_dir, cases: Optional[str] = None, source_dir=None,
                          source_cases: Optional[str] = None, batch_size: int = 16,
                          device: str = "auto", progress: bool = True,
                          source_shares: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """The indicators above for ``checkpoint`` on the prepared dataset ``data_dir`` (its labels,
    if any, are loaded with the case but never used), in the model's input grid (the prepared
    slices).
    ``source_dir``: a labelled prepared dataset (the source) for ``source_shares`` and
    ``share_gap``; without it those are absent. ``source_shares``: those shares already read
    (:func:`source_label_shares`), e.g. once for several checkpoints; ``source_dir`` is then
    not read."""
    from tqdm.auto import tqdm

    dev = resolve_device(device)
    model, ckpt = checkpoint_io.load_model(checkpoint, dev)
    ds = PreparedDataset(data_dir)
    classes = [str(c) for c in ds.classes]
    if classes != [str(c) for c in ckpt.get("classes", [])]:
        raise EvaluateError(f"{data_dir}: dataset classes {classes} differ from the checkpoint's "
                            f"{ckpt.get('classes')} ({checkpoint})")
    k = len(classes)
    size, context, context_mm = model_input_size(ckpt), context_of(ckpt), context_mm_of(ckpt)
    ent, pixels = 0.0, 0
    overlap = np.zeros((k, 3), dtype=np.int64)  # per class: in both, in the prediction, mirrored
    ids = ds.select(cases)
    for cid in tqdm(ids, desc="label-free", unit="case", disable=not progress):
        case = ds.case(cid)
        stacks = case_stacks(case, context, context_mm)
        probs = predict_volume(model, stacks, batch_size=batch_size, device=dev, input_size=size,
                               return_probs=True, context=context)
        mirrored = predict_volume(model, np.ascontiguousarray(stacks[..., ::-1]), batch_size=batch_size,
                                  device=dev, input_size=size, return_probs=True, context=context)[..., ::-1]
        pred = probs.argmax(axis=1)
        ent += entropy_sum(probs)
        pixels += pred.size
        overlap += overlap_counts(pred, mirrored.argmax(axis=1), k)
    shares = overlap[:, 1] / max(int(overlap[:, 1].sum()), 1)
    agreement = {classes[c]: _dice(*overlap[c]) for c in range(1, k)}
    defined = [v for v in agreement.values() if v is not None]
    out: Dict[str, Any] = {
        "cases": [str(c) for c in ids],
        "entropy": ent / max(pixels, 1),
        "flip_agreement": agreement,
        "flip_agreement_mean": float(np.mean(defined)) if defined else None,
        "shares": {classes[c]: float(shares[c]) for c in range(k)},
    }
    if source_shares is not None or source_dir is not None:
        src = (np.asarray(source_shares, float) if source_shares is not None
               else source_label_shares(source_dir, classes, source_cases))
        out["source_shares"] = {classes[c]: float(src[c]) for c in range(k)}
        out["share_gap"] = share_gap(shares, src)
    return out


def indicators_markdown(rows: Dict[str, Dict[str, Any]]) -> List[str]:
    """A Markdown table of several models' indicators (``{name: label_free_indicators(...)}``)."""
    first = next(iter(rows.values()))
    names = list(first["flip_agreement"])
    gap = "share_gap" in first
    head = ["model", "entropy (0-1)", "flip agreement, mean (%)"] + [f"{n} (%)" for n in names] \
        + (["class-share gap to the source (0-1)"] if gap else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fmt = lambda v, d: "n/a" if v is None else f"{v:.{d}f}"  # noqa: E731
    for name, r in rows.items():
        cells = [name, fmt(r["entropy"], 3), fmt(r["flip_agreement_mean"], 1)] \
            + [fmt(r["flip_agreement"][n], 1) for n in names] + ([fmt(r.get("share_gap"), 3)] if gap else [])
        lines.append("| " + " | ".join(cells) + " |")
    return lines
