"""Fixtures shared by the training tests (adapt, reliability, scale)."""
from __future__ import annotations

import pytest

TINY_SIZE = 48  # the smallest size at which every phantom class survives at feature resolution


def prepared_phantom(root, size: int, cases: int = 3):
    """``{"mr": dir, "ct": dir}``: a prepared MR and CT phantom, 16 slices of size x size each."""
    from mpscl.data import prepare_dataset, write_phantom
    pats = write_phantom(root / "nifti", cases=cases, seed=0, size=(size, size, 16), log=None)
    out = {}
    for dom in ("mr", "ct"):
        out[dom] = root / dom
        prepare_dataset(pats[dom]["images"], pats[dom]["labels"], pats["classes"], out[dom],
                        size=size, log=lambda *a, **k: None)
    return out


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory):
    """``{"mr": dir, "ct": dir}``: a prepared 3-case MR and CT phantom, 16 slices of 48 x 48 each."""
    return prepared_phantom(tmp_path_factory.mktemp("tiny_phantom"), TINY_SIZE)


@pytest.fixture(scope="session")
def phantom64(tmp_path_factory):
    """A prepared 2-case MR and CT phantom at 64 x 64 (the paper presets' tiny CPU runs)."""
    return prepared_phantom(tmp_path_factory.mktemp("phantom64"), 64, cases=2)
