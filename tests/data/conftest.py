"""Shared fixtures of the data-layer tests: the real-data folder and tiny NIfTI writers."""
from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _need(path: Path) -> Path:
    if path.exists():
        return path
    msg = f"real data not found at {path} (the project's ../shared/data)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + "; CI=true requires it")
    pytest.skip(msg)


@pytest.fixture
def sifa_dir() -> Path:
    return _need(SHARED / "mmwhs_sifa_examples")


@pytest.fixture
def mscmrseg_dir() -> Path:
    return _need(SHARED / "mscmrseg19")


def save_nifti(path, array, affine=None, zooms=None) -> Path:
    """Write ``array`` as NIfTI (float32 for floats) with an affine (default 2 x 2 x 5 mm)."""
    array = np.asarray(array)
    if affine is None:
        affine = np.diag([2.0, 2.0, 5.0, 1.0])
    img = nib.Nifti1Image(array.astype(np.float32) if array.dtype.kind == "f" else array, affine)
    if zooms is not None:
        img.header.set_zooms(zooms)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def make_case(root: Path, case: str, label_value_a: int = 200, shape=(8, 6, 3), seed=0,
              affine=None, image_name="img{case}.nii.gz", label_name="img{case}_lab.nii.gz"):
    """A small image (ramp + noise) and a label whose MYO block size encodes the case id."""
    rng = np.random.default_rng(seed)
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + rng.normal(0, 0.1, shape)
    label = np.zeros(shape, dtype=np.int16)
    n = int(case) if case.isdigit() else 1
    label.reshape(-1)[:n] = label_value_a  # case k has exactly k MYO voxels
    label[-1, -1, :] = 500
    ip = save_nifti(root / image_name.format(case=case), image, affine)
    lp = save_nifti(root / label_name.format(case=case), label, affine)
    return ip, lp, image, label


class _Helpers:
    save_nifti = staticmethod(save_nifti)
    make_case = staticmethod(make_case)


@pytest.fixture
def h():
    """Helpers (``h.save_nifti``, ``h.make_case``); a fixture so no test imports conftest."""
    return _Helpers
