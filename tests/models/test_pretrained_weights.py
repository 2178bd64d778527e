"""ImageNet initialisation: torchvision and caffe DeepLab layouts, strict checks, safe reading."""
import os

import pytest
import torch

from mpscl.config import ModelConfig
from mpscl.models import Segmenter, WeightsError, build_segmenter, load_imagenet_init


def _model(backbone="resnet18", width=8, seed=0):
    torch.manual_seed(seed)
    return Segmenter(3, backbone, width=width)


def _assert_backbones_equal(a, b):
    sa, sb = a.backbone.state_dict(), b.backbone.state_dict()
    for k in sa:
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(sa[k], sb[k]), k


def test_torchvision_layout_round_trip(tmp_path):
    src = _model(seed=1)
    sd = dict(src.backbone.state_dict())
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1000, 64), torch.randn(1000)
    path = tmp_path / "resnet18.pth"
    torch.save(sd, path)
    dst = _model(seed=2)
    report = load_imagenet_init(dst, path)
    _assert_backbones_equal(src, dst)
    assert {"fc.weight", "fc.bias"} <= set(report.skipped)
    assert "conv1.weight" in report.loaded and "layer4.1.bn2.running_var" in report.loaded


def test_caffe_deeplab_layout_round_trip(tmp_path):
    src = _model("resnet101", seed=1)
    sd = {f"Scale.{k}": v for k, v in src.backbone.state_dict().items()
          if not k.endswith("num_batches_tracked")}  # the caffe conversion has no counters
    for i, d in enumerate((6, 12, 18, 24)):
        sd[f"Scale.layer5.conv2d_list.{i}.weight"] = torch.randn(21, 256, 3, 3)
        sd[f"Scale.layer5.conv2d_list.{i}.bias"] = torch.randn(21)
    path = tmp_path / "DeepLab_resnet_pretrained.pth"
    torch.save({"state_dict": sd}, path)
    dst = _model("resnet101", seed=2)
    report = load_imagenet_init(dst, path)
    _assert_backbones_equal(src, dst)
    assert len(report.skipped) == 8 and "bn1.running_mean" in report.loaded


def test_safetensors_and_build_segmenter(tmp_path):
    from safetensors.torch import save_file
    src = _model(seed=1)
    path = tmp_path / "init.safetensors"
    save_file({k: v.contiguous() for k, v in src.backbone.state_dict().items()}, str(path))
    model = build_segmenter(ModelConfig(backbone="resnet18", width=8, imagenet_init=str(path)), 3)
    _assert_backbones_equal(src, model)
    assert model.init_report is not None and len(model.init_report.loaded) > 0


def test_unrelated_dict_is_refused_and_model_untouched(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3), "decoder.bias": torch.zeros(2)}, path)
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as err:
        load_imagenet_init(model, path)
    msg = str(err.value)
    assert str(path) in msg and "encoder.weight" in msg and "missing" in msg and "unexpected" in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_wrong_width_names_mismatched_keys(tmp_path):
    path = tmp_path / "w16.pth"
    torch.save(_model(width=16).backbone.state_dict(), path)
    with pytest.raises(WeightsError, match=r"shape mismatch .*conv1\.weight"):
        load_imagenet_init(_model(width=8), path)


def test_missing_file_and_non_tensor_content(tmp_path):
    with pytest.raises(WeightsError, match="no such weights file"):
        load_imagenet_init(_model(), tmp_path / "nope.pth")
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(WeightsError, match="state dict"):
        load_imagenet_init(_model(), path)


class _Payload:
    """Unpickling this would create ``marker`` (if anyone executed it)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_with_objects_is_refused_without_executing(tmp_path):
    marker = tmp_path / "executed.txt"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Payload(str(marker))}, path)
    assert not marker.exists()
    with pytest.raises(WeightsError, match="refused"):
        load_imagenet_init(_model(), path)
    assert not marker.exists()
