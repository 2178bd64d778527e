"""Slices with their neighbours (``data.context``): stacking, datasets, the random network and
the segmenter's input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mpscl.data import PreparedDataset, SliceDataset, context_of, with_context
from mpscl.data.context import coarser_spacing, context_mm_of, drop_context, slice_step, stacks_of
from mpscl.data.appearance import random_conv
from mpscl.models import build_segmenter
from mpscl.config import ConfigError, build_config


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


def test_neighbours_at_a_distance_interpolate_between_slices_by_hand():
    v = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)  # slice s == s
    # 1.6 slices apart (8 mm neighbours in 5 mm slices): a ramp reads back its positions,
    # clipped to the volume
    got = with_context(v, 1, 1.6)
    np.testing.assert_allclose(got[:, :, 0, 0], [[0, 0, 1.6], [0, 1, 2.6], [0.4, 2, 3], [1.4, 3, 3]], atol=1e-6)
    assert got.dtype == np.float32
    np.testing.assert_allclose(with_context(v, 1, 0.5)[:, :, 0, 0], [[0, 0, 0.5], [0.5, 1, 1.5],
                                                                    [1.5, 2, 2.5], [2.5, 3, 3]], atol=1e-6)
    # interpolation mixes the two slices either side, not only their first pixel
    r = np.random.default_rng(0).random((5, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(with_context(r, 1, 1.25)[1, 2], 0.75 * r[2] + 0.25 * r[3], atol=1e-6)
    # one step: exactly the adjacent slices, no arithmetic on them
    adjacent = np.array([[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 4]])
    assert np.array_equal(with_context(r, 1, 1.0), r[adjacent])
    t = with_context(torch.from_numpy(r), 1, 1.25)
    assert isinstance(t, torch.Tensor) and torch.allclose(t, torch.from_numpy(with_context(r, 1, 1.25)))
    # a batch of rows is those rows of the whole stack (inference gathers a batch at a time)
    np.testing.assert_array_equal(stacks_of(r, np.array([3, 4]), 1, 1.25), with_context(r, 1, 1.25)[3:5])
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="step must be a positive"):
            with_context(r, 1, bad)


def test_the_distance_in_slices_and_the_coarser_domain(tiny_phantom):
    assert slice_step(8.0, 5.0) == pytest.approx(1.6) and slice_step(8.0, 13.0) == pytest.approx(8 / 13)
    assert slice_step(None, 5.0) == 1.0 and slice_step(8.0, None) == 1.0 and slice_step(8.0, 0.0) == 1.0
    mr, ct = PreparedDataset(tiny_phantom["mr"]), PreparedDataset(tiny_phantom["ct"])
    assert mr.meta("1")["spacing"][2] == pytest.approx(3.6) and ct.meta("1")["spacing"][2] == pytest.approx(3.0)
    assert coarser_spacing([mr, ct]) == pytest.approx(3.6) and coarser_spacing([ct]) == pytest.approx(3.0)
    assert context_mm_of({"context_mm": 3.6}) == 3.6 and context_mm_of({"context_mm": None}) is None
    assert context_mm_of({}) is None  # checkpoints from before the key: adjacent slices


def test_the_dataset_reads_each_case_at_its_own_slice_spacing(tiny_phantom):
    for dom, spacing in (("ct", 3.0), ("mr", 3.6)):
        ds = SliceDataset(tiny_phantom[dom], context=1, context_mm=3.6)
        assert ds.context_mm == 3.6
        first = PreparedDataset(tiny_phantom[dom]).case("1")["image"]
        n = len(first)
        np.testing.assert_allclose(ds.images[:n].numpy(), with_context(first, 1, 3.6 / spacing), atol=1e-6)
    # the coarser domain reads its adjacent slices exactly; no context: no distance
    assert torch.equal(SliceDataset(tiny_phantom["mr"], context=1, context_mm=3.6).images,
                       SliceDataset(tiny_phantom["mr"], context=1).images)
    assert SliceDataset(tiny_phantom["ct"], context_mm=3.6).context_mm is None


def test_context_spacing_is_a_checked_setting():
    assert build_config("cpu").data.context_spacing == "coarser"  # the recipe (thirty-first round)
    assert build_config("cpu-plain").data.context_spacing == "slices"
    assert build_config("cpu-plain", sets=["data.context=1", "data.context_spacing=coarser"]).data.context_spacing == "coarser"
    with pytest.raises(ConfigError, match="data.context is 0"):
        build_config("cpu", sets=["data.context=0"])
    with pytest.raises(ConfigError, match="context_spacing"):
        build_config("cpu", sets=["data.context=1", "data.context_spacing=mm"])


def test_drop_context_keeps_or_repeats_the_middle_slice_and_always_draws_once():
    stack = torch.arange(27, dtype=torch.float32).reshape(3, 3, 3)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(drop_context(stack, 0.0, g), stack)
    out = drop_context(stack, 1.0, g)
    assert torch.equal(out, stack[1].expand(3, 3, 3)) and torch.equal(stack[0], torch.arange(9.).reshape(3, 3))
    one = stack[1:2]
    assert torch.equal(drop_context(one, 1.0, g), one)  # a lone slice has nothing to drop
    # the stream advances by one draw whatever the outcome
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    drop_context(stack, 0.0, a), drop_context(stack, 1.0, b)
    assert torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))
