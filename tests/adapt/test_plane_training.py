"""Training on volumes cut in one anatomical plane (``mpscl prepare --plane``), and segmenting
volumes stored in another order with the checkpoint."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from mpscl.adapt.pipeline import train
from mpscl.adapt.trainer import Trainer, TrainingError
from mpscl.checkpoint import load_model
from mpscl.config import build_config
from mpscl.data import SliceDataset, prepare_dataset, write_phantom
from mpscl.evaluate.predict import predict_files

TINY = ["data.context=0", "data.context_spacing=slices",  # one slice in: data.context has its own tests
        "data.size=48", "data.batch_size=2", "train.iters=2", "train.warmup_iters=2",
        "train.log_every=1", "train.checkpoint_every=2", "train.threads=1", "train.amp=off"]


def test_the_domains_must_be_cut_in_one_plane(tiny_phantom, tmp_path):
    cfg = build_config("cpu", sets=TINY)
    src, trg = SliceDataset(tiny_phantom["mr"]), SliceDataset(tiny_phantom["ct"], labelled=False)
    trg.prepared.manifest["plane"] = "axial"  # as if only the target had been prepared with --plane
    with pytest.raises(TrainingError, match="stored-axis plane but target slices in the axial plane"):
        Trainer(cfg, "source-only", src, trg, tmp_path, device=torch.device("cpu"), progress=False)


@pytest.mark.slow
def test_a_plane_run_segments_a_volume_stored_in_another_order_alike(tmp_path):
    pats = write_phantom(tmp_path / "nifti", cases=2, seed=0, size=(48, 48, 16), log=None)
    data = {}
    for dom in ("mr", "ct"):
        data[dom] = tmp_path / dom
        prepare_dataset(pats[dom]["images"], pats[dom]["labels"], pats["classes"], data[dom], size=48,
                        plane="axial", log=lambda *a, **k: None)
    cfg = build_config("cpu", sets=TINY + ["train.iters=60"])  # long enough to segment something
    final = train(data["mr"], data["ct"], "source-only", cfg, tmp_path / "run", progress=False)
    assert load_model(final)[1]["plane"] == "axial"

    original = tmp_path / "nifti" / "ct" / "case1_image.nii.gz"
    img = nib.load(original)
    arr, aff = np.asarray(img.dataobj), img.affine
    # the same scan stored slice axis first and flipped along its first in-plane axis:
    # moved[k, a, j] = arr[n0 - 1 - a, j, k], with the affine that keeps every voxel in place
    moved = np.ascontiguousarray(np.transpose(arr, (2, 0, 1))[:, ::-1, :])
    voxel_map = np.array([[0, -1, 0, arr.shape[0] - 1], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(moved.astype(np.float32), aff @ voxel_map), other)
    a = predict_files(final, [original], tmp_path / "a", progress=False)[0]
    b = predict_files(final, [other], tmp_path / "b", progress=False)[0]
    got_a, got_b = np.asarray(nib.load(a).dataobj), np.asarray(nib.load(b).dataobj)
    assert got_b.shape == moved.shape and (got_a > 0).any()
    np.testing.assert_array_equal(np.transpose(got_a, (2, 0, 1))[:, ::-1, :], got_b)
