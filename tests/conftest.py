"""Fixtures shared by the training tests (adapt, reliability, scale)."""
from __future__ import annotations

import pytest

TINY_SIZE = 48  # the smallest size at which every phantom class survives at feature resolution


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory):
    """``{"mr": dir, "ct": dir}``: a prepared 3-case MR and CT phantom, 16 slices of 48 x 48 each."""
    from mpscl.data import prepare_dataset, write_phantom
    root = tmp_path_factory.mktemp("tiny_phantom")
    pats = write_phantom(root / "nifti", cases=3, seed=0, size=(48, 48, 16), log=None)
    out = {}
    for dom in ("mr", "ct"):
        out[dom] = root / dom
        prepare_dataset(pats[dom]["images"], pats[dom]["labels"], pats["classes"], out[dom],
                        size=TINY_SIZE, log=lambda *a, **k: None)
    return out
