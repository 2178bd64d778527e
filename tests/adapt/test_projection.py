"""MPSCL's optional projection head (``mpscl.projection``, beyond the paper)."""
import json
import math

import pytest
import torch

from mpscl.adapt.networks import projection_head
from mpscl.adapt.pipeline import train
from mpscl.config import build_config
from resume_helpers import assert_resume_bit_identical

TINY = ["data.context=0", "data.context_spacing=slices",  # one slice in: data.context has its own tests
        "data.size=48", "data.batch_size=2", "train.iters=4", "train.warmup_iters=2",
        "train.log_every=1", "train.checkpoint_every=2", "train.threads=1"]


def test_head_is_off_by_default_and_maps_features_to_its_width():
    assert projection_head(build_config("cpu"), 5) is None
    cfg = build_config("cpu", sets=["mpscl.projection=32"])
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    head = projection_head(cfg, 5)
    after_build = torch.rand(3)
    torch.manual_seed(0)
    torch.nn.Conv2d(128, 128, 1), torch.nn.Conv2d(128, 32, 1)
    assert torch.equal(torch.rand(3), after_build) and not torch.equal(before, after_build)
    out = head(torch.rand(2, 128, 5, 5))  # cpu preset: ResNet-18 width 16 -> 128 channels
    assert out.shape == (2, 32, 5, 5)
    assert (out < 0).any()  # unlike the post-ReLU features, cosines can be negative


@pytest.mark.slow
def test_training_with_a_projection_head(tiny_phantom, tmp_path):
    cfg = build_config("cpu", sets=TINY + ["mpscl.projection=16"])
    final = train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", cfg, tmp_path / "run", progress=False)
    recs = [json.loads(l) for l in (tmp_path / "run" / "mpscl" / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["mpcl_src"]) and math.isfinite(r["mpcl_trg"]) for r in recs)
    ck = torch.load(final, weights_only=True)
    assert ck["prototypes"].shape == (5, 16) and ck["projector"] is not None and ck["opt_proj"] is not None
    # the segmenter's weights match a run without the head until the MPSCL stage
    off = build_config("cpu", sets=TINY)
    train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", off, tmp_path / "off", stage="warmup", progress=False)
    a = torch.load(tmp_path / "run" / "warmup" / "final.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "off" / "warmup" / "final.pt", weights_only=True)["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())


@pytest.mark.slow
def test_resume_is_bit_identical_with_a_projection_head(tiny_phantom, tmp_path):
    from mpscl.adapt.trainer import Trainer
    from mpscl.data import SliceDataset
    from mpscl.models import build_segmenter

    cfg = build_config("cpu", sets=TINY + ["train.iters=6", "mpscl.projection=16"])
    src, trg = SliceDataset(tiny_phantom["mr"], augment=True), SliceDataset(tiny_phantom["ct"], labelled=False)
    torch.manual_seed(0)
    protos = torch.randn(5, build_segmenter(cfg.model, 5).feature_dim)

    def trainer(out):
        return Trainer(cfg, "mpscl", src, trg, out, device=torch.device("cpu"), prototypes=protos, progress=False)

    ref = assert_resume_bit_identical(trainer, tmp_path, entries=("model", "projector", "prototypes"))
    assert ref["prototypes"].shape[1] == 16  # projected
