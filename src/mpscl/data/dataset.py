"""Reading prepared datasets: whole cases (:class:`PreparedDataset`) and training slices
(:class:`SliceDataset`, a torch Dataset)."""
from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .context import case_stacks
from .errors import DataError
from .prepared_writer import read_manifest

CaseSpec = Union[None, str, Iterable[str]]


def parse_case_spec(spec: str) -> List[str]:
    """``"6-45"`` or ``"1,3,5-7"`` -> case ids as strings, ranges expanded, order kept.

    A token ``A-B`` of two integers is an inclusive range; any other token is a case id
    taken literally (``"ct_1003"``). Duplicates are dropped.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError("case spec is empty; write e.g. '6-45' or '1,3,5-7'")
    out: List[str] = []
    for tok in (t.strip() for t in spec.split(",")):
        if not tok:
            raise DataError(f"case spec {spec!r} has an empty item")
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", tok)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if a > b:
                raise DataError(f"case spec {spec!r}: range {tok!r} runs backwards")
            ids = [str(i) for i in range(a, b + 1)]
        elif re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\-]*", tok):
            ids = [tok]
        else:
            raise DataError(f"case spec {spec!r}: {tok!r} is neither a case id nor a range A-B")
        out.extend(i for i in ids if i not in out)
    return out


def from_slices(slices, meta: Dict[str, Any]):
    """(S, h, w) slices of a case -> volume in the original array order (numpy or torch).

    Only the slice axis is moved back (to ``meta["axis"]``); when ``h, w`` is the original
    in-plane shape the result has the original array shape. Resizing back in-plane is the
    caller's job (on probabilities, before the argmax).
    """
    axis = int(meta["axis"])
    if slices.ndim != 3:
        raise DataError(f"case {meta.get('case')}: from_slices expects (S, h, w), "
                        f"got shape {tuple(slices.shape)}")
    if slices.shape[0] != meta["slices"]:
        raise DataError(f"case {meta.get('case')}: got {slices.shape[0]} slices, "
                        f"the case has {meta['slices']}")
    if isinstance(slices, torch.Tensor):
        return torch.movedim(slices, 0, axis)
    return np.moveaxis(np.asarray(slices), 0, axis)


class PreparedDataset:
    """A prepared dataset folder (see docs/ARCHITECTURE.md), validated on open."""

    def __init__(self, root: Union[str, Path]):
        self.root = Path(root).expanduser()
        self.manifest: Dict[str, Any] = read_manifest(self.root)
        missing = [c["file"] for c in self.manifest["cases"] if not (self.root / c["file"]).is_file()]
        if missing:
            raise DataError(f"{self.root}: case files missing: {', '.join(missing[:5])}"
                            + (" ..." if len(missing) > 5 else ""))
        self._by_id = {str(c["case"]): c for c in self.manifest["cases"]}

    classes = property(lambda self: list(self.manifest["classes"]))
    label_values = property(lambda self: list(self.manifest["label_values"]))
    labelled = property(lambda self: bool(self.manifest["labelled"]))
    size = property(lambda self: int(self.manifest["size"]))
    axis = property(lambda self: int(self.manifest["axis"]))
    # anatomical plane the volumes were cut in (data/orientation.py); None: the stored axis
    plane = property(lambda self: self.manifest.get("plane"))
    num_classes = property(lambda self: len(self.manifest["classes"]))
    case_ids = property(lambda self: list(self._by_id))

    def __len__(self) -> int:
        return len(self._by_id)

    def __repr__(self) -> str:
        return (f"PreparedDataset({str(self.root)!r}, {len(self)} cases, "
                f"{self.manifest.get('totals', {}).get('slices', '?')} slices, "
                f"classes={self.classes})")

    def meta(self, case_id: str) -> Dict[str, Any]:
        """The manifest entry of a case plus ``axis``, ``size`` and ``classes``."""
        entry = self._by_id.get(str(case_id))
        if entry is None:
            raise DataError(f"{self.root}: no case {case_id!r} (cases: "
                            f"{_short_list(self.case_ids)})")
        return dict(entry, axis=self.axis, size=self.size, classes=self.classes)

    def case(self, case_id: str) -> Dict[str, Any]:
        """Load a case: ``dict(image (S,N,N) float32, label (S,N,N) uint8 | None,
        label_orig uint8 | None, meta)``."""
        meta = self.meta(case_id)
        path = self.root / meta["file"]
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise DataError(f"{path}: unreadable case file (corrupt or truncated? prepare the "
                            f"dataset again): {e}") from e
        s, n = meta["slices"], self.size
        image = arrays.get("image")
        if image is None or image.shape != (s, n, n) or image.dtype != np.float32:
            raise DataError(f"{path}: 'image' must be float32 {(s, n, n)}, got "
                            f"{'none' if image is None else f'{image.dtype} {image.shape}'}")
        label = label_orig = None
        if self.labelled:
            label, label_orig = arrays.get("label"), arrays.get("label_orig")
            if label is None or label.shape != (s, n, n):
                raise DataError(f"{path}: 'label' must have shape {(s, n, n)}")
            if label_orig is None or list(label_orig.shape) != list(meta["shape"]):
                raise DataError(f"{path}: 'label_orig' must have shape {tuple(meta['shape'])}")
            if label.size and int(max(label.max(), label_orig.max())) >= self.num_classes:
                raise DataError(f"{path}: class ids beyond the {self.num_classes} classes")
        out = {"image": image, "label": label, "label_orig": label_orig, "meta": meta}
        neighbours = arrays.get("neighbours")
        if neighbours is not None:
            if neighbours.shape != (s, 2, n, n) or neighbours.dtype != np.float32:
                raise DataError(f"{path}: 'neighbours' must be float32 {(s, 2, n, n)}, got "
                                f"{neighbours.dtype} {neighbours.shape}")
            out["neighbours"] = neighbours
        return out

    def select(self, spec: CaseSpec = None) -> List[str]:
        """Case ids chosen by a ``--cases`` spec (``"6-45"``, ``"1,3,5-7"``, a list or None
        for all), in dataset order. Numeric ids match numerically (``"7"`` ~ ``"007"``)."""
        if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
            return self.case_ids
        wanted = parse_case_spec(spec) if isinstance(spec, str) else [str(s) for s in spec]
        chosen, missing = set(), []
        for w in wanted:
            hits = [c for c in self.case_ids if c == w
                    or (c.isdigit() and w.isdigit() and int(c) == int(w))]
            if not hits:
                missing.append(w)
            chosen.update(hits)
        if missing:
            raise DataError(f"{self.root}: cases {_short_list(missing)} not in the dataset "
                            f"(it has {_short_list(self.case_ids)})")
        return [c for c in self.case_ids if c in chosen]


def _short_list(ids: Sequence[str], n: int = 12) -> str:
    ids = list(ids)
    return ", ".join(ids[:n]) + (f" ... ({len(ids)} in all)" if len(ids) > n else "")


class SliceDataset(Dataset):
    """All slices of the chosen cases, held in memory, as ``(image (C,N,N) float32,
    label (N,N) int64)``: C = 1, or with ``context`` k the slice and its k neighbours either
    side in its volume (C = 2k + 1, :func:`mpscl.data.context.with_context`; the label is the
    middle slice's). ``context_mm``: the neighbours lie that many mm away, each case's slices
    interpolated by its own slice spacing (``data.context_spacing: coarser``); None: adjacent.

    ``labelled=False`` yields labels of -1 (a target domain: its labels never reach
    training even when the dataset has them). ``augment=True`` applies random flips,
    90-degree rotations and a small intensity scale (x U(0.9, 1.1)) and shift
    (+ U(-0.1, 0.1)), clamped to [-1, 1]; randomness comes from ``generator`` or, when
    None, torch's global RNG, so ``torch.manual_seed`` makes runs reproducible.
    """

    def __init__(self, prepared: Union[PreparedDataset, str, Path], cases: CaseSpec = None,
                 labelled: bool = True, augment: bool = False,
                 generator: Optional[torch.Generator] = None, context: int = 0,
                 context_mm: Optional[float] = None):
        self.prepared = prepared if isinstance(prepared, PreparedDataset) else PreparedDataset(prepared)
        if labelled and not self.prepared.labelled:
            raise DataError(f"{self.prepared.root}: dataset has no labels; use labelled=False")
        self.cases = self.prepared.select(cases)
        self.labelled, self.augment, self.generator = labelled, augment, generator
        images, labels, self.index = [], [], []
        for c in self.cases:
            d = self.prepared.case(c)
            images.append(case_stacks(d, context, context_mm))
            if labelled:
                labels.append(d["label"])
            self.index.extend((c, s) for s in range(d["image"].shape[0]))
        if not self.index:
            raise DataError(f"{self.prepared.root}: the selected cases hold no slices")
        self.context, self.context_mm = context, (float(context_mm) if context and context_mm else None)
        self.images = torch.from_numpy(np.concatenate(images))  # (T,C,N,N): what the network sees
        self.labels = torch.from_numpy(np.concatenate(labels)) if labelled else None  # uint8

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        return self._item(i, None)

    def batch(self, indices: Sequence[int], generator: Optional[torch.Generator] = None):
        """Stack ``indices`` into ``(images (B,C,N,N), labels (B,N,N))``.

        With augmentation on, randomness comes from ``generator`` (the trainer passes one
        seeded from (seed, iteration) so a resumed run augments exactly as the original).
        """
        items = [self._item(i, generator) for i in indices]
        return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])

    def _item(self, i: int, generator: Optional[torch.Generator]):
        image = self.images[i].clone()  # never hand out a view of the stored slices
        n = image.shape[-1]
        label = (self.labels[i].long() if self.labels is not None
                 else torch.full((n, n), -1, dtype=torch.long))
        if self.augment:
            image, label = self._augment(image, label, generator)
        return image.contiguous(), label.contiguous()

    def _augment(self, image: torch.Tensor, label: torch.Tensor,
                 generator: Optional[torch.Generator] = None):
        g = generator if generator is not None else self.generator
        r = torch.rand(4, generator=g)
        k = int(torch.randint(0, 4, (1,), generator=g))
        if r[0] < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        if r[1] < 0.5:
            image, label = image.flip(-2), label.flip(-2)
        if k:
            image, label = torch.rot90(image, k, (-2, -1)), torch.rot90(label, k, (-2, -1))
        scale, shift = 0.9 + 0.2 * float(r[2]), -0.1 + 0.2 * float(r[3])
        return (image * scale + shift).clamp_(-1.0, 1.0), label
