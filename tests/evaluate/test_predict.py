import nibabel as nib
import numpy as np
import pytest

from mpscl.evaluate import EvaluateError, predict_files
from mpscl.evaluate.predict import checkpoint_axis

from evaluate_helpers import LABEL_VALUES, blob_labels


def _ids(shape):
    c = [s // 2 for s in shape]
    r = [max(2, s // 3) for s in shape]
    ids = blob_labels(shape, [c, [v // 3 for v in c], [min(s - 2, v + v // 2) for s, v in zip(shape, c)]],
                      [r, [max(2, v // 2) for v in r], [max(2, v // 2) for v in r]])
    ids[0, 0, :] = 3  # make sure p99.5 = 3 (three is the top class) even if blob 3 is small
    return ids


def _write_image(path, ids, affine, scaled=False):
    """Image intensities are the class ids (so normalisation maps them to the dummy's code)."""
    if scaled:  # int16 on disk with slope/inter: the reader must apply them, the writer reset them
        raw = ((ids.astype(np.float64) * 100 + 40) / 2).astype(np.int16)
        img = nib.Nifti1Image(raw, affine)
        img.header.set_slope_inter(2.0, -40.0)
    else:
        img = nib.Nifti1Image(ids.astype(np.float32), affine)
    img.header["descrip"] = b"test image"
    nib.save(img, path)
    return path


def _affine(zooms):
    a = np.diag(list(zooms) + [1.0])
    a[:3, 3] = [-12.5, 40.0, 7.25]
    a[0, 1] = 0.3  # not axis-aligned
    return a


def test_geometry_round_trip_and_raw_label_values(tmp_path, fake_checkpoint):
    ids = _ids((16, 16, 7))  # in-plane = the model size: exact
    src = _write_image(tmp_path / "ct_1.nii.gz", ids, _affine((0.7, 0.8, 2.5)))
    out = predict_files(fake_checkpoint["path"], [src], tmp_path / "pred", device="cpu", progress=False)
    assert out == [tmp_path / "pred" / "ct_1.nii.gz"]
    ref, got = nib.load(src), nib.load(out[0])
    assert got.shape == ref.shape
    np.testing.assert_allclose(got.affine, ref.affine)
    assert got.header.get_zooms() == ref.header.get_zooms()
    assert np.issubdtype(got.get_data_dtype(), np.integer)
    labels = np.asarray(got.dataobj)
    np.testing.assert_array_equal(labels, np.asarray(LABEL_VALUES)[ids])
    assert set(np.unique(labels)) == {0, 200, 500, 600}


def test_cli_predict_with_test_time_flips(tmp_path, fake_checkpoint):
    from mpscl.cli import main
    ids = _ids((16, 16, 7))
    src = _write_image(tmp_path / "ct_1.nii.gz", ids, _affine((0.7, 0.8, 2.5)))
    assert main(["predict", "--checkpoint", str(fake_checkpoint["path"]), str(src), "-o", str(tmp_path / "pred"),
                 "--device", "cpu", "--tta"]) in (0, None)
    labels = np.asarray(nib.load(tmp_path / "pred" / "ct_1.nii.gz").dataobj)
    np.testing.assert_array_equal(labels, np.asarray(LABEL_VALUES)[ids])  # pixelwise dummy: unchanged


@pytest.mark.parametrize("augment,flag,expect", [(True, None, True), (False, None, False), (None, None, False),
                                                  (True, "--no-tta", False), (False, "--tta", True)])
def test_predict_uses_flips_when_the_checkpoint_was_trained_on_them(tmp_path, fake_checkpoint, monkeypatch,
                                                                    augment, flag, expect):
    import mpscl.evaluate.predict as predict_module
    from mpscl.cli import main
    if augment is not None:  # None: an older checkpoint whose config has no data.augment
        fake_checkpoint["ckpt"]["config"]["data"]["augment"] = augment
    seen = []
    real = predict_module.predict_volume
    monkeypatch.setattr(predict_module, "predict_volume", lambda *a, **k: seen.append(k["tta"]) or real(*a, **k))
    src = _write_image(tmp_path / "ct_1.nii.gz", _ids((16, 16, 3)), _affine((0.7, 0.8, 2.5)))
    args = ["predict", "--checkpoint", str(fake_checkpoint["path"]), str(src), "-o", str(tmp_path / "pred"),
            "--device", "cpu"] + ([flag] if flag else [])
    assert main(args) in (0, None)
    assert seen == [expect]
    # the Python API resolves the same way; an explicit choice wins
    seen.clear()
    predict_files(fake_checkpoint["path"], [src], tmp_path / "api", device="cpu", progress=False)
    predict_files(fake_checkpoint["path"], [src], tmp_path / "off", device="cpu", progress=False, tta=False)
    assert seen == [bool(augment), False]


def test_cli_predict_keeps_the_largest_component(tmp_path, fake_checkpoint):
    from mpscl.cli import main
    from mpscl.evaluate.postprocess import keep_largest_component
    ids = _ids((16, 16, 7))  # the row of class 3 at [0, 0, :] is an island apart from its blob
    src = _write_image(tmp_path / "ct_1.nii.gz", ids, _affine((0.7, 0.8, 2.5)))
    assert main(["predict", "--checkpoint", str(fake_checkpoint["path"]), str(src), "-o", str(tmp_path / "pred"),
                 "--device", "cpu", "--largest-component"]) in (0, None)
    labels = np.asarray(nib.load(tmp_path / "pred" / "ct_1.nii.gz").dataobj)
    expect = keep_largest_component(ids, len(LABEL_VALUES))
    assert not np.array_equal(expect, ids) and (expect[0, 0, :] == 0).all()
    np.testing.assert_array_equal(labels, np.asarray(LABEL_VALUES)[expect])


def test_resized_other_axis_and_scaled_input(tmp_path, fake_checkpoint):
    fake_checkpoint["ckpt"]["axis"] = 1  # the model was trained on slices along axis 1
    ids = _ids((22, 5, 19))
    src = _write_image(tmp_path / "mr.nii", ids, _affine((1.1, 3.0, 0.9)), scaled=True)
    np.testing.assert_allclose(nib.load(src).get_fdata(), ids * 100.0)  # slope/inter applied on read
    out = predict_files(fake_checkpoint["path"], [src], tmp_path / "seg.nii.gz", device="cpu", progress=False)
    got = nib.load(out[0])
    assert out[0] == tmp_path / "seg.nii.gz" and got.shape == ids.shape
    np.testing.assert_allclose(got.affine, nib.load(src).affine)
    slope, inter = got.header.get_slope_inter()
    assert slope in (None, 1.0) and inter in (None, 0.0)  # the input's scaling was not copied
    labels = np.asarray(got.dataobj)
    assert set(np.unique(labels)) <= set(LABEL_VALUES)
    assert (labels == np.asarray(LABEL_VALUES)[ids]).mean() > 0.85  # resized 22x19 <-> 16x16


def test_overwrite_is_refused_unless_asked(tmp_path, fake_checkpoint):
    ids = _ids((16, 16, 4))
    a = _write_image(tmp_path / "a.nii.gz", ids, _affine((1, 1, 1)))
    b = _write_image(tmp_path / "b.nii.gz", ids[::-1].copy(), _affine((1, 1, 1)))
    outdir = tmp_path / "out"
    paths = predict_files(fake_checkpoint["path"], [a, b], outdir, device="cpu", progress=False)
    assert [p.name for p in paths] == ["a.nii.gz", "b.nii.gz"]
    before = paths[0].read_bytes()
    with pytest.raises(EvaluateError, match="overwrite"):
        predict_files(fake_checkpoint["path"], [a], outdir, device="cpu", progress=False)
    assert paths[0].read_bytes() == before
    predict_files(fake_checkpoint["path"], [a], outdir, device="cpu", overwrite=True, progress=False)
    with pytest.raises(EvaluateError, match="replace its input"):
        predict_files(fake_checkpoint["path"], [a], tmp_path, device="cpu", overwrite=True, progress=False)
    with pytest.raises(EvaluateError, match="exactly one input"):
        predict_files(fake_checkpoint["path"], [a, b], tmp_path / "x.nii.gz", device="cpu", progress=False)
    with pytest.raises(EvaluateError, match="no such input"):
        predict_files(fake_checkpoint["path"], [tmp_path / "missing.nii.gz"], outdir, device="cpu", progress=False)
    assert not list(outdir.glob(".*"))  # no temp files left behind


def test_checkpoint_axis():
    assert checkpoint_axis({"config": {}}) == 2
    assert checkpoint_axis({"config": {"data": {"axis": 0}}}) == 0
    assert checkpoint_axis({"axis": 1, "config": {"data": {"axis": 0}}}) == 1


def test_a_plane_checkpoint_reorients_each_volume_and_writes_labels_on_the_stored_grid(
        tmp_path, fake_checkpoint, monkeypatch):
    """A volume stored axial-axis-first and flipped (as another scanner writes it) is cut in
    the checkpoint's plane and its labels come back on its own grid, voxel for voxel."""
    import mpscl.evaluate.predict as pred
    fake_checkpoint["ckpt"]["plane"] = "axial"
    ras = _ids((16, 16, 7))  # in-plane 16 x 16 = the model size: exact
    stored = np.ascontiguousarray(np.transpose(ras, (2, 0, 1))[::-1, :, ::-1])
    affine = np.zeros((4, 4))
    affine[0, 1], affine[1, 2], affine[2, 0], affine[3, 3] = 0.7, -0.8, -2.5, 1.0
    affine[1, 3], affine[2, 3] = 0.8 * 15, 2.5 * 6
    src = _write_image(tmp_path / "ct_9.nii.gz", stored, affine)
    seen = []
    real = pred.predict_volume
    monkeypatch.setattr(pred, "predict_volume", lambda model, slices, **kw: seen.append(slices.shape) or real(
        model, slices, **kw))
    out = predict_files(fake_checkpoint["path"], [src], tmp_path / "pred", device="cpu", progress=False)
    assert seen == [(7, 16, 16)]  # seven axial slices, not 16 stored ones
    got = nib.load(out[0])
    np.testing.assert_allclose(got.affine, affine)
    np.testing.assert_array_equal(np.asarray(got.dataobj), np.asarray(LABEL_VALUES)[stored])
    # a stored axis instead (an explicit axis turns the plane off): 16 slices of 7 x 16, resized
    seen.clear()
    predict_files(fake_checkpoint["path"], [src], tmp_path / "pred2", device="cpu", axis=1, progress=False)
    assert seen == [(16, 16, 16)]
    with pytest.raises(EvaluateError, match="axis or a plane, not both"):
        predict_files(fake_checkpoint["path"], [src], tmp_path / "p3", device="cpu", axis=0, plane="axial",
                      progress=False)
    with pytest.raises(EvaluateError, match="plane must be one of"):
        predict_files(fake_checkpoint["path"], [src], tmp_path / "p3", device="cpu", plane="oblique",
                      progress=False)
