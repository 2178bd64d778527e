"""``mpscl prepare``: NIfTI volumes found by file patterns -> a prepared dataset.

Images and labels are found with patterns holding one ``{case}`` placeholder, e.g.
``data/C0/patient{case}_C0.nii.gz``; they are paired by the case id the placeholder
matches (never by listing order) and every pairing problem is an error naming the files.
Each volume is cut into slices along ``axis``, normalised per volume (clip to
[p0.5, p99.5], linear map to [-1, 1]) and resized in-plane to ``size`` x ``size``
(images: antialiased bilinear; labels: nearest neighbour). See docs/ARCHITECTURE.md for
the output layout.
"""
from __future__ import annotations

import glob
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError
from .io import read_nifti
from .orientation import canonical_volume, check_plane, plane_axis, to_canonical
from .labelmap import LabelMap, parse_class_map
from .prepared_writer import CaseArrays, check_case_id, write_dataset

NORMALISATION = "per volume: clip to [p0.5, p99.5], then linear map to [-1, 1]"
RESIZE = ("in-plane to size x size: image bilinear (antialiased, align_corners=False), "
          "label nearest-exact")
AFFINE_ATOL = 1e-3  # mm; headers store float32, so equal geometries differ by rounding only


# ----------------------------------------------------------------------------- patterns
def natural_key(text: str) -> Tuple:
    """Sort key with digit runs compared as numbers: 1, 2, 10 rather than 1, 10, 2."""
    return tuple((0, int(t), t) if t.isdigit() else (1, 0, t)
                 for t in re.split(r"(\d+)", text) if t)


def _pattern_parts(pattern: str) -> Tuple[str, str]:
    """-> (glob pattern, regex with a ``case`` group) for a pattern with one ``{case}``."""
    n = pattern.count("{case}")
    if n != 1:
        raise DataError(f"pattern {pattern!r} must contain exactly one {{case}} placeholder "
                        f"(found {n}), e.g. 'data/patient{{case}}_C0.nii.gz'")
    before, after = pattern.split("{case}")

    def translate(part: str) -> Tuple[str, str]:
        g, r = [], []
        for tok in re.split(r"(\*\*/|\*\*|\*|\?)", part):
            if tok == "**/":
                g.append("**/"), r.append(r"(?:[^/\\]*/)*")
            elif tok == "**":
                g.append("**"), r.append(".*")
            elif tok == "*":
                g.append("*"), r.append(r"[^/\\]*")
            elif tok == "?":
                g.append("?"), r.append(r"[^/\\]")
            elif tok:
                g.append(glob.escape(tok)), r.append(re.escape(tok))
        return "".join(g), "".join(r)

    gb, rb = translate(before)
    ga, ra = translate(after)
    return gb + "*" + ga, "^" + rb + r"(?P<case>[^/\\]+)" + ra + "$"


def find_cases(pattern: str, what: str = "image", exclude=()) -> Dict[str, str]:
    """Files matching ``pattern`` -> ``{case id: path}`` in natural case order.

    Paths in ``exclude`` are skipped (an image pattern ``{case}.nii.gz`` also matches the
    label files ``{case}_seg.nii.gz``; those belong to the label pattern).
    """
    pattern = os.path.expanduser(str(pattern))
    gpat, rpat = _pattern_parts(pattern)
    regex = re.compile(rpat)
    found: Dict[str, str] = {}
    skip = {os.path.abspath(p) for p in exclude}
    for path in glob.glob(gpat, recursive=True):
        if not os.path.isfile(path) or os.path.abspath(path) in skip:
            continue
        m = regex.match(path)
        if m is None:  # glob and regex disagree only on exotic paths; be explicit
            raise DataError(f"{path}: matches the {what} pattern {pattern!r} as a glob but "
                            "the case id cannot be extracted")
        case = check_case_id(m.group("case"), path)
        if case in found:
            raise DataError(f"{what} pattern {pattern!r}: case {case!r} matches two files: "
                            f"{found[case]} and {path}")
        found[case] = path
    if not found:
        raise DataError(f"{what} pattern {pattern!r} matches no file")
    return {c: found[c] for c in sorted(found, key=natural_key)}


def pair_cases(images: Dict[str, str], labels: Dict[str, str]) -> List[Tuple[str, str, str]]:
    """Pair by case id -> [(case, image, label)]; any unpaired file is an error naming it."""
    lonely_img = [f"{images[c]} (case {c})" for c in images if c not in labels]
    lonely_lab = [f"{labels[c]} (case {c})" for c in labels if c not in images]
    if lonely_img or lonely_lab:
        msg = ["images and labels do not pair up by case id:"]
        if lonely_img:
            msg.append("  images without a label: " + ", ".join(lonely_img))
        if lonely_lab:
            msg.append("  labels without an image: " + ", ".join(lonely_lab))
        raise DataError("\n".join(msg))
    return [(c, images[c], labels[c]) for c in images]


# ----------------------------------------------------------------------------- arrays
def normalise(volume: np.ndarray, source: str = "image") -> Tuple[np.ndarray, Dict[str, float]]:
    """Clip to [p0.5, p99.5] of the volume, map linearly to [-1, 1]; also return the stats."""
    lo, hi = (float(v) for v in np.percentile(volume, [0.5, 99.5]))
    stats = {"p0.5": lo, "p99.5": hi, "min": float(volume.min()), "max": float(volume.max()),
             "mean": float(volume.mean()), "std": float(volume.std())}
    if not hi > lo:
        raise DataError(f"{source}: image is constant between its 0.5 and 99.5 percentiles "
                        f"({lo:g}); cannot normalise it")
    out = (np.clip(volume, lo, hi) - lo) * (2.0 / (hi - lo)) - 1.0
    return out.astype(np.float32), stats


def resize_slices(slices: np.ndarray, size: int, kind: str) -> np.ndarray:
    """(S, H, W) -> (S, size, size); ``kind`` "image" (bilinear) or "label" (nearest)."""
    if slices.shape[1:] == (size, size):
        return slices.copy()
    t = torch.from_numpy(np.ascontiguousarray(slices, dtype=np.float32))[:, None]
    if kind == "image":
        r = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)
        return r[:, 0].numpy().astype(np.float32)
    r = F.interpolate(t, size=(size, size), mode="nearest-exact")
    return r[:, 0].numpy().round().astype(slices.dtype)


def to_slices(volume: np.ndarray, axis: int) -> np.ndarray:
    """(X, Y, Z) -> (S, H, W) with the slice axis first (inverse: :func:`from_slices`)."""
    return np.moveaxis(volume, axis, 0)


def _axis(axis: int) -> int:
    if not isinstance(axis, (int, np.integer)) or not -3 <= int(axis) <= 2:
        raise DataError(f"axis must be 0, 1, 2 or -1..-3, got {axis!r}")
    return int(axis) % 3


def _process(case: str, image: str, label: Optional[str], lmap: LabelMap, size: int,
             axis: int, strict: bool, plane: Optional[str] = None) -> CaseArrays:
    vol = read_nifti(image)
    warnings: List[str] = []
    data, spacing = vol.data, vol.spacing
    if plane is not None:  # the arrays (and so shape, spacing, labels) in canonical RAS order
        data, spacing, ornt = canonical_volume(data, spacing, vol.affine)
    norm, stats = normalise(data, image)
    meta: Dict[str, Any] = {
        "case": case, "file": f"cases/{case}.npz", "slices": int(data.shape[axis]),
        "shape": [int(s) for s in data.shape],
        "spacing": [round(float(s), 6) for s in spacing],
        "affine": [[float(v) for v in row] for row in vol.affine],
        "image": os.path.abspath(image),
    }
    if plane is not None:
        meta["orientation"] = [[int(v) for v in row] for row in ornt]  # stored -> RAS axis, direction
    slices = np.clip(resize_slices(to_slices(norm, axis), size, "image"), -1.0, 1.0)
    result = CaseArrays(meta, slices, warnings=warnings)
    if label is not None:
        lab = read_nifti(label)
        if lab.data.shape != vol.data.shape:
            raise DataError(f"{label}: label shape {lab.data.shape} differs from image "
                            f"{image} shape {vol.data.shape}")
        diff = float(np.abs(lab.affine - vol.affine).max())
        if diff > AFFINE_ATOL:
            raise DataError(f"{label}: label affine differs from image {image} affine "
                            f"(max difference {diff:.3g}); they do not lie on the same grid")
        ids, unmapped = lmap.to_ids(lab.data if plane is None else to_canonical(lab.data, ornt), label)
        if unmapped:
            what = ", ".join(f"{v}: {n} voxels" for v, n in sorted(unmapped.items()))
            msg = f"{label}: label values not in the class map, set to background ({what})"
            if strict:
                raise DataError(msg + "; refused because strict is on")
            warnings.append(msg)
        counts = np.bincount(ids.ravel(), minlength=lmap.num_classes)
        meta["label"] = os.path.abspath(label)
        meta["class_voxels"] = {n: int(counts[i]) for i, n in enumerate(lmap.classes)}
        if unmapped:
            meta["unmapped_voxels"] = {str(v): n for v, n in sorted(unmapped.items())}
        result.label = resize_slices(to_slices(ids, axis), size, "label")
        result.label_orig = ids
    meta["intensity"] = {k: round(v, 6) for k, v in stats.items()}
    return result


def prepare_dataset(images: str, labels: Optional[str], classes: str, out: Union[str, Path],
                    size: int = 256, axis: int = -1, strict: bool = False,
                    overwrite: bool = False, plane: Optional[str] = None,
                    log: Callable[[str], Any] = print) -> Dict[str, Any]:
    """Prepare NIfTI volumes as a dataset folder ``out``; return its manifest.

    ``images``/``labels``: patterns with one ``{case}`` (``labels=None``: unlabelled set);
    ``classes``: class map such as ``"200=MYO,500=LV,600=RV"`` or a preset (``mscmrseg``,
    ``mmwhs``); ``size``: in-plane size N; ``axis``: slice axis of the stored array;
    ``plane``: ``axial``, ``coronal`` or ``sagittal``: each volume is reoriented to the
    closest canonical RAS order (permuted and flipped, not resampled; data/orientation.py)
    and cut in that plane, whatever its stored order (``axis`` must then be left at -1);
    ``strict``: refuse label values outside the class map instead of warning;
    ``overwrite``: replace an existing prepared dataset at ``out`` (even an identical one).
    The dataset is built in a temporary sibling folder and renamed into place at the end.
    """
    started = time.perf_counter()
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or not 2 <= size <= 4096:
        raise DataError(f"size must be an integer in 2..4096, got {size!r}")
    axis = _axis(axis)
    if check_plane(plane) is not None:
        if axis != 2:
            raise DataError(f"give a slice axis or a plane, not both (axis {axis}, plane {plane})")
        axis = plane_axis(plane)
    lmap = parse_class_map(classes)
    if labels is not None:
        lab_cases = find_cases(labels, "label")
        pairs = pair_cases(find_cases(images, "image", exclude=lab_cases.values()), lab_cases)
    else:
        img_cases = find_cases(images, "image")
        pairs = [(c, p, None) for c, p in img_cases.items()]
    header = {
        "labelled": labels is not None, "size": int(size), "axis": axis,
        "classes": list(lmap.classes), "label_values": list(lmap.label_values),
        "normalisation": NORMALISATION, "resize": RESIZE,
        "source": {"kind": "nifti", "images": os.path.abspath(os.path.expanduser(images)),
                   "labels": (os.path.abspath(os.path.expanduser(labels))
                              if labels is not None else None),
                   "classes": classes, "size": int(size), "axis": axis, "strict": bool(strict)},
    }
    if plane is not None:  # absent otherwise, so datasets prepared before it keep their identity
        header["plane"] = header["source"]["plane"] = plane

    def produce() -> Iterator[CaseArrays]:
        for case, img, lab in pairs:
            yield _process(case, img, lab, lmap, int(size), axis, strict, plane)

    return write_dataset(out, header, produce(), overwrite=overwrite, log=log, started=started)
