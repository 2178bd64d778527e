"""Weighted cross-entropy and soft Dice against values worked out by hand."""
import math

import pytest
import torch

from mpscl.losses import class_weights, dice_loss, segmentation_loss, weighted_cross_entropy

EPS = 1e-5


def _ce_example(dtype=torch.float64):
    # 1x2x2 image, K = 2; pixel logits (l0, l1) and labels written out below.
    # (0,0): (2, 0)    label 0      (0,1): (0, 1)     label 0
    # (1,0): (1, 1)    label 0      (1,1): (0.5,-0.5) label 1
    l0 = torch.tensor([[2.0, 0.0], [1.0, 0.5]], dtype=dtype)
    l1 = torch.tensor([[0.0, 1.0], [1.0, -0.5]], dtype=dtype)
    logits = torch.stack([l0, l1])[None]  # (1,2,2,2)
    labels = torch.tensor([[[0, 0], [0, 1]]])
    return logits, labels


def test_class_weights_are_one_minus_frequency_and_one_for_absent_classes():
    labels = torch.tensor([[[0, 0], [0, 1]]])
    w = class_weights(labels, 3)
    assert torch.allclose(w, torch.tensor([0.25, 0.75, 1.0]))
    # ignore pixels are not counted in the frequencies
    labels = torch.tensor([[[0, -1], [0, 1]]])
    assert torch.allclose(class_weights(labels, 2), torch.tensor([1 / 3, 2 / 3]))


def test_weighted_cross_entropy_by_hand():
    logits, labels = _ce_example()
    # freq0 = 3/4 -> w0 = 1/4; freq1 = 1/4 -> w1 = 3/4
    nll = [
        math.log(1 + math.exp(-2)),  # -log softmax(2,0)[0]
        math.log(1 + math.e),        # -log softmax(0,1)[0]
        math.log(2),                 # -log softmax(1,1)[0]
        math.log(1 + math.e),        # -log softmax(0.5,-0.5)[1]
    ]
    w = [0.25, 0.25, 0.25, 0.75]
    expected = sum(wi * ni for wi, ni in zip(w, nll)) / sum(w)
    got = weighted_cross_entropy(logits, labels)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_weighted_cross_entropy_ignores_pixels():
    logits, labels = _ce_example()
    labels = labels.clone()
    labels[0, 0, 1] = -1  # drop pixel (0,1): now freq0 = 2/3, freq1 = 1/3
    nll = [math.log(1 + math.exp(-2)), math.log(2), math.log(1 + math.e)]
    w = [1 / 3, 1 / 3, 2 / 3]
    expected = sum(wi * ni for wi, ni in zip(w, nll)) / sum(w)
    assert weighted_cross_entropy(logits, labels).item() == pytest.approx(expected, rel=1e-12)


def test_weighted_cross_entropy_single_class_batch_is_plain_mean_not_nan():
    logits, _ = _ce_example()
    labels = torch.zeros(1, 2, 2, dtype=torch.int64)
    nll = [math.log(1 + math.exp(-2)), math.log(1 + math.e), math.log(2), math.log(1 + math.exp(-1))]
    got = weighted_cross_entropy(logits, labels)
    assert got.item() == pytest.approx(sum(nll) / 4, rel=1e-12)
    logits.requires_grad_(True)
    weighted_cross_entropy(logits, labels).backward()
    assert torch.isfinite(logits.grad).all()


def test_weighted_cross_entropy_all_ignored_is_zero():
    logits, _ = _ce_example()
    labels = torch.full((1, 2, 2), -1)
    assert weighted_cross_entropy(logits, labels).item() == 0.0


def test_label_out_of_range_is_a_clear_error():
    logits, labels = _ce_example()
    labels = labels.clone()
    labels[0, 0, 0] = 7
    with pytest.raises(ValueError, match="outside"):
        weighted_cross_entropy(logits, labels)
    with pytest.raises(ValueError, match="does not match"):
        weighted_cross_entropy(logits, labels[:, :1])


def test_dice_perfect_prediction_is_zero():
    labels = torch.tensor([[[0, 0], [1, 1]]])
    logits = 100.0 * torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).double()
    # class 2 is absent and not predicted: (0 + eps) / (~0 + 0 + eps) = 1
    assert dice_loss(logits, labels).item() == pytest.approx(0.0, abs=1e-12)


def test_dice_half_wrong_prediction():
    labels = torch.tensor([[[0, 0, 1, 1]]])
    predicted = torch.tensor([[[0, 1, 1, 0]]])
    logits = 100.0 * torch.nn.functional.one_hot(predicted, 2).permute(0, 3, 1, 2).double()
    # each class: sum p*g = 1, sum p^2 = 2, sum g^2 = 2
    expected = 1 - (2 * 1 + EPS) / (2 + 2 + EPS)
    assert dice_loss(logits, labels).item() == pytest.approx(expected, rel=1e-12)


def test_dice_soft_uniform_prediction():
    labels = torch.tensor([[[0, 0, 1, 1]]])
    logits = torch.zeros(1, 2, 1, 4, dtype=torch.float64)  # p = 1/2 everywhere
    # each class: sum p*g = 2 * 0.5 = 1, sum p^2 = 4 * 0.25 = 1, sum g^2 = 2
    expected = 1 - (2 * 1 + EPS) / (1 + 2 + EPS)
    assert dice_loss(logits, labels).item() == pytest.approx(expected, rel=1e-12)


def test_dice_is_per_sample_then_averaged():
    # sample 0 perfect on classes {0,1}; sample 1 uniform. Mean of the two per-sample losses.
    labels = torch.tensor([[[0, 0, 1, 1]], [[0, 0, 1, 1]]])
    logits = torch.zeros(2, 2, 1, 4, dtype=torch.float64)
    logits[0] = 100.0 * torch.nn.functional.one_hot(labels[0], 2).permute(2, 0, 1)
    uniform = 1 - (2 + EPS) / (3 + EPS)
    assert dice_loss(logits, labels).item() == pytest.approx(uniform / 2, rel=1e-9)


def test_segmentation_loss_is_the_sum_and_bf16_computes_in_float32():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4))
    total = segmentation_loss(logits, labels)
    parts = weighted_cross_entropy(logits, labels) + dice_loss(logits, labels)
    assert torch.allclose(total, parts)
    bf = logits.bfloat16()
    out = segmentation_loss(bf, labels)
    assert out.dtype == torch.float32
    assert torch.allclose(out, segmentation_loss(bf.float(), labels), atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = segmentation_loss(logits, labels)
    assert out.dtype == torch.float32 and torch.allclose(out, total, atol=1e-6)
