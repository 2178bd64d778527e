"""The paper presets as the authors ran them: ImageNet weights required, their input
convention, their schedule in a real run, and prototypes tied to their warm-up."""
import json
import math

import pytest
import torch

from mpscl.checkpoint import load_checkpoint, save_checkpoint
from mpscl.adapt.pipeline import train
from mpscl.adapt.provenance import StalePrototypes, prototypes_fit, warmup_record, weights_fingerprint
from mpscl.cli import main
from mpscl.config import build_config
from mpscl.models import Segmenter, WeightsError, build_segmenter
from mpscl.models.pretrained import RANDOM_INIT_REFUSED, settle_initialisation, weights_convention
from mpscl.models.resnet import ResNet

TINY = ["data.size=48", "data.batch_size=2", "train.iters=3", "train.warmup_iters=2",
        "train.log_every=1", "train.checkpoint_every=0", "train.threads=1"]


def fake_weights(path, kind="deeplab", width=8):
    """A ResNet-101 (``width`` wide) state dict in the DeepLab (``Scale.``-prefixed, with
    its ``layer5`` classifier, no counters) or torchvision layout (``fc``, counters)."""
    torch.manual_seed(7)
    sd = ResNet("resnet101", width=width, batchnorm="trainable").state_dict()
    if kind == "deeplab":
        sd = {f"Scale.{k}": v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
        sd["Scale.layer5.conv2d_list.0.weight"] = torch.zeros(21, 8 * width * 4, 3, 3)
    else:
        sd["fc.weight"], sd["fc.bias"] = torch.zeros(1000, 8 * width * 4), torch.zeros(1000)
    torch.save(sd, path)
    return path


@pytest.mark.parametrize("preset", ["paper-mr2ct", "paper-ct2mr"])
def test_paper_preset_without_weights_refuses_before_anything(tmp_path, capsys, preset):
    run = tmp_path / "run"
    rc = main(["train", "--source", str(tmp_path / "no-src"), "--target", str(tmp_path / "no-trg"),
               "--preset", preset, "--out", str(run), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "model.imagenet_init is not set" in err and "'Scale.'" in err and "torchvision" in err
    assert "--set model.allow_random_init=true" in err
    assert not run.exists()  # refused before any data, folder or network
    # the switch lets it through to the next check (here: the missing datasets)
    rc = main(["train", "--source", str(tmp_path / "no-src"), "--target", str(tmp_path / "no-trg"),
               "--preset", preset, "--out", str(run), "--device", "cpu", "--no-progress",
               "--set", "model.allow_random_init=true"])
    assert rc == 2 and "imagenet_init" not in capsys.readouterr().err


def test_cpu_preset_and_resumed_stages_need_no_weights():
    assert settle_initialisation(build_config("cpu").model).input_mode == "plain"
    paper = build_config("paper-mr2ct").model
    with pytest.raises(WeightsError, match="imagenet_init is not set"):
        settle_initialisation(paper)
    assert settle_initialisation(paper, fresh=False).input_mode == "caffe"  # from a warm-up checkpoint
    assert RANDOM_INIT_REFUSED.endswith("--set model.allow_random_init=true")


def test_input_convention_follows_the_weights(tmp_path):
    dl, tv = fake_weights(tmp_path / "dl.pth"), fake_weights(tmp_path / "tv.pth", "torchvision")
    assert weights_convention(dl) == "caffe" and weights_convention(tv) == "torchvision"
    ambiguous = {k: v for k, v in torch.load(tv).items() if not (k.startswith("fc.") or "num_batches" in k)}
    torch.save(ambiguous, tmp_path / "plain.pth")
    with pytest.raises(WeightsError, match="set model.input_mode to caffe"):
        weights_convention(tmp_path / "plain.pth")
    for path, mode in ((dl, "caffe"), (tv, "torchvision")):
        cfg = build_config("paper-mr2ct", sets=["model.width=8", f"model.imagenet_init={path}"]).model
        assert cfg.input_mode == "auto" and settle_initialisation(cfg).input_mode == mode
        assert build_segmenter(cfg, 3).input_mode == mode
    explicit = build_config("paper-mr2ct", sets=[f"model.imagenet_init={tv}", "model.input_mode=caffe"])
    assert settle_initialisation(explicit.model).input_mode == "caffe"  # an explicit choice wins
    # torchvision: [-1,1] -> [0,1], RGB, minus (0.485, 0.456, 0.406), over (0.229, 0.224, 0.225)
    m = Segmenter(2, "resnet18", width=8, input_mode="torchvision")
    x = m.adapt_input(torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1))
    assert x[0].flatten().tolist() == pytest.approx([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225])
    assert x[1, 0].item() == pytest.approx(2.2489083, abs=1e-6)  # (1 - 0.485) / 0.229
    # Caffe: 0-255 minus the BGR mean: about 50x the scale torchvision weights expect
    c = Segmenter(2, "resnet18", width=8, input_mode="caffe").adapt_input(torch.ones(1, 1, 1, 1))
    assert c[0, 0].item() == pytest.approx(255 - 104.00699)


def _log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_tiny_paper_preset_run_with_fake_deeplab_weights(phantom64, tmp_path, capsys):
    """--preset paper-mr2ct on CPU at 64x64: warm-up, prototypes and MPSCL, live BatchNorm,
    the authors' schedule in the logged learning rates."""
    weights = fake_weights(tmp_path / "deeplab.pth")
    run = tmp_path / "run"
    sets = ["data.size=64", "model.width=8", "data.batch_size=2", "train.iters=3",
            "train.warmup_iters=2", "train.log_every=1", "train.checkpoint_every=0",
            "train.threads=1", f"model.imagenet_init={weights}"]
    rc = main(["train", "--source", str(phantom64["mr"]), "--target", str(phantom64["ct"]),
               "--preset", "paper-mr2ct", "--out", str(run), "--device", "cpu", "--no-progress",
               *[a for s in sets for a in ("--set", s)]])
    assert rc == 0, capsys.readouterr().err
    warm, mp = _log(run / "warmup" / "log.jsonl"), _log(run / "mpscl" / "log.jsonl")
    base = 2.5e-4  # logged after each step with that step's LR: poly over train.iters = 3
    assert [r["lr"] for r in warm] == pytest.approx([base, base * (2 / 3) ** 0.9])
    assert [r["lr"] for r in mp] == pytest.approx([base, base * (2 / 3) ** 0.9, base * (1 / 3) ** 0.9])
    for r in warm + mp:
        assert all(math.isfinite(v) for v in r.values() if isinstance(v, float)), r
    assert {"mpcl_src", "mpcl_trg", "selected"} <= set(mp[-1])
    cfg_text = (run / "config.yaml").read_text()
    assert "input_mode: caffe" in cfg_text and "batchnorm: live" in cfg_text
    final = load_checkpoint(run / "final.pt")
    # live BatchNorm: running statistics moved away from the weights' during training
    start = {k[len("Scale."):]: v for k, v in torch.load(weights).items()}
    assert not torch.equal(final["model"]["backbone.bn1.running_mean"], start["bn1.running_mean"])
    # ... and the affine parameters did not (frozen)
    assert torch.equal(final["model"]["backbone.bn1.weight"], start["bn1.weight"])
    assert not torch.equal(final["model"]["backbone.conv1.weight"], start["conv1.weight"])
    protos = load_checkpoint(run / "prototypes.pt")
    warm_ckpt = load_checkpoint(run / "warmup" / "final.pt")
    assert protos["warmup_fingerprint"] == weights_fingerprint(warm_ckpt["model"])
    assert protos["warmup_iteration"] == 2


def _warmup(tiny_phantom, tmp_path):
    cfg = build_config("cpu", sets=TINY + ["model.width=8"])
    train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", cfg, tmp_path / "a", stage="warmup",
          progress=False)
    a = tmp_path / "a" / "warmup" / "final.pt"
    other = load_checkpoint(a)
    other["model"] = {k: (v + 0.05 if k == "backbone.conv1.weight" else v) for k, v in other["model"].items()}
    save_checkpoint(tmp_path / "b.pt", {k: v for k, v in other.items() if k not in ("format", "version")})
    return cfg, a, tmp_path / "b.pt"


def test_prototypes_are_recomputed_for_another_warmup(tiny_phantom, tmp_path):
    cfg, a, b = _warmup(tiny_phantom, tmp_path)
    run, logs = tmp_path / "run", []
    kw = dict(stage="prototypes", progress=False, log=logs.append)
    p = train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", cfg, run, init=a, **kw)
    first = load_checkpoint(p)
    assert first["from"] == str(a) and first["warmup_fingerprint"] == weights_fingerprint(load_checkpoint(a)["model"])
    train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", cfg, run, init=a, **kw)  # same warm-up: kept
    assert not any("recomputing" in line for line in logs)
    train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", cfg, run, init=b, **kw)  # another: recomputed
    second = load_checkpoint(p)
    assert any("recomputing" in line and str(b) in line for line in logs)
    assert second["from"] == str(b) and second["warmup_fingerprint"] != first["warmup_fingerprint"]
    assert not torch.equal(second["prototypes"], first["prototypes"])
    # once an MPSCL stage trained from them, another warm-up is refused, clearly
    (run / "mpscl").mkdir()
    (run / "mpscl" / "last.pt").write_bytes(b"")
    with pytest.raises(StalePrototypes, match="already trained from it. Use a new --out"):
        train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", cfg, run, init=a, **kw)


def test_prototypes_fit_rules(tmp_path):
    ckpt_a = {"iteration": 4, "model": {"w": torch.ones(3)}}
    ckpt_b = {"iteration": 4, "model": {"w": torch.tensor([1.0, 1.0, 1.0 + 2 ** -20])}}
    assert weights_fingerprint(ckpt_a["model"]) != weights_fingerprint(ckpt_b["model"])
    assert weights_fingerprint(ckpt_a["model"]) == weights_fingerprint({"w": torch.ones(3).clone()})
    path = tmp_path / "prototypes.pt"
    assert not prototypes_fit(path, tmp_path / "a.pt", ckpt_a)  # no file yet
    save_checkpoint(path, {"prototypes": torch.zeros(2, 3), **warmup_record(tmp_path / "a.pt", ckpt_a)})
    assert prototypes_fit(path, tmp_path / "moved.pt", ckpt_a)  # same weights, another path
    assert not prototypes_fit(path, tmp_path / "a.pt", ckpt_b, log=lambda s: None)
    # a file of an older version (no fingerprint) fits when it names the same warm-up
    save_checkpoint(path, {"prototypes": torch.zeros(2, 3), "from": str(tmp_path / "a.pt")})
    assert prototypes_fit(path, tmp_path / "a.pt", ckpt_b)
    assert not prototypes_fit(path, tmp_path / "other.pt", ckpt_b, log=lambda s: None)
