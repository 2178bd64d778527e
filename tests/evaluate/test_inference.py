import numpy as np
import pytest
import torch

from mpscl.evaluate import predict_volume
from mpscl.evaluate.inference import resolve_device

from evaluate_helpers import DummySegmenter, encode


def test_every_slice_is_predicted_with_a_remainder_batch():
    # 33 slices, batch 32: the authors' floor(D/32) loop would drop the last slice
    ids = np.full((33, 16, 16), 2, np.uint8)
    ids[:, 4:8, 4:8] = 1
    ids[-1] = 3  # the last slice is different from all others
    model = DummySegmenter()
    out = predict_volume(model, encode(ids), batch_size=32, device="cpu")
    assert out.shape == (33, 16, 16) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, ids)
    assert model.calls == 2  # 32 + 1
    assert (out[-1] == 3).all()


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_out_shape_moves_the_slice_axis_back_exactly(axis):
    rng = np.random.default_rng(axis)
    shape = [16, 16, 16]
    shape[axis] = 5
    orig = rng.integers(0, 4, shape).astype(np.uint8)  # no structure: any transpose would show
    slices = np.moveaxis(orig, axis, 0)
    out = predict_volume(DummySegmenter(), encode(slices), batch_size=2, device="cpu",
                         out_shape=orig.shape, axis=axis)
    assert out.shape == orig.shape and out.flags.c_contiguous
    np.testing.assert_array_equal(out, orig)


def test_out_shape_moves_axis_back_and_resizes_probabilities():
    # original volume (X=20, Y=5 slices along axis 1, Z=24); slices resized to 16x16
    orig = np.zeros((20, 5, 24), np.uint8)
    orig[2:18, :, 3:21] = 1
    orig[6:14, :, 8:16] = 2
    slices = np.moveaxis(orig, 1, 0)  # (5, 20, 24)
    small = torch.nn.functional.interpolate(torch.as_tensor(slices[:, None].astype(np.float32)),
                                            size=(16, 16), mode="nearest")[:, 0].numpy()
    model = DummySegmenter()
    model.train()
    out = predict_volume(model, encode(small), batch_size=2, device="cpu", out_shape=orig.shape, axis=1)
    assert out.shape == orig.shape
    assert model.training  # training flag restored
    assert (out == orig).mean() > 0.85  # nearest down + bilinear up: differences at edges only
    # 2-D out_shape: slice-first result at the requested in-plane size
    out2 = predict_volume(model, encode(small), out_shape=(20, 24), device="cpu")
    np.testing.assert_array_equal(out2, np.moveaxis(out, 1, 0))
    probs = predict_volume(model, encode(small), out_shape=(20, 24), return_probs=True, device="cpu")
    assert probs.shape == (5, 4, 20, 24) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_test_time_flips_are_undone_and_averaged_by_hand():
    # a position-dependent model: logits [0, R] whatever the input, R = [[0, 2], [0, 2]]. The
    # four views give R, R flipped left-right (twice) and up-down (R's rows are equal), so each
    # pixel's foreground probability is (sigmoid(0) + sigmoid(2)) / 2
    class Ramp(torch.nn.Module):
        def forward(self, x):
            logits = torch.zeros(x.shape[0], 2, 2, 2)
            logits[:, 1] = torch.tensor([[0.0, 2.0], [0.0, 2.0]])
            return logits

    x = np.zeros((1, 2, 2), np.float32)
    plain = predict_volume(Ramp(), x, device="cpu", return_probs=True)[0, 1]
    np.testing.assert_allclose(plain, [[0.5, 1 / (1 + np.exp(-2))]] * 2, rtol=1e-6)
    tta = predict_volume(Ramp(), x, device="cpu", return_probs=True, tta=True)[0, 1]
    np.testing.assert_allclose(tta, np.full((2, 2), (0.5 + 1 / (1 + np.exp(-2))) / 2), rtol=1e-6)


def test_test_time_flips_leave_a_pixelwise_model_unchanged():
    # a pixelwise model commutes with flips, so flipping each view back gives the same
    # prediction on an asymmetric volume (a view not flipped back would move the structures)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 4, (3, 16, 12)).astype(np.uint8)
    model = DummySegmenter()
    probs = predict_volume(model, encode(ids), device="cpu", return_probs=True)
    with_tta = predict_volume(model, encode(ids), device="cpu", return_probs=True, tta=True)
    np.testing.assert_allclose(with_tta, probs, atol=1e-6)
    model.calls = 0
    np.testing.assert_array_equal(predict_volume(model, encode(ids), device="cpu", tta=True), ids)
    assert model.calls == 4  # one batch, four views


def test_input_size_resizes_slices_for_the_model_and_back():
    ids = np.zeros((3, 24, 24), np.uint8)
    ids[:, 4:20, 4:20] = 1

    class SizeCheck(DummySegmenter):
        def forward(self, x):
            assert x.shape[-2:] == (16, 16)
            return super().forward(x)

    out = predict_volume(SizeCheck(num_classes=2), encode(ids, 2), input_size=16, device="cpu")
    assert out.shape == (3, 24, 24)
    assert (out == ids).mean() > 0.85  # the dummy thresholds blurred edges: about 1 px lost


def test_bad_arguments():
    m = DummySegmenter()
    with pytest.raises(ValueError):
        predict_volume(m, np.zeros((4, 8), np.float32))
    with pytest.raises(ValueError):
        predict_volume(m, np.zeros((4, 8, 8), np.float32), out_shape=(8, 8, 5), axis=2)
    with pytest.raises(ValueError):
        predict_volume(m, np.zeros((4, 8, 8), np.float32), out_shape=(8, 8, 4))  # axis missing


def test_bare_logits_model_and_amp_on_cpu():
    class Bare(DummySegmenter):
        def forward(self, x):
            return super().forward(x)[2]

    ids = np.random.default_rng(0).integers(0, 4, (5, 8, 8)).astype(np.uint8)
    np.testing.assert_array_equal(predict_volume(Bare(), encode(ids), device="cpu", amp=True), ids)


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal needs a machine without CUDA")
def test_cuda_without_cuda_is_a_one_line_error_in_evaluate(capsys, tmp_path):
    from mpscl.cli import main
    from mpscl.runtime import DeviceError
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda")
    # the same refusal as train's, before any file is read
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--data", str(tmp_path),
                 "--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu():
    ids = np.random.default_rng(1).integers(0, 4, (7, 16, 16)).astype(np.uint8)
    np.testing.assert_array_equal(predict_volume(DummySegmenter(), encode(ids), device="cuda", batch_size=3),
                                  predict_volume(DummySegmenter(), encode(ids), device="cpu"))


class _PreviousSliceSegmenter(DummySegmenter):
    """Segments from the first input channel: with ``context`` 1, the slice before."""

    def forward(self, x):
        return super().forward(x[:, :1])


@pytest.mark.parametrize("tta", [False, True])
def test_context_feeds_each_slice_with_its_neighbours(tta):
    ids = np.arange(6, dtype=np.uint8)[:, None, None] % 4 * np.ones((1, 16, 16), np.uint8)  # slice s: class s % 4
    out = predict_volume(_PreviousSliceSegmenter(), encode(ids), batch_size=4, device="cpu", context=1, tta=tta)
    np.testing.assert_array_equal(out[:, 0, 0], [0, 0, 1, 2, 3, 0])  # slice s - 1, the first slice itself
    np.testing.assert_array_equal(predict_volume(_PreviousSliceSegmenter(), encode(ids), device="cpu"), ids)


def test_stacks_given_as_they_are_equal_the_stacks_made_from_the_slices():
    from mpscl.data import with_context
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 4, 3, padding=1)  # reads every channel, so the stacks matter
    slices = np.random.default_rng(5).uniform(-1, 1, (7, 12, 12)).astype(np.float32)
    made = predict_volume(net, slices, batch_size=3, device="cpu", context=1, context_step=1.0, return_probs=True)
    given = predict_volume(net, with_context(slices, 1), batch_size=3, device="cpu", context=1, return_probs=True)
    np.testing.assert_array_equal(made, given)
    other = with_context(slices, 1)[:, ::-1].copy()  # other neighbours: another answer
    assert not np.allclose(predict_volume(net, other, device="cpu", context=1, return_probs=True), given)
    with pytest.raises(ValueError, match="stacks"):
        predict_volume(net, with_context(slices, 2), device="cpu", context=1)
