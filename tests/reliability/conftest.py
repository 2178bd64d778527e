"""Shared fixture: a tiny prepared phantom (MR source, CT target); helpers in reliability_helpers."""
from __future__ import annotations

import pytest

from reliability_helpers import SIZE


@pytest.fixture(scope="session")
def phantom_sets(tmp_path_factory):
    """``{"mr": dir, "ct": dir}``: 2 cases per domain, 16 slices each, 48 x 48."""
    from mpscl.data import prepare_dataset, write_phantom
    root = tmp_path_factory.mktemp("phantom")
    pats = write_phantom(root / "nifti", cases=2, size=(48, 48, 16), log=None)
    out = {}
    for dom in ("mr", "ct"):
        out[dom] = root / dom
        prepare_dataset(pats[dom]["images"], pats[dom]["labels"], pats["classes"], out[dom],
                        size=SIZE, log=lambda s: None)
    return out
