import json
import random

import numpy as np
import pytest

import mpscl.data.prepare as prep
from mpscl.data import DataError, PreparedDataset, from_slices, prepare_dataset, resize_slices

MAP = "200=MYO,500=LV"


def quiet(_msg):
    pass


def patterns(root):
    return str(root / "img{case}.nii.gz"), str(root / "img{case}_lab.nii.gz")


def leftovers(parent, keep=()):
    return sorted(p.name for p in parent.iterdir() if p.name not in keep)


def test_pairs_by_case_id_whatever_the_listing_order(tmp_path, h, monkeypatch):
    src = tmp_path / "src"
    for case in ("10", "2", "1", "33"):
        h.make_case(src, case)
    real_glob = prep.glob.glob

    def shuffled(pattern, **kw):  # the file system may list files in any order
        files = real_glob(pattern, **kw)
        random.Random(len(pattern)).shuffle(files)
        return files[::-1] if "lab" in pattern else files

    monkeypatch.setattr(prep.glob, "glob", shuffled)
    img, lab = patterns(src)
    man = prepare_dataset(img, lab, MAP, tmp_path / "out", size=8, log=quiet)
    assert [c["case"] for c in man["cases"]] == ["1", "2", "10", "33"]  # natural order
    ds = PreparedDataset(tmp_path / "out")
    for case in ("1", "2", "10", "33"):  # case k carries exactly k MYO voxels
        assert ds.manifest["cases"][ds.case_ids.index(case)]["class_voxels"]["MYO"] == int(case)
        assert int((ds.case(case)["label_orig"] == 1).sum()) == int(case)
        assert ds.case(case)["meta"]["image"].endswith(f"img{case}.nii.gz")
        assert ds.case(case)["meta"]["label"].endswith(f"img{case}_lab.nii.gz")


def test_unpaired_files_are_named(tmp_path, h):
    src = tmp_path / "src"
    h.make_case(src, "1")
    h.make_case(src, "2")
    (src / "img2_lab.nii.gz").unlink()
    h.save_nifti(src / "img7_lab.nii.gz", np.zeros((8, 6, 3)))
    img, lab = patterns(src)
    with pytest.raises(DataError) as e:
        prepare_dataset(img, lab, MAP, tmp_path / "out", log=quiet)
    assert "img2.nii.gz (case 2)" in str(e.value) and "img7_lab.nii.gz (case 7)" in str(e.value)
    assert leftovers(tmp_path) == ["src"]


@pytest.mark.parametrize("pattern,msg", [("{case}/{case}.nii.gz", "exactly one {case}.*found 2"),
                                         ("img.nii.gz", "exactly one {case}.*found 0"),
                                         ("nothing{case}.nii.gz", "matches no file")])
def test_bad_patterns(tmp_path, pattern, msg):
    with pytest.raises(DataError, match=msg) as e:
        prepare_dataset(str(tmp_path / pattern), None, MAP, tmp_path / "out", log=quiet)
    assert str(tmp_path) in str(e.value)


def test_shape_and_affine_mismatch_name_both_files(tmp_path, h):
    src = tmp_path / "src"
    h.make_case(src, "1")
    h.save_nifti(src / "img1_lab.nii.gz", np.zeros((8, 6, 4), np.int16))
    img, lab = patterns(src)
    with pytest.raises(DataError, match=r"img1_lab\.nii\.gz: label shape .*img1\.nii\.gz"):
        prepare_dataset(img, lab, MAP, tmp_path / "out", log=quiet)
    h.save_nifti(src / "img1_lab.nii.gz", np.zeros((8, 6, 3), np.int16), np.diag([2, 2, 6.0, 1]))
    with pytest.raises(DataError, match=r"img1_lab\.nii\.gz: label affine differs .*img1\.nii\.gz"):
        prepare_dataset(img, lab, MAP, tmp_path / "out", log=quiet)
    # rounding-level differences (float32 headers) are accepted
    h.save_nifti(src / "img1_lab.nii.gz", np.zeros((8, 6, 3), np.int16),
                 np.diag([2.00001, 2, 5.0, 1]))
    prepare_dataset(img, lab, MAP, tmp_path / "out", log=quiet)


def test_unmapped_values_warn_with_counts_and_strict_refuses(tmp_path, h):
    src = tmp_path / "src"
    h.make_case(src, "3")  # labels 200 (3 voxels) and 500 (3 voxels)
    img, lab = patterns(src)
    logs = []
    man = prepare_dataset(img, lab, "200=MYO", tmp_path / "out", size=8, log=logs.append)
    warn = [m for m in logs if m.startswith("warning")]
    assert len(warn) == 1 and "img3_lab.nii.gz" in warn[0] and "500: 3 voxels" in warn[0]
    assert man["cases"][0]["unmapped_voxels"] == {"500": 3}
    assert man["cases"][0]["class_voxels"] == {"background": 8 * 6 * 3 - 3, "MYO": 3}
    with pytest.raises(DataError, match=r"img3_lab\.nii\.gz: label values not in the class map.*strict"):
        prepare_dataset(img, lab, "200=MYO", tmp_path / "out2", strict=True, log=quiet)
    assert not (tmp_path / "out2").exists()


def test_non_finite_image_fails_and_leaves_nothing(tmp_path, h):
    src = tmp_path / "src"
    h.make_case(src, "1")
    bad = np.ones((8, 6, 3))
    bad[0, 0, 0] = np.nan
    h.make_case(src, "2")
    h.save_nifti(src / "img2.nii.gz", bad)
    img, lab = patterns(src)
    with pytest.raises(DataError, match=r"img2\.nii\.gz: contains non-finite voxels"):
        prepare_dataset(img, lab, MAP, tmp_path / "deep" / "er" / "out", log=quiet)
    assert leftovers(tmp_path) == ["src"]  # no partial dataset, no temp dir, no created parents


def test_existing_outputs_are_protected(tmp_path, h):
    src = tmp_path / "src"
    h.make_case(src, "1")
    img, lab = patterns(src)
    out = tmp_path / "out"
    prepare_dataset(img, lab, MAP, out, size=8, log=quiet)
    with pytest.raises(DataError, match="already holds this dataset.*overwrite"):
        prepare_dataset(img, lab, MAP, out, size=8, log=quiet)
    with pytest.raises(DataError, match="already holds a different prepared dataset"):
        prepare_dataset(img, lab, MAP, out, size=16, log=quiet)
    prepare_dataset(img, lab, MAP, out, size=16, overwrite=True, log=quiet)
    assert PreparedDataset(out).size == 16
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="not a prepared dataset; refusing"):
        prepare_dataset(img, lab, MAP, other, overwrite=True, log=quiet)
    assert (other / "thesis.tex").read_text() == "precious"
    assert leftovers(tmp_path) == ["notes", "out", "src"]


def test_failed_overwrite_keeps_the_old_dataset(tmp_path, h):
    src = tmp_path / "src"
    h.make_case(src, "1")
    img, lab = patterns(src)
    out = tmp_path / "out"
    prepare_dataset(img, lab, MAP, out, size=8, log=quiet)
    before = (out / "manifest.json").read_text()
    h.make_case(src, "2")
    (src / "img2.nii.gz").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"img2\.nii\.gz: cannot read NIfTI"):
        prepare_dataset(img, lab, MAP, out, size=16, overwrite=True, log=quiet)
    assert (out / "manifest.json").read_text() == before
    assert PreparedDataset(out).case("1")["image"].shape == (3, 8, 8)
    assert leftovers(tmp_path) == ["out", "src"]


def test_normalisation_and_manifest_contents(tmp_path, h):
    src = tmp_path / "src"
    vol = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)  # percentiles are 4.995, 994.005
    h.save_nifti(src / "v1.nii.gz", vol, np.diag([1.5, 1.5, 4.0, 1]))
    logs = []
    man = prepare_dataset(str(src / "v{case}.nii.gz"), None, MAP, tmp_path / "out", size=10,
                          log=logs.append)
    c = man["cases"][0]
    assert c["intensity"]["p0.5"] == pytest.approx(4.995)
    assert c["intensity"]["p99.5"] == pytest.approx(994.005)
    assert c["intensity"]["mean"] == pytest.approx(499.5)
    assert c["spacing"] == [1.5, 1.5, 4.0] and c["shape"] == [10, 10, 10] and c["slices"] == 10
    assert c["affine"][2][2] == 4.0 and c["image"] == str(src / "v1.nii.gz")
    assert man["labelled"] is False and man["axis"] == 2 and "p0.5" in man["normalisation"]
    assert man["totals"] == {"cases": 1, "slices": 10, "spacing_min": [1.5, 1.5, 4.0],
                             "spacing_max": [1.5, 1.5, 4.0]}
    on_disk = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert on_disk["cases"][0]["file"] == "cases/1.npz" and on_disk["format"] == "mpscl-dataset"
    image = PreparedDataset(tmp_path / "out").case("1")["image"]  # (S, N, N) = slices along z
    assert image[0, 0, 0] == -1.0 and image[9, 9, 9] == 1.0  # clipped ends
    # voxel (5, 0, 0) has value 500: 2 * (500 - 4.995) / (994.005 - 4.995) - 1
    assert image[0, 5, 0] == pytest.approx(2 * 495.005 / 989.01 - 1, abs=1e-6)
    assert any("1 cases, 10 slices" in m and " s" in m for m in logs)


def test_geometry_round_trip_for_every_axis(tmp_path, h):
    src = tmp_path / "src"
    lab = np.zeros((6, 6, 6), np.int16)
    lab[1, 2, 3] = 200
    lab[4, 0, 5] = 500
    h.save_nifti(src / "a1.nii.gz", np.random.default_rng(0).random((6, 6, 6)))
    h.save_nifti(src / "a1_l.nii.gz", lab)
    for axis in (0, 1, -1):
        out = tmp_path / f"out{axis}"
        prepare_dataset(str(src / "a{case}.nii.gz"), str(src / "a{case}_l.nii.gz"), MAP, out,
                        size=6, axis=axis, log=quiet)
        case = PreparedDataset(out).case("1")
        back = from_slices(case["label"], case["meta"])  # size == in-plane: no resizing
        assert np.array_equal(back, case["label_orig"])
        assert back[1, 2, 3] == 1 and back[4, 0, 5] == 2 and back.sum() == 3


def test_resize_hand_computed():
    lab = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    assert resize_slices(lab, 2, "label").tolist() == [[[5, 7], [13, 15]]]  # pixel centres
    up = resize_slices(np.array([[[1, 2], [3, 4]]], np.uint8), 4, "label")
    assert up[0].tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    ramp = np.array([[[0.0, 1.0], [0.0, 1.0]]], np.float32)
    assert resize_slices(ramp, 4, "image")[0, 0].tolist() == pytest.approx([0, 0.25, 0.75, 1])
    flat = resize_slices(np.full((2, 5, 7), 0.5, np.float32), 3, "image")
    assert flat.shape == (2, 3, 3) and np.allclose(flat, 0.5)


def test_prepare_real_mscmrseg_subset(tmp_path, mscmrseg_dir, monkeypatch):
    # two real cases through the whole path: values, shapes, class counts in the original grid
    src = tmp_path / "src"
    src.mkdir()
    for k in (1, 10):
        for suffix in ("", "_manual"):
            (src / f"patient{k}_C0{suffix}.nii.gz").symlink_to(
                mscmrseg_dir / "C0" / f"patient{k}_C0{suffix}.nii.gz")
    man = prepare_dataset(str(src / "patient{case}_C0.nii.gz"),
                          str(src / "patient{case}_C0_manual.nii.gz"), "mscmrseg",
                          tmp_path / "out", size=64, log=quiet)
    assert [c["case"] for c in man["cases"]] == ["1", "10"]
    assert [c["slices"] for c in man["cases"]] == [12, 10]
    assert man["cases"][0]["class_voxels"] == {"background": 192 * 192 * 12 - 19597 - 20184 - 16473,
                                               "MYO": 19597, "LV": 20184, "RV": 16473}
    case = PreparedDataset(tmp_path / "out").case("1")
    assert case["image"].shape == (12, 64, 64) and case["label_orig"].shape == (192, 192, 12)
    assert case["image"].min() >= -1 and case["image"].max() <= 1


@pytest.mark.parametrize("seq,cases,slices", [("C0", 35, 391), ("LGE", 45, 686)])
@pytest.mark.slow
def test_prepare_real_mscmrseg_full(tmp_path, mscmrseg_dir, seq, cases, slices):
    # the whole published set, as the benchmark prepares it: every case paired, no slice lost
    man = prepare_dataset(str(mscmrseg_dir / seq / f"patient{{case}}_{seq}.nii.gz"),
                          str(mscmrseg_dir / seq / f"patient{{case}}_{seq}_manual.nii.gz"),
                          "mscmrseg", tmp_path / seq, size=32, log=quiet)
    assert len(man["cases"]) == cases and sum(c["slices"] for c in man["cases"]) == slices
    assert [c["case"] for c in man["cases"]] == [str(i) for i in range(1, cases + 1)]
    assert all(c["class_voxels"][k] > 0 for c in man["cases"] for k in ("MYO", "LV", "RV"))
