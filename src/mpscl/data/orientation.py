"""Slicing volumes in one anatomical plane, whatever order their arrays are stored in.

Scanners store arrays in any axis order and direction: MM-WHS CT is stored axial, its MR
volumes in other orders; cardiac short-axis stacks are oblique. Slicing along the stored last
axis then gives one domain axial slices and the other sagittal ones, and no adaptation bridges
that. ``plane`` reorients each array to the closest canonical RAS order (nibabel's
``io_orientation``: axes permuted and flipped, never resampled) and slices it perpendicular
to the plane's world axis, so every volume of both domains is cut the same way, with the
same in-plane orientation. Predictions go back through the inverse to the stored grid.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import nibabel as nib
import numpy as np

from .errors import DataError

# the RAS world axis each plane is perpendicular to
PLANES = {"sagittal": 0, "coronal": 1, "axial": 2}
_RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


def check_plane(plane: Optional[str]) -> Optional[str]:
    if plane is not None and plane not in PLANES:
        raise DataError(f"plane must be one of {', '.join(PLANES)}, got {plane!r}")
    return plane


def plane_axis(plane: str) -> int:
    """The slice axis of a canonical (RAS-ordered) array cut in ``plane``."""
    return PLANES[check_plane(plane)]


def orientation(affine: np.ndarray) -> np.ndarray:
    """(3, 2) nibabel orientation of a stored array: for each stored axis, the RAS axis it
    lies closest to and its direction (+1/-1)."""
    return nib.orientations.io_orientation(np.asarray(affine, dtype=float))


def to_canonical(arr: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """A stored (X, Y, Z) array in closest-canonical RAS order (permuted and flipped only)."""
    return np.ascontiguousarray(nib.orientations.apply_orientation(arr, ornt))


def from_canonical(arr: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_canonical`: back to the stored order of orientation ``ornt``."""
    back = nib.orientations.ornt_transform(_RAS, np.asarray(ornt, dtype=float))
    return np.ascontiguousarray(nib.orientations.apply_orientation(arr, back))


def canonical_volume(data: np.ndarray, spacing: Sequence[float], affine: np.ndarray):
    """A stored volume in canonical order: ``(data, spacing, ornt)``, ``ornt`` to undo it
    (:func:`from_canonical`). One function for ``prepare`` and ``predict``, so a new volume is
    reoriented exactly as the training data were."""
    ornt = orientation(affine)
    return to_canonical(data, ornt), canonical_spacing(spacing, ornt), ornt


def canonical_spacing(spacing: Sequence[float], ornt: np.ndarray) -> Tuple[float, float, float]:
    """Voxel sizes in the canonical order: stored axis i becomes RAS axis ``ornt[i, 0]``."""
    out = [0.0, 0.0, 0.0]
    for i, (ax, _) in enumerate(np.asarray(ornt)):
        out[int(ax)] = float(spacing[i])
    return tuple(out)
