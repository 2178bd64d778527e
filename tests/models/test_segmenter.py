"""DeepLabv2 segmenter: the paper's shapes, input mapping, parameter groups, bf16/channels_last."""
import pytest
import torch

from mpscl.config import ModelConfig
from mpscl.models import Segmenter, build_segmenter
from mpscl.models.deeplabv2 import CAFFE_MEAN_BGR, ASPPClassifier


@pytest.mark.slow
def test_resnet101_paper_shapes():
    torch.manual_seed(0)
    model = Segmenter(5).eval()  # resnet101, width 64, multi-level, caffe input
    assert model.feature_dim == 2048
    assert model.aux_head.branches[0].in_channels == 1024
    assert model.main_head.branches[0].in_channels == 2048
    with torch.no_grad():
        feats, aux, main = model(torch.rand(1, 1, 256, 256) * 2 - 1)
    assert feats.shape == (1, 2048, 33, 33)
    assert aux.shape == (1, 5, 256, 256) and main.shape == (1, 5, 256, 256)
    assert torch.isfinite(main).all() and torch.isfinite(aux).all()


@pytest.mark.parametrize("backbone,fdim", [("resnet18", 64), ("resnet34", 64), ("resnet50", 256)])
def test_small_backbones(backbone, fdim):
    model = Segmenter(3, backbone, width=8, input_mode="plain").eval()
    with torch.no_grad():
        feats, aux, main = model(torch.zeros(2, 1, 96, 80))
    assert model.feature_dim == fdim
    assert feats.shape == (2, fdim, 13, 11)
    assert aux.shape == main.shape == (2, 3, 96, 80)


def test_single_level_has_no_aux():
    model = Segmenter(3, "resnet18", width=8, multi_level=False)
    assert model.aux_head is None
    _, aux, main = model(torch.zeros(1, 1, 64, 64))
    assert aux is None and main.shape == (1, 3, 64, 64)


def test_caffe_input_mapping():
    model = Segmenter(2, "resnet18", width=8, input_mode="caffe")
    x = torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3)
    y = model.adapt_input(x)
    mean = torch.tensor(CAFFE_MEAN_BGR)
    assert y.shape == (1, 3, 1, 3)
    torch.testing.assert_close(y[0, :, 0, 0], 0.0 - mean)
    torch.testing.assert_close(y[0, :, 0, 1], 127.5 - mean)
    torch.testing.assert_close(y[0, :, 0, 2], 255.0 - mean)
    assert abs(y[0, 0, 0, 0].item() + 104.00699) < 1e-4  # channel 0 is B


def test_plain_input_mapping():
    model = Segmenter(2, "resnet18", width=8, input_mode="plain")
    x = torch.rand(2, 1, 4, 4) * 2 - 1
    torch.testing.assert_close(model.adapt_input(x), x.repeat(1, 3, 1, 1))
    stack = torch.rand(2, 3, 4, 4) * 2 - 1  # a slice with its neighbours (data.context 1) keeps them
    torch.testing.assert_close(model.adapt_input(stack), stack)
    with pytest.raises(ValueError, match="B,1,H,W"):
        model.adapt_input(torch.zeros(1, 2, 4, 4))


def test_aspp_sums_all_four_branches():
    head = ASPPClassifier(4, 3)
    x = torch.randn(1, 4, 9, 9)
    torch.testing.assert_close(head(x), sum(conv(x) for conv in head.branches))
    assert [c.dilation[0] for c in head.branches] == [6, 12, 18, 24]


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_param_groups_cover_trainable_once(freeze_bn):
    model = Segmenter(4, "resnet18", width=8, freeze_bn=freeze_bn)
    groups = model.param_groups(0.01, 10.0)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"backbone", "heads"}
    assert by_name["backbone"]["lr"] == by_name["backbone"]["initial_lr"] == 0.01
    assert by_name["heads"]["lr"] == pytest.approx(0.1) and by_name["heads"]["initial_lr"] == pytest.approx(0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    heads = {id(p) for m in (model.aux_head, model.main_head) for p in m.parameters()}
    assert {id(p) for p in by_name["heads"]["params"]} == heads
    n_frozen = sum(1 for p in model.parameters() if not p.requires_grad)
    assert (n_frozen > 0) == freeze_bn
    torch.optim.SGD(groups, lr=0.01, momentum=0.9)


def test_bf16_autocast_channels_last_close_to_fp32():
    torch.manual_seed(0)
    model = Segmenter(4, "resnet18", width=16, input_mode="plain").eval()
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        f32, _, ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            f16, aux, out = model(x.contiguous(memory_format=torch.channels_last))
    assert f16.dtype == torch.bfloat16
    assert out.dtype == aux.dtype == torch.float32  # logits upsampled in fp32
    rel = (out - ref).norm() / ref.norm()
    assert rel < 0.05, rel
    assert ((f16.float() - f32).norm() / f32.norm()) < 0.05
    model.train()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        feats, aux, main = model(x)
        loss = main.float().logsumexp(1).mean() + aux.float().logsumexp(1).mean() + feats.float().mean()
    loss.backward()
    assert model.main_head.branches[0].weight.grad is not None


def test_build_segmenter_honours_config():
    cfg = ModelConfig(backbone="resnet34", width=8, multi_level=False, input_mode="plain", batchnorm="trainable")
    model = build_segmenter(cfg, 3)
    assert model.backbone.depth == "resnet34" and model.backbone.width == 8
    assert model.aux_head is None and model.input_mode == "plain" and not model.backbone.freeze_bn
    assert model.init_report is None
    with pytest.raises(ValueError, match="input_mode"):
        Segmenter(3, "resnet18", width=8, input_mode="rgb")


def test_decoder_starts_as_no_decoder_then_learns_the_fine_grid():
    torch.manual_seed(3)
    plain = Segmenter(4, "resnet18", width=8, input_mode="plain", batchnorm="trainable")
    torch.manual_seed(3)
    dec = Segmenter(4, "resnet18", width=8, input_mode="plain", batchnorm="trainable", decoder=16)
    # built last: every other module drew the same weights, and its zero last conv adds 0
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(),
                                                 [v for k, v in dec.state_dict().items() if not k.startswith("decoder.")]))
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    (f0, a0, m0), (f1, a1, m1) = plain(x), dec(x)
    assert torch.equal(m0, m1) and torch.equal(a0, a1) and torch.equal(f0, f1)
    # layer1 at stride 4 (16x16 for 64 px), 16 + 8 channels fused; the decoder trains at the heads' rate
    assert dec.decoder.reduce_low[0].in_channels == 8 and dec.decoder.fuse[0].in_channels == 24
    groups = {g["name"]: g for g in dec.param_groups(0.01, head_mult=10.0)}
    assert {id(p) for p in dec.decoder.parameters()} <= {id(p) for p in groups["heads"]["params"]}
    opt = torch.optim.SGD(dec.param_groups(0.01), lr=0.01)
    y = torch.randint(0, 4, (2, 64, 64))
    torch.nn.functional.cross_entropy(dec(x)[2], y).backward()
    assert dec.decoder.classifier.weight.grad.abs().sum() > 0  # a zero conv still gets a gradient
    opt.step()
    _, _, m2 = dec(x)
    assert m2.shape == (2, 4, 64, 64) and not torch.equal(m2, plain(x)[2])


def test_decoder_from_the_config_and_through_a_checkpoint(tmp_path):
    from mpscl.config import build_config
    cfg = build_config("cpu", sets=["model.decoder=32", "model.width=8"])
    model = build_segmenter(cfg.model, 4)
    assert model.decoder is not None and model.decoder.classifier.in_channels == 32
    assert build_segmenter(build_config("cpu").model, 4).decoder is None  # off in every preset
    from mpscl.checkpoint import load_model, save_checkpoint
    torch.nn.init.normal_(model.decoder.classifier.weight)  # as if trained
    save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "config": cfg.to_dict(),
                                        "classes": ["bg", "a", "b", "c"], "label_values": [0, 1, 2, 3]})
    back, _ = load_model(tmp_path / "m.pt")  # evaluate/predict rebuild it from the stored config
    x = torch.rand(1, 1, 64, 64) * 2 - 1
    assert torch.equal(back(x)[2], model.eval()(x)[2])
