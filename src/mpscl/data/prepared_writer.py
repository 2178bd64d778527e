"""The prepared-dataset folder: manifest validation, atomic writing, summary table.

Layout (docs/ARCHITECTURE.md)::

    DIR/manifest.json
    DIR/cases/<case>.npz    image float32 (S,N,N); label uint8 (S,N,N); label_orig uint8

A dataset is built in a hidden temporary sibling of ``DIR`` and renamed into place only
when every case has been written, so a failure leaves nothing behind and an existing
dataset is replaced only after its successor is complete.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

import numpy as np

from .errors import DataError
from .orientation import PLANES

FORMAT = "mpscl-dataset"
VERSION = 1
MANIFEST = "manifest.json"
CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
_REQUIRED = ("format", "version", "labelled", "size", "axis", "classes", "label_values", "cases")
_REQUIRED_CASE = ("case", "file", "slices", "shape")


@dataclass
class CaseArrays:
    """One case ready to be stored: ``meta`` goes to the manifest, arrays to the npz."""

    meta: Dict[str, Any]
    image: np.ndarray  # float32 (S, N, N)
    label: Optional[np.ndarray] = None  # uint8 (S, N, N)
    label_orig: Optional[np.ndarray] = None  # uint8, original array shape
    # float32 (S, 2, N, N): the slices just before and after each slice as the source stored
    # them (the SIFA release's three-slice records); data.context 1 reads them (data/context.py)
    neighbours: Optional[np.ndarray] = None
    warnings: List[str] = field(default_factory=list)


def check_case_id(case: str, source: str) -> str:
    if not CASE_ID.match(case):
        raise DataError(f"{source}: case id {case!r} must be letters, digits, '.', '_' or '-' "
                        "(it names the case file)")
    return case


def validate_manifest(manifest: Any, where: str) -> Dict[str, Any]:
    """Check the structure of a manifest dict; raise :class:`DataError` naming ``where``."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{where}: not a prepared mpscl dataset (no format {FORMAT!r}); "
                        "create one with `mpscl prepare`")
    if manifest.get("version") != VERSION:
        raise DataError(f"{where}: dataset format version {manifest.get('version')!r} is not "
                        f"supported (expected {VERSION}); prepare the data again")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise DataError(f"{where}: manifest lacks {', '.join(missing)}")
    classes, values = manifest["classes"], manifest["label_values"]
    if (not isinstance(classes, list) or not isinstance(values, list) or len(classes) != len(values)
            or len(classes) < 2 or classes[0] != "background" or values[0] != 0):
        raise DataError(f"{where}: classes/label_values must be equally long lists starting "
                        "with background = 0")
    if not isinstance(manifest["size"], int) or manifest["size"] < 1:
        raise DataError(f"{where}: size must be a positive integer")
    if manifest["axis"] not in (0, 1, 2):
        raise DataError(f"{where}: axis must be 0, 1 or 2")
    plane = manifest.get("plane")
    if plane is not None and (plane not in PLANES or PLANES[plane] != manifest["axis"]):
        raise DataError(f"{where}: plane {plane!r} does not fit axis {manifest['axis']}")
    cases = manifest["cases"]
    if not isinstance(cases, list) or not cases:
        raise DataError(f"{where}: the dataset has no cases")
    seen = set()
    for i, c in enumerate(cases):
        if not isinstance(c, dict) or any(k not in c for k in _REQUIRED_CASE):
            raise DataError(f"{where}: case entry {i} lacks one of {', '.join(_REQUIRED_CASE)}")
        check_case_id(str(c["case"]), where)
        if c["case"] in seen:
            raise DataError(f"{where}: case {c['case']!r} is listed twice")
        seen.add(c["case"])
        f = str(c["file"])
        if os.path.isabs(f) or ".." in Path(f).parts:
            raise DataError(f"{where}: case {c['case']!r} file {f!r} must be inside the dataset")
        if (not isinstance(c["shape"], list) or len(c["shape"]) != 3
                or c["shape"][manifest["axis"]] != c["slices"]):
            raise DataError(f"{where}: case {c['case']!r}: shape/slices/axis are inconsistent")
    return manifest


def read_manifest(root: Path) -> Dict[str, Any]:
    path = root / MANIFEST
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset folder")
    if not path.is_file():
        raise DataError(f"{root}: not a prepared mpscl dataset (no {MANIFEST}); "
                        "create one with `mpscl prepare`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable manifest: {e}") from e
    return validate_manifest(manifest, str(path))


def _check_destination(out: Path, source: Dict[str, Any], overwrite: bool) -> None:
    """Refuse to write over anything unless ``overwrite`` and it is a dataset (or empty)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    if not any(out.iterdir()):
        return  # an empty folder is simply used
    try:
        old = read_manifest(out)
    except DataError:
        raise DataError(f"{out}: folder is not empty and is not a prepared dataset; "
                        "refusing to replace it (choose another output folder)") from None
    if overwrite:
        return
    if old.get("source") == source:
        raise DataError(f"{out}: already holds this dataset (same inputs and settings); "
                        "pass overwrite (--overwrite) to rebuild it")
    raise DataError(f"{out}: already holds a different prepared dataset "
                    f"(from {old.get('source', {}).get('images', '?')}); "
                    "pass overwrite (--overwrite) to replace it")


def _write_npz(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    """An ``.npz`` that ``np.load`` reads: float images stored as is (fast to write and
    read, noise does not compress), integer labels deflated (they shrink ~50x)."""
    with open(path, "wb") as f:
        with zipfile.ZipFile(f, "w", allowZip64=True) as zf:
            for name, arr in arrays.items():
                info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED if arr.dtype.kind == "f" else zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                with zf.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, arr, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def write_dataset(out, header: Dict[str, Any], cases: Iterable[CaseArrays], *,
                  overwrite: bool = False, log: Callable[[str], Any] = print,
                  started: Optional[float] = None) -> Dict[str, Any]:
    """Store ``cases`` under ``out`` atomically and return the manifest.

    ``header`` holds the dataset-level keys (``labelled``, ``size``, ``axis``, ``classes``,
    ``label_values``, ``normalisation``, ``source``...). ``cases`` is consumed lazily, so
    reading and converting happen inside the atomic build: an exception anywhere removes
    the temporary folder and leaves ``out`` as it was.
    """
    out = Path(out).expanduser().absolute()
    started = time.perf_counter() if started is None else started
    _check_destination(out, header.get("source"), overwrite)
    created: List[Path] = []  # parents we create, removed again on failure
    p = out.parent
    while not p.exists():
        created.append(p)
        p = p.parent
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    old: Optional[Path] = None
    try:
        (tmp / "cases").mkdir()
        entries: List[Dict[str, Any]] = []
        for item in cases:
            case = item.meta["case"]
            if any(e["case"] == case for e in entries):
                raise DataError(f"case {case!r} occurs twice ({item.meta.get('image')})")
            arrays = {"image": np.ascontiguousarray(item.image, dtype=np.float32)}
            if item.neighbours is not None:
                arrays["neighbours"] = np.ascontiguousarray(item.neighbours, dtype=np.float32)
            if item.label is not None:
                arrays["label"] = np.ascontiguousarray(item.label, dtype=np.uint8)
                arrays["label_orig"] = np.ascontiguousarray(item.label_orig, dtype=np.uint8)
            _write_npz(tmp / "cases" / f"{case}.npz", arrays)
            meta = dict(item.meta)
            meta["file"] = f"cases/{case}.npz"
            entries.append(meta)
            for w in item.warnings:
                log(f"warning: {w}")
        if not entries:
            raise DataError("no cases to write")
        manifest = dict(format=FORMAT, version=VERSION, **header)
        manifest["cases"] = entries
        manifest["totals"] = _totals(manifest)
        validate_manifest(manifest, str(out))
        for name, n in manifest["totals"].get("class_voxels", {}).items():
            if n == 0 and name != "background":
                log(f"warning: class {name} has no voxels in any case; is the class map right?")
        with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp / "cases")
        if out.exists():  # replace: move the old one aside, move the new one in, then delete
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "dataset")
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old / "dataset", out)
                raise
        else:
            os.replace(tmp, out)
        _fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not (old / "dataset").exists():
            shutil.rmtree(old, ignore_errors=True)
        for d in created:
            try:
                d.rmdir()
            except OSError:
                break
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    log(summary_table(manifest, time.perf_counter() - started, out))
    return manifest


def _totals(manifest: Dict[str, Any]) -> Dict[str, Any]:
    cases = manifest["cases"]
    totals: Dict[str, Any] = {"cases": len(cases), "slices": int(sum(c["slices"] for c in cases))}
    if manifest.get("labelled"):
        totals["class_voxels"] = {name: int(sum(c.get("class_voxels", {}).get(name, 0)
                                                for c in cases))
                                  for name in manifest["classes"]}
    spacings = [c["spacing"] for c in cases if "spacing" in c]
    if spacings:
        arr = np.asarray(spacings, dtype=float)
        totals["spacing_min"] = [round(float(v), 6) for v in arr.min(0)]
        totals["spacing_max"] = [round(float(v), 6) for v in arr.max(0)]
    return totals


def summary_table(manifest: Dict[str, Any], seconds: float, out: Path) -> str:
    """A plain-text table: one row per case, then the totals."""
    classes = manifest["classes"][1:] if manifest.get("labelled") else []
    head = ["case", "shape", "slices", "spacing (mm)"] + classes
    rows = []
    shown = manifest["cases"]
    if len(shown) > 60:  # keep the table readable for slice-per-file releases
        shown = shown[:25] + [None] + shown[-5:]
    for c in shown:
        if c is None:
            rows.append(["..."] + [""] * (len(head) - 1))
            continue
        sp = "x".join(f"{v:.3g}" for v in c.get("spacing", []))
        row = [c["case"], "x".join(str(v) for v in c["shape"]), str(c["slices"]), sp]
        row += [str(c.get("class_voxels", {}).get(n, 0)) for n in classes]
        rows.append(row)
    t = manifest["totals"]
    total = ["total", f"{t['cases']} cases", str(t["slices"]), ""]
    total += [str(t.get("class_voxels", {}).get(n, 0)) for n in classes]
    widths = [max(len(r[i]) for r in rows + [head, total]) for i in range(len(head))]

    def fmt(r):
        return "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths)))

    rule = "-" * len(fmt(head))
    lines = [fmt(head), rule] + [fmt(r) for r in rows] + [rule, fmt(total)]
    if "spacing_min" in t:
        lo = "x".join(f"{v:.3g}" for v in t["spacing_min"])
        hi = "x".join(f"{v:.3g}" for v in t["spacing_max"])
        lines.append(f"spacing range: {lo} .. {hi} mm")
    lines.append(f"prepared {t['cases']} cases, {t['slices']} slices of "
                 f"{manifest['size']}x{manifest['size']} into {out} in {seconds:.1f} s")
    return "\n".join(lines)
