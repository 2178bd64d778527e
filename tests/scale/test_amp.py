"""bfloat16 autocast: losses, prototypes and metrics stay float32; a short bf16 run follows
the fp32 loss trajectory within what bf16's precision explains."""
from __future__ import annotations

import pytest
import torch

from mpscl.bench import speed as bench
from mpscl.adapt import steps
from mpscl.runtime import native_bf16, use_bf16
from mpscl.config import build_config

ITERS = 10
SETS = ["data.context=0", "data.context_spacing=slices",  # one slice in: data.context has its own tests
        "data.size=48", "model.width=8", "model.disc_width=16", "data.batch_size=2",
        f"train.iters={ITERS}", "train.device=cpu", "mpscl.threshold=0.02"]


def _run(mode, tmp_path, record=None):
    cfg = bench.mode_config(build_config("cpu", sets=SETS), mode)
    t = bench.build_trainer(cfg, torch.device("cpu"), tmp_path / mode, lr_scale=1.0)  # the preset's lr
    if record is not None:
        orig = t.backward

        def backward(terms, total):
            record.append({"terms": {k: v.dtype for k, v in terms.items()}, "total": total.dtype,
                           "prototypes": t.prototypes.dtype})
            return orig(terms, total)

        t.backward = backward
        t.model.register_forward_hook(
            lambda m, i, out: record.append({"features": out[0].dtype, "logits": out[2].dtype}))
    rows = []
    t.lr_offset, t.lr_total = 0, ITERS
    for _ in range(ITERS):
        row = t.train_iteration()
        row.pop("lr_factor")
        rows.append(row)
    return t, rows


def test_amp_modes_resolve():
    cpu = torch.device("cpu")
    assert use_bf16("off", cpu) is False
    assert use_bf16("bf16", cpu) is True
    assert use_bf16("auto", cpu) is native_bf16(cpu)
    cfg = build_config("cpu")
    assert (cfg.train.amp, cfg.train.channels_last) == ("auto", True)
    fp32 = bench.mode_config(cfg, "fp32")
    assert (fp32.train.amp, fp32.train.channels_last) == ("off", False)
    assert bench.mode_config(cfg, "bf16").train.amp == "bf16"


@pytest.mark.slow
def test_bf16_run_stays_close_to_fp32_and_keeps_losses_float32(tmp_path):
    """10 MPSCL iterations (tiny model, fixed seed and data) in fp32 and in forced bf16.

    Tolerance: bf16 keeps 8 significant bits, unit roundoff u = 2^-8 ~ 0.39%. Under autocast
    the convolutions take bf16-rounded inputs and weights (relative error ~u each) and
    accumulate in float32; through the ~10 layers of the network these independent errors
    add up like a random walk to ~sqrt(10)*u ~ 1.2% on a logit or feature, and a loss that
    averages thousands of pixels inherits at most that. The two runs then apply slightly
    different updates, so the gap grows with the iterations. We allow 2% (~5u) on the
    first iteration (same weights, only rounding differs) and 5% (~13u) anywhere on the
    10-iteration trajectory, for every loss term; 1% on the trajectory's mean. Measured on
    Cascade Lake: at most 1.5% (seg_src, late iterations), <0.5% for every other term. A
    loss computed in bf16 instead (a sum over 10^4 pixels with 8-bit significands) or
    a broken autocast path shows up as differences far beyond that.
    """
    record = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # fast on a busy machine, and the same summation order each run
    try:
        t32, rows32 = _run("fp32", tmp_path)
        t16, rows16 = _run("bf16", tmp_path, record)
    finally:
        torch.set_num_threads(threads)
    assert t16.use_amp and not t32.use_amp
    assert t16.memory_format == torch.channels_last

    # autocast really ran the network in bf16, while losses and prototypes are float32
    fwd = [r for r in record if "features" in r]
    assert fwd and all(r["features"] == torch.bfloat16 for r in fwd)
    assert all(r["logits"] == torch.float32 for r in fwd)  # upsampled outside autocast
    bwd = [r for r in record if "terms" in r]
    assert len(bwd) == ITERS
    for r in bwd:
        assert set(r["terms"].values()) == {torch.float32}, r
        assert r["total"] == torch.float32 and r["prototypes"] == torch.float32
    assert t16.prototypes.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in t16.model.parameters())

    terms = [k for k in rows32[0] if k not in ("selected",)]  # selected: a count, discrete
    assert {"seg_src", "mpcl_src", "mpcl_trg", "adv"} <= set(terms)
    for k in terms:
        a = torch.tensor([r[k] for r in rows32], dtype=torch.float64)
        b = torch.tensor([r[k] for r in rows16], dtype=torch.float64)
        rel = (a - b).abs() / a.abs().clamp_min(1e-6)
        assert rel[0] < 0.02, (k, rel.tolist())
        assert rel.max() < 0.05, (k, rel.tolist())
        assert rel.mean() < 0.01, (k, rel.tolist())
    # and the runs did move: a trajectory, not ten copies of the first value
    seg = [r["seg_src"] for r in rows32]
    assert max(seg) - min(seg) > 0.05


def test_inference_probabilities_are_float32_under_bf16():
    """Evaluation runs the network under bf16 autocast when asked, but the probabilities
    that argmax, Dice and ASSD see are float32."""
    from mpscl.evaluate.inference import predict_volume
    from mpscl.models import build_segmenter
    cfg = build_config("cpu", sets=["model.width=8"])
    model = build_segmenter(cfg.model, 3)
    slices = torch.rand(3, 32, 32) * 2 - 1
    probs = predict_volume(model, slices, device="cpu", amp=True, return_probs=True)
    ref = predict_volume(model, slices, device="cpu", amp=False, return_probs=True)
    assert probs.dtype == ref.dtype == torch.zeros(0).numpy().dtype  # float32
    assert abs(probs.sum(axis=1) - 1).max() < 1e-5
    assert abs(probs - ref).max() < 0.05  # bf16 logits, float32 softmax
