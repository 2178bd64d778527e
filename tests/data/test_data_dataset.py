import json

import numpy as np
import pytest
import torch

from mpscl.data import (DataError, PreparedDataset, SliceDataset, from_slices, parse_case_spec,
                        prepare_dataset)


@pytest.fixture
def prepared(tmp_path, h):
    """Three cases of 6x6x2 whose image is a function of the label (1 MYO, 2 LV)."""
    src = tmp_path / "src"
    for case in ("1", "2", "3"):
        lab = np.zeros((6, 6, 2), np.int16)
        lab[0, :3, :] = 200  # an asymmetric pattern: flips/rotations are detectable
        lab[4, 4, :] = 500
        lab[int(case), 5, 0] = 500
        img = np.select([lab == 200, lab == 500], [10.0, 20.0], 0.0)
        h.save_nifti(src / f"c{case}.nii.gz", img)
        h.save_nifti(src / f"c{case}_seg.nii.gz", lab)
    prepare_dataset(str(src / "c{case}.nii.gz"), str(src / "c{case}_seg.nii.gz"), "200=MYO,500=LV",
                    tmp_path / "ds", size=6, log=lambda m: None)
    return tmp_path / "ds"


def test_parse_case_spec():
    assert parse_case_spec("6-45") == [str(i) for i in range(6, 46)]
    assert parse_case_spec("1,3,5-7") == ["1", "3", "5", "6", "7"]
    assert parse_case_spec(" 3 , 1-2, 3, ct_1003") == ["3", "1", "2", "ct_1003"]
    for bad, msg in (("7-5", "backwards"), ("1,,2", "empty item"), ("", "empty"),
                     ("a b", "neither")):
        with pytest.raises(DataError, match=msg):
            parse_case_spec(bad)


def test_prepared_dataset_api(prepared):
    ds = PreparedDataset(prepared)
    assert ds.classes == ["background", "MYO", "LV"] and ds.label_values == [0, 200, 500]
    assert ds.labelled and ds.case_ids == ["1", "2", "3"] and len(ds) == 3
    c = ds.case("2")
    assert c["image"].shape == (2, 6, 6) and c["image"].dtype == np.float32
    assert c["label"].dtype == np.uint8 and c["label_orig"].shape == (6, 6, 2)
    assert c["meta"]["axis"] == 2 and c["meta"]["slices"] == 2
    assert c["label_orig"][2, 5, 0] == 2 and c["label_orig"][0, 0, 1] == 1
    assert ds.select("2-3") == ["2", "3"] and ds.select("3,1") == ["1", "3"]
    assert ds.select("003") == ["3"] and ds.select(None) == ["1", "2", "3"]
    with pytest.raises(DataError, match=r"cases 4, 9 not in the dataset"):
        ds.select("3-4,9")
    with pytest.raises(DataError, match="no case '7'"):
        ds.case("7")


def test_from_slices_numpy_and_torch():
    vol = np.arange(24).reshape(2, 3, 4)
    for axis in (0, 1, 2):
        slices = np.moveaxis(vol, axis, 0)
        meta = {"axis": axis, "slices": vol.shape[axis], "case": "x"}
        assert np.array_equal(from_slices(slices, meta), vol)
        assert torch.equal(from_slices(torch.from_numpy(np.ascontiguousarray(slices)), meta),
                           torch.from_numpy(vol))
    with pytest.raises(DataError, match="got 3 slices, the case has 4"):
        from_slices(np.zeros((3, 2, 3)), {"axis": 2, "slices": 4, "case": "x"})


def test_slice_dataset_items(prepared):
    sd = SliceDataset(prepared, cases="1,3")
    assert len(sd) == 4 and sd.index[2] == ("3", 0)
    image, label = sd[2]
    assert image.shape == (1, 6, 6) and image.dtype == torch.float32
    assert label.shape == (6, 6) and label.dtype == torch.int64
    assert label[3, 5] == 2 and label[0, 0] == 1 and image[0, 0, 0] == 0.0  # 10 -> mid of [0, 20]
    image[0, 0, 0] = 5.0  # callers may scribble on what they get
    assert sd[2][0][0, 0, 0] == 0.0
    unl = SliceDataset(prepared, labelled=False)
    assert len(unl) == 6 and bool((unl[0][1] == -1).all())


def test_augmentation_is_reproducible_and_consistent(prepared):
    base = SliceDataset(prepared, cases="2")
    aug = SliceDataset(prepared, cases="2", augment=True, generator=torch.Generator().manual_seed(3))
    again = SliceDataset(prepared, cases="2", augment=True, generator=torch.Generator().manual_seed(3))
    img0, lab0 = base[0]
    seen = set()
    for _ in range(12):
        (img, lab), (img2, lab2) = aug[0], again[0]
        assert torch.equal(img, img2) and torch.equal(lab, lab2)
        assert img.min() >= -1 and img.max() <= 1
        # the label is a flip/rotation of the original, and the image the same one
        matches = [(f, k) for f in (False, True) for k in range(4)
                   if torch.equal(torch.rot90(lab0.flip(-1) if f else lab0, k, (-2, -1)), lab)]
        assert matches
        f, k = matches[0]
        # background, MYO, LV were -1, 0, 1: now clamp(-s + t), t, clamp(s + t)
        t, lv, bg = (float(img[0, lab == c][0]) for c in (1, 2, 0))
        assert abs(t) <= 0.1 + 1e-6
        for c in range(3):  # each class still has one value: the image moved with the label
            assert torch.all(img[0, lab == c] == img[0, lab == c][0])
        if lv < 1.0:  # LV not clamped: s is known exactly
            assert 0.9 - 1e-6 <= lv - t <= 1.1 + 1e-6
            assert bg == pytest.approx(max(-1.0, t - (lv - t)), abs=1e-6)
        else:
            assert bg == -1.0 or 0.9 - 1e-6 <= t - bg <= 1.1 + 1e-6
        seen.add((f, k))
    assert len(seen) > 2  # it does transform
    torch.manual_seed(0)
    a = [SliceDataset(prepared, augment=True)[i][0] for i in range(3)]
    torch.manual_seed(0)
    b = [SliceDataset(prepared, augment=True)[i][0] for i in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_open_validates_the_folder(tmp_path, prepared):
    with pytest.raises(DataError, match=r"nothing: no such dataset folder"):
        PreparedDataset(tmp_path / "nothing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match=r"plain: not a prepared mpscl dataset"):
        PreparedDataset(tmp_path / "plain")
    man = json.loads((prepared / "manifest.json").read_text())
    (prepared / "manifest.json").write_text(json.dumps(dict(man, format="other")))
    with pytest.raises(DataError, match=r"manifest\.json: not a prepared mpscl dataset"):
        PreparedDataset(prepared)
    (prepared / "manifest.json").write_text(json.dumps(man))
    (prepared / "cases" / "2.npz").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"2\.npz: unreadable case file"):
        PreparedDataset(prepared).case("2")
    (prepared / "cases" / "2.npz").unlink()
    with pytest.raises(DataError, match=r"case files missing: cases/2\.npz"):
        PreparedDataset(prepared)


def test_unlabelled_dataset_refuses_labelled_slices(tmp_path, h):
    h.save_nifti(tmp_path / "src" / "u1.nii.gz", np.random.default_rng(0).random((4, 4, 2)))
    prepare_dataset(str(tmp_path / "src" / "u{case}.nii.gz"), None, "mscmrseg", tmp_path / "u",
                    size=4, log=lambda m: None)
    ds = PreparedDataset(tmp_path / "u")
    assert not ds.labelled and ds.case("1")["label"] is None
    with pytest.raises(DataError, match="has no labels"):
        SliceDataset(ds)
    assert bool((SliceDataset(ds, labelled=False)[1][1] == -1).all())
