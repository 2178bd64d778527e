"""MPCL against values computed by hand from angles (2-D features, known cosines)."""
import math

import numpy as np
import pytest
import torch

from mpscl.losses import mpcl_loss


def _vectors(angles, radii):
    a = np.asarray(angles, dtype=np.float64)
    r = np.asarray(radii, dtype=np.float64)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)  # (n, 2)


def _inputs(f_angles, f_radii, p_angles, p_radii, labels, dtype=torch.float64):
    """features (1,2,1,n) from angles, prototypes (K,2), labels (1,1,n)."""
    f = torch.tensor(_vectors(f_angles, f_radii), dtype=dtype).t()[None, :, None, :]
    p = torch.tensor(_vectors(p_angles, p_radii), dtype=dtype)
    y = torch.tensor(labels, dtype=torch.int64)[None, None, :]
    return f.contiguous(), p, y


def _angle_between(a, b):
    d = (a - b + math.pi) % (2 * math.pi) - math.pi
    return abs(d)


def _paper_pixel_losses(f_angles, p_angles, labels, m, T, Tb):
    """Per pixel: -(T/Tb) log softmax([cos(theta_y + m), cos_k (k != y)] / T)[y]."""
    out = []
    for a, y in zip(f_angles, labels):
        thetas = [_angle_between(a, pa) for pa in p_angles]
        cos = [math.cos(t) for t in thetas]
        if thetas[y] + m < math.pi:
            pos = math.cos(thetas[y] + m)
        else:
            pos = cos[y] - m * math.sin(m)
        logits = [pos / T if k == y else cos[k] / T for k in range(len(p_angles))]
        lse = math.log(sum(math.exp(v) for v in logits))
        out.append(-(T / Tb) * (logits[y] - lse))
    return np.array(out)


def _authors_pixel_losses(f_angles, p_angles, labels, m, T, Tb):
    """METHOD.md's transcription of the authors' code, with phi for every class."""
    out = []
    for a, y in zip(f_angles, labels):
        thetas = [_angle_between(a, pa) for pa in p_angles]
        cos = [math.cos(t) for t in thetas]
        phi = [math.cos(t + m) if t + m < math.pi else math.cos(t) - m * math.sin(m) for t in thetas]
        max_cos = max(c / T for c in cos)
        max_phi = max(p / T for p in phi)
        pos = phi[y] / T - max_phi
        s = sum(math.exp(cos[k] / T - max_cos) for k in range(len(cos)) if k != y) + math.exp(pos)
        out.append(-(T / Tb) * (pos - math.log(s + 1e-4)))
    return np.array(out)


# Two classes: prototypes at angles 0 and 2*pi/3 (lengths 2 and 5, normalised inside).
P_ANG, P_RAD = [0.0, 2 * math.pi / 3], [2.0, 5.0]
F_ANG, F_RAD = [math.pi / 6, -math.pi / 4, 1.5, 2.9], [1.0, 3.0, 0.5, 2.0]
LABELS = [0, 0, 1, 1]


def test_paper_variant_two_classes_by_hand():
    f, p, y = _inputs(F_ANG, F_RAD, P_ANG, P_RAD, LABELS)
    m, T = 0.4, 1.0
    expected = _paper_pixel_losses(F_ANG, P_ANG, LABELS, m, T, 1.0).mean()
    got = mpcl_loss(f, y, p, margin=m, temperature=T)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(expected, rel=1e-10)
    # and one pixel spelt out: f at pi/6, label 0 -> theta_y = pi/6, negative cos(pi/6 - 2pi/3) = 0
    one = mpcl_loss(f[..., :1], y[..., :1], p, margin=m, temperature=T)
    pos = math.cos(math.pi / 6 + m)
    assert one.item() == pytest.approx(-(pos - math.log(math.exp(pos) + math.exp(0.0))), rel=1e-10)


def test_fallback_branch_when_theta_plus_margin_passes_pi():
    # f at angle 3.05 from prototype 0: theta_y + m = 3.45 > pi  ->  cos_y - m sin(m)
    f_ang, labels, m = [3.05], [0], 0.4
    f, p, y = _inputs(f_ang, [1.0], P_ANG, P_RAD, labels)
    cos0, cos1 = math.cos(3.05), math.cos(3.05 - 2 * math.pi / 3)
    assert cos0 <= math.cos(math.pi - m)
    pos = cos0 - m * math.sin(m)
    expected = -(pos - math.log(math.exp(pos) + math.exp(cos1)))
    got = mpcl_loss(f, y, p, margin=m, temperature=1.0)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_zero_margin_is_softmax_cross_entropy_of_cosines():
    f, p, y = _inputs(F_ANG, F_RAD, P_ANG, P_RAD, LABELS)
    T = 0.5
    cos = np.array([[math.cos(_angle_between(a, pa)) for pa in P_ANG] for a in F_ANG]) / T
    logp = cos - np.log(np.exp(cos).sum(axis=1, keepdims=True))
    expected = -(T / 1.0) * logp[np.arange(4), LABELS].mean()
    got = mpcl_loss(f, y, p, margin=0.0, temperature=T)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_temperature_and_base_temperature_scaling():
    f, p, y = _inputs(F_ANG, F_RAD, P_ANG, P_RAD, LABELS)
    m, T, Tb = 0.3, 2.0, 0.5
    expected = _paper_pixel_losses(F_ANG, P_ANG, LABELS, m, T, Tb).mean()
    got = mpcl_loss(f, y, p, margin=m, temperature=T, base_temperature=Tb)
    assert got.item() == pytest.approx(expected, rel=1e-10)
    # T/T_base is a pure scale for a fixed T
    half = mpcl_loss(f, y, p, margin=m, temperature=T, base_temperature=2 * Tb)
    assert half.item() == pytest.approx(expected / 2, rel=1e-10)


def test_masked_average_uses_the_1e4_guard():
    f, p, y = _inputs(F_ANG, F_RAD, P_ANG, P_RAD, LABELS)
    per_pixel = _paper_pixel_losses(F_ANG, P_ANG, LABELS, 0.2, 1.0, 1.0)
    sel = np.array([True, False, True, True])
    mask = torch.tensor(sel)[None, None, :]
    expected = (per_pixel * sel).sum() / (sel.sum() + 1e-4)
    got = mpcl_loss(f, y, p, margin=0.2, temperature=1.0, mask=mask)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    none = mpcl_loss(f, y, p, margin=0.2, temperature=1.0, mask=torch.zeros_like(mask))
    assert none.item() == 0.0


def test_labels_outside_range_are_excluded():
    f, p, _ = _inputs(F_ANG, F_RAD, P_ANG, P_RAD, LABELS)
    y = torch.tensor([[[0, -1, 1, 2]]])  # -1 ignore, 2 >= K: both excluded
    per_pixel = _paper_pixel_losses(F_ANG, P_ANG, LABELS, 0.4, 1.0, 1.0)
    got = mpcl_loss(f, y, p, margin=0.4, temperature=1.0)
    assert got.item() == pytest.approx((per_pixel[0] + per_pixel[2]) / 2, rel=1e-12)
    mask = torch.tensor([[[True, True, False, True]]])
    got = mpcl_loss(f, y, p, margin=0.4, temperature=1.0, mask=mask)
    assert got.item() == pytest.approx(per_pixel[0] / (1 + 1e-4), rel=1e-12)
    all_ignored = mpcl_loss(f, torch.full_like(y, -1), p, margin=0.4, temperature=1.0)
    assert all_ignored.item() == 0.0


def test_authors_variant_by_hand():
    f, p, y = _inputs(F_ANG, F_RAD, P_ANG, P_RAD, LABELS)
    m, T, Tb = 0.4, 0.7, 1.0
    expected = _authors_pixel_losses(F_ANG, P_ANG, LABELS, m, T, Tb).mean()
    got = mpcl_loss(f, y, p, margin=m, temperature=T, base_temperature=Tb, variant="authors")
    assert got.item() == pytest.approx(expected, rel=1e-10)
    assert abs(got.item() - mpcl_loss(f, y, p, margin=m, temperature=T).item()) > 1e-3


def test_authors_margin_cancels_when_every_class_is_in_the_fallback():
    # prototypes at angles 0 and 0.1; features pointing roughly opposite: every cos_k <= cos(pi - 0.4)
    p_ang, f_ang, labels, m = [0.0, 0.1], [math.pi + 0.05, math.pi - 0.1, math.pi + 0.15], [0, 1, 1], 0.4
    assert all(math.cos(_angle_between(a, b)) <= math.cos(math.pi - m) for a in f_ang for b in p_ang)
    f, p, y = _inputs(f_ang, [1.0, 2.0, 3.0], p_ang, [1.0, 1.0], labels)
    with_m = mpcl_loss(f, y, p, margin=m, temperature=1.0, variant="authors")
    without = mpcl_loss(f, y, p, margin=0.0, temperature=1.0, variant="authors")
    assert with_m.item() == pytest.approx(without.item(), rel=1e-12, abs=1e-14)
    # the paper's formula keeps the margin
    paper = mpcl_loss(f, y, p, margin=m, temperature=1.0)
    assert paper.item() > mpcl_loss(f, y, p, margin=0.0, temperature=1.0).item() + 0.05


def test_paper_exceeds_authors_on_random_inputs():
    g = torch.Generator().manual_seed(1234)
    f = torch.randn(2, 16, 8, 8, generator=g)
    p = torch.randn(5, 16, generator=g)
    y = torch.randint(0, 5, (2, 8, 8), generator=g)
    paper = mpcl_loss(f, y, p, margin=0.4, temperature=1.0)
    authors = mpcl_loss(f, y, p, margin=0.4, temperature=1.0, variant="authors")
    no_margin = mpcl_loss(f, y, p, margin=0.0, temperature=1.0)
    assert paper.item() > authors.item()
    assert paper.item() > no_margin.item()  # phi_y < cos_y for every pixel


def _random_case(seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(1, 4, 3, 3, generator=g, dtype=dtype)
    p = torch.randn(3, 4, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (1, 3, 3), generator=g)
    mask = torch.rand(1, 3, 3, generator=g) > 0.4
    return f, p, y, mask


def _assert_away_from_kinks(f, p, m):
    cos = torch.nn.functional.normalize(f, dim=1).permute(0, 2, 3, 1).reshape(-1, f.shape[1]) @ \
        torch.nn.functional.normalize(p, dim=1).t()
    assert (cos.abs() < 0.99).all()  # sin clamp inactive
    assert (cos > math.cos(math.pi - m) + 0.05).all()  # no fallback switch nearby


@pytest.mark.parametrize("use_mask", [False, True])
def test_gradcheck_paper_variant(use_mask):
    f, p, y, mask = _random_case(0)
    _assert_away_from_kinks(f, p, 0.3)
    f.requires_grad_(True)
    p.requires_grad_(True)
    fn = lambda f_, p_: mpcl_loss(  # noqa: E731
        f_, y, p_, margin=0.3, temperature=0.7, base_temperature=0.9,
        mask=mask if use_mask else None,
    )
    assert torch.autograd.gradcheck(fn, (f, p), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("use_mask", [False, True])
def test_authors_variant_gradient_matches_frozen_shift_reference(use_mask):
    """The authors detach both max shifts, so the gradient is that of the formula with the
    shifts held constant (finite differences of the full formula would differ: no gradcheck)."""
    f, p, y, mask = _random_case(5)
    m, T, Tb = 0.3, 0.7, 0.9
    _assert_away_from_kinks(f, p, m)
    f.requires_grad_(True)
    p.requires_grad_(True)
    got = mpcl_loss(f, y, p, margin=m, temperature=T, base_temperature=Tb,
                    mask=mask if use_mask else None, variant="authors")
    g_f, g_p = torch.autograd.grad(got, (f, p))

    # independent reference: arccos route for theta, explicit constant shifts
    fn = f / f.norm(dim=1, keepdim=True)
    pn = p / p.norm(dim=1, keepdim=True)
    cos = torch.einsum("bchw,kc->bhwk", fn, pn).reshape(-1, 3)
    phi = torch.cos(torch.acos(cos) + m)
    max_cos = (cos / T).max(dim=1, keepdim=True).values.detach()
    max_phi = (phi / T).max(dim=1, keepdim=True).values.detach()
    yy = y.reshape(-1)
    pos = phi.gather(1, yy[:, None]).squeeze(1) / T - max_phi.squeeze(1)
    neg = torch.exp(cos / T - max_cos)
    neg_sum = neg.sum(1) - neg.gather(1, yy[:, None]).squeeze(1)
    loss = -(T / Tb) * (pos - torch.log(neg_sum + torch.exp(pos) + 1e-4))
    if use_mask:
        w = mask.reshape(-1).double()
        ref = (loss * w).sum() / (w.sum() + 1e-4)
    else:
        ref = loss.mean()
    r_f, r_p = torch.autograd.grad(ref, (f, p))
    assert got.item() == pytest.approx(ref.item(), rel=1e-12)
    assert torch.allclose(g_f, r_f, rtol=1e-9, atol=1e-12)
    assert torch.allclose(g_p, r_p, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("variant", ["paper", "authors"])
def test_float32_matches_float64(variant):
    f, p, y, mask = _random_case(2)
    kw = dict(margin=0.4, temperature=1.0, variant=variant)
    d = mpcl_loss(f, y, p, mask=mask, **kw)
    s = mpcl_loss(f.float(), y, p.float(), mask=mask, **kw)
    assert s.dtype == torch.float32
    assert s.item() == pytest.approx(d.item(), rel=1e-5)


def test_bf16_input_and_autocast_compute_in_float32():
    f, p, y, _ = _random_case(3, dtype=torch.float32)
    ref = mpcl_loss(f, y, p, margin=0.4, temperature=1.0)
    bf = mpcl_loss(f.bfloat16(), y, p, margin=0.4, temperature=1.0)
    assert bf.dtype == torch.float32
    # same values once rounded to bf16, computed in float32: near-identical
    exact = mpcl_loss(f.bfloat16().float(), y, p, margin=0.4, temperature=1.0)
    assert bf.item() == pytest.approx(exact.item(), rel=1e-6)
    assert bf.item() == pytest.approx(ref.item(), rel=2e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = mpcl_loss(f, y, p, margin=0.4, temperature=1.0)
    assert auto.dtype == torch.float32
    assert auto.item() == pytest.approx(ref.item(), rel=1e-6)


def test_shape_and_argument_errors():
    f, p, y, mask = _random_case(4)
    with pytest.raises(ValueError, match="features"):
        mpcl_loss(f[0], y, p, margin=0.1, temperature=1.0)
    with pytest.raises(ValueError, match="labels"):
        mpcl_loss(f, y[:, :2], p, margin=0.1, temperature=1.0)
    with pytest.raises(ValueError, match="prototypes"):
        mpcl_loss(f, y, p[:, :3], margin=0.1, temperature=1.0)
    with pytest.raises(ValueError, match="mask"):
        mpcl_loss(f, y, p, margin=0.1, temperature=1.0, mask=mask[:, :1])
    with pytest.raises(ValueError, match="variant"):
        mpcl_loss(f, y, p, margin=0.1, temperature=1.0, variant="nope")
    with pytest.raises(ValueError, match="temperature"):
        mpcl_loss(f, y, p, margin=0.1, temperature=0.0)
    with pytest.raises(TypeError, match="integer"):
        mpcl_loss(f, y.double(), p, margin=0.1, temperature=1.0)
    with pytest.raises(TypeError):
        mpcl_loss(f, y, p, 0.1, 1.0)  # margin and temperature are keyword-only
