"""Prototype maths: downsampling, EMA, pseudo-labels, initialisation, by hand."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mpscl.adapt.prototypes import (
    class_feature_sums,
    downsample_labels,
    ema_update,
    init_prototypes,
    pseudo_label,
    update_prototypes,
)


def test_downsample_labels_is_nearest_interpolate():
    labels = (torch.arange(16).view(1, 4, 4) % 3).long()
    small = downsample_labels(labels, (2, 2))
    # scale 2: nearest picks rows/cols 0 and 2
    assert small.tolist() == [[[labels[0, 0, 0].item(), labels[0, 0, 2].item()],
                               [labels[0, 2, 0].item(), labels[0, 2, 2].item()]]]
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(-1, 5, (2, 7, 11), generator=g)
    for size in [(3, 4), (5, 5), 2]:
        ref_size = (size, size) if isinstance(size, int) else size
        ref = F.interpolate(labels[:, None].float(), size=ref_size, mode="nearest")[:, 0].long()
        out = downsample_labels(labels, size)
        assert out.dtype == torch.int64 and torch.equal(out, ref)


def _hand_batch():
    # features (1,2,2,2): pixel (0,0)=(1,2), (0,1)=(3,4), (1,0)=(5,6), (1,1)=(7,8)
    f = torch.tensor([[1.0, 3.0], [5.0, 7.0]]), torch.tensor([[2.0, 4.0], [6.0, 8.0]])
    features = torch.stack(f)[None]
    small = torch.tensor([[[0, 0], [1, -1]]])
    # image-resolution labels (4x4) that nearest-downsample back to `small`
    labels = small.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    return features, small, labels


def test_class_feature_sums_by_hand():
    features, small, _ = _hand_batch()
    sums, counts = class_feature_sums(features, small, 3)
    assert counts.tolist() == [2, 1, 0]
    assert sums.tolist() == [[4.0, 6.0], [5.0, 6.0], [0.0, 0.0]]


def test_update_prototypes_ema_by_hand_and_absent_class_kept():
    features, _, labels = _hand_batch()
    features.requires_grad_(True)
    old = torch.tensor([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]])
    before = old.clone()
    new = update_prototypes(old, features, labels, momentum=0.2)
    # class 0: mean (2,3) -> 0.2*10 + 0.8*(2,3); class 1: mean (5,6); class 2 absent
    expected = torch.tensor([[3.6, 4.4], [8.0, 8.8], [30.0, 30.0]])
    assert torch.allclose(new, expected)
    assert torch.equal(old, before)          # input untouched
    assert new.data_ptr() != old.data_ptr()  # a new tensor
    assert not new.requires_grad             # features are detached
    assert new.dtype == old.dtype


def test_ema_of_all_reduced_statistics_equals_the_joint_batch():
    g = torch.Generator().manual_seed(0)
    fa, fb = torch.randn(2, 3, 4, 4, generator=g), torch.randn(1, 3, 4, 4, generator=g)
    ya, yb = torch.randint(0, 4, (2, 4, 4), generator=g), torch.randint(0, 4, (1, 4, 4), generator=g)
    old = torch.randn(4, 3, generator=g)
    sa, na = class_feature_sums(fa, ya, 4)
    sb, nb = class_feature_sums(fb, yb, 4)
    split = ema_update(old, sa + sb, na + nb, 0.2)
    joint = update_prototypes(old, torch.cat([fa, fb]), torch.cat([ya, yb]), 0.2)
    assert torch.allclose(split, joint, atol=1e-6)
    with pytest.raises(ValueError, match="momentum"):
        ema_update(old, sa, na, 1.5)


def test_pseudo_label_strict_threshold_and_ties():
    protos = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    # pixel 0: f=(1,0): cos = (1, 0, -1), margin 1 exactly
    # pixel 1: f=(0,5): cos = (0, 1, 0), margin 1 exactly
    # pixel 2: f=(1,1): cos0 == cos1 (tie), margin 0
    feats = torch.tensor([[1.0, 0.0, 1.0], [0.0, 5.0, 1.0]])[None, :, None, :]  # (1,2,1,3)
    labels, sel = pseudo_label(feats, protos, threshold=1.0)
    assert labels.dtype == torch.int64 and sel.dtype == torch.bool
    assert labels.tolist() == [[[0, 1, 0]]]   # the tie goes to the lower class id
    assert sel.tolist() == [[[False, False, False]]]  # 1 - 0 > 1 is false: strict
    _, sel = pseudo_label(feats, protos, threshold=0.999)
    assert sel.tolist() == [[[True, True, False]]]
    _, sel = pseudo_label(feats, protos, threshold=0.0)
    assert sel.tolist() == [[[True, True, False]]]  # a tie is never selected at threshold >= 0
    _, sel = pseudo_label(feats, protos, threshold=-0.1)
    assert sel.tolist() == [[[True, True, True]]]


def test_pseudo_label_is_detached_and_checks_shapes():
    f = torch.randn(2, 4, 3, 3, requires_grad=True)
    p = torch.randn(3, 4, requires_grad=True)
    labels, sel = pseudo_label(f, p, 0.25)
    assert labels.shape == (2, 3, 3) and sel.shape == (2, 3, 3)
    assert not labels.requires_grad
    with pytest.raises(ValueError, match="prototypes"):
        pseudo_label(f, p[:, :2], 0.25)


class _Dummy(torch.nn.Module):
    """features = (x, 2x + 1) at every second pixel; records the mode of each call."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Conv2d(1, 1, 1, bias=False)
        torch.nn.init.ones_(self.scale.weight)
        self.calls = []

    def forward(self, x):
        self.calls.append((self.training, torch.is_grad_enabled()))
        x = self.scale(x)
        feats = torch.cat([x, 2 * x + 1], dim=1)[:, :, ::2, ::2]
        return feats, None, x


def _loader():
    g = torch.Generator().manual_seed(0)
    batches = []
    for b, probs in [(3, [0.7, 0.2, 0.1]), (1, [0.1, 0.2, 0.7])]:
        img = torch.randn(b, 1, 6, 6, generator=g)
        lab = torch.multinomial(torch.tensor(probs), b * 36, replacement=True, generator=g)
        lab = lab.view(b, 6, 6)
        lab[0, 0, 0], lab[0, 0, 2], lab[0, 2, 0] = 0, 1, 2  # every class seen at feature res
        batches.append((img, lab))
    return batches


def test_init_prototypes_is_the_global_mean():
    loader = _loader()
    model = _Dummy()
    model.train()
    protos = init_prototypes(model, loader, 3, "cpu")
    assert protos.dtype == torch.float32 and protos.shape == (3, 2)
    assert model.training  # mode restored
    assert all(mode == (False, False) for mode in model.calls)  # eval, no grad

    # expected, in numpy: all slices' features at feature resolution, pooled per class
    xs = np.concatenate([img[:, 0, ::2, ::2].numpy().ravel() for img, _ in loader]).astype(np.float64)
    ys = np.concatenate([lab[:, ::2, ::2].numpy().ravel() for _, lab in loader])
    feats = np.stack([xs, 2 * xs + 1], axis=1)
    expected = np.stack([feats[ys == k].mean(axis=0) for k in range(3)])
    assert np.allclose(protos.numpy(), expected, atol=1e-6)

    batch_means = []
    for img, lab in loader:
        x = img[:, 0, ::2, ::2].numpy().ravel().astype(np.float64)
        y = lab[:, ::2, ::2].numpy().ravel()
        f = np.stack([x, 2 * x + 1], axis=1)
        batch_means.append(np.stack([f[y == k].mean(axis=0) for k in range(3)]))
    assert not np.allclose(expected, np.mean(batch_means, axis=0), atol=1e-3)


def test_init_prototypes_amp_and_missing_class():
    loader = _loader()
    full = init_prototypes(_Dummy(), loader, 3, "cpu")
    amp = init_prototypes(_Dummy(), loader, 3, "cpu", amp=True)
    assert amp.dtype == torch.float32
    assert torch.allclose(amp, full, rtol=2e-2, atol=2e-2)
    with pytest.raises(ValueError, match="class 3"):
        init_prototypes(_Dummy(), loader, 4, "cpu")
    with pytest.raises(ValueError, match="no batch"):
        init_prototypes(_Dummy(), [], 3, "cpu")
