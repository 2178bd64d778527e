"""Evaluate a checkpoint on a labelled prepared dataset: metrics.json, metrics.csv, metrics.md.

Every case is predicted whole (every slice), probabilities are resized back to the original
in-plane size, and Dice/ASSD are computed in 3D against ``label_orig`` in the original voxel
grid with the case spacing. ``metrics.json``::

    {"cases": [{"case": "1003", "dice": {CLASS: %}, "assd": {CLASS: voxels}, "assd_mm": {CLASS: mm},
                "components": {CLASS: pieces}}],
     "summary": {"dice_mean": %, "assd_mean": voxels, "assd_mm_mean": mm,
                 "per_class": {CLASS: {"dice": %, "dice_std": %, "dice_undefined": n,
                                       "assd": voxels, "assd_std": voxels,
                                       "assd_mm": mm, "assd_mm_std": mm, "assd_failed": n,
                                       "components": mean pieces, "fragmented": n}}}}

``components``: connected pieces of the predicted structure in the case (``metrics.components``;
0 when it is not predicted); ``fragmented``: the cases where it is more than one piece.

Undefined values are ``null``: an ASSD needs both masks non-empty; a case without one is
counted in ``assd_failed`` and left out of the ASSD mean (the authors' code silently put 1
there). A Dice is undefined only when the structure is absent from both prediction and label
(``dice_undefined``). Standard deviations are over cases (population, ddof=0, as numpy's
default that the paper's tables use). ``dice_mean``/``assd_mean`` average the per-class means.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .. import checkpoint as checkpoint_io
from ..fileio import atomic_write_text
from ..data import PreparedDataset, context_of, from_slices
from ..data.context import case_stacks, context_mm_of
from .errors import EvaluateError
from .inference import predict_volume, resolve_device
from .metrics import score_case
from .postprocess import keep_largest_component

METRICS = ("dice", "assd", "assd_mm")


def _nan_stats(values: Sequence[float]):
    a = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std())


def summarise(case_records: List[Dict[str, Any]], names: Sequence[str]) -> Dict[str, Any]:
    """The ``summary`` block of metrics.json from per-case records (nan = undefined)."""
    per_class = {}
    for name in names:
        col = {m: [r[m][name] for r in case_records] for m in METRICS}
        d, d_sd = _nan_stats(col["dice"])
        a, a_sd = _nan_stats(col["assd"])
        mm, mm_sd = _nan_stats(col["assd_mm"])
        per_class[name] = {
            "dice": d, "dice_std": d_sd,
            "dice_undefined": sum(1 for v in col["dice"] if v is None or math.isnan(v)),
            "assd": a, "assd_std": a_sd, "assd_mm": mm, "assd_mm_std": mm_sd,
            "assd_failed": sum(1 for v in col["assd"] if v is None or math.isnan(v)),
        }
        pieces = [r["components"][name] for r in case_records if "components" in r]
        if pieces:  # records of older metrics.json files have none
            per_class[name]["components"] = float(np.mean(pieces))
            per_class[name]["fragmented"] = sum(1 for n in pieces if n > 1)
    return {
        "dice_mean": _nan_stats([per_class[n]["dice"] for n in names])[0],
        "assd_mean": _nan_stats([per_class[n]["assd"] for n in names])[0],
        "assd_mm_mean": _nan_stats([per_class[n]["assd_mm"] for n in names])[0],
        "per_class": per_class,
    }


def to_json_ready(obj: Any) -> Any:
    """Replace float nan/inf by None (JSON null) and numpy scalars by Python ones, recursively."""
    if isinstance(obj, dict):
        return {str(k): to_json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_ready(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


# --------------------------------------------------------------------------- writers
def _fmt(v: Optional[float], digits: int = 2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def metrics_csv(metrics: Dict[str, Any]) -> str:
    """One row per case x class: case, class, dice (%), assd (voxels), assd_mm, components
    (pieces of the prediction); empty = undefined."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["case", "class", "dice", "assd", "assd_mm", "components"])
    for rec in metrics["cases"]:
        for name in rec["dice"]:
            w.writerow([rec["case"], name] + ["" if rec[m][name] is None else repr(float(rec[m][name]))
                                              for m in METRICS]
                       + [rec.get("components", {}).get(name, "")])
    return buf.getvalue()


def metrics_markdown(metrics: Dict[str, Any], title: str = "Evaluation") -> str:
    """Paper-style table (structures as columns, "mean (std)") and a per-case table."""
    summary, cases = metrics["summary"], metrics["cases"]
    names = list(summary["per_class"])
    pc = summary["per_class"]

    def case_avg(metric):  # the summary's mean (of class means); std over per-case means
        per_case = [_nan_stats([r[metric][n] for n in names])[0] for r in cases]
        return summary[f"{metric}_mean"], _nan_stats(per_case)[1]

    lines = [f"# {title}", "", f"{len(cases)} case(s): {', '.join(str(r['case']) for r in cases)}", ""]
    lines += ["| | " + " | ".join(names) + " | Mean |", "|---" * (len(names) + 2) + "|"]
    for label, metric in (("Dice (%)", "dice"), ("ASSD (voxels)", "assd"), ("ASSD (mm)", "assd_mm")):
        cells = [f"{_fmt(pc[n][metric])} ({_fmt(pc[n][metric + '_std'])})" for n in names]
        m, sd = case_avg(metric)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {_fmt(m)} ({_fmt(sd)}) |")
    lines.append("| ASSD failed (cases) | " + " | ".join(str(pc[n]["assd_failed"]) for n in names)
                 + f" | {sum(pc[n]['assd_failed'] for n in names)} |")
    pieces = all("components" in pc[n] for n in names)
    if pieces:
        lines.append("| Pieces per case | " + " | ".join(_fmt(pc[n]["components"]) for n in names)
                     + f" | {_fmt(float(np.mean([pc[n]['components'] for n in names])))} |")
        lines.append("| Fragmented (cases) | " + " | ".join(str(pc[n]["fragmented"]) for n in names)
                     + f" | {sum(pc[n]['fragmented'] for n in names)} |")
    lines += ["", "ASSD failed: the prediction or the label of that structure is empty, so no "
              "surface distance exists; such cases are left out of the ASSD means (never set to a "
              "number)."]
    if pieces:
        lines += ["Pieces: connected pieces of the predicted structure (face, edge or corner "
                  "contact); fragmented: cases where it is more than one piece."]
    lines += ["", "## Per case", ""]
    head = [f"Dice {n}" for n in names] + [f"ASSD {n}" for n in names]
    lines += ["| Case | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for r in cases:
        cells = [_fmt(r["dice"][n]) for n in names] + [_fmt(r["assd"][n]) for n in names]
        lines.append(f"| {r['case']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_reports(metrics: Dict[str, Any], out_dir, title: str = "Evaluation") -> Dict[str, Path]:
    """Write metrics.json/.csv/.md atomically into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    metrics = to_json_ready(metrics)
    paths = {"json": out_dir / "metrics.json", "csv": out_dir / "metrics.csv", "md": out_dir / "metrics.md"}
    atomic_write_text(paths["json"], json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    atomic_write_text(paths["csv"], metrics_csv(metrics))
    atomic_write_text(paths["md"], metrics_markdown(metrics, title))
    return paths


# --------------------------------------------------------------------------- main entry
def model_input_size(ckpt: Dict[str, Any]) -> Optional[int]:
    size = (ckpt.get("config") or {}).get("data", {}).get("size")
    return int(size) if size else None


def evaluate_checkpoint(
    checkpoint,
    data_dir,
    out_dir,
    cases: Optional[str] = None,
    batch_size: int = 16,
    device: str = "auto",
    amp: bool = False,
    progress: bool = True,
    per_case: Optional[Callable[[Any, np.ndarray], Any]] = None,
    tta: bool = False,
    largest_component: bool = False,
) -> Dict[str, Any]:
    """Predict and score every selected case of a labelled prepared dataset.

    Args:
        checkpoint: a ``final.pt`` or stage checkpoint (loaded with ``load_model``).
        data_dir: prepared dataset folder (manifest.json + cases/).
        out_dir: where metrics.json, metrics.csv and metrics.md are written (atomically).
        cases: ``None`` (all), or a spec like ``"6-45"`` or ``"1,3,5-7"``
            (``PreparedDataset.select``: every listed id must exist).
        batch_size: slices per forward pass; device: ``auto``/``cpu``/``cuda[:N]``;
        amp: bfloat16 autocast; progress: tqdm bar over cases.
        per_case: ``per_case(model, image)`` returns the model that segments that case's
            prepared image (slices first), e.g. one given test-time BatchNorm statistics of
            the volume's own slices. It gets the loaded model every time, so it must not
            change it in place (copy it first, as ``adabn_validation.py --per-volume`` does).
        tta: test-time flips (``predict_volume``); recorded as ``"tta": "flips"`` in
            metrics.json and named in the report's title.
        largest_component: each structure keeps only its largest connected piece in the
            original grid before scoring (``postprocess.keep_largest_component``); recorded as
            ``"postprocess": "largest-component"``.

    Returns the metrics dict exactly as written to metrics.json (undefined values as None).
    Raises :class:`EvaluateError` when the dataset is unlabelled or its classes differ
    from the checkpoint's (``DataError`` for unreadable data or unknown cases,
    ``CheckpointError`` for a bad checkpoint).
    """
    from tqdm.auto import tqdm

    dev = resolve_device(device)
    model, ckpt = checkpoint_io.load_model(checkpoint, dev)
    ds = PreparedDataset(data_dir)
    classes = [str(c) for c in ds.classes]
    ck_classes = [str(c) for c in ckpt.get("classes", [])]
    if classes != ck_classes:
        raise EvaluateError(
            f"{data_dir}: dataset classes {classes} differ from the checkpoint's {ck_classes} "
            f"({checkpoint}); prepare the data with the same class map the model was trained with")
    if not ds.labelled:
        raise EvaluateError(f"{data_dir}: the dataset has no labels; use `predict` to segment it, `label-free` to compare models on it")
    ids = ds.select(cases)
    size, context, context_mm = model_input_size(ckpt), context_of(ckpt), context_mm_of(ckpt)

    records = []
    for cid in tqdm(ids, desc="evaluate", unit="case", disable=not progress):
        case = ds.case(cid)
        gt = case.get("label_orig")
        if gt is None:
            raise EvaluateError(f"{data_dir}: case {cid} has no label_orig")
        meta = case["meta"]
        plane = [n for d, n in enumerate(gt.shape) if d != int(meta["axis"])]
        case_model = model if per_case is None else per_case(model, case["image"])
        pred = from_slices(predict_volume(case_model, case_stacks(case, context, context_mm),
                                          batch_size=batch_size, device=dev, amp=amp, out_shape=plane,
                                          input_size=size, tta=tta, context=context), meta)
        if largest_component:
            pred = keep_largest_component(pred, len(classes))
        scores = score_case(pred, gt, classes, meta.get("spacing"))
        records.append({"case": str(cid), **scores})

    metrics = {"cases": records, "summary": summarise(records, classes[1:])}
    if tta:
        metrics["tta"] = "flips"
    if largest_component:
        metrics["postprocess"] = "largest-component"
    notes = [n for n, on in (("test-time flips", tta), ("largest component", largest_component)) if on]
    write_reports(metrics, out_dir, title=f"Evaluation of {checkpoint} on {data_dir}"
                  + (f" ({', '.join(notes)})" if notes else ""))
    return to_json_ready(metrics)
