"""Figures (PNG, matplotlib's Agg canvas; pyplot and its global state are not used).

- :func:`overlay_figure`: slices with label and prediction contours/overlays.
- :func:`dice_bars`: per-class Dice of several runs side by side, std as error bars.
- :func:`training_curves`: loss terms against iterations from a JSONL training log.
- :func:`feature_tsne` / :func:`collect_features`: t-SNE of source and target pixel features.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..data.context import case_stacks, context_mm_of, context_of
from .inference import resolve_device

PathLike = Union[str, Path]
_MARKERS = {"source": "o", "target": "^"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: PathLike) -> Path:
    """Save atomically (temp file + rename) as PNG."""
    from ..fileio import atomic_write

    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png", bbox_inches="tight"))
    return path


def _colors(n: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _class_color(c: int):
    """Class ``c``'s colour in every figure: background grey, class k the k-th tab10 colour."""
    return (0.55, 0.55, 0.55, 1.0) if c == 0 else _colors(c)[c - 1]


def _label_rgba(ids: np.ndarray, n_classes: int, alpha: float = 0.45) -> np.ndarray:
    cols = np.zeros((max(n_classes, int(ids.max()) + 1 if ids.size else 1), 4))
    for c in range(1, cols.shape[0]):
        cols[c] = (*_class_color(c)[:3], alpha)
    return cols[ids.astype(np.int64)]


# --------------------------------------------------------------------------- overlays
def overlay_figure(image_slices: np.ndarray, pred: np.ndarray, gt: Optional[np.ndarray],
                   slice_indices: Sequence[int], path: PathLike,
                   class_names: Optional[Sequence[str]] = None) -> Path:
    """One row per slice index: image, ground truth overlay (if ``gt``), prediction overlay.

    ``image_slices`` (S, H, W) grey; ``pred``/``gt`` (S, H, W) class ids on the same grid.
    """
    image_slices = np.asarray(image_slices, dtype=np.float32)
    pred = np.asarray(pred)
    if pred.shape != image_slices.shape or (gt is not None and np.shape(gt) != image_slices.shape):
        raise ValueError("overlay_figure: image, prediction and label must have the same (S, H, W) shape")
    idx = [int(i) for i in slice_indices]
    if not idx:
        raise ValueError("overlay_figure: no slice index given")
    n_classes = int(max(pred.max(), 0 if gt is None else np.max(gt))) + 1
    if class_names is not None:
        n_classes = max(n_classes, len(class_names))
    cols = [("image", None), ("label", gt), ("prediction", pred)] if gt is not None else \
        [("image", None), ("prediction", pred)]
    fig = _figure(2.6 * len(cols), 2.6 * len(idx))
    axes = fig.subplots(len(idx), len(cols), squeeze=False)
    for r, s in enumerate(idx):
        for c, (title, ids) in enumerate(cols):
            ax = axes[r][c]
            ax.imshow(image_slices[s], cmap="gray", interpolation="nearest")
            if ids is not None:
                ax.imshow(_label_rgba(np.asarray(ids[s]), n_classes), interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(f"{title}, slice {s}", fontsize=8)
    if class_names:
        from matplotlib.patches import Patch

        handles = [Patch(color=_class_color(c), label=name) for c, name in enumerate(class_names) if c]
        fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=len(handles), fontsize=8, frameon=False)  # below; kept by bbox_inches="tight"
    return _save(fig, path)


# --------------------------------------------------------------------------- dice bars
def _summary_of(run: Union[PathLike, Mapping[str, Any]]) -> Mapping[str, Any]:
    if isinstance(run, (str, Path)):
        run = json.loads(Path(run).read_text(encoding="utf-8"))
    if "summary" in run:
        run = run["summary"]
    if "per_class" not in run:
        raise ValueError("dice_bars: each run must be a metrics.json path, its dict or its summary")
    return run


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def dice_bars(runs: Mapping[str, Union[PathLike, Mapping[str, Any]]], path: PathLike,
              title: str = "Dice per structure") -> Path:
    """Grouped bars: per-class Dice (%) of each run, std as error bars, plus the mean Dice
    (``dice_mean`` with ``dice_std`` as its error bar when the summary has them, else the mean
    over classes)."""
    if not runs:
        raise ValueError("dice_bars: no runs")
    summaries = {name: _summary_of(r) for name, r in runs.items()}
    classes: List[str] = []
    for s in summaries.values():
        classes += [c for c in s["per_class"] if c not in classes]
    groups = classes + ["Mean"]
    n = len(summaries)
    width = 0.8 / n
    x = np.arange(len(groups))
    fig = _figure(max(5.0, 1.1 * len(groups) * max(1, n / 2)), 3.6)
    ax = fig.subplots()
    for i, ((name, s), col) in enumerate(zip(summaries.items(), _colors(n))):
        pc = s["per_class"]
        means = [_num(pc.get(c, {}).get("dice")) for c in classes]
        stds = [_num(pc.get(c, {}).get("dice_std")) for c in classes]
        # the summary's own mean (over cases, or seeds) where it has one; else the class mean
        mean = s.get("dice_mean")
        means.append(_num(mean) if mean is not None else float(np.nanmean(means)))
        stds.append(_num(s.get("dice_std")))
        stds = [0.0 if math.isnan(v) else v for v in stds]
        ax.bar(x + (i - (n - 1) / 2) * width, np.nan_to_num(means), width, yerr=stds,
               capsize=2, label=name, color=col, edgecolor="black", linewidth=0.4)
    ax.set_xticks(x)
    ax.set_xticklabels(groups)
    ax.set_ylabel("Dice (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over a bar
    return _save(fig, path)


# --------------------------------------------------------------------------- training curves
def _records(log: Union[PathLike, Iterable[Mapping[str, Any]]]) -> List[Mapping[str, Any]]:
    if isinstance(log, (str, Path)):
        out = []
        for line in Path(log).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue  # a line cut by a crash: skip it
        return out
    return list(log)


def training_curves(log: Union[PathLike, Iterable[Mapping[str, Any]]], path: PathLike,
                    smooth: int = 1) -> Path:
    """Plot every numeric key of a JSONL log (one dict per line with ``iter`` and optionally
    ``stage``) against ``iter``: one panel per key prefix (``loss/seg`` -> panel ``loss``),
    one line per key and stage. ``smooth``: moving-average window (1 = raw)."""
    recs = [r for r in _records(log) if isinstance(r, Mapping) and "iter" in r]
    if not recs:
        raise ValueError("training_curves: no records with an 'iter'")
    keys = sorted({k for r in recs for k, v in r.items()
                   if k not in ("iter", "stage") and isinstance(v, (int, float)) and not isinstance(v, bool)})
    if not keys:
        raise ValueError("training_curves: the log holds no numeric values")
    panels: Dict[str, List[str]] = {}
    for k in keys:
        panels.setdefault(_panel_of(k), []).append(k)
    stages = list(dict.fromkeys(str(r.get("stage", "")) for r in recs))
    # each panel tall enough for its legend (one entry per key and stage)
    heights = [max(2.6, 0.2 * len(pkeys) * len(stages)) for pkeys in panels.values()]
    fig = _figure(7.0, sum(heights))
    axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, (panel, pkeys) in zip(axes, panels.items()):
        for k in pkeys:
            for st in stages:
                pts = [(r["iter"], r[k]) for r in recs if str(r.get("stage", "")) == st
                       and isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
                if not pts:
                    continue
                it, v = np.asarray(pts, dtype=np.float64).T
                if smooth > 1 and len(v) >= smooth:
                    v = np.convolve(v, np.ones(smooth) / smooth, mode="valid")
                    it = it[smooth - 1:]
                label = k if len(stages) == 1 or not st else f"{k} [{st}]"
                ax.plot(it, v, label=label, linewidth=1)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside: never over a curve
    return _save(fig, path)


def _panel_of(key: str) -> str:
    """The panel of a log key: its prefix (``loss/seg`` -> ``loss``), else by kind: shares of
    selected pixels, the learning rate, time, and every other value (the loss terms)."""
    if "/" in key:
        return key.split("/")[0]
    if "selected" in key:
        return "selected share"
    if key == "lr":
        return "learning rate"
    if key.startswith("sec"):
        return "seconds per iteration"
    return "losses"


# --------------------------------------------------------------------------- features / t-SNE
def collect_features(model: torch.nn.Module, dataset_slices, labels, max_points: int = 2000,
                     batch_size: int = 16, device: str = "auto", balanced: bool = True,
                     seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Sample pixel features of ``model`` over a set of slices, with their labels.

    ``dataset_slices``: (S, N, N) or (S, C, N, N) network inputs in [-1, 1]; ``labels``: (S, N, N) class
    ids (negative = ignore; e.g. pseudo-labels or -1 for unknown). Labels are downsampled to the
    feature resolution by nearest neighbour. At most ``max_points`` pixels are drawn (with
    ``balanced``, about equally many per class, so background does not swamp the plot),
    deterministically from ``seed``. Returns ``(features (n, F) float32, labels (n,) int64)``.
    """
    x_all = torch.as_tensor(np.asarray(dataset_slices, dtype=np.float32))
    if x_all.ndim == 3:
        x_all = x_all[:, None]
    y_all = torch.as_tensor(np.asarray(labels)).long()
    if y_all.shape[0] != x_all.shape[0]:
        raise ValueError("collect_features: slices and labels differ in count")
    dev = resolve_device(device)
    was_training = model.training
    model.to(dev).eval()
    rng = np.random.default_rng(seed)
    feats, labs = [], []
    chosen: Optional[np.ndarray] = None
    try:
        with torch.inference_mode():
            for start in range(0, x_all.shape[0], batch_size):
                out = model(x_all[start:start + batch_size].to(dev))
                f = (out[0] if isinstance(out, (tuple, list)) else out).float()
                h, w = f.shape[-2:]
                if chosen is None:  # pick the pixels once the feature grid is known
                    y_small = F.interpolate(y_all[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
                    flat = y_small.reshape(-1).numpy()
                    chosen = _sample(flat, max_points, balanced, rng)
                    flat_labels = flat
                lo, hi = start * h * w, (start + f.shape[0]) * h * w
                sel = chosen[(chosen >= lo) & (chosen < hi)] - lo
                if sel.size:
                    f_flat = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])
                    feats.append(f_flat[torch.as_tensor(sel, device=f.device)].cpu().numpy())
                    labs.append(flat_labels[sel + lo])
    finally:
        model.train(was_training)
    if not feats:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(feats).astype(np.float32), np.concatenate(labs).astype(np.int64)


def _sample(flat_labels: np.ndarray, max_points: int, balanced: bool, rng) -> np.ndarray:
    valid = np.flatnonzero(flat_labels >= 0)
    if valid.size <= max_points:
        return valid
    if not balanced:
        return np.sort(rng.choice(valid, max_points, replace=False))
    classes, counts = np.unique(flat_labels[valid], return_counts=True)
    # water-filling: equal share per class, leftovers go to classes with more pixels
    quota = dict.fromkeys(classes.tolist(), 0)
    left, remaining = max_points, dict(zip(classes.tolist(), counts.tolist()))
    while left > 0 and remaining:
        share = max(1, left // len(remaining))
        for c in list(remaining):
            take = min(share, remaining[c], left)
            quota[c] += take
            remaining[c] -= take
            left -= take
            if remaining[c] == 0:
                del remaining[c]
            if left == 0:
                break
    picks = [rng.choice(valid[flat_labels[valid] == c], q, replace=False) for c, q in quota.items() if q]
    return np.sort(np.concatenate(picks))


def _subsample(feats: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], max_points: int, rng):
    total = sum(len(v) for v in feats.values())
    keep = {}
    for dom, f in feats.items():
        n = len(f)
        k = n if total <= max_points else max(1, int(round(max_points * n / total)))
        idx = np.sort(rng.choice(n, k, replace=False)) if k < n else np.arange(n)
        keep[dom] = (np.asarray(f, dtype=np.float32)[idx], np.asarray(labels[dom])[idx])
    return keep


def _tsne_panel(ax, feats, labels, class_names, max_points, seed):
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    kept = _subsample(feats, labels, max_points, rng)
    x = np.concatenate([f for f, _ in kept.values()])
    n = len(x)
    if n < 3:
        raise ValueError("feature_tsne: need at least 3 points")
    # L2-normalised features: MPSCL compares features by cosine similarity
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    emb = TSNE(n_components=2, perplexity=float(min(30.0, (n - 1) / 3)), init="pca",
               random_state=seed).fit_transform(x)
    all_classes = sorted({int(c) for _, lab in kept.values() for c in np.unique(lab)})
    start = 0
    for d_i, (dom, (f, lab)) in enumerate(kept.items()):
        e = emb[start:start + len(f)]
        start += len(f)
        marker = _MARKERS.get(dom, "osD^v"[d_i % 5])
        for c in all_classes:
            m = lab == c
            if m.any():
                name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
                ax.scatter(e[m, 0], e[m, 1], s=12, marker=marker, color=_class_color(c), alpha=0.7,
                           label=f"{dom}: {name}", linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])


def feature_tsne(features_by_domain: Mapping[str, np.ndarray], labels_by_domain: Mapping[str, np.ndarray],
                 path: PathLike, before_after: Optional[Tuple[Mapping[str, np.ndarray],
                                                              Mapping[str, np.ndarray]]] = None,
                 class_names: Optional[Sequence[str]] = None, max_points: int = 2000,
                 seed: int = 0) -> Path:
    """t-SNE of pixel features, colour = class, marker = domain (source o, target ^).

    ``features_by_domain``: ``{"source": (n, F), "target": (m, F)}``; ``labels_by_domain``: the
    matching class ids. ``before_after``: optional ``(features_by_domain, labels_by_domain)`` of
    another model (e.g. before adaptation), drawn as a left "before" panel next to the main
    "after" panel. Each panel is subsampled to at most ``max_points`` points (proportionally
    per domain) and embedded with a fixed ``seed``: the same inputs give the same figure.
    """
    panels = [("after", features_by_domain, labels_by_domain)]
    if before_after is not None:
        panels.insert(0, ("before", before_after[0], before_after[1]))
    fig = _figure(5.0 * len(panels), 5.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, f, lab) in zip(axes, panels):
        if set(f) != set(lab):
            raise ValueError("feature_tsne: features and labels must have the same domains")
        _tsne_panel(ax, f, lab, class_names, max_points, seed)
        if len(panels) > 1:
            ax.set_title(title)
    handles, names = axes[-1].get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, markerscale=1.5,
               frameon=False)
    return _save(fig, path)


# --------------------------------------------------------------------------- from checkpoints
def _slices_of(ds, max_slices: int, seed: int, context: int = 0, context_mm=None):
    """Up to ``max_slices`` labelled slices of a PreparedDataset, spread over its cases, as
    (S, 2 * context + 1, N, N) network inputs (the same slices whatever the context)."""
    images, labels = [], []
    for c in ds.case_ids:
        d = ds.case(c)
        images.append(case_stacks(d, context, context_mm))
        labels.append(d["label"])
    x, y = np.concatenate(images), np.concatenate(labels)
    idx = np.sort(np.random.default_rng(seed).permutation(len(x))[:max_slices])
    return x[idx], y[idx]


def tsne_before_after(ckpt_before: PathLike, ckpt_after: PathLike, source, target, path: PathLike,
                      max_slices: int = 48, max_points: int = 1500, seed: int = 0) -> Path:
    """The paper's discriminability picture: t-SNE of source and target pixel features
    coloured by class, for a model before adaptation (e.g. source-only) and after (MPSCL).

    Target labels only colour the points; they choose nothing.
    """
    from ..checkpoint import load_model
    panels, slices = [], {}  # the datasets read once per context, not once per checkpoint
    for ckpt in (ckpt_before, ckpt_after):
        model, meta = load_model(ckpt)
        k = (context_of(meta), context_mm_of(meta))
        if k not in slices:
            slices[k] = (_slices_of(source, max_slices, seed, *k), _slices_of(target, max_slices, seed + 1, *k))
        (xs, ys), (xt, yt) = slices[k]
        fs, ls = collect_features(model, xs, ys, max_points=max_points, seed=seed)
        ft, lt = collect_features(model, xt, yt, max_points=max_points, seed=seed)
        panels.append(({"source": fs, "target": ft}, {"source": ls, "target": lt}))
    return feature_tsne(*panels[1], path, before_after=panels[0], class_names=meta["classes"],
                        max_points=max_points, seed=seed)


def overlays_for_case(checkpoint: PathLike, dataset, case: str, path: PathLike, n_slices: int = 4,
                      batch_size: int = 16) -> Path:
    """Prediction vs ground truth on ``n_slices`` slices of one case (those with most foreground)."""
    from ..checkpoint import load_model
    from .inference import predict_volume
    model, meta = load_model(checkpoint)
    d = dataset.case(case)
    pred = predict_volume(model, case_stacks(d, context_of(meta), context_mm_of(meta)), batch_size=batch_size,
                          device="cpu", context=context_of(meta))
    fg = (d["label"] > 0).reshape(len(d["label"]), -1).sum(1)
    chosen = sorted(np.argsort(-fg, kind="stable")[:n_slices].tolist())
    return overlay_figure(d["image"], pred, d["label"], chosen, path, class_names=meta["classes"])
