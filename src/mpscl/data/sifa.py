"""The MM-WHS release of SIFA / PnP-AdaNet (the MPSCL paper's benchmark), without TensorFlow.

- Training/validation slices: TFRecord files, one tf.train.Example per slice with
  ``data_vol``/``label_vol`` (raw float32 bytes, shape from ``dsize_dim0..2`` /
  ``lsize_dim0..2``, 256x256x3: three neighbouring coronal slices), stored z-scored per
  volume. The middle slice (index 1) is the training sample; its label is the one used.
- Test volumes: ``.npz`` with ``arr_0`` (image H x W x D, z-scored) and ``arr_1`` (labels).

Intensities: the release's own loaders map BOTH kinds to about [-1, 1] with
``2 * (x - lo) / (hi - lo) - 1``, (lo, hi) = (-2.8, 3.2) for CT and (-1.8, 4.4) for MR,
without clipping (SIFA ``data_loader.py`` for TFRecords, ``evaluate.py`` for npz); we do
the same. The test npz volumes are also flipped along axes 0 and 1 (image and label) to
match the orientation of the training slices. Label value 5 is not a class: background.
"""
from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple, Union

import numpy as np

from .errors import DataError
from .prepare import find_cases, natural_key, resize_slices
from .prepared_writer import CaseArrays, check_case_id, write_dataset
from .tfrecord import read_examples

CLASSES = ["background", "MYO", "LAC", "LVC", "AA"]
LABEL_VALUES = [0, 1, 2, 3, 4]  # release ids; 5 -> background
CONTRAST = {"ct": (-2.8, 3.2), "mr": (-1.8, 4.4)}
NOT_A_CLASS = 5


@dataclass
class SifaSlice:
    """One TFRecord example: raw volumes as stored and the middle-slice label."""

    data_vol: np.ndarray  # float32 (256, 256, 3), z-scored as stored
    label_vol: np.ndarray  # float32 (256, 256, 3), release label values 0..5
    label: np.ndarray  # uint8 (256, 256): label of the middle slice, 5 -> 0
    index: int  # record index in its file


def _modality(modality: str) -> str:
    m = str(modality).lower()
    if m not in CONTRAST:
        raise DataError(f"modality must be 'ct' or 'mr', got {modality!r}")
    return m


def sifa_intensity(x: np.ndarray, modality: str) -> np.ndarray:
    """The release's mapping of z-scored values to about [-1, 1] (no clipping)."""
    lo, hi = CONTRAST[_modality(modality)]
    return (2.0 * (np.asarray(x, dtype=np.float32) - lo) / (hi - lo) - 1.0).astype(np.float32)


def _release_labels(lab: np.ndarray, where: str) -> np.ndarray:
    """Release label values (0..5, float or int) -> uint8 class ids with 5 -> background."""
    if not np.isfinite(lab).all():
        raise DataError(f"{where}: labels contain NaN/Inf")
    r = np.round(lab)
    if np.abs(lab - r).max(initial=0) > 1e-3 or r.min(initial=0) < 0 or r.max(initial=0) > 5:
        bad = np.unique(lab[(np.abs(lab - r) > 1e-3) | (r < 0) | (r > 5)])[:5]
        raise DataError(f"{where}: label values must be integers 0..5, found {bad.tolist()}")
    ids = r.astype(np.uint8)
    ids[ids == NOT_A_CLASS] = 0
    return ids


def _shape(ex: Dict, prefix: str, where: str) -> Tuple[int, int, int]:
    dims = []
    for d in range(3):
        v = ex.get(f"{prefix}_dim{d}")
        if not isinstance(v, np.ndarray) or v.dtype != np.int64 or v.size != 1:
            raise DataError(f"{where}: missing or malformed int64 feature {prefix}_dim{d}")
        dims.append(int(v[0]))
    if min(dims) < 1:
        raise DataError(f"{where}: invalid {prefix} shape {dims}")
    return tuple(dims)


def _volume(ex: Dict, key: str, shape: Tuple[int, ...], where: str) -> np.ndarray:
    v = ex.get(key)
    if not isinstance(v, list) or len(v) != 1:
        raise DataError(f"{where}: missing bytes feature {key}")
    raw = v[0]
    need = int(np.prod(shape)) * 4
    if len(raw) != need:
        raise DataError(f"{where}: {key} holds {len(raw)} bytes, its shape {shape} needs {need}")
    arr = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    if not np.isfinite(arr).all():
        raise DataError(f"{where}: {key} contains NaN/Inf")
    return arr


def read_tfrecord_slices(path: Union[str, Path]) -> List[SifaSlice]:
    """All slices of a SIFA/PnP-AdaNet TFRecord file, checksums and shapes verified."""
    out = []
    for i, ex in enumerate(read_examples(path)):
        where = f"{path}: record {i}"
        dshape, lshape = _shape(ex, "dsize", where), _shape(ex, "lsize", where)
        if dshape != lshape:
            raise DataError(f"{where}: data shape {dshape} differs from label shape {lshape}")
        if dshape[2] < 1:
            raise DataError(f"{where}: no slices in data shape {dshape}")
        data = _volume(ex, "data_vol", dshape, where)
        label_vol = _volume(ex, "label_vol", lshape, where)
        label = _release_labels(label_vol[:, :, lshape[2] // 2], where)
        out.append(SifaSlice(data, label_vol, label, i))
    return out


def read_sifa_npz(path: Union[str, Path], modality: str,
                  flip: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """A release test volume -> (image float32 H x W x D mapped to ~[-1, 1], label uint8 ids).

    ``flip`` (default, as the release's evaluation) flips image and label along axes 0 and 1
    into the orientation of the training slices; the intensity mapping is the release's
    test-time one (:func:`sifa_intensity`); label 5 becomes background.
    """
    path = str(path)
    modality = _modality(modality)
    try:
        with np.load(path, allow_pickle=False) as z:
            if "arr_0" not in z.files or "arr_1" not in z.files:
                raise DataError(f"{path}: expected arrays arr_0 (image) and arr_1 (labels), "
                                f"found {z.files}")
            image, label = np.asarray(z["arr_0"]), np.asarray(z["arr_1"])
    except DataError:
        raise
    except ValueError as e:
        if "pickled" in str(e):  # neither zip nor .npy: numpy would unpickle it
            raise DataError(f"{path}: cannot read npz file: it is neither a zip nor an .npy "
                            "(corrupt?); it was not read as a pickle, which mpscl never loads") from e
        if "Object arrays" not in str(e):
            raise DataError(f"{path}: cannot read npz file (corrupt or truncated?): {e}") from e
        raise DataError(f"{path}: refused: it holds Python object arrays (pickled data, which "
                        f"could run code when loaded); the release's npz hold numbers only") from e
    except Exception as e:  # zip/npy format errors, truncated files
        raise DataError(f"{path}: cannot read npz file (corrupt or truncated?): "
                        f"{type(e).__name__}: {e}") from e
    for key, arr in (("arr_0", image), ("arr_1", label)):
        if arr.dtype.kind not in "iuf":
            raise DataError(f"{path}: {key} has dtype {arr.dtype}; expected real numbers "
                            f"(float or integer)")
    if image.ndim == 2:
        image, label = image[:, :, None], (label[:, :, None] if label.ndim == 2 else label)
    if image.ndim != 3 or image.size == 0:
        raise DataError(f"{path}: arr_0 must be an H x W x D volume, got shape {image.shape}")
    if label.shape != image.shape:
        raise DataError(f"{path}: arr_1 shape {label.shape} differs from arr_0 shape {image.shape}")
    if not np.isfinite(image).all():
        raise DataError(f"{path}: arr_0 contains NaN/Inf")
    ids = _release_labels(label, path)
    image = image.astype(np.float32)
    if flip:
        image, ids = image[::-1, ::-1], ids[::-1, ::-1]
    return np.ascontiguousarray(sifa_intensity(image, modality)), np.ascontiguousarray(ids)


def _find_files(pattern: str) -> Dict[str, str]:
    """``{case}`` pattern or plain glob -> {case id: path}; without ``{case}`` the id is
    the file name without extension."""
    if "{case}" in pattern:
        return find_cases(pattern, "SIFA")
    folder = os.path.expanduser(pattern)
    if os.path.isdir(folder):  # the release's folder, as users type it: its TFRecord/npz files
        files = sorted(str(p) for p in Path(folder).iterdir()
                       if p.is_file() and p.name.endswith((".tfrecords", ".tfrecord", ".npz")))
        if not files:
            raise DataError(f"SIFA folder {pattern!r} holds no .tfrecords or .npz file")
    else:
        files = sorted((p for p in glob.glob(folder, recursive=True) if os.path.isfile(p)))
    if not files:
        raise DataError(f"SIFA pattern {pattern!r} matches no file")
    found: Dict[str, str] = {}
    for p in files:
        case = check_case_id(Path(p).name.split(".")[0], p)
        if case in found:
            raise DataError(f"SIFA pattern {pattern!r}: two files give case id {case!r}: "
                            f"{found[case]} and {p}; use a {{case}} pattern")
        found[case] = p
    return {c: found[c] for c in sorted(found, key=natural_key)}


def _stats(x: np.ndarray) -> Dict[str, float]:
    lo, hi = np.percentile(x, [0.5, 99.5])
    return {k: round(float(v), 6) for k, v in
            {"p0.5": lo, "p99.5": hi, "min": x.min(), "max": x.max(),
             "mean": x.mean(), "std": x.std()}.items()}


def _case(case: str, path: str, kind: str, modality: str, size: int,
          flip: bool) -> CaseArrays:
    neighbours = None
    if kind == "npz":
        image, ids = read_sifa_npz(path, modality, flip)  # (H, W, D)
    else:
        slices = read_tfrecord_slices(path)
        mid = [s.data_vol[:, :, s.data_vol.shape[2] // 2] for s in slices]
        if len({m.shape for m in mid}) != 1:
            raise DataError(f"{path}: records have different slice shapes")
        image = sifa_intensity(np.stack(mid, axis=2), modality)
        ids = np.stack([s.label for s in slices], axis=2)
        if all(s.data_vol.shape[2] == 3 for s in slices):
            # each record holds its slice's two neighbours: kept for data.context 1, since the
            # release's files hold one slice each and the case has no other neighbours
            neighbours = np.stack([resize_slices(sifa_intensity(np.moveaxis(s.data_vol[:, :, [0, 2]], 2, 0),
                                                                modality), size, "image")
                                   for s in slices])  # (S, 2, N, N)
    raw_stats = _stats(image)
    counts = np.bincount(ids.ravel(), minlength=len(CLASSES))
    meta = {
        "case": case, "file": f"cases/{case}.npz", "slices": int(image.shape[2]),
        # the release keeps no voxel size: 1 per axis (ASSD in voxels, the protocol's unit),
        # marked unknown so that nothing takes it for millimetres (data.context_spacing)
        "shape": [int(s) for s in image.shape], "spacing": [1.0, 1.0, 1.0], "spacing_unknown": True,
        "affine": np.eye(4).tolist(), "image": os.path.abspath(path),
        "label": os.path.abspath(path),
        "class_voxels": {n: int(counts[i]) for i, n in enumerate(CLASSES)},
        "intensity": raw_stats,
    }
    img_slices = np.moveaxis(image, 2, 0)
    lab_slices = np.moveaxis(ids, 2, 0)
    return CaseArrays(meta, resize_slices(img_slices, size, "image"),
                      resize_slices(lab_slices, size, "label"), ids, neighbours=neighbours)


def prepare_sifa(pattern: Union[str, Sequence[str]], modality: str, out: Union[str, Path], size: int = 256,
                 flip: bool = True, overwrite: bool = False,
                 log: Callable[[str], Any] = print) -> Dict[str, Any]:
    """Release files (``*.tfrecords`` or ``*.npz``) -> a prepared dataset; returns its manifest.

    ``pattern``: a file, glob or ``{case}`` pattern, or a list of them (``mpscl prepare-sifa
    FILES...``).

    Each TFRecord file is one case whose slices are its records (middle slice of each);
    each npz file is one volume case (slices along axis 2, flipped per ``flip``). Classes
    are background, MYO, LAC, LVC, AA with label_values 0..4 (release ids). Intensities
    get the release mapping for ``modality``; no further normalisation.
    """
    started = time.perf_counter()
    modality = _modality(modality)
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or not 2 <= size <= 4096:
        raise DataError(f"size must be an integer in 2..4096, got {size!r}")
    patterns = [str(pattern)] if isinstance(pattern, (str, Path)) else [str(p) for p in pattern]
    if not patterns:
        raise DataError("no SIFA input files given")
    files: Dict[str, str] = {}
    for pat in patterns:
        for case, path in _find_files(pat).items():
            if case in files and os.path.abspath(files[case]) != os.path.abspath(path):
                raise DataError(f"two inputs give case id {case!r}: {files[case]} and {path}")
            files[case] = path
    files = {c: files[c] for c in sorted(files, key=natural_key)}
    absolute = [os.path.abspath(os.path.expanduser(p)) for p in patterns]
    pattern = patterns[0] if len(patterns) == 1 else ", ".join(patterns)
    kinds = {("npz" if p.endswith(".npz") else "tfrecord") for p in files.values()}
    if len(kinds) > 1:
        raise DataError(f"SIFA input {pattern!r} mixes .npz and TFRecord files")
    kind = kinds.pop()
    lo, hi = CONTRAST[modality]
    header = {
        "labelled": True, "size": int(size), "axis": 2,
        "classes": CLASSES, "label_values": LABEL_VALUES,
        "normalisation": (f"SIFA release: z-scored per volume by the release, then "
                          f"2*(x-({lo}))/({hi}-({lo}))-1 ({modality.upper()}), not clipped"
                          + ("; npz volumes flipped along axes 0 and 1"
                             if kind == "npz" and flip else "")),
        "resize": "image bilinear (antialiased), label nearest-exact (none at 256)",
        "modality": modality,
        "source": {"kind": f"sifa-{kind}", "images": absolute[0] if len(absolute) == 1 else absolute,
                   "modality": modality, "size": int(size), "flip": bool(flip)},
    }

    def produce() -> Iterator[CaseArrays]:
        for case, path in files.items():
            yield _case(case, path, kind, modality, int(size), flip)

    return write_dataset(out, header, produce(), overwrite=overwrite, log=log, started=started)
