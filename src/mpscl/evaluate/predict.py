"""Segment NIfTI volumes with a checkpoint and write label NIfTIs in the input geometry.

Per input: read (array order as stored; reoriented to canonical RAS order only for a
checkpoint whose data were prepared with ``--plane``, and the labels put back), normalise,
slice and resize exactly as ``mpscl prepare`` does (``mpscl.data.prepare``: per volume clip to [p0.5, p99.5],
map to [-1, 1]; slices along the axis, bilinear to the model's ``data.size``), predict every slice, resize probabilities back, argmax, map class ids
to the checkpoint's RAW label values (e.g. 0/205/420/500/820), and write a NIfTI with the
input's shape, affine and header (integer dtype, scaling reset).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from .. import checkpoint as checkpoint_io
from ..data import context_of, read_nifti, write_label_nifti
from ..data.errors import DataError
from ..data.orientation import canonical_volume, from_canonical, plane_axis
from ..data.context import context_mm_of, slice_step
from ..data.prepare import normalise, resize_slices, to_slices
from .errors import EvaluateError
from .inference import predict_volume, resolve_device
from .postprocess import keep_largest_component

PathLike = Union[str, Path]
_NIFTI_SUFFIXES = (".nii.gz", ".nii")


def _is_nifti_name(p: Path) -> bool:
    return p.name.endswith(_NIFTI_SUFFIXES)


def checkpoint_axis(ckpt: Dict[str, Any], default: int = 2) -> int:
    """The slice axis the model was trained on: ``ckpt["axis"]``, else ``config.data.axis``,
    else ``default`` (the last axis)."""
    axis = ckpt.get("axis")
    if axis is None:
        axis = ((ckpt.get("config") or {}).get("data") or {}).get("axis")
    return int(default if axis is None else axis)


def trained_on_flips(ckpt: Dict[str, Any]) -> bool:
    """Whether the checkpoint's training slices were flipped (``data.augment``): then the
    flipped views are ones it has learnt, and ``predict`` averages over them by default."""
    return bool(((ckpt.get("config") or {}).get("data") or {}).get("augment", False))


def output_paths(inputs: Sequence[PathLike], out: PathLike) -> List[Path]:
    """Where each input's prediction goes: ``out`` itself when it is a NIfTI file name and
    there is one input, else ``out/<input file name>``."""
    out = Path(out)
    inputs = [Path(p) for p in inputs]
    if _is_nifti_name(out):
        if len(inputs) != 1:
            raise EvaluateError(f"{out}: a single output file needs exactly one input, got {len(inputs)}")
        paths = [out]
    else:
        paths = [out / p.name for p in inputs]
        names = [p.name for p in paths]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise EvaluateError(f"inputs share the file name(s) {', '.join(dupes)}: they would overwrite "
                                "each other in the output folder")
    for src, dst in zip(inputs, paths):
        if src.resolve() == dst.resolve():
            raise EvaluateError(f"{dst}: the output would replace its input image")
    return paths


def predict_files(
    checkpoint: PathLike,
    inputs: Sequence[PathLike],
    out: PathLike,
    batch_size: int = 16,
    device: str = "auto",
    axis: Optional[int] = None,
    plane: Optional[str] = None,
    overwrite: bool = False,
    amp: bool = False,
    progress: bool = True,
    tta: Optional[bool] = None,
    largest_component: bool = False,
) -> List[Path]:
    """Segment each NIfTI in ``inputs``; returns the written label files, in input order.

    ``out``: a folder (created; outputs keep the input file names) or, for one input, a
    ``.nii``/``.nii.gz`` file name. ``axis``: slice axis; default from the checkpoint
    (:func:`checkpoint_axis`), else 2. ``plane``: cut each volume in this anatomical plane
    after reorienting it to canonical RAS order (``data/orientation.py``), the labels put
    back on the stored grid; default: the plane the checkpoint's data were prepared in, unless
    ``axis`` is given (then the stored axis, no reorientation). Existing outputs are refused unless ``overwrite``;
    all are checked before anything is computed. Files are written atomically. ``tta``:
    test-time flips (``predict_volume``), four forward passes per slice; None (default): on
    when the checkpoint was trained on flipped slices (:func:`trained_on_flips`). For the CPU
    recipe they added 1-3 points of mean Dice in every validation suite (benchmarks/README.md,
    "Test-time flips"); a network that never saw a flipped heart is not shown one.
    ``largest_component``: each structure keeps only its largest connected piece
    (``postprocess.keep_largest_component``).
    """
    from tqdm.auto import tqdm

    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise EvaluateError("predict: no input files")
    for p in inputs:
        if not p.is_file():
            raise EvaluateError(f"{p}: no such input file")
    paths = output_paths(inputs, out)
    if not overwrite:
        existing = [str(p) for p in paths if p.exists()]
        if existing:
            raise EvaluateError(f"refusing to overwrite existing output(s): {', '.join(existing)} "
                                "(pass overwrite / --overwrite)")

    dev = resolve_device(device)
    model, ckpt = checkpoint_io.load_model(checkpoint, dev)
    values = np.asarray(ckpt["label_values"], dtype=np.int64)
    if len(values) != len(ckpt["classes"]):
        raise EvaluateError(f"{checkpoint}: label_values and classes differ in length")
    if plane is not None and axis is not None:
        raise EvaluateError("predict: give a slice axis or a plane, not both")
    if plane is None and axis is None:
        plane = ckpt.get("plane")
    if plane is not None:
        try:
            axis = plane_axis(plane)
        except DataError as e:
            raise EvaluateError(f"predict: {e}") from None
    axis = checkpoint_axis(ckpt) if axis is None else int(axis)
    if axis not in (0, 1, 2, -1, -2, -3):
        raise EvaluateError(f"predict: axis must be 0, 1 or 2, got {axis}")
    axis %= 3
    size = ((ckpt.get("config") or {}).get("data") or {}).get("size")
    if tta is None:
        tta = trained_on_flips(ckpt)

    written = []
    desc = "predict" + (" (test-time flips)" if tta else "")
    for src, dst in tqdm(list(zip(inputs, paths)), desc=desc, unit="volume", disable=not progress):
        # exactly the prepare-time pipeline (mpscl.data.prepare), then back to the input grid
        vol = read_nifti(src)
        data, spacing = vol.data, vol.spacing
        if plane is not None:
            data, spacing, ornt = canonical_volume(data, spacing, vol.affine)
        image, _ = normalise(data, str(src))
        slices = to_slices(image, axis)
        if size:
            slices = resize_slices(slices, int(size), "image")
        ids = predict_volume(model, slices, batch_size=batch_size, device=dev, amp=amp,
                             out_shape=data.shape, axis=axis, tta=tta, context=context_of(ckpt),
                             context_step=slice_step(context_mm_of(ckpt), spacing[axis]))
        if largest_component:
            ids = keep_largest_component(ids, len(values))
        if plane is not None:
            ids = from_canonical(ids, ornt)
        written.append(write_label_nifti(dst, values[ids], vol))
    return written
