"""The size prior on the target predictions' class shares (``loss.size_prior``, losses/size_prior.py)."""
import pytest
import torch

from mpscl.losses.size_prior import band_penalty, mixed_shares


def test_band_penalty_by_hand():
    source = torch.tensor([0.8, 0.1, 0.1])
    # class 1 at 2.0x its source share, band 1.5: (2.0 - 1.5)^2; class 2 inside the band
    assert band_penalty(torch.tensor([0.7, 0.2, 0.1]), source, 1.5).item() == pytest.approx(0.25)
    # class 2 at 0.5x: below 1 / 1.5 by 1/6; the background is never counted
    assert band_penalty(torch.tensor([0.0, 0.1, 0.05]), source, 1.5).item() == pytest.approx((2 / 3 - 0.5) ** 2)
    # inside [1/b, b] on every class: nothing asked
    assert band_penalty(torch.tensor([0.5, 0.14, 0.07]), source, 1.5).item() == 0.0
    assert band_penalty(torch.tensor([0.8, 0.1, 0.1]), source, 1.0).item() == 0.0
    with pytest.raises(ValueError, match="band must be >= 1"):
        band_penalty(source, source, 0.9)


def test_mixed_shares_fold_the_global_batch_in_and_take_the_gradient_of_the_local_one():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    probs = torch.softmax(logits, dim=1)
    running = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    other = torch.tensor([0.2, 0.5, 0.3])  # as if the global batch (all ranks) had these shares
    got = mixed_shares(probs, running, other, slices=16, window=64.0)  # m = 1 - 16 / 64
    assert torch.allclose(got, 0.75 * running.float() + 0.25 * other)
    got[1].backward()
    (ref,) = torch.autograd.grad(0.25 * torch.softmax(logits, dim=1).mean(dim=(0, 2, 3))[1], logits)
    assert torch.allclose(logits.grad, ref)
    # a window of one batch or less: the batch alone
    assert torch.allclose(mixed_shares(probs, running, other, slices=64, window=64.0), other)


def test_the_penalty_pushes_an_oversized_class_down():
    source = torch.tensor([0.9, 0.1])
    logits = torch.zeros(1, 2, 2, 2, requires_grad=True)  # 50% class 1: 5x its source share
    shares = mixed_shares(torch.softmax(logits, dim=1), source, torch.tensor([0.5, 0.5]), 1, 1.0)
    band_penalty(shares, source, 1.5).backward()
    assert (logits.grad[:, 1] > 0).all() and (logits.grad[:, 0] < 0).all()  # descent lowers class 1
