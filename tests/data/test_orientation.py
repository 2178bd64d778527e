"""Cutting volumes in one anatomical plane whatever their stored order (``--plane``)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from mpscl.data import DataError, PreparedDataset, prepare_dataset
from mpscl.data.orientation import (PLANES, canonical_spacing, from_canonical, orientation, plane_axis,
                                    to_canonical)

ZOOMS = (0.8, 1.1, 2.5)  # RAS voxel sizes of the reference volume


def stored_copy(arr, perm, flips, zooms=ZOOMS):
    """``arr`` (RAS order, voxel sizes ``zooms``) stored with its axes in order ``perm`` and
    the stored axes in ``flips`` reversed, with the affine that keeps every voxel's world
    position: the same scan as another scanner would write it."""
    stored = np.transpose(arr, perm)
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    for i, ras in enumerate(perm):
        affine[ras, i] = zooms[ras]
    for i in flips:
        stored = np.flip(stored, axis=i)
        ras = perm[i]
        affine[ras, 3] += affine[ras, i] * (arr.shape[ras] - 1)
        affine[ras, i] *= -1
    return np.ascontiguousarray(stored), affine


ORDERS = [(p, f) for p in itertools.permutations(range(3)) for f in [(), (0,), (1, 2), (0, 1, 2)]]


@pytest.mark.parametrize("perm, flips", ORDERS)
def test_every_stored_order_comes_back_to_the_same_canonical_array(perm, flips):
    ras = np.random.default_rng(0).random((5, 6, 7))
    stored, affine = stored_copy(ras, perm, flips)
    ornt = orientation(affine)
    assert np.array_equal(to_canonical(stored, ornt), ras)
    assert np.array_equal(from_canonical(ras, ornt), stored)
    stored_zooms = [ZOOMS[p] for p in perm]
    assert canonical_spacing(stored_zooms, ornt) == ZOOMS


def test_plane_axes_and_bad_planes():
    assert [plane_axis(p) for p in ("sagittal", "coronal", "axial")] == [0, 1, 2]
    with pytest.raises(DataError, match="plane must be one of"):
        plane_axis("oblique")
    from mpscl.cli import PLANE_CHOICES
    assert sorted(PLANE_CHOICES) == sorted(PLANES)


def _case(h, root, name, ras_image, ras_label, perm, flips):
    img, affine = stored_copy(ras_image, perm, flips)
    lab, _ = stored_copy(ras_label, perm, flips)
    h.save_nifti(root / f"img{name}.nii.gz", img, affine)
    h.save_nifti(root / f"img{name}_lab.nii.gz", lab.astype(np.int16), affine)


def test_prepare_in_a_plane_cuts_differently_stored_volumes_alike(tmp_path, h):
    rng = np.random.default_rng(1)
    image = rng.random((12, 10, 6)).astype(np.float32)
    label = np.zeros((12, 10, 6), np.int16)
    label[3:8, 2:6, 1:5] = 200
    label[5:7, 3:5, 2:4] = 500
    src = tmp_path / "src"
    src.mkdir()
    _case(h, src, "1", image, label, (0, 1, 2), ())  # RAS as stored
    _case(h, src, "2", image, label, (2, 0, 1), (0, 2))  # axial axis first, flipped
    pattern = (str(src / "img{case}.nii.gz"), str(src / "img{case}_lab.nii.gz"))

    man = prepare_dataset(*pattern, "200=MYO,500=LV", tmp_path / "axial", size=8, plane="axial", log=print)
    assert man["plane"] == "axial" and man["axis"] == 2
    ds = PreparedDataset(tmp_path / "axial")
    a, b = ds.case("1"), ds.case("2")
    assert np.array_equal(a["image"], b["image"]) and a["image"].shape == (6, 8, 8)
    assert np.array_equal(a["label"], b["label"]) and np.array_equal(a["label_orig"], b["label_orig"])
    assert a["meta"]["spacing"] == b["meta"]["spacing"] == list(ZOOMS)
    assert b["meta"]["orientation"] == [[2, -1], [0, 1], [1, -1]]
    # the labels (in canonical order) are the RAS label's class ids
    assert np.array_equal(b["label_orig"], (label == 200) * 1 + (label == 500) * 2)

    sag = prepare_dataset(*pattern, "200=MYO,500=LV", tmp_path / "sagittal", size=8, plane="sagittal",
                          log=print)
    assert sag["axis"] == 0 and PreparedDataset(tmp_path / "sagittal").case("2")["image"].shape == (12, 8, 8)
    # without a plane each volume is cut along its stored last axis: not alike
    prepare_dataset(*pattern, "200=MYO,500=LV", tmp_path / "stored", size=8, log=print)
    stored = PreparedDataset(tmp_path / "stored")
    assert stored.plane is None and stored.case("2")["image"].shape[0] == 10


def test_prepare_refuses_an_axis_and_a_plane_together(tmp_path, h):
    src = tmp_path / "src"
    src.mkdir()
    _case(h, src, "1", np.random.default_rng(2).random((6, 6, 4)), np.zeros((6, 6, 4), np.int16), (0, 1, 2), ())
    with pytest.raises(DataError, match="axis or a plane, not both"):
        prepare_dataset(str(src / "img{case}.nii.gz"), None, "200=MYO", tmp_path / "o", size=8, axis=0,
                        plane="axial", log=print)
    with pytest.raises(DataError, match="plane must be one of"):
        prepare_dataset(str(src / "img{case}.nii.gz"), None, "200=MYO", tmp_path / "o", size=8,
                        plane="short-axis", log=print)
    assert not (tmp_path / "o").exists()


def test_a_manifest_whose_plane_does_not_fit_its_axis_is_refused(tmp_path, h):
    import json
    src = tmp_path / "src"
    src.mkdir()
    h.save_nifti(src / "img1.nii.gz", np.random.default_rng(3).random((6, 6, 4)))
    prepare_dataset(str(src / "img{case}.nii.gz"), None, "200=MYO", tmp_path / "o", size=8, plane="axial",
                    log=print)
    manifest = tmp_path / "o" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["plane"] = "sagittal"
    manifest.write_text(json.dumps(m))
    with pytest.raises(DataError, match="plane 'sagittal' does not fit axis 2"):
        PreparedDataset(tmp_path / "o")
