"""Training, scoring and segmenting with slices and their neighbours (``data.context: 1``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mpscl.adapt.pipeline import train
from mpscl.adapt.trainer import Trainer, TrainingError
from mpscl.checkpoint import load_model
from mpscl.config import ConfigError, build_config
from mpscl.data import PreparedDataset, SliceDataset, read_nifti, with_context
from mpscl.data.context import slice_step
from mpscl.data.prepare import to_slices
from mpscl.evaluate import evaluate_checkpoint, predict_volume
from mpscl.evaluate.predict import predict_files
from resume_helpers import assert_resume_bit_identical

TINY = ["data.size=48", "data.batch_size=2", "train.iters=4", "train.warmup_iters=2",
        "train.log_every=1", "train.checkpoint_every=2", "train.threads=1", "train.amp=off"]


def test_context_is_a_checked_setting():
    # the recommended recipe reads neighbours at the coarser spacing; the paper and plain presets one slice
    cpu = build_config("cpu").data
    assert (cpu.context, cpu.context_spacing) == (1, "coarser")
    for preset in ("cpu-plain", "paper-mr2ct", "paper-ct2mr"):
        assert (build_config(preset).data.context, build_config(preset).data.context_spacing) == (0, "slices")
    assert build_config("cpu", sets=["data.context=1"]).data.context == 1
    with pytest.raises(ConfigError, match="data.context"):
        build_config("cpu", sets=["data.context=2"])


def test_the_datasets_must_carry_the_configured_context(tiny_phantom, tmp_path):
    cfg = build_config("cpu", sets=TINY + ["data.context=1"])
    src, trg = SliceDataset(tiny_phantom["mr"], context=1), SliceDataset(tiny_phantom["ct"], labelled=False)
    with pytest.raises(TrainingError, match="context 0 but data.context is 1"):
        Trainer(cfg, "source-only", src, trg, tmp_path, device=torch.device("cpu"), progress=False)


@pytest.mark.slow
def test_a_context_run_trains_scores_and_segments_volumes(tiny_phantom, tmp_path):
    cfg = build_config("cpu", sets=TINY + ["data.context=1"])
    final = train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", cfg, tmp_path / "run", progress=False)
    model, ckpt = load_model(final)
    assert ckpt["config"]["data"]["context"] == 1
    m = evaluate_checkpoint(final, tiny_phantom["ct"], tmp_path / "eval", progress=False)
    assert len(m["cases"]) == 3 and np.isfinite(m["summary"]["dice_mean"])
    # scoring fed each slice with its neighbours: what the network gives on the stacked volume
    case = PreparedDataset(tiny_phantom["ct"]).case("1")
    with torch.no_grad():
        direct = model(torch.from_numpy(with_context(case["image"], 1)))[-1].argmax(1).numpy()
    np.testing.assert_array_equal(predict_volume(model, case["image"], device="cpu", context=1), direct)
    # a NIfTI volume segmented in its own grid
    src = sorted((tiny_phantom["ct"].parent / "nifti" / "ct").glob("case1_image.nii.gz"))
    out = predict_files(final, src, tmp_path / "pred", progress=False)
    assert read_nifti(out[0]).data.shape == read_nifti(src[0]).data.shape


def test_the_datasets_must_place_neighbours_as_configured(tiny_phantom, tmp_path):
    cfg = build_config("cpu", sets=TINY + ["data.context=1", "data.context_spacing=coarser"])
    adjacent = [SliceDataset(tiny_phantom[d], context=1) for d in ("mr", "ct")]
    with pytest.raises(TrainingError, match="context_spacing is coarser"):
        Trainer(cfg, "source-only", *adjacent, tmp_path, device=torch.device("cpu"), progress=False)
    apart = SliceDataset(tiny_phantom["mr"], context=1, context_mm=3.6)
    with pytest.raises(TrainingError, match="source neighbours lie 3.6 mm apart but target ones None"):
        Trainer(cfg, "source-only", apart, adjacent[1], tmp_path, device=torch.device("cpu"), progress=False)


def test_coarser_falls_back_to_adjacent_slices_only_where_no_case_records_a_spacing(tiny_phantom, tmp_path):
    cfg = build_config("cpu", sets=TINY + ["data.context=1", "data.context_spacing=coarser"])
    adjacent = [SliceDataset(tiny_phantom[d], context=1) for d in ("mr", "ct")]
    for ds in adjacent:  # as the SIFA release's cases: no spacing anywhere
        for case in ds.prepared.manifest["cases"]:
            case.pop("spacing")
    t = Trainer(cfg, "source-only", *adjacent, tmp_path, device=torch.device("cpu"), progress=False)
    assert t.context_mm is None and t.state_dict()["context_mm"] is None


@pytest.mark.slow
def test_a_run_with_neighbours_at_the_coarser_spacing_records_it_and_uses_it(tiny_phantom, tmp_path):
    cfg = build_config("cpu", sets=TINY + ["data.context=1", "data.context_spacing=coarser"])
    final = train(tiny_phantom["mr"], tiny_phantom["ct"], "source-only", cfg, tmp_path / "run", progress=False)
    model, ckpt = load_model(final)
    assert ckpt["context_mm"] == pytest.approx(3.6)  # MR slices 3.6 mm apart, CT 3.0
    # scoring CT fed each slice with neighbours 1.2 of its slices away
    case = PreparedDataset(tiny_phantom["ct"]).case("1")
    step = slice_step(3.6, 3.0)
    with torch.no_grad():
        logits = model(torch.from_numpy(with_context(case["image"], 1, step)))[-1]
        adjacent = model(torch.from_numpy(with_context(case["image"], 1)))[-1]
    direct = logits.argmax(1).numpy()
    assert (logits - adjacent).abs().max() > 1e-3  # the distance reaches the network
    probs = predict_volume(model, case["image"], device="cpu", context=1, context_step=step, batch_size=5,
                           return_probs=True)
    np.testing.assert_allclose(probs, logits.softmax(1).numpy(), atol=1e-5)
    m = evaluate_checkpoint(final, tiny_phantom["ct"], tmp_path / "eval", cases="1", progress=False)
    assert len(m["cases"]) == 1
    # and a NIfTI volume read at its header's spacing: the same labels as the prepared case
    src = tiny_phantom["ct"].parent / "nifti" / "ct" / "case1_image.nii.gz"
    out = read_nifti(predict_files(final, [src], tmp_path / "pred", progress=False)[0]).data
    np.testing.assert_array_equal(to_slices(out, 2), np.asarray(ckpt["label_values"])[direct])


@pytest.mark.slow
def test_resume_is_bit_identical_with_context_and_gin(tiny_phantom, tmp_path):
    cfg = build_config("cpu", sets=TINY + ["train.iters=6"])  # the preset's neighbours: 3.6 mm apart here
    src = SliceDataset(tiny_phantom["mr"], augment=True, context=1, context_mm=3.6)
    trg = SliceDataset(tiny_phantom["ct"], labelled=False, augment=True, context=1, context_mm=3.6)

    def trainer(out):
        return Trainer(cfg, "advent", src, trg, out, device=torch.device("cpu"), progress=False)

    assert_resume_bit_identical(trainer, tmp_path, entries=("model", "disc_main"))


def test_context_dropout_needs_neighbours():
    assert build_config("cpu").data.context_dropout == 0.0  # off everywhere
    assert build_config("cpu", sets=["data.context_dropout=0.5"]).data.context_dropout == 0.5
    with pytest.raises(ConfigError, match="data.context_dropout"):
        build_config("cpu-plain", sets=["data.context_dropout=0.5"])
    with pytest.raises(ConfigError, match="data.context_dropout"):
        build_config("cpu", sets=["data.context_dropout=1.5"])


def test_context_dropout_replaces_some_training_stacks_by_their_middle_slice(tiny_phantom, tmp_path):
    def batches(p):
        cfg = build_config("cpu", sets=TINY + [f"data.context_dropout={p}", "appearance.gin=0"])
        src = SliceDataset(tiny_phantom["mr"], augment=True, context=1, context_mm=3.6)
        trg = SliceDataset(tiny_phantom["ct"], labelled=False, augment=True, context=1, context_mm=3.6)
        t = Trainer(cfg, "source-only", src, trg, tmp_path / str(p), device=torch.device("cpu"), progress=False)
        return [t._batch(d, dom, i, lab) for i in range(6)
                for d, dom, lab in ((src, "source", True), (trg, "target", False))]

    kept, half, every = batches(0.0), batches(0.5), batches(1.0)
    dropped = 0
    for (x0, y0), (xh, yh), (x1, y1) in zip(kept, half, every):
        # the labels and the middle channel never change: only the neighbours are replaced
        for x, y in ((xh, yh), (x1, y1)):
            assert (y is None and y0 is None) or torch.equal(y, y0)
            torch.testing.assert_close(x[:, 1], x0[:, 1], rtol=0, atol=0)
        # p = 1: every stack is its middle slice three times
        torch.testing.assert_close(x1, x0[:, 1:2].expand_as(x0), rtol=0, atol=0)
        for k in range(len(xh)):
            if torch.equal(xh[k], x0[k]):
                continue
            torch.testing.assert_close(xh[k], x1[k], rtol=0, atol=0)  # dropped: as with p = 1
            dropped += 1
    total = sum(len(x) for x, _ in half)
    assert 0 < dropped < total  # p = 0.5 drops some stacks and keeps others


@pytest.mark.slow
def test_resume_is_bit_identical_with_context_dropout_and_gin(tiny_phantom, tmp_path):
    cfg = build_config("cpu", sets=TINY + ["train.iters=6", "data.context_dropout=0.5"])
    src = SliceDataset(tiny_phantom["mr"], augment=True, context=1, context_mm=3.6)
    trg = SliceDataset(tiny_phantom["ct"], labelled=False, augment=True, context=1, context_mm=3.6)

    def trainer(out):
        return Trainer(cfg, "advent", src, trg, out, device=torch.device("cpu"), progress=False)

    assert_resume_bit_identical(trainer, tmp_path, entries=("model", "disc_main"))
