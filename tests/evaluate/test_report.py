import csv
import json
import math

import numpy as np
import pytest
import torch

from mpscl.evaluate import EvaluateError, evaluate_checkpoint

from evaluate_helpers import CLASSES, blob_labels, encode, make_dataset


def _cases():
    # case 1: in-plane 16x16 = the dataset size -> predictions are exact
    a = blob_labels((16, 16, 7), [(5, 5, 3), (10, 11, 3), (11, 4, 3)], [(3, 3, 2), (3, 4, 2), (2, 2, 2)])
    # case 2: in-plane 24x20 (resized), RV absent from the label
    b = blob_labels((24, 20, 6), [(8, 8, 3), (16, 12, 3)], [(5, 4, 2), (5, 5, 2)])
    # case 3: the dataset image will say "no LV" while the label has one -> ASSD undefined
    c = blob_labels((16, 16, 5), [(5, 5, 2), (10, 11, 2), (11, 4, 2)], [(3, 3, 2), (3, 4, 2), (2, 2, 2)])
    return {"1": (a, (1.0, 1.0, 2.5)), "2": (b, (0.8, 0.8, 2.0)), "3": (c, (1.0, 1.0, 1.0))}


def _blank_lv_in_image(root):
    z = dict(np.load(root / "cases" / "3.npz"))
    img = z["image"]
    img[np.isclose(img, 2 * 2 / 3 - 1)] = -1.0  # LV (id 2) pixels -> background intensity
    np.savez_compressed(root / "cases" / "3.npz", **z)


def test_metrics_files_schema_and_values(tmp_path, fake_checkpoint):
    data = make_dataset(tmp_path / "data", _cases())
    _blank_lv_in_image(data)
    out = tmp_path / "eval"
    res = evaluate_checkpoint(fake_checkpoint["path"], data, out, batch_size=4, device="cpu", progress=False)

    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == res
    assert set(on_disk) == {"cases", "summary"}
    names = CLASSES[1:]
    assert [c["case"] for c in on_disk["cases"]] == ["1", "2", "3"]
    for c in on_disk["cases"]:
        assert set(c) == {"case", "dice", "assd", "assd_mm", "components"}
        for m in ("dice", "assd", "assd_mm"):
            assert list(c[m]) == names
            assert all(v is None or isinstance(v, float) for v in c[m].values())
    c1, c2, c3 = on_disk["cases"]
    assert all(v == 100.0 for v in c1["dice"].values())  # same grid: exact
    assert all(v == 0.0 for v in c1["assd"].values())
    assert all(v > 70 for k, v in c2["dice"].items() if k != "RV")
    assert c2["dice"]["RV"] is None and c2["assd"]["RV"] is None  # absent in both
    assert c3["dice"]["LV"] == 0.0 and c3["assd"]["LV"] is None and c3["assd_mm"]["LV"] is None

    s = on_disk["summary"]
    assert set(s) == {"dice_mean", "assd_mean", "assd_mm_mean", "per_class"}
    assert list(s["per_class"]) == names
    keys = {"dice", "dice_std", "dice_undefined", "assd", "assd_std", "assd_mm", "assd_mm_std", "assd_failed",
            "components", "fragmented"}
    for pc in s["per_class"].values():
        assert set(pc) == keys
        assert isinstance(pc["assd_failed"], int) and isinstance(pc["dice_undefined"], int)
    lv = s["per_class"]["LV"]
    assert lv["assd_failed"] == 1 and lv["dice_undefined"] == 0
    # one blob per structure; LV not predicted in case 3 (blanked), RV absent from case 2
    assert [c["components"]["LV"] for c in on_disk["cases"]] == [1, 1, 0]
    assert lv["components"] == pytest.approx(2 / 3) and lv["fragmented"] == 0
    dice_lv = [c1["dice"]["LV"], c2["dice"]["LV"], 0.0]
    assert lv["dice"] == pytest.approx(np.mean(dice_lv)) and lv["dice_std"] == pytest.approx(np.std(dice_lv))
    assert lv["assd"] == pytest.approx(np.mean([c1["assd"]["LV"], c2["assd"]["LV"]]))  # failure excluded
    rv = s["per_class"]["RV"]
    assert rv["dice_undefined"] == 1 and rv["assd_failed"] == 1
    assert rv["dice"] == pytest.approx(np.mean([c1["dice"]["RV"], c3["dice"]["RV"]]))
    assert s["dice_mean"] == pytest.approx(np.mean([s["per_class"][n]["dice"] for n in names]))
    # mm: case 1 spacing is 1 mm in-plane; values are finite numbers
    assert all(isinstance(v, float) and math.isfinite(v) for v in c2["assd_mm"].values() if v is not None)

    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 3 * 3 and set(rows[0]) == {"case", "class", "dice", "assd", "assd_mm", "components"}
    assert {r["components"] for r in rows if r["case"] == "3" and r["class"] == "LV"} == {"0"}
    assert {r["assd"] for r in rows if r["case"] == "3" and r["class"] == "LV"} == {""}
    md = (out / "metrics.md").read_text()
    assert "| | MYO | LV | RV | Mean |" in md and "Dice (%)" in md and "ASSD (voxels)" in md
    assert "## Per case" in md and "| 3 |" in md
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temp files


def test_case_selection_and_axis(tmp_path, fake_checkpoint):
    cases = {str(i): (blob_labels((6, 16, 16), [(3, 8, 8)], [(2, 5, 5)]), (3.0, 1.0, 1.0)) for i in (1, 2, 5, 6, 7, 10)}
    data = make_dataset(tmp_path / "d", cases, axis=0)
    res = evaluate_checkpoint(fake_checkpoint["path"], data, tmp_path / "e", cases="2,5-7", device="cpu",
                              progress=False)
    assert [c["case"] for c in res["cases"]] == ["2", "5", "6", "7"]
    assert all(c["dice"]["MYO"] == 100.0 for c in res["cases"])


def test_test_time_flips_are_recorded(tmp_path, fake_checkpoint):
    cases = {"1": (blob_labels((6, 16, 16), [(3, 8, 8)], [(2, 5, 5)]), (3.0, 1.0, 1.0))}
    data = make_dataset(tmp_path / "d", cases, axis=0)
    plain = evaluate_checkpoint(fake_checkpoint["path"], data, tmp_path / "a", device="cpu", progress=False)
    res = evaluate_checkpoint(fake_checkpoint["path"], data, tmp_path / "e", device="cpu", progress=False, tta=True)
    assert res["tta"] == "flips" and "tta" not in plain
    assert res["cases"] == plain["cases"]  # the dummy model is pixelwise: flips change nothing
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["tta"] == "flips"
    assert "(test-time flips)" in (tmp_path / "e" / "metrics.md").read_text().splitlines()[0]


def test_a_model_per_case_segments_only_its_case(tmp_path, fake_checkpoint):
    # per_case(model, image) gets the loaded model and each case's prepared image in turn; the
    # model it returns segments that case only (here: case 6 all background, the rest as loaded)
    cases = {str(i): (blob_labels((6, 16, 16), [(3, 8, 8)], [(2, 5, 5)]), (3.0, 1.0, 1.0)) for i in (2, 5, 6)}
    data = make_dataset(tmp_path / "d", cases, axis=0)
    seen = []

    class Background(torch.nn.Module):
        def forward(self, x):
            logits = torch.zeros(x.shape[0], len(CLASSES), *x.shape[2:])
            logits[:, 0] = 1.0
            return None, None, logits

    def per_case(model, image):
        seen.append((model, image.shape))
        return Background() if len(seen) == 3 else model

    res = evaluate_checkpoint(fake_checkpoint["path"], data, tmp_path / "e", device="cpu", progress=False,
                              per_case=per_case)
    loaded = fake_checkpoint["state"]["model"]
    assert [m for m, _ in seen] == [loaded] * 3 and all(shape[0] == 6 for _, shape in seen)
    assert [c["dice"]["MYO"] for c in res["cases"]] == [100.0, 100.0, 0.0]
    assert res["cases"][2]["assd"]["MYO"] is None


def test_class_mismatch_and_unlabelled_are_refused(tmp_path, fake_checkpoint):
    cases = {"1": (blob_labels((16, 16, 4), [(8, 8, 2)], [(4, 4, 2)]), (1.0, 1.0, 1.0))}
    other = make_dataset(tmp_path / "other", cases, classes=["background", "MYO", "LAC", "LVC"])
    with pytest.raises(EvaluateError, match="classes"):
        evaluate_checkpoint(fake_checkpoint["path"], other, tmp_path / "e", device="cpu", progress=False)
    unlab = make_dataset(tmp_path / "unlab", cases, labelled=False)
    with pytest.raises(EvaluateError, match="no labels"):
        evaluate_checkpoint(fake_checkpoint["path"], unlab, tmp_path / "e", device="cpu", progress=False)
    assert not (tmp_path / "e" / "metrics.json").exists()


def test_largest_component_drops_an_island_before_scoring(tmp_path, fake_checkpoint):
    lab = blob_labels((16, 16, 4), [(6, 6, 2)], [(3, 3, 2)])  # one MYO blob (class 1)
    data = make_dataset(tmp_path / "d", {"1": (lab, (1.0, 1.0, 2.0))})
    z = dict(np.load(data / "cases" / "1.npz"))
    z["image"][0, 14, 14] = encode(np.ones((1,), np.uint8), len(CLASSES))[0]  # an island the model calls MYO
    np.savez_compressed(data / "cases" / "1.npz", **z)
    plain = evaluate_checkpoint(fake_checkpoint["path"], data, tmp_path / "a", device="cpu", progress=False)
    kept = evaluate_checkpoint(fake_checkpoint["path"], data, tmp_path / "b", device="cpu", progress=False,
                               largest_component=True)
    assert plain["cases"][0]["components"]["MYO"] == 2 and plain["cases"][0]["dice"]["MYO"] < 100.0
    assert kept["cases"][0]["components"]["MYO"] == 1 and kept["cases"][0]["dice"]["MYO"] == 100.0
    assert kept["postprocess"] == "largest-component" and "postprocess" not in plain
    assert "largest component" in (tmp_path / "b" / "metrics.md").read_text().splitlines()[0]
