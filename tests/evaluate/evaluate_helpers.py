"""Helpers for evaluate tests (imported by conftest.py and the tests): a dummy segmenter, hand-built prepared datasets, a fake checkpoint.

Nothing here depends on mpscl.data / mpscl.models: datasets are written per the contract in
docs/ARCHITECTURE.md (manifest.json + cases/<case>.npz) and ``load_model`` is monkeypatched.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CLASSES = ["background", "MYO", "LV", "RV"]
LABEL_VALUES = [0, 200, 500, 600]


def encode(ids: np.ndarray, k: int = len(CLASSES)) -> np.ndarray:
    """Class ids -> intensities in [-1, 1] that DummySegmenter decodes back to the ids."""
    return (2.0 * np.asarray(ids, dtype=np.float32) / (k - 1) - 1.0).astype(np.float32)


class DummySegmenter(nn.Module):
    """forward(x (B,1,H,W)) -> (features (B,F,H/4,W/4), None, logits (B,K,H,W)).

    The logits pick class round((x + 1) / 2 * (K - 1)) per pixel, so the prediction depends
    on the slice content (a slice never predicted would read as background). Features are
    the pooled intensity plus class-dependent offsets, so classes separate in feature space.
    """

    def __init__(self, num_classes: int = len(CLASSES), feat: int = 8):
        super().__init__()
        self.k = num_classes
        self.scale = nn.Parameter(torch.tensor(10.0))  # something to move between devices
        self.register_buffer("proj", torch.randn(num_classes, feat, generator=torch.Generator().manual_seed(0)))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        ids = torch.round((x[:, 0].clamp(-1, 1) + 1) / 2 * (self.k - 1)).long()
        onehot = F.one_hot(ids, self.k).permute(0, 3, 1, 2).float()
        logits = onehot * self.scale
        pooled = F.avg_pool2d(onehot, 4)
        feats = torch.einsum("bkhw,kf->bfhw", pooled, self.proj)
        return feats, None, logits


def _write_npz(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def make_dataset(root: Path, cases, size: int = 16, axis: int = 2, labelled: bool = True,
                 classes=CLASSES, label_values=LABEL_VALUES) -> Path:
    """Write a prepared dataset. ``cases``: {case_id: (label_orig ids (3-D), spacing)}.

    Slices are taken along ``axis`` and resized to ``size`` by nearest neighbour; images
    encode the labels (see :func:`encode`).
    """
    root = Path(root)
    entries = []
    for cid, (lab, spacing) in cases.items():
        lab = np.asarray(lab, dtype=np.uint8)
        sl = np.moveaxis(lab, axis, 0)
        t = torch.as_tensor(sl[:, None].astype(np.float32))
        small = F.interpolate(t, size=(size, size), mode="nearest")[:, 0].numpy().astype(np.uint8)
        arrays = {"image": encode(small, len(classes))}
        if labelled:
            arrays["label"] = small
            arrays["label_orig"] = lab
        _write_npz(root / "cases" / f"{cid}.npz", **arrays)
        entries.append({"case": str(cid), "file": f"cases/{cid}.npz", "slices": int(lab.shape[axis]),
                        "shape": list(lab.shape), "spacing": list(spacing),
                        "affine": np.diag(list(spacing) + [1.0]).tolist()})
    manifest = {"format": "mpscl-dataset", "version": 1, "labelled": labelled, "size": size,
                "axis": axis, "classes": list(classes), "label_values": list(label_values),
                "normalisation": "per volume: clip to [p0.5, p99.5], then linear map to [-1, 1]",
                "cases": entries}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def blob_labels(shape, centres, radii) -> np.ndarray:
    """Ellipsoid (or ellipse) label map: class i+1 at centres[i] with radii[i] (later wins)."""
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]  # open grids: cheap on big volumes
    out = np.zeros(shape, np.uint8)
    for c, (cen, rad) in enumerate(zip(centres, radii), start=1):
        rad = np.broadcast_to(np.asarray(rad, dtype=np.float64), (len(shape),))
        d = sum(((g - c0) / r) ** 2 for g, c0, r in zip(grid, cen, rad))
        out[d < 1] = c
    return out
