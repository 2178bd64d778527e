"""Entropy maps and the adversarial BCE terms, by hand."""
import math

import pytest
import torch

from mpscl.losses import discriminator_loss, entropy_map, generator_adversarial_loss


def test_entropy_map_uniform_prediction():
    k = 4
    e = entropy_map(torch.zeros(2, k, 3, 3, dtype=torch.float64))
    expected = -(1 / k) * math.log2(1 / k + 1e-7) / math.log2(k)  # ~1/K per channel
    assert e.shape == (2, k, 3, 3)
    assert torch.allclose(e, torch.full_like(e, expected), rtol=1e-12)
    assert e.sum(dim=1).allclose(torch.ones(2, 3, 3, dtype=torch.float64), atol=1e-6)


def test_entropy_map_one_hot_prediction():
    logits = torch.tensor([100.0, 0.0, 0.0], dtype=torch.float64).view(1, 3, 1, 1)
    e = entropy_map(logits)[0, :, 0, 0]
    p_small = math.exp(-100.0)  # softmax of the two losing classes (p_win rounds to 1)
    assert e[0].item() == pytest.approx(-math.log2(1 + 1e-7) / math.log2(3), rel=1e-9)
    expected_small = -p_small * math.log2(p_small + 1e-7) / math.log2(3)
    assert e[1].item() == pytest.approx(expected_small, rel=1e-9)
    assert e[2].item() == pytest.approx(expected_small, rel=1e-9)


def test_entropy_map_bf16_is_float32():
    torch.manual_seed(0)
    logits = torch.randn(1, 5, 4, 4)
    e = entropy_map(logits.bfloat16())
    assert e.dtype == torch.float32
    assert torch.allclose(e, entropy_map(logits.bfloat16().float()))


D = torch.tensor([[[[-1.0, 0.5], [2.0, 0.0]]]], dtype=torch.float64)  # (1,1,2,2)
XS = [-1.0, 0.5, 2.0, 0.0]


def test_generator_loss_is_bce_against_source_label_zero():
    # BCE(x, 0) = -log(1 - sigmoid(x)) = log(1 + e^x)
    expected = sum(math.log1p(math.exp(x)) for x in XS) / 4
    assert generator_adversarial_loss(D).item() == pytest.approx(expected, rel=1e-12)
    assert generator_adversarial_loss(torch.zeros(2, 1, 3, 3)).item() == pytest.approx(math.log(2))


def test_discriminator_loss_halves_each_domain_term():
    src = sum(math.log1p(math.exp(x)) for x in XS) / 4 / 2    # label 0
    trg = sum(math.log1p(math.exp(-x)) for x in XS) / 4 / 2   # label 1: -log sigmoid(x)
    assert discriminator_loss(D, is_target=False).item() == pytest.approx(src, rel=1e-12)
    assert discriminator_loss(D, is_target=True).item() == pytest.approx(trg, rel=1e-12)
    with pytest.raises(TypeError):
        discriminator_loss(D, is_target=1)


def test_bce_under_bf16_autocast_is_float32():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = generator_adversarial_loss(D.float().bfloat16())
        d = discriminator_loss(D.float().bfloat16(), True)
    assert g.dtype == torch.float32 and d.dtype == torch.float32
