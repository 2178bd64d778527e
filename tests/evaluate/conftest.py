"""Fixtures for evaluate tests; the helpers live in evaluate_helpers.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from evaluate_helpers import CLASSES, LABEL_VALUES, DummySegmenter


@pytest.fixture
def fake_checkpoint(monkeypatch, tmp_path):
    """Monkeypatch mpscl.checkpoint.load_model to return a DummySegmenter and a ckpt dict.

    Returns a dict you may edit (``ckpt``) and the fake checkpoint path.
    """
    import mpscl.checkpoint as cp

    ckpt = {"config": {"data": {"size": 16}}, "classes": list(CLASSES), "label_values": list(LABEL_VALUES)}
    path = tmp_path / "final.pt"
    path.write_bytes(b"fake")
    state = {"model": None}

    def load_model(p, device="cpu"):
        assert Path(p) == path
        model = DummySegmenter(len(ckpt["classes"])).to(device).eval()
        state["model"] = model
        return model, ckpt

    monkeypatch.setattr(cp, "load_model", load_model)
    return {"ckpt": ckpt, "path": path, "state": state}
