"""Slices with their neighbours (``data.context``): stacking, datasets, the random network and
the segmenter's input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mpscl.data import SliceDataset, context_of, with_context
from mpscl.data.appearance import random_conv
from mpscl.models import build_segmenter
from mpscl.config import build_config


def test_neighbours_by_hand_with_the_end_slices_repeated():
    v = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)  # slice s == s
    got = with_context(v, 1)
    assert got.shape == (4, 3, 2, 2) and got.dtype == np.float32
    np.testing.assert_array_equal(got[:, :, 0, 0], [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]])
    np.testing.assert_array_equal(with_context(v, 0), v[:, None])
    t = with_context(torch.from_numpy(v), 1)
    assert isinstance(t, torch.Tensor) and torch.equal(t, torch.from_numpy(got))
    np.testing.assert_array_equal(with_context(v[:1], 1)[0, :, 0, 0], [0, 0, 0])  # a one-slice volume
    with pytest.raises(ValueError, match=r"\(S, N, N\)"):
        with_context(v[:, None], 1)
    with pytest.raises(ValueError, match="context must be >= 0"):
        with_context(v, -1)
    assert context_of({"config": {"data": {"context": 1}}}) == 1
    assert context_of({"config": {"data": {"size": 64}}}) == 0  # checkpoints from before the key


def test_the_dataset_never_takes_neighbours_across_cases(tiny_phantom):
    plain = SliceDataset(tiny_phantom["ct"])
    ctx = SliceDataset(tiny_phantom["ct"], context=1)
    assert plain.images.shape[1] == 1 and ctx.images.shape[1] == 3 and len(ctx) == len(plain)
    first = [i for i, (c, s) in enumerate(ctx.index) if s == 0]  # each case's first slice
    assert len(first) == 3
    for i in first:
        assert torch.equal(ctx.images[i, 0], plain.images[i, 0])  # its own slice repeated, not the last case's
        assert torch.equal(ctx.images[i, 2], plain.images[i + 1, 0])
        if i:
            assert torch.equal(ctx.images[i - 1, 2], plain.images[i - 1, 0])  # the case before ends on itself
    assert torch.equal(ctx.images[:, 1:2], plain.images)  # the middle channel is the slice itself
    x, y = ctx[5]
    assert x.shape[0] == 3 and torch.equal(y, plain[5][1])  # the middle slice's label


def test_augmentation_moves_every_neighbour_as_the_slice(tiny_phantom):
    plain = SliceDataset(tiny_phantom["ct"], augment=True)
    ctx = SliceDataset(tiny_phantom["ct"], augment=True, context=1)
    for seed in range(6):  # flips, rotations and the intensity jitter draw the same numbers
        (xp, yp), (xc, yc) = (d.batch([7], generator=torch.Generator().manual_seed(seed)) for d in (plain, ctx))
        assert torch.equal(xc[:, 1:2], xp) and torch.equal(yc, yp)
        raw = ctx.images[7].clone()
        assert not torch.equal(xc[0, 0], xc[0, 2]) or torch.equal(raw[0], raw[2])


def test_the_random_network_gives_every_neighbour_the_same_appearance():
    s = torch.rand(1, 24, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    stack = torch.cat([s, s, s])
    for seed in range(8):
        out = random_conv(stack, torch.Generator().manual_seed(seed))
        assert out.shape == (3, 24, 24) and torch.isfinite(out).all() and out.abs().max() <= 1 + 1e-6
        assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
        # one slice alone goes through the same network (the same draws) and the same rescaling
        assert torch.allclose(random_conv(s, torch.Generator().manual_seed(seed))[0], out[0], atol=1e-6)
    # neighbours that differ go through one network each on its own (no mixing across slices):
    # reversing their order reverses the output, and a constant slice stays constant away
    # from the zero-padded border (4 layers of at most 3x3 kernels)
    stack = torch.stack([torch.full((24, 24), -0.5), s[0], torch.full((24, 24), 0.5)])
    for seed in range(8):
        out = random_conv(stack, torch.Generator().manual_seed(seed))
        assert torch.allclose(random_conv(stack.flip(0), torch.Generator().manual_seed(seed)), out.flip(0),
                              atol=1e-6)
        assert out[0, 4:-4, 4:-4].unique().numel() == 1 and out[2, 4:-4, 4:-4].unique().numel() == 1


@pytest.mark.parametrize("input_mode", ["plain", "caffe", "torchvision"])
def test_three_identical_neighbours_are_one_grey_slice_to_the_network(input_mode):
    cfg = build_config("cpu").model
    cfg.input_mode = input_mode
    torch.manual_seed(0)
    net = build_segmenter(cfg, num_classes=3).eval()
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        a, b = net(x)[-1], net(x.expand(-1, 3, -1, -1))[-1]
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        net(torch.zeros(1, 2, 32, 32))
