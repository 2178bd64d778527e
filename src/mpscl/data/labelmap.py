"""Class maps: which raw label value is which class.

A class map is written ``"200=MYO,500=LV,600=RV"`` (raw value = class name) or named by a
preset (``mmwhs``, ``mscmrseg``). Class ids are 0 for background and 1..K in the order
given; every raw value not in the map is background.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

from .errors import DataError

PRESETS: Dict[str, str] = {
    # MM-WHS raw values; RV 600, RA 550, PA 850 are background in the SIFA/MPSCL protocol
    "mmwhs": "205=MYO,420=LAC,500=LVC,820=AA",
    # MS-CMRSeg 2019: LV myocardium, LV blood pool, RV blood pool
    "mscmrseg": "200=MYO,500=LV,600=RV",
}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class LabelMap:
    """``classes[i]`` is the name of class id ``i``; ``label_values[i]`` its raw value."""

    classes: Tuple[str, ...]
    label_values: Tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_ids(self, raw: np.ndarray, source: str = "labels") -> Tuple[np.ndarray, Dict[int, int]]:
        """See :func:`map_labels`."""
        return map_labels(raw, self, source)

    def to_values(self, ids: np.ndarray) -> np.ndarray:
        """Class ids -> raw label values (int32), e.g. to write predictions as NIfTI."""
        ids = np.asarray(ids)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_classes):
            raise DataError(f"class ids must be in 0..{self.num_classes - 1}, "
                            f"got {int(ids.min())}..{int(ids.max())}")
        return np.asarray(self.label_values, dtype=np.int32)[ids]


def parse_class_map(spec: str) -> LabelMap:
    """``"200=MYO,500=LV"`` or a preset name -> :class:`LabelMap` with background first.

    >>> parse_class_map("200=MYO,500=LV").label_values
    (0, 200, 500)
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError("class map is empty: give VALUE=NAME pairs such as "
                        f"'200=MYO,500=LV' or a preset ({', '.join(PRESETS)})")
    text = spec.strip()
    if text.lower() in PRESETS:
        text = PRESETS[text.lower()]
    elif "=" not in text:
        raise DataError(f"class map {spec!r}: unknown preset; presets are "
                        f"{', '.join(PRESETS)}, or write VALUE=NAME pairs such as '200=MYO,500=LV'")
    names: List[str] = ["background"]
    values: List[int] = [0]
    for item in text.split(","):
        item = item.strip()
        if item.count("=") != 1:
            raise DataError(f"class map {spec!r}: {item!r} is not VALUE=NAME")
        v, name = (s.strip() for s in item.split("="))
        if not re.fullmatch(r"[+-]?\d+", v):
            raise DataError(f"class map {spec!r}: value {v!r} of {name!r} is not an integer")
        value = int(v)
        if value == 0:
            raise DataError(f"class map {spec!r}: value 0 is background and cannot be a class")
        if value < 0:
            raise DataError(f"class map {spec!r}: value {value} is negative")
        if not _NAME.match(name):
            raise DataError(f"class map {spec!r}: class name {name!r} must start with a letter "
                            "and contain only letters, digits, '_' or '-'")
        if name.lower() == "background":
            raise DataError(f"class map {spec!r}: 'background' is reserved for value 0")
        if value in values:
            raise DataError(f"class map {spec!r}: value {value} is given twice")
        if name.lower() in (n.lower() for n in names):
            raise DataError(f"class map {spec!r}: class name {name!r} is given twice")
        names.append(name)
        values.append(value)
    if len(names) > 255:
        raise DataError(f"class map {spec!r}: at most 254 classes fit the uint8 label format")
    return LabelMap(tuple(names), tuple(values))


def map_labels(raw: np.ndarray, label_map: LabelMap,
               source: str = "labels") -> Tuple[np.ndarray, Dict[int, int]]:
    """Raw label array -> (uint8 class ids of the same shape, {unmapped value: voxel count}).

    Values not in the map (other than 0) become background and are counted in the second
    return value. Non-integer values are refused (``source`` names the file in the error).
    """
    raw = np.asarray(raw)
    if raw.dtype.kind == "f":
        if not np.isfinite(raw).all():
            raise DataError(f"{source}: label array contains NaN/Inf")
        rounded = np.round(raw)
        bad = np.abs(raw - rounded) > 1e-3
        if bad.any():
            examples = np.unique(raw[bad])[:5].tolist()
            raise DataError(f"{source}: label values must be integers, found {examples} "
                            f"({int(bad.sum())} voxels); is this an image rather than a label?")
        raw = rounded.astype(np.int64)
    elif raw.dtype.kind not in "iub":
        raise DataError(f"{source}: label array has dtype {raw.dtype}, expected numbers")
    known = {v: i for i, v in enumerate(label_map.label_values)}
    unmapped: Dict[int, int] = {}
    if raw.size and raw.min() >= 0 and raw.max() < 1 << 20:  # common case: a direct lookup
        flat = raw.astype(np.int64, copy=False).ravel()
        counts = np.bincount(flat)
        lut = np.zeros(len(counts), dtype=np.uint8)
        for v in np.flatnonzero(counts).tolist():
            if v in known:
                lut[v] = known[v]
            elif v != 0:
                unmapped[v] = int(counts[v])
        return lut[flat].reshape(raw.shape), unmapped
    values, inverse = np.unique(raw, return_inverse=True)
    counts = np.bincount(inverse.ravel(), minlength=len(values))
    lut = np.zeros(len(values), dtype=np.uint8)
    for j, v in enumerate(values.tolist()):
        if v in known:
            lut[j] = known[v]
        else:
            unmapped[int(v)] = int(counts[j])
    return lut[inverse.reshape(raw.shape)], unmapped


def class_shares(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Each class's share of the labelled pixels of ``labels`` (any shape, ids 0..K-1; negative
    ids ignored)."""
    labels = np.asarray(labels)
    counts = np.bincount(labels[labels >= 0].ravel(), minlength=num_classes)[:num_classes]
    if counts.sum() == 0:
        raise ValueError("class_shares: no labelled pixel")
    return counts / counts.sum()
