import pytest

from mpscl.data import prepare_dataset, write_phantom


@pytest.fixture(scope="session")
def tiny_domains(tmp_path_factory):
    """A 3-case MR and CT phantom prepared at 48 px: enough for a few training iterations."""
    root = tmp_path_factory.mktemp("tiny_phantom")
    info = write_phantom(root / "nifti", cases=3, seed=0, size=(48, 48, 16), log=lambda *a, **k: None)
    out = {}
    for dom in ("mr", "ct"):
        out[dom] = root / dom
        prepare_dataset(info[dom]["images"], info[dom]["labels"], "mmwhs", out[dom], size=48,
                        log=lambda *a, **k: None)
    return out
