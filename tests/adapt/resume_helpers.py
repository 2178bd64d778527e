"""Helper of the adapt tests: stop a Trainer by SIGTERM mid-stage, resume it, compare."""
from __future__ import annotations

import signal

import pytest
import torch


def assert_resume_bit_identical(make_trainer, tmp_path, entries=("model",), stop_after: int = 3) -> dict:
    """``make_trainer(out_dir)`` -> a fresh Trainer. Trains one uninterrupted run, and one
    stopped by SIGTERM after ``stop_after`` iterations then resumed from its checkpoint;
    asserts the named checkpoint entries (state dicts or tensors) are bit-identical.
    Returns the reference checkpoint."""
    from mpscl.adapt.trainer import Interrupted

    ref = torch.load(make_trainer(tmp_path / "a").fit(), weights_only=True)
    t = make_trainer(tmp_path / "b")
    step = t.step

    def stop():
        out = step()
        if t.iteration == stop_after - 1:  # the step being run is the last one before the stop
            t._on_signal(signal.SIGTERM, None)
        return out
    t.step = stop
    with pytest.raises(Interrupted):
        t.fit()
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["iteration"] == stop_after
    got = torch.load(make_trainer(tmp_path / "b").fit(), weights_only=True)
    for name in entries:
        a, b = ref[name], got[name]
        pairs = [(k, v, b[k]) for k, v in a.items()] if isinstance(a, dict) else [("", a, b)]
        for k, x, y in pairs:
            assert torch.equal(x, y), (name, k)
    return ref
