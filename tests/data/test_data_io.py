import nibabel as nib
import numpy as np
import pytest

from mpscl.data import DataError, read_nifti, write_label_nifti


def test_read_3d_keeps_array_order_spacing_and_affine(tmp_path, h):
    arr = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    aff = np.array([[0, 0, 3.0, 10], [0, -1.5, 0, 20], [1.5, 0, 0, 30], [0, 0, 0, 1]])
    p = h.save_nifti(tmp_path / "a.nii.gz", arr, aff)
    v = read_nifti(p)
    assert v.data.dtype == np.float32 and v.data.shape == (2, 3, 4)
    assert np.array_equal(v.data, arr.astype(np.float32))  # no reorientation
    assert v.spacing == pytest.approx((1.5, 1.5, 3.0))
    assert np.allclose(v.affine, aff)


def test_2d_becomes_one_slice_and_4d_singleton_is_squeezed(tmp_path, h):
    v2 = read_nifti(h.save_nifti(tmp_path / "s.nii.gz", np.ones((5, 4)), np.diag([2, 3, 1, 1.0])))
    assert v2.data.shape == (5, 4, 1) and v2.spacing == pytest.approx((2, 3, 1))
    v4 = read_nifti(h.save_nifti(tmp_path / "f.nii.gz", np.ones((5, 4, 3, 1))))
    assert v4.data.shape == (5, 4, 3)


def test_4d_with_frames_is_refused(tmp_path, h):
    p = h.save_nifti(tmp_path / "t.nii.gz", np.ones((5, 4, 3, 2)))
    with pytest.raises(DataError, match=r"t\.nii\.gz.*3D"):
        read_nifti(p)


@pytest.mark.parametrize("bad,what", [(np.nan, "1 NaN, 0 Inf"), (np.inf, "0 NaN, 1 Inf")])
def test_non_finite_voxels_are_refused(tmp_path, h, bad, what):
    arr = np.zeros((3, 3, 2))
    arr[1, 1, 1] = bad
    p = h.save_nifti(tmp_path / "nan.nii.gz", arr)
    with pytest.raises(DataError, match=rf"nan\.nii\.gz.*{what}"):
        read_nifti(p)


def test_truncated_corrupt_missing_and_empty_files_name_the_file(tmp_path, h):
    good = h.save_nifti(tmp_path / "g.nii.gz", np.random.default_rng(0).random((20, 20, 10)))
    data = good.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti" * 40)
    raw = h.save_nifti(tmp_path / "r.nii", np.ones((20, 20, 10)))
    (tmp_path / "cut.nii").write_bytes(raw.read_bytes()[:1000])
    for name in ("cut.nii.gz", "junk.nii.gz", "cut.nii", "missing.nii.gz"):
        with pytest.raises(DataError, match=name.replace(".", r"\.")):
            read_nifti(tmp_path / name)
    nib.save(nib.Nifti1Image(np.zeros((0, 3, 3), np.float32), np.eye(4)), str(tmp_path / "e.nii.gz"))
    with pytest.raises(DataError, match=r"e\.nii\.gz.*empty"):
        read_nifti(tmp_path / "e.nii.gz")


def test_write_label_uses_reference_geometry(tmp_path, h):
    aff = np.array([[0, 0, 3.0, 10], [0, -1.5, 0, 20], [1.5, 0, 0, 30], [0, 0, 0, 1]])
    ref = h.save_nifti(tmp_path / "img.nii.gz", np.random.default_rng(1).random((4, 5, 6)), aff)
    lab = np.zeros((4, 5, 6), np.int64)
    lab[1, 2, 3] = 820
    out = write_label_nifti(tmp_path / "sub" / "pred.nii.gz", lab, ref)
    img = nib.load(str(out))
    assert np.allclose(img.affine, aff)
    assert img.get_data_dtype() == np.int16  # 820 does not fit uint8
    assert np.array_equal(np.asarray(img.dataobj), lab)
    small = write_label_nifti(tmp_path / "p2.nii", (lab > 0).astype(np.int64), read_nifti(ref))
    assert nib.load(str(small)).get_data_dtype() == np.uint8
    with pytest.raises(DataError, match=r"bad\.nii\.gz.*differs from the reference"):
        write_label_nifti(tmp_path / "bad.nii.gz", lab[:3], ref)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["pred.nii.gz"]  # no temp left
