import nibabel as nib
import numpy as np
import pytest

from mpscl.data import DataError, PreparedDataset, prepare_dataset, write_phantom
from mpscl.data.phantom import AIR, BONE, FAT, LV_BLOOD, MUSCLE, MYO, _render_anatomy, _render_ct, \
    _render_mr, _subject

SMALL = (48, 48, 24)


def load(path):
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img


def test_layout_determinism_and_domains(tmp_path):
    a = write_phantom(tmp_path / "a", cases=2, seed=5, size=SMALL, log=None)
    write_phantom(tmp_path / "b", cases=2, seed=5, size=SMALL, log=None)
    write_phantom(tmp_path / "c", cases=2, seed=6, size=SMALL, log=None)
    assert sorted(p.name for p in (tmp_path / "a" / "ct").iterdir()) == [
        "case1_image.nii.gz", "case1_label.nii.gz", "case2_image.nii.gz", "case2_label.nii.gz"]
    assert a["ct"]["images"] == str(tmp_path / "a" / "ct" / "case{case}_image.nii.gz")
    for dom in ("ct", "mr"):
        for f in ("case1_image.nii.gz", "case2_label.nii.gz"):
            x, _ = load(tmp_path / "a" / dom / f)
            assert np.array_equal(x, load(tmp_path / "b" / dom / f)[0])  # same seed, same bytes
            assert not np.array_equal(x, load(tmp_path / "c" / dom / f)[0])  # other seed
    ct, cti = load(tmp_path / "a" / "ct" / "case1_label.nii.gz")
    mr, mri = load(tmp_path / "a" / "mr" / "case1_label.nii.gz")
    assert ct.shape == SMALL and mr.shape == (40, 40, 20)  # MR voxels 1.2x larger
    assert cti.header.get_zooms() == pytest.approx((2.0, 2.0, 3.0))
    assert mri.header.get_zooms() == pytest.approx((2.4, 2.4, 3.6))
    assert set(np.unique(ct)) == {0, 205, 420, 500, 550, 600, 820, 850}

    def lv_centre_mm(lab, img):  # world position of the LV cavity: differs between subjects
        idx = np.argwhere(lab == 500).mean(0)
        return nib.affines.apply_affine(img.affine, idx)

    assert np.linalg.norm(lv_centre_mm(ct, cti) - lv_centre_mm(mr, mri)) > 1.0
    with pytest.raises(DataError, match="already exists"):
        write_phantom(tmp_path / "a", cases=1, size=SMALL, log=None)


def test_appearance_differs_between_domains():
    rng = np.random.default_rng(0)
    scene = _render_anatomy((64, 64, 24), (1.0, 1.0, 0.56), _subject(rng))
    ct = _render_ct(scene, np.random.default_rng(1)).astype(np.float32)
    mr = _render_mr(scene, np.random.default_rng(1))

    def med(img, tissue):
        core = scene.tissue == tissue
        return float(np.median(img[core]))

    # CT: enhanced blood > myocardium > fat, bone brightest; MR: fat bright, bone dark
    assert med(ct, LV_BLOOD) > med(ct, MYO) + 100 and med(ct, MYO) > med(ct, FAT)
    assert med(ct, BONE) > med(ct, LV_BLOOD) and med(ct, AIR) < -900
    assert med(mr, LV_BLOOD) > 2 * med(mr, MYO)
    assert med(mr, FAT) > 2 * med(mr, MUSCLE) and med(mr, BONE) < med(mr, MUSCLE)  # inverted
    assert mr.min() >= 0  # Rician magnitude


def test_phantom_prepares_with_the_mmwhs_map(tmp_path):
    p = write_phantom(tmp_path / "ph", cases=2, size=SMALL, log=None)
    logs = []
    man = prepare_dataset(p["ct"]["images"], p["ct"]["labels"], p["classes"], tmp_path / "ds",
                          size=32, log=logs.append)
    assert man["totals"]["cases"] == 2 and man["totals"]["slices"] == 48
    # distractors (RV 600, RA 550, PA 850) are reported and become background
    assert all("550" in c["unmapped_voxels"] and "850" in c["unmapped_voxels"] for c in man["cases"])
    assert sum(m.startswith("warning") for m in logs) == 2
    for name in ("MYO", "LAC", "LVC", "AA"):  # every structure is there, and not tiny
        assert all(c["class_voxels"][name] > 150 for c in man["cases"])
    lab = PreparedDataset(tmp_path / "ds").case("1")["label"]
    assert set(np.unique(lab)) == {0, 1, 2, 3, 4}
