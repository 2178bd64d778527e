"""Appearance handling of source slices: FDA, Bezier intensity curves, random shallow networks."""
from __future__ import annotations

import math
import signal

import numpy as np
import pytest
import torch

from mpscl.config import AppearanceConfig
from mpscl.data.appearance import (bezier_control_points, bezier_curve, blended_random_conv, fda,
                                   gin_view, random_conv, randomise, smooth_field, _interp)


def _slice(seed: int, n: int = 32) -> torch.Tensor:
    return torch.rand(1, n, n, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _centred(x):
    return torch.fft.fftshift(torch.fft.fft2(x.double()), dim=(-2, -1))


@pytest.mark.parametrize("beta, half", [(0.05, 1), (0.1, 3), (0.2, 6)])
def test_fda_takes_the_target_low_band_amplitude_and_keeps_the_source_phase(beta, half):
    src, trg = _slice(0), _slice(1)
    out = fda(src, trg, beta)
    assert half == math.floor(beta * 32)
    fo, fs, ft = _centred(out), _centred(src), _centred(trg)
    band = torch.zeros(32, 32, dtype=torch.bool)
    band[16 - half:16 + half + 1, 16 - half:16 + half + 1] = True  # (2b+1)^2 around frequency 0
    assert torch.allclose(fo.abs()[0][band], ft.abs()[0][band], atol=1e-9)
    assert torch.allclose(fo.abs()[0][~band], fs.abs()[0][~band], atol=1e-9)
    # phase kept wherever it is defined (non-zero amplitude on both)
    ok = (fo.abs() > 1e-6) & (fs.abs() > 1e-6)
    dphi = torch.remainder(fo.angle() - fs.angle() + math.pi, 2 * math.pi) - math.pi
    assert dphi[ok].abs().max() < 1e-6
    # frequency 0 is in the band: |mean| is the target's, its sign (phase 0 or pi) the source's
    assert abs(out.mean()).item() == pytest.approx(abs(trg.mean()).item(), abs=1e-6)
    assert out.mean().sign() == src.mean().sign()


def test_fda_with_beta_zero_swaps_only_the_mean_and_refuses_bad_input():
    src, trg = _slice(2), _slice(3)
    out = fda(src, trg, 0.0)  # b = 0: the band is frequency 0 alone, i.e. |mean|
    assert torch.allclose(out - out.mean(), src - src.mean(), atol=1e-6)
    assert abs(out.mean().item()) == pytest.approx(abs(trg.mean().item()), abs=1e-6)
    with pytest.raises(ValueError, match="differ"):
        fda(src, _slice(4, 16), 0.01)
    with pytest.raises(ValueError, match="beta"):
        fda(src, trg, 0.5)


def test_interp_matches_numpy():
    xp = torch.tensor([-1.0, -0.2, 0.5, 1.0], dtype=torch.float64)
    fp = torch.tensor([0.3, -1.0, 0.9, 0.1], dtype=torch.float64)
    x = torch.linspace(-1, 1, 57, dtype=torch.float64)
    assert np.allclose(_interp(x, xp, fp).numpy(), np.interp(x.numpy(), xp.numpy(), fp.numpy()))


@pytest.mark.parametrize("seed", range(20))
def test_bezier_curves_map_into_range_and_are_monotone_when_asked(seed):
    x = torch.linspace(-1, 1, 401)[None, None]
    mono = bezier_curve(x, torch.Generator().manual_seed(seed), monotone=True)[0, 0]
    d = mono[1:] - mono[:-1]
    assert bool((d >= -1e-6).all()) or bool((d <= 1e-6).all()), "monotone curve folds"
    assert mono.min() >= -1 and mono.max() <= 1
    assert {round(float(mono[0]), 4), round(float(mono[-1]), 4)} == {-1.0, 1.0}  # full range kept
    free = bezier_curve(x, torch.Generator().manual_seed(seed), monotone=False)[0, 0]
    assert free.min() >= -1 and free.max() <= 1 and torch.isfinite(free).all()


def test_free_bezier_curves_can_fold_and_control_points_are_a_function_of_x():
    folds = 0
    for seed in range(50):
        p = bezier_control_points(torch.Generator().manual_seed(seed), monotone=False)
        assert bool((p[1:, 0] >= p[:-1, 0]).all())  # x increasing: y is a function of x
        y = bezier_curve(torch.linspace(-1, 1, 201)[None, None], torch.Generator().manual_seed(seed))[0, 0]
        d = y[1:] - y[:-1]
        folds += bool((d > 1e-4).any() and (d < -1e-4).any())
    assert folds >= 10  # non-monotone curves do occur


def test_random_conv_keeps_shape_range_and_is_deterministic():
    x = _slice(5, 40)
    a = random_conv(x, torch.Generator().manual_seed(7))
    b = random_conv(x, torch.Generator().manual_seed(7))
    c = random_conv(x, torch.Generator().manual_seed(8))
    assert a.shape == x.shape and a.dtype == x.dtype and torch.isfinite(a).all()
    assert a.min() >= -1 - 1e-6 and a.max() <= 1 + 1e-6
    assert torch.equal(a, b) and not torch.equal(a, c)
    flat = torch.full((1, 16, 16), 0.25)  # a constant image stays finite (no division by 0)
    assert torch.isfinite(random_conv(flat, torch.Generator().manual_seed(1))).all()


def test_smooth_field_spans_zero_to_one_smoothly_and_passes_through_its_control_points():
    f = smooth_field(129, 97, torch.Generator().manual_seed(4))
    assert f.shape == (129, 97) and torch.isfinite(f).all()
    assert float(f.min()) == 0.0 and float(f.max()) == pytest.approx(1.0, abs=1e-12)
    # 5 x 5 control points: neighbouring pixels differ by a few hundredths, never by noise
    assert float(f.diff(dim=0).abs().max()) < 0.1 and float(f.diff(dim=1).abs().max()) < 0.1
    assert torch.equal(f, smooth_field(129, 97, torch.Generator().manual_seed(4)))
    assert not torch.equal(f, smooth_field(129, 97, torch.Generator().manual_seed(5)))
    # on 129 x 97 the control points fall on pixels (every 32 rows, 24 columns); bicubic
    # interpolation passes through them, so there the field is the U(0, 1) draws, rescaled
    g = torch.rand(5, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    nodes = f[::32, ::24]

    def span(t):
        return (t - t.min()) / (t.max() - t.min())
    assert torch.allclose(span(nodes), span(g), atol=1e-9)


def test_blended_random_conv_is_two_networks_blended_by_the_field():
    x = _slice(11, 40)
    out = blended_random_conv(x, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)  # the same draws, by hand, in the same order
    g1, g2 = random_conv(x, g).double(), random_conv(x, g).double()
    m = smooth_field(40, 40, g)
    assert torch.allclose(out.double(), m * g1 + (1 - m) * g2, atol=1e-6)
    # where the field is 1 the first view shows, where it is 0 the second
    hi, lo = int(m.argmax()), int(m.argmin())
    assert float(out.flatten()[hi]) == pytest.approx(float(g1.flatten()[hi]), abs=1e-6)
    assert float(out.flatten()[lo]) == pytest.approx(float(g2.flatten()[lo]), abs=1e-6)
    assert out.shape == x.shape and out.min() >= -1 - 1e-6 and out.max() <= 1 + 1e-6
    assert not torch.allclose(out, random_conv(x, torch.Generator().manual_seed(2)))
    # a stack of identical channels keeps one appearance (one network, one field)
    stack = blended_random_conv(x.repeat(3, 1, 1), torch.Generator().manual_seed(2))
    assert torch.equal(stack[0], stack[1]) and torch.equal(stack[0], stack[2])


def test_gin_view_without_blend_is_the_single_network_and_draws_nothing_more():
    x = _slice(12, 24)
    ga, gb = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(gin_view(x, AppearanceConfig(gin=1.0), ga), random_conv(x, gb))
    assert torch.equal(torch.rand(4, generator=ga), torch.rand(4, generator=gb))  # same stream after
    always = AppearanceConfig(gin=1.0, gin_blend=1.0)
    g = torch.Generator().manual_seed(9)
    torch.rand(1, generator=g)  # the blend's coin
    assert torch.equal(gin_view(x, always, torch.Generator().manual_seed(9)), blended_random_conv(x, g))


def test_randomise_is_identity_when_off_and_deterministic_when_on():
    x, targets = _slice(6), torch.stack([_slice(9), _slice(10)])
    assert torch.equal(randomise(x, AppearanceConfig(), torch.Generator().manual_seed(0), targets), x)
    cfg = AppearanceConfig(fda=1.0, fda_beta=0.05, curves=1.0, gin=1.0)
    a = randomise(x, cfg, torch.Generator().manual_seed(3), targets)
    assert torch.equal(a, randomise(x, cfg, torch.Generator().manual_seed(3), targets))
    assert not torch.equal(a, x) and a.min() >= -1 - 1e-6 and a.max() <= 1 + 1e-6
    with pytest.raises(ValueError, match="target slices"):
        randomise(x, AppearanceConfig(fda=1.0), torch.Generator().manual_seed(0), None)


def test_switches_are_validated():
    from mpscl.config import ConfigError, build_config
    cfg = build_config("cpu", sets=["appearance.gin=0.5", "appearance.fda_beta=0.02"])
    assert cfg.appearance.gin == 0.5 and cfg.appearance.fda_beta == 0.02
    with pytest.raises(ConfigError, match="appearance.gin"):
        build_config("cpu", sets=["appearance.gin=1.5"])
    with pytest.raises(ConfigError, match="appearance.gin_blend"):
        build_config("cpu", sets=["appearance.gin_blend=-0.1"])


@pytest.mark.slow
def test_training_with_switches_on_resumes_bit_identically(tiny_phantom, tmp_path):
    """Stopped at iteration 3 by SIGTERM and resumed: the same weights as an uninterrupted run."""
    from mpscl.adapt.trainer import Interrupted, Trainer
    from mpscl.config import build_config
    from mpscl.data import SliceDataset

    cfg = build_config("cpu", sets=["data.context=0", "data.context_spacing=slices",
                                    "data.size=48", "model.width=8", "train.iters=6", "train.threads=1",
                                    "train.checkpoint_every=2", "appearance.fda=0.5", "appearance.fda_beta=0.05",
                                    "appearance.curves=0.5", "appearance.gin=0.5",
                                    "appearance.gin_blend=0.5"])
    src, trg = SliceDataset(tiny_phantom["mr"], augment=True), SliceDataset(tiny_phantom["ct"], labelled=False)

    def trainer(out):
        return Trainer(cfg, "source-only", src, trg, out, device=torch.device("cpu"), progress=False)

    ref = torch.load(trainer(tmp_path / "a").fit(), weights_only=True)
    t = trainer(tmp_path / "b")
    step = t.step

    def stop_at_3():
        out = step()
        if t.iteration == 2:  # the step being run is the 3rd
            t._on_signal(signal.SIGTERM, None)
        return out
    t.step = stop_at_3
    with pytest.raises(Interrupted):
        t.fit()
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["iteration"] == 3
    got = torch.load(trainer(tmp_path / "b").fit(), weights_only=True)
    for k, v in ref["model"].items():
        assert torch.equal(v, got["model"][k]), k
    # and the switches change training (the same run without them differs)
    plain = build_config("cpu", sets=["data.context=0", "data.context_spacing=slices", "data.size=48",
                                      "model.width=8", "train.iters=6", "train.threads=1"])
    other = torch.load(Trainer(plain, "source-only", src, trg, tmp_path / "c", device=torch.device("cpu"),
                               progress=False).fit(), weights_only=True)
    assert any(not torch.equal(v, other["model"][k]) for k, v in ref["model"].items())
