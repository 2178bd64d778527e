import json

import matplotlib.image as mpimg
import numpy as np
import pytest

from mpscl.evaluate import collect_features, dice_bars, feature_tsne, overlay_figure, training_curves

from evaluate_helpers import CLASSES, DummySegmenter, blob_labels, encode


def _check_png(path, min_kb=5):
    assert path.is_file() and path.stat().st_size > min_kb * 1024
    img = mpimg.imread(path)
    assert img.ndim == 3 and img[..., :3].var() > 1e-3  # not blank
    assert not list(path.parent.glob(f".{path.name}*"))  # atomic: no temp file left


def _summary(shift):
    pc = {n: {"dice": 70.0 + shift + i, "dice_std": 5.0 + i, "assd": 2.0, "assd_std": 0.5, "assd_mm": 2.5,
              "assd_failed": 0, "dice_undefined": 0} for i, n in enumerate(CLASSES[1:])}
    return {"dice_mean": 71.0 + shift, "assd_mean": 2.0, "per_class": pc}


def test_overlay_figure(tmp_path):
    ids = blob_labels((6, 32, 32), [(3, 10, 10), (3, 20, 22)], [(3, 6, 6), (3, 5, 7)])
    pred = np.roll(ids, 2, axis=2)
    p = overlay_figure(encode(ids), pred, ids, [1, 3], tmp_path / "overlay.png", class_names=CLASSES)
    _check_png(p)
    _check_png(overlay_figure(encode(ids), pred, None, [2], tmp_path / "nogt.png"), min_kb=2)


def test_dice_bars_from_summaries_dicts_and_files(tmp_path):
    full = {"cases": [], "summary": _summary(10)}
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(full))
    out = dice_bars({"source-only": _summary(0), "advent": full, "mpscl": path}, tmp_path / "bars.png")
    _check_png(out)
    with pytest.raises(ValueError):
        dice_bars({"bad": {"x": 1}}, tmp_path / "bad.png")


def _bar_heights(monkeypatch, runs, tmp_path):
    """Heights of the bars dice_bars draws, as {run: [per class..., mean]}."""
    from mpscl.evaluate import figures
    drawn = {}
    real_save = figures._save

    def save(fig, path):
        ax = fig.axes[0]
        for cont in ax.containers:
            if hasattr(cont, "patches"):
                drawn[cont.get_label()] = [round(p.get_height(), 6) for p in cont.patches]
        return real_save(fig, path)
    monkeypatch.setattr(figures, "_save", save)
    dice_bars(runs, tmp_path / "bars.png")
    return drawn


def test_dice_bars_mean_group_is_drawn(monkeypatch, tmp_path):
    # with a dice_mean it is used as is (it averages cases, not classes); without one, the class mean
    with_mean = _summary(0)
    no_mean = {"per_class": {"MYO": {"dice": 40.0, "dice_std": 1.0}, "LV": {"dice": 60.0, "dice_std": None}}}
    h = _bar_heights(monkeypatch, {"a": with_mean, "b": no_mean}, tmp_path)
    assert h["a"][-1] == 71.0 and h["b"][-1] == 50.0
    assert h["b"][:2] == [40.0, 60.0]


@pytest.mark.slow
def test_training_curves_from_jsonl(tmp_path):
    log = tmp_path / "log.jsonl"
    lines = []
    for i in range(0, 200, 5):
        stage = "advent" if i < 100 else "mpscl"
        rec = {"iter": i, "stage": stage, "loss/seg": 2.0 * np.exp(-i / 60), "loss/adv": 0.7 + 0.01 * np.sin(i),
               "lr": 2.5e-4 * (1 - i / 200) ** 0.9}
        if stage == "mpscl":
            rec["loss/mpcl_src"] = 1.5 - i / 400
        lines.append(json.dumps(rec))
    log.write_text("\n".join(lines) + "\n{\"iter\": 3, \"loss/se")  # a truncated last line is skipped
    _check_png(training_curves(log, tmp_path / "curves.png", smooth=3))
    _check_png(training_curves([json.loads(x) for x in lines], tmp_path / "curves2.png"))


@pytest.mark.slow
def test_training_curves_of_a_full_mpscl_log_lay_out_without_warnings(tmp_path):
    import warnings
    keys = ["seg_src", "seg_src_aux", "adv", "adv_aux", "mpcl_src", "mpcl_trg", "st_trg", "d_main", "d_aux",
            "selected", "st_selected", "st_selected_fg", "sec_per_iter", "lr"]  # an MPSCL stage's log
    recs = [{"iter": i, "stage": st, **{k: 1.0 / (1 + i + j) for j, k in enumerate(keys)}}
            for st in ("warmup", "mpscl") for i in range(10, 200, 10)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. constrained layout giving up on a crowded panel
        _check_png(training_curves(recs, tmp_path / "curves.png"))


@pytest.mark.slow
def test_collect_features_and_tsne(tmp_path):
    rng = np.random.default_rng(0)
    src_ids = blob_labels((4, 32, 32), [(2, 10, 10), (2, 22, 20), (2, 12, 24)], [(3, 6, 6), (3, 6, 6), (3, 5, 5)])
    trg_ids = np.roll(src_ids, 3, axis=1)
    model = DummySegmenter()
    fs, ls = collect_features(model, encode(src_ids), src_ids, max_points=150, batch_size=3, device="cpu")
    assert fs.shape == (150, 8) and ls.shape == (150,)
    # balanced: every scarce class is taken whole, background (80% of pixels) only fills the rest
    assert len(np.unique(ls)) == 4 and np.bincount(ls)[0] <= 100
    fs2, ls2 = collect_features(model, encode(src_ids), src_ids, max_points=150, batch_size=3, device="cpu")
    np.testing.assert_array_equal(fs, fs2)  # deterministic
    ignore = np.full_like(trg_ids, -1, dtype=np.int64)
    ignore[:, :16] = trg_ids[:, :16]
    ft, lt = collect_features(model, encode(trg_ids)[:, None], ignore, max_points=120, device="cpu")
    assert (lt >= 0).all() and len(lt) <= 120
    feats = {"source": fs + rng.normal(0, 0.05, fs.shape), "target": ft + rng.normal(0, 0.05, ft.shape)}
    labels = {"source": ls, "target": lt}
    p = feature_tsne(feats, labels, tmp_path / "tsne.png", class_names=CLASSES, max_points=120)
    _check_png(p)
    p2 = feature_tsne(feats, labels, tmp_path / "tsne2.png", before_after=(feats, labels), max_points=60)
    _check_png(p2)
