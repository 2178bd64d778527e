import math
import time
from importlib.metadata import version

import medpy.metric.binary as mb  # a dev dependency: missing is a failure, not a skip
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from mpscl.evaluate import assd, dice, score_case
from mpscl.evaluate.metrics import _assd_pair

from evaluate_helpers import blob_labels

MEDPY_POOLS = tuple(int(v) for v in version("medpy").split(".")[:2]) >= (0, 5)


def medpy_assd(p, g, s=None):
    """The paper's ASSD: mean of MedPy's two directed ``asd`` (= MedPy 0.4's ``assd``)."""
    return (mb.asd(p, g, voxelspacing=s) + mb.asd(g, p, voxelspacing=s)) / 2


def medpy_pooled(p, g, s=None):
    """MedPy >= 0.5 ``assd``: mean of the pooled distances of both surfaces (any version)."""
    return float(np.mean(np.concatenate([mb.__dict__["__surface_distances"](p, g, s),
                                         mb.__dict__["__surface_distances"](g, p, s)])))


def _random_mask(shape, rng, sigma=1.5, level=0.6):
    """Smooth random blobs, often touching the array border."""
    f = gaussian_filter(rng.standard_normal(shape), sigma)
    return f > np.quantile(f, level)


SPACINGS = {2: [None, (0.7, 1.9), 1.3], 3: [None, (0.8, 0.8, 2.5), (1.0, 3.0, 0.5)]}


@pytest.mark.parametrize("ndim", [2, 3])
def test_dice_and_assd_equal_medpy_on_random_masks(ndim):
    rng = np.random.default_rng(ndim)
    shape = (40, 33) if ndim == 2 else (18, 21, 15)
    for trial in range(6):
        p = _random_mask(shape, rng, level=rng.uniform(0.5, 0.9))
        g = _random_mask(shape, rng, level=rng.uniform(0.5, 0.9))
        assert dice(p, g) == pytest.approx(mb.dc(p, g), abs=1e-12)
        for s in SPACINGS[ndim]:
            ref = medpy_assd(p, g, s)
            assert assd(p, g, spacing=s) == pytest.approx(ref, abs=1e-6)
            assert assd(p, g, spacing=s, pooled=True) == pytest.approx(medpy_pooled(p, g, s), abs=1e-6)
            if MEDPY_POOLS:  # MedPy >= 0.5 assd pools; 0.4 (the authors') averaged the two means
                assert assd(p, g, spacing=s, pooled=True) == pytest.approx(mb.assd(p, g, voxelspacing=s), abs=1e-6)
            # both exact distance methods agree with MedPy on the full (uncropped) arrays
            sv = None if s is None else np.broadcast_to(np.asarray(s, float), (ndim,))
            for method in ("edt", "kdtree"):
                assert _assd_pair(p, g, [sv], method=method)[0] == pytest.approx(ref, abs=1e-6)


def test_cropping_never_changes_the_result_near_borders():
    rng = np.random.default_rng(7)
    shape = (30, 26, 12)
    for trial in range(8):
        p = np.zeros(shape, bool)
        g = np.zeros(shape, bool)
        # small objects glued to different faces/corners of the array, plus one inside
        p[: rng.integers(1, 6), : rng.integers(2, 8), rng.integers(0, 6):] = True
        g[: rng.integers(1, 6), : rng.integers(1, 9), : rng.integers(1, 12)] = True
        p[-3:, 10:14, -2:] = trial % 2 == 0
        g[12:15, 12:16, 5:7] = True
        for s in (None, (0.6, 1.1, 3.0)):
            sv = None if s is None else np.asarray(s, float)
            full = _assd_pair(p, g, [sv], method="edt")[0]  # no crop at all
            assert assd(p, g, spacing=s) == pytest.approx(full, abs=1e-9)
            assert assd(p, g, spacing=s) == pytest.approx(medpy_assd(p, g, s), abs=1e-6)


def test_hand_computed_assd():
    p = np.zeros((8, 9), bool)
    g = np.zeros((8, 9), bool)
    p[2, 2] = True
    g[2, 5] = True
    assert assd(p, g) == pytest.approx(3.0)
    assert assd(p, g, spacing=(1.0, 2.0)) == pytest.approx(6.0)
    # 3D, anisotropic: offsets (0, 1, 2) voxels with spacing (1, 2, 0.5) -> sqrt(0 + 4 + 1)
    p3 = np.zeros((4, 5, 6), bool)
    g3 = np.zeros((4, 5, 6), bool)
    p3[1, 1, 1] = True
    g3[1, 2, 3] = True
    assert assd(p3, g3, spacing=(1.0, 2.0, 0.5)) == pytest.approx(math.sqrt(5.0))
    # two 4x4 squares, one shifted 2 columns: surfaces are the 12 ring pixels each
    a = np.zeros((10, 12), bool)
    b = np.zeros((10, 12), bool)
    a[3:7, 2:6] = True
    b[3:7, 4:8] = True
    # a's ring -> b's ring: top/bottom rows, columns 2..5 -> 2, 1, 0, 0; middle rows: column
    # 2 -> 2 and column 5 -> 1 (b's interior columns 5, 6 are not surface): 12 / 12
    d_ab = (2 * (2 + 1 + 0 + 0) + 2 * (2 + 1)) / 12
    assert assd(a, b) == pytest.approx(d_ab)  # symmetric by construction
    assert dice(a, b) == pytest.approx(2 * 8 / 32)


def test_empty_masks():
    z = np.zeros((5, 6, 7), bool)
    o = z.copy()
    o[2, 3, 4] = True
    assert math.isnan(dice(z, z))
    assert dice(o, z) == 0.0 and dice(z, o) == 0.0
    assert math.isnan(assd(z, o)) and math.isnan(assd(o, z)) and math.isnan(assd(z, z))
    assert assd(o, o) == 0.0


def test_components_count_pieces_touching_at_a_face_edge_or_corner():
    from mpscl.evaluate.metrics import components
    m = np.zeros((6, 6, 4), bool)
    assert components(m) == 0
    m[0:2, 0:2, 0:2] = True
    assert components(m) == 1
    m[2, 2, 2] = True  # touches the block at a corner only: the same piece
    assert components(m) == 1
    m[4:6, 4:6, 0] = True  # a separate island
    assert components(m) == 2
    # in score_case, per class: the island of class 1 counts, class 2 beside it does not
    ids = m.astype(np.uint8)
    ids[0, 5, 3] = 2
    assert score_case(ids, ids, ["bg", "A", "B"])["components"] == {"A": 2, "B": 1}


def test_score_case_per_class_and_empty_cases():
    gt = np.zeros((20, 22, 9), np.uint8)
    gt[3:9, 4:10, 2:6] = 1
    gt[12:18, 12:19, 3:8] = 2
    pred = gt.copy()
    pred[pred == 2] = 0  # class 2 missed entirely
    pred[3:9, 5:11, 2:6] = 1  # class 1 shifted
    classes = ["background", "A", "B", "C"]  # C absent in both
    s = (1.2, 0.9, 3.0)
    out = score_case(pred, gt, classes, spacing=s)
    assert set(out) == {"dice", "assd", "assd_mm", "components"}
    assert out["components"] == {"A": 1, "B": 0, "C": 0}  # B missed, C absent: no piece
    assert list(out["dice"]) == ["A", "B", "C"]
    assert out["dice"]["A"] == pytest.approx(100 * mb.dc(pred == 1, gt == 1))
    assert out["assd"]["A"] == pytest.approx(medpy_assd(pred == 1, gt == 1), abs=1e-6)
    assert out["assd_mm"]["A"] == pytest.approx(medpy_assd(pred == 1, gt == 1, s), abs=1e-6)
    assert out["dice"]["B"] == 0.0 and math.isnan(out["assd"]["B"]) and math.isnan(out["assd_mm"]["B"])
    assert math.isnan(out["dice"]["C"]) and math.isnan(out["assd"]["C"])
    # isotropic spacing shortcut and no spacing
    iso = score_case(pred, gt, classes, spacing=0.7)
    assert iso["assd_mm"]["A"] == pytest.approx(medpy_assd(pred == 1, gt == 1, 0.7), abs=1e-6)
    assert math.isnan(score_case(pred, gt, classes)["assd_mm"]["A"])
    with pytest.raises(ValueError):
        score_case(pred, gt[:-1], classes)
    with pytest.raises(ValueError):
        score_case(pred + 4, gt, classes)


@pytest.mark.slow
def test_scoring_a_full_volume_is_fast():
    shape = (256, 256, 200)
    centres = [(100, 100, 100), (150, 120, 90), (120, 160, 110), (90, 140, 60)]
    radii = [(40, 48, 32), (30, 36, 24), (35, 42, 28), (20, 24, 16)]
    gt = blob_labels(shape, centres, radii)
    pred = blob_labels(shape, [(z + 3, y - 2, x + 3) for z, y, x in centres], radii)
    classes = ["background", "MYO", "LAC", "LVC", "AA"]
    score_case(pred[:40, :40, :40], gt[:40, :40, :40], classes, (0.8, 0.8, 1.5))  # warm caches
    t = time.perf_counter()
    out = score_case(pred, gt, classes, spacing=(0.8, 0.8, 1.5))  # voxels and mm: both computed
    dt = time.perf_counter() - t
    print(f"\nscore_case 256x256x200, 4 structures, anisotropic spacing: {dt:.3f} s")
    assert all(80 < v < 100 for v in out["dice"].values())
    assert dt < 3.0
