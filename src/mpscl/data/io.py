"""NIfTI reading and writing.

Images are returned as float32 arrays in the array order stored in the file: nothing is
reoriented, so a label written back with :func:`write_label_nifti` and the reference's
affine/header lies exactly on the reference image.
"""
from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple, Union

import nibabel as nib
import numpy as np

from ..fileio import atomic_write
from .errors import DataError

PathLike = Union[str, Path]
MAX_VOXELS = 2**31  # 8 GiB as float32: far beyond any scan, refused before allocating


@dataclass
class Volume:
    """A 3D array with its geometry.

    ``data``: float32 (X, Y, Z) in stored array order; ``affine``: 4x4 voxel -> world (mm);
    ``spacing``: voxel size (mm) from the header zooms; ``header``: the file's header.
    """

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    spacing: Tuple[float, float, float]
    path: str


def _as_3d(arr: np.ndarray, zooms, path) -> Tuple[np.ndarray, Tuple[float, float, float]]:
    zooms = [float(z) for z in zooms]
    if arr.size == 0:
        raise DataError(f"{path}: the image array is empty (shape {arr.shape})")
    if arr.ndim == 2:  # a single slice: a volume of one slice
        return arr[:, :, None], (zooms[0], zooms[1], 1.0)
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise DataError(
            f"{path}: expected a 3D volume (or 2D, or 4D with a last dimension of 1), "
            f"got shape {arr.shape}"
        )
    return arr, (zooms[0], zooms[1], zooms[2])


def _check_header_shape(img, path: str) -> None:
    shape = tuple(int(v) for v in img.shape)
    n = int(np.prod(shape, dtype=np.float64))
    if n == 0:
        raise DataError(f"{path}: the image array is empty (header shape {shape})")
    if n > MAX_VOXELS:
        raise DataError(f"{path}: the header claims shape {shape} ({n:.3g} voxels), more than "
                        f"the {MAX_VOXELS:.3g} a volume may have here; is the header corrupt?")


def read_nifti(path: PathLike) -> Volume:
    """Read a NIfTI file as a float32 :class:`Volume` (3D; 2D -> one slice; 4D (...,1) squeezed).

    Raises :class:`DataError` naming ``path`` for a missing, unreadable, truncated or corrupt
    file, an empty array, a wrong dimensionality, or NaN/Inf voxels.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    try:
        img = nib.load(path)
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise DataError(f"{path}: not a NIfTI image ({type(img).__name__})")
        _check_header_shape(img, path)  # before reading: a header can claim any size
        dtype = img.get_data_dtype()
        if dtype.kind not in "iuf":
            raise DataError(f"{path}: voxel type {dtype} is not a real number type "
                            "(complex or RGB images are not supported)")
        arr = np.asarray(img.dataobj, dtype=np.float32)
        affine = np.asarray(img.affine, dtype=np.float64)
        header = img.header
        zooms = header.get_zooms()
    except DataError:
        raise
    except Exception as e:  # nibabel, gzip, zlib and OS errors for bad files
        # one line; nibabel's "... from <name>" names no file for .gz
        why = re.sub(r" from(?= -|$)", "", " ".join(str(e).split()))
        raise DataError(f"{path}: cannot read NIfTI file (corrupt or truncated?): "
                        f"{type(e).__name__}: {why}") from e
    arr, spacing = _as_3d(arr, zooms, path)
    finite = np.isfinite(arr)
    if not finite.all():
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(arr.size - finite.sum() - n_nan)
        raise DataError(f"{path}: contains non-finite voxels ({n_nan} NaN, {n_inf} Inf)")
    if not np.isfinite(affine).all():
        raise DataError(f"{path}: the affine contains NaN/Inf")
    return Volume(np.ascontiguousarray(arr), affine, header, spacing, path)


def write_label_nifti(path: PathLike, labels: np.ndarray, reference) -> Path:
    """Write an integer label array with the affine and header of ``reference``.

    ``reference`` is a :class:`Volume` or a path to a NIfTI image; ``labels`` must have its
    (squeezed, 3D) shape. Stored as uint8 when the values fit, else int16/int32. The file is
    written to a temporary name and renamed into place.
    """
    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise DataError(f"{path}: a NIfTI output name must end with .nii or .nii.gz")
    ref = reference if isinstance(reference, Volume) else read_nifti(reference)
    labels = np.asarray(labels)
    if labels.shape != ref.data.shape:
        raise DataError(f"{path}: label shape {labels.shape} differs from the reference "
                        f"{ref.path} shape {ref.data.shape}")
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or not np.array_equal(labels, np.round(labels)):
            raise DataError(f"{path}: labels must be integers")
    lo, hi = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    if lo >= 0 and hi <= 255:
        dtype = np.uint8
    elif lo >= -32768 and hi <= 32767:
        dtype = np.int16
    else:
        dtype = np.int32
    header = ref.header.copy()
    header.set_data_dtype(dtype)
    out = nib.Nifti1Image(labels.astype(dtype), ref.affine, header)
    out.header.set_slope_inter(1.0, 0.0)
    return save_nifti(out, path)


def save_nifti(img: nib.Nifti1Image, path: PathLike) -> Path:
    """Write ``img`` to ``path`` (.nii or .nii.gz) whole or not at all."""
    path = Path(path)
    raw = img.to_bytes()
    atomic_write(path, lambda f: f.write(gzip.compress(raw, compresslevel=6) if path.name.endswith(".gz") else raw))
    return path
