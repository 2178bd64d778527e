"""The same entry points with a real (tiny, untrained) checkpoint through the real load_model."""
import json

import nibabel as nib
import numpy as np
import pytest

from mpscl.checkpoint import save_checkpoint
from mpscl.config import Config
from mpscl.evaluate import evaluate_checkpoint, predict_files
from mpscl.models import build_segmenter

from evaluate_helpers import CLASSES, LABEL_VALUES, blob_labels, make_dataset


@pytest.fixture
def real_checkpoint(tmp_path):
    cfg = Config()
    cfg.model.backbone, cfg.model.width, cfg.model.input_mode = "resnet18", 8, "plain"
    cfg.data.size = 32
    model = build_segmenter(cfg.model, num_classes=len(CLASSES))
    path = tmp_path / "final.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg.to_dict(), "classes": CLASSES,
                           "label_values": LABEL_VALUES, "method": "source-only", "stage": "final",
                           "iteration": 0})
    return path


def test_evaluate_and_predict_with_a_real_checkpoint(tmp_path, real_checkpoint):
    lab = blob_labels((20, 20, 5), [(6, 6, 2), (13, 13, 2), (6, 14, 2)], [(4, 4, 2), (4, 4, 2), (3, 3, 2)])
    data = make_dataset(tmp_path / "data", {"1": (lab, (1.0, 1.0, 3.0))}, size=24)  # != model size 32
    res = evaluate_checkpoint(real_checkpoint, data, tmp_path / "eval", batch_size=2, device="cpu",
                              progress=False)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == res
    assert list(res["summary"]["per_class"]) == CLASSES[1:]

    img = nib.Nifti1Image(lab.astype(np.float32) * 50 + np.random.default_rng(0).normal(0, 5, lab.shape).astype(np.float32),
                          np.diag([1.0, 1.0, 3.0, 1.0]))
    nib.save(img, tmp_path / "in.nii.gz")
    out = predict_files(real_checkpoint, [tmp_path / "in.nii.gz"], tmp_path / "pred", device="cpu", progress=False)
    got = nib.load(out[0])
    assert got.shape == lab.shape and set(np.unique(np.asarray(got.dataobj))) <= set(LABEL_VALUES)


def test_a_checkpoint_loads_without_the_imagenet_file_it_started_from(tmp_path, real_checkpoint):
    """Evaluation machines need not hold the ImageNet weights named in the training config."""
    from mpscl.checkpoint import load_checkpoint, load_model
    ckpt = load_checkpoint(real_checkpoint)
    ckpt["config"]["model"]["imagenet_init"] = str(tmp_path / "gone" / "resnet101.pth")
    moved = tmp_path / "moved.pt"
    save_checkpoint(moved, ckpt)
    model, got = load_model(moved)
    assert got["config"]["model"]["imagenet_init"].endswith("resnet101.pth")
    for k, v in model.state_dict().items():
        assert (v == ckpt["model"][k]).all(), k
