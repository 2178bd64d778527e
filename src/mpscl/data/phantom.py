"""A synthetic cross-modality heart phantom: CT-like and MR-like volumes with MM-WHS labels.

Each subject is drawn from ``numpy.random.default_rng([seed, domain, case])``: the two
domains hold different subjects and the output is a pure function of ``seed``. Anatomy is
defined in world units (1 unit = half the in-plane field of view) and rendered on each
domain's own grid:

- labelled targets (MM-WHS raw values): MYO 205 (a cup around the LV cavity), LAC 420,
  LVC 500, AA 820 (ascending aorta);
- distractors labelled but mapped to background by the ``mmwhs`` class map: RV 600,
  RA 550, PA 850; unlabelled: descending aorta, lungs, liver, spine, ribs, body wall,
  subcutaneous and epicardial fat.

CT-like: contrast-enhanced left-heart blood brighter than the right heart and much
brighter than myocardium, dark lungs and fat, bright bone, Gaussian noise, int16 "HU".
MR-like (bSSFP-ish): uniformly bright blood, BRIGHT fat and DARK bone (orderings inverted
relative to CT), smooth multiplicative bias field, Rician noise, coarser voxels (1.2x).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import nibabel as nib
import numpy as np
from scipy import ndimage

from .errors import DataError
from .io import save_nifti

LABELS = {"MYO": 205, "LAC": 420, "LVC": 500, "AA": 820, "RV": 600, "RA": 550, "PA": 850}
CT_SPACING = (2.0, 2.0, 3.0)  # mm at the default size; MR voxels are 1.2x larger
MR_FACTOR = 1.2
# tissue codes used while rendering
AIR, FAT, MUSCLE, LUNG, LIVER, BONE, MARROW, CSF, MYO, LV_BLOOD, RV_BLOOD, LA_BLOOD, \
    RA_BLOOD, AO_BLOOD, PA_BLOOD = range(15)
# CT-like HU per tissue (before per-subject jitter); MR-like arbitrary units
_CT = {AIR: -1000, FAT: -100, MUSCLE: 45, LUNG: -820, LIVER: 70, BONE: 800, MARROW: 250,
       CSF: 10, MYO: 90, LV_BLOOD: 330, RV_BLOOD: 230, LA_BLOOD: 320, RA_BLOOD: 200,
       AO_BLOOD: 340, PA_BLOOD: 240}
_MR = {AIR: 0, FAT: 230, MUSCLE: 55, LUNG: 12, LIVER: 80, BONE: 15, MARROW: 170, CSF: 200,
       MYO: 65, LV_BLOOD: 240, RV_BLOOD: 235, LA_BLOOD: 230, RA_BLOOD: 225, AO_BLOOD: 245,
       PA_BLOOD: 240}


def _rot(yaw: float, tilt: float, roll: float) -> np.ndarray:
    cz, sz = np.cos(yaw), np.sin(yaw)
    cx, sx = np.cos(tilt), np.sin(tilt)
    cy, sy = np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rz @ rx @ ry


class _Scene:
    """Paints shapes (in world units) into a tissue map and a label map."""

    def __init__(self, shape: Tuple[int, int, int], half: Tuple[float, float, float]):
        axes = [((np.arange(n) + 0.5) / n * 2 - 1) * h for n, h in zip(shape, half)]
        self.x, self.y, self.z = np.meshgrid(*[a.astype(np.float32) for a in axes], indexing="ij",
                                             sparse=True)
        self.tissue = np.full(shape, AIR, dtype=np.uint8)
        self.label = np.zeros(shape, dtype=np.int16)

    def ellipsoid(self, c, a, rot=None) -> np.ndarray:
        c, a = [float(v) for v in c], [float(v) for v in a]
        rot = None if rot is None else [[float(v) for v in row] for row in rot]
        dx, dy, dz = self.x - c[0], self.y - c[1], self.z - c[2]
        if rot is not None:  # coordinates in the shape's own frame: R^T (p - c)
            dx, dy, dz = (rot[0][0] * dx + rot[1][0] * dy + rot[2][0] * dz,
                          rot[0][1] * dx + rot[1][1] * dy + rot[2][1] * dz,
                          rot[0][2] * dx + rot[1][2] * dy + rot[2][2] * dz)
        return (dx / a[0]) ** 2 + (dy / a[1]) ** 2 + (dz / a[2]) ** 2 <= 1.0

    def local_z(self, c, rot) -> np.ndarray:
        c, rot = [float(v) for v in c], np.asarray(rot).tolist()
        return rot[0][2] * (self.x - c[0]) + rot[1][2] * (self.y - c[1]) + rot[2][2] * (self.z - c[2])

    def cylinder_z(self, cx, cy, r, z0=-9.0, z1=9.0) -> np.ndarray:
        cx, cy, r = float(cx), float(cy), float(r)
        return (((self.x - cx) ** 2 + (self.y - cy) ** 2) <= r * r) & (self.z >= z0) & (self.z <= z1)

    def tube(self, p0, p1, r) -> np.ndarray:
        p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
        d = (p1 - p0).tolist()
        p0, r = p0.tolist(), float(r)
        dx, dy, dz = self.x - p0[0], self.y - p0[1], self.z - p0[2]
        t = np.clip((dx * d[0] + dy * d[1] + dz * d[2]) / sum(v * v for v in d), 0.0, 1.0)
        return (dx - t * d[0]) ** 2 + (dy - t * d[1]) ** 2 + (dz - t * d[2]) ** 2 <= r * r

    def paint(self, mask, tissue: int, label: int = 0) -> None:
        self.tissue[mask] = tissue
        self.label[mask] = label


def _subject(rng: np.random.Generator) -> Dict[str, Any]:
    """Random anatomy parameters of one subject (world units)."""
    u = rng.uniform
    return {
        "body": (u(0.82, 0.95), u(0.62, 0.75)), "fat": u(0.05, 0.11),
        "lung": (u(0.30, 0.38), u(0.40, 0.50), u(0.75, 0.95)), "lung_dx": u(0.42, 0.50),
        "heart_c": np.array([u(0.04, 0.16), u(-0.12, 0.0), u(-0.14, 0.02)]),
        "heart_s": 1.3 * u(0.88, 1.12),  # enlarged so small structures stay learnable
        "rot": _rot(np.deg2rad(u(-25, 25)), np.deg2rad(u(-12, 12)), np.deg2rad(u(-10, 10))),
        "jit": u(0.9, 1.1, size=(6, 3)), "myo": u(0.075, 0.10),
        "spine_r": u(0.10, 0.13), "ao_x": u(0.08, 0.2),
        "liver": (u(-0.35, -0.15), u(0.45, 0.6)),
    }


def _render_anatomy(shape, half, p) -> _Scene:
    s = _Scene(shape, half)
    bx, by = p["body"]
    body = ((s.x / bx) ** 2 + ((s.y - 0.05) / by) ** 2 <= 1.0) & (s.z > -9)
    inner = ((s.x / (bx - p["fat"])) ** 2 + ((s.y - 0.05) / (by - p["fat"])) ** 2 <= 1.0) & (s.z > -9)
    s.paint(body, FAT)
    s.paint(inner, MUSCLE)
    for k in range(12):  # ribs: small bony cylinders just inside the body wall
        ang = np.pi * (0.15 + 0.7 * k / 11) * (1 if k % 2 else -1)
        rx, ry = (bx - p["fat"] - 0.06) * np.sin(ang), (by - p["fat"] - 0.06) * -np.cos(ang)
        s.paint(s.cylinder_z(rx, ry + 0.05, 0.035), BONE)
    lx, ly, lz = p["lung"]
    for side in (-1, 1):
        s.paint(s.ellipsoid((side * p["lung_dx"], 0.08, 0.1), (lx, ly, lz)), LUNG)
    lc, lr = p["liver"]
    s.paint(s.ellipsoid((lc, 0.0, -1.05), (lr, 0.5, 0.5)), LIVER)
    # spine: vertebral body (cortex + marrow), canal, posterior element
    r = p["spine_r"]
    s.paint(s.cylinder_z(0.0, 0.52, r), BONE)
    s.paint(s.cylinder_z(0.0, 0.52, r * 0.75), MARROW)
    s.paint(s.cylinder_z(0.0, 0.52 + r + 0.06, 0.05), CSF)
    s.paint(s.ellipsoid((0.0, 0.52 + r + 0.16, 0.0), (0.05, 0.04, 9.0)), BONE)
    s.paint(s.cylinder_z(p["ao_x"], 0.52 - r * 0.3 - 0.02, 0.065), AO_BLOOD)  # descending aorta
    # heart, in its own rotated and scaled frame
    c, k, R, j = p["heart_c"], p["heart_s"], p["rot"], p["jit"]

    def at(v):  # heart-frame offset -> world point
        return c + R @ (np.asarray(v) * k)

    lv_c, lv_a = at((0.08, 0.02, -0.12)), np.array([0.21, 0.19, 0.30]) * k * j[0]
    myo_a = lv_a + p["myo"] * k
    heart = np.zeros(shape, bool)
    masks = []
    rv = s.ellipsoid(at((-0.2, -0.12, -0.12)), np.array([0.22, 0.17, 0.28]) * k * j[1], R)
    ra = s.ellipsoid(at((-0.3, 0.12, 0.22)), np.array([0.16, 0.14, 0.16]) * k * j[2], R)
    la = s.ellipsoid(at((0.08, 0.3, 0.24)), np.array([0.19, 0.14, 0.15]) * k * j[3], R)
    pa = s.tube(at((-0.12, -0.2, 0.12)), at((0.12, 0.05, 0.8)), 0.075 * k * j[4, 0])
    aa = s.tube(at((0.0, 0.06, 0.1)), at((-0.06, 0.12, 1.4)), 0.085 * k * j[5, 0])
    myo = s.ellipsoid(lv_c, myo_a, R) & (s.local_z(lv_c, R) < lv_a[2] * 0.55)
    lv = s.ellipsoid(lv_c, lv_a, R)
    for m, t, lab in ((rv, RV_BLOOD, LABELS["RV"]), (ra, RA_BLOOD, LABELS["RA"]),
                      (la, LA_BLOOD, LABELS["LAC"]), (pa, PA_BLOOD, LABELS["PA"]),
                      (myo, MYO, LABELS["MYO"]), (lv, LV_BLOOD, LABELS["LVC"]),
                      (aa, AO_BLOOD, LABELS["AA"])):
        heart |= m
        masks.append((m, t, lab))
    # epicardial fat: a thin layer hugging the heart, painted under the chambers
    shell = (ndimage.gaussian_filter(heart.astype(np.float32), 1.2) > 0.08) & ~heart
    s.paint(shell, FAT)
    for m, t, lab in masks:
        s.paint(m, t, lab)
    return s


def _smooth_field(rng, shape, amplitude: float) -> np.ndarray:
    """A smooth random field (low-order cosine series), max |value| = ``amplitude``."""
    coef = rng.normal(0.0, 1.0, size=(3, 3, 3)) / (1.0 + np.add.outer(
        np.add.outer(np.arange(3), np.arange(3)), np.arange(3)))
    basis = [np.cos(np.pi * np.outer((np.arange(n) + 0.5) / n, np.arange(3))) for n in shape]
    field = np.einsum("ijk,xi,yj,zk->xyz", coef, *basis, optimize=True).astype(np.float32)
    return amplitude * field / (np.abs(field).max() + 1e-6)


def _render_ct(s: _Scene, rng) -> np.ndarray:
    enh = rng.uniform(0.75, 1.25)  # contrast-agent enhancement of the blood
    lut = np.array([_CT[t] for t in range(15)], dtype=np.float32)
    blood = [LV_BLOOD, RV_BLOOD, LA_BLOOD, RA_BLOOD, AO_BLOOD, PA_BLOOD]
    lut[blood] = 40 + (lut[blood] - 40) * enh
    img = lut[s.tissue] + _smooth_field(rng, s.tissue.shape, 25.0)
    img = ndimage.gaussian_filter(img, 0.6)
    img += rng.normal(0.0, rng.uniform(15, 30), size=img.shape).astype(np.float32)
    return np.clip(np.round(img), -1024, 3000).astype(np.int16)


def _render_mr(s: _Scene, rng) -> np.ndarray:
    lut = np.array([_MR[t] for t in range(15)], dtype=np.float32)
    lut *= rng.uniform(0.9, 1.1, size=15).astype(np.float32)  # subject-specific contrasts
    img = ndimage.gaussian_filter(lut[s.tissue], 0.7)
    img *= np.exp(_smooth_field(rng, img.shape, rng.uniform(0.2, 0.4)))  # coil bias field
    sigma = rng.uniform(0.03, 0.05) * 240
    n1 = rng.normal(0.0, sigma, size=img.shape).astype(np.float32)
    n2 = rng.normal(0.0, sigma, size=img.shape).astype(np.float32)
    return np.sqrt((img + n1) ** 2 + n2 ** 2).astype(np.float32)  # Rician magnitude


def _save(arr: np.ndarray, spacing, path: Path) -> None:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-(n - 1) / 2 * sp for n, sp in zip(arr.shape, spacing)]
    img = nib.Nifti1Image(arr, affine)
    img.header.set_xyzt_units("mm")
    save_nifti(img, path)


def write_phantom(out: Union[str, Path], cases: int = 8, seed: int = 0,
                  size: Sequence[int] = (96, 96, 48), overwrite: bool = False,
                  log: Optional[Callable[[str], Any]] = print) -> Dict[str, Any]:
    """Write ``cases`` CT-like and ``cases`` MR-like subjects under ``out/ct`` and ``out/mr``.

    Files: ``{domain}/case{i}_image.nii.gz`` and ``{domain}/case{i}_label.nii.gz``, i = 1..cases.
    ``size`` is the CT grid (X, Y, Z) at spacing 2 x 2 x 3 mm; the MR grid covers the same
    field of view with 1.2x larger voxels. Returns the patterns to give to ``prepare``
    (``{"ct": {"images": ..., "labels": ...}, "mr": {...}, "classes": "mmwhs"}``).
    Existing phantom folders are refused unless ``overwrite``.
    """
    started = time.perf_counter()
    if not isinstance(cases, int) or isinstance(cases, bool) or cases < 1:
        raise DataError(f"cases must be a positive integer, got {cases!r}")
    size = tuple(int(v) for v in size)
    if len(size) != 3 or min(size) < 16:
        raise DataError(f"size must be three integers >= 16, got {size!r}")
    out = Path(out).expanduser()
    half_xy = 1.0
    half = (half_xy, half_xy * size[1] / size[0], half_xy * size[2] * CT_SPACING[2] / (size[0] * CT_SPACING[0]))
    scale = 2 * half_xy / (size[0] * CT_SPACING[0])  # world units per mm
    grids = {"ct": (size, CT_SPACING),
             "mr": (tuple(max(8, int(round(n / MR_FACTOR))) for n in size),
                    tuple(round(sp * MR_FACTOR, 6) for sp in CT_SPACING))}
    for domain in grids:
        d = out / domain
        if d.exists() and any(d.iterdir()):
            if not overwrite:
                raise DataError(f"{d}: already exists and is not empty; pass overwrite to replace "
                                "the phantom")
            for f in d.glob("case*_*.nii.gz"):
                f.unlink()
    result: Dict[str, Any] = {"classes": "mmwhs"}
    for di, (domain, (shape, spacing)) in enumerate(grids.items()):
        d = out / domain
        d.mkdir(parents=True, exist_ok=True)
        # the grid spans the same field of view in both domains
        dom_half = tuple(n * sp * scale / 2 for n, sp in zip(shape, spacing))
        for i in range(1, cases + 1):
            rng = np.random.default_rng([int(seed), di, i])
            scene = _render_anatomy(shape, dom_half, _subject(rng))
            image = _render_ct(scene, rng) if domain == "ct" else _render_mr(scene, rng)
            _save(image, spacing, d / f"case{i}_image.nii.gz")
            _save(scene.label, spacing, d / f"case{i}_label.nii.gz")
        result[domain] = {"images": str(d / "case{case}_image.nii.gz"),
                          "labels": str(d / "case{case}_label.nii.gz"),
                          "shape": list(shape), "spacing": list(spacing)}
    if log:
        log(f"phantom: {cases} CT-like + {cases} MR-like subjects (seed {seed}) in {out} "
            f"in {time.perf_counter() - started:.1f} s")
    return result
