"""Shared fixture of the scale tests: a tiny prepared phantom (MR source, CT target), 48 px."""
from __future__ import annotations

import pytest

SCALE_SIZE = 48


@pytest.fixture(scope="session")
def scale_phantom(tmp_path_factory):
    """``{"mr": dir, "ct": dir}``: 3 cases per domain, 48 x 48 slices (every class survives
    at the 7 x 7 feature resolution, so prototypes can be initialised)."""
    from mpscl.data import prepare_dataset, write_phantom
    root = tmp_path_factory.mktemp("scale_phantom")
    pats = write_phantom(root / "nifti", cases=3, size=(48, 48, 16), log=None)
    out = {}
    for dom in ("mr", "ct"):
        out[dom] = root / dom
        prepare_dataset(pats[dom]["images"], pats[dom]["labels"], pats["classes"], out[dom],
                        size=SCALE_SIZE, log=lambda s: None)
    return out
