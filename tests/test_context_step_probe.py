"""benchmarks/context_step_probe.py: the neighbour distances it scores a model at, by hand."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("context_step_probe", ROOT / "benchmarks" / "context_step_probe.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


@pytest.mark.parametrize("mode, step", [("trained", 1.6), ("nearest", 2.0), ("adjacent", 1.0),
                                        ("x0.5", 0.8), ("x1.5", 2.4)])
def test_lge_steps_at_c0_spacing(mode, step):
    # neighbours at 8 mm (C0's median spacing) in a volume whose slices lie 5 mm apart
    assert probe.step_for(mode, 8.0, 5.0) == pytest.approx(step)


def test_nearest_never_below_one_slice_and_unknown_spacing_is_adjacent():
    assert probe.step_for("nearest", 8.0, 13.0) == 1.0  # 0.62 slices rounds to the centre: kept at 1
    assert probe.step_for("trained", 8.0, None) == 1.0
    assert probe.step_for("nearest", None, 5.0) == 1.0
    with pytest.raises(ValueError):
        probe.step_for("centre", 8.0, 5.0)  # built without a step
