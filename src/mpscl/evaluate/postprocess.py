"""Post-processing of predicted label volumes.

``keep_largest_component``: every foreground structure keeps only its largest connected
piece (face, edge or corner contact, as ``metrics.components`` counts them); the other pieces
become background. A heart's structures are each one piece, so the smaller ones are islands
or a label spilt onto a neighbour. nnU-Net decides the same step on validation cases; here it
is an option (``--largest-component``) measured on validation (benchmarks/README.md).
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import find_objects

from .metrics import connected_pieces


def keep_largest_component(ids: np.ndarray, num_classes: int) -> np.ndarray:
    """A copy of the integer label volume ``ids`` where each class 1..num_classes-1 keeps its
    largest connected piece (ties: the piece found first in C order); background stays."""
    ids = np.asarray(ids)
    out = ids.copy()
    boxes = find_objects(ids.astype(np.intp, copy=False), max_label=num_classes - 1)
    for c, box in enumerate(boxes, start=1):
        if box is None:
            continue
        mask = ids[box] == c
        pieces, n = connected_pieces(mask)
        if n < 2:
            continue
        sizes = np.bincount(pieces.ravel(), minlength=n + 1)
        sizes[0] = 0
        drop = mask & (pieces != int(sizes.argmax()))
        out[box][drop] = 0
    return out
