"""``mpscl benchmark --source --target --name``: any prepared pair, rows declared by the
user, resumability, and the errors that must stop it before anything is written."""
import json
import re
import shutil

import pytest

from mpscl.bench.rows import BenchmarkError, Row, load_rows, merge_rows, select_rows, default_rows
from mpscl.cli import main

TINY = ["--preset", "cpu", "--seeds", "1", "--set", "model.width=8", "--set", "train.iters=2",
        "--set", "train.warmup_iters=1", "--set", "train.threads=1"]


def _bench(ph, tmp_path, *extra, name="pair"):
    return main(["benchmark", "--source", str(ph["mr"]), "--target", str(ph["ct"]), "--name", name,
                 "--results", str(tmp_path / "results"), "--work", str(tmp_path / "work"), *TINY, *extra])


def _files(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rows_from_yaml_become_runs(tmp_path):
    f = tmp_path / "rows.yaml"
    f.write_text("rows:\n"
                 "  - {name: source-only+lr, method: source-only, set: {optim.lr: 0.005}}\n"
                 "  - {name: mpscl+t, method: mpscl, set: ['mpscl.temp_src=2.0'], ablations: [no-margin],"
                 " starts_from: mpscl}\n"
                 "recommended: mpscl+t\n")
    rows, rec = load_rows(f)
    assert rec == "mpscl+t" and rows[0].sets == ("optim.lr=0.005",) and not rows[0].is_variant
    assert rows[1].is_variant and rows[1].shared_stage() == "warmup"
    chosen = select_rows(merge_rows(default_rows(), rows), None, ["mpscl+t"], default_variants=False)
    assert [r.name for r in chosen] == ["source-only", "advent", "mpscl", "oracle", "source-only+lr", "mpscl+t"]
    # a variant of another method's warm-up, a row twice, unknown keys or names: refused
    with pytest.raises(BenchmarkError, match="from the warm-up of 'source-only', a source-only row"):
        merge_rows(default_rows(), [Row("x", "mpscl", starts_from="source-only")])
    with pytest.raises(BenchmarkError, match="has no stage that starts from a warm-up"):
        Row("x", "advent", starts_from="advent")
    with pytest.raises(BenchmarkError, match="declared twice"):
        merge_rows(default_rows(), [Row("mpscl", "mpscl")])
    with pytest.raises(BenchmarkError, match="--variants: unknown"):
        select_rows(default_rows(), None, ["nope"], default_variants=False)
    f.write_text("rows:\n  - {name: a, method: source-only, sett: {}}\n")
    with pytest.raises(BenchmarkError, match="unknown keys"):
        load_rows(f)


def test_row_config_is_what_the_row_trains_with():
    from mpscl.bench.compare import row_config
    from mpscl.config import build_config, diff_configs
    rows = {"source-only": Row("source-only", "source-only").record(),
            "mpscl": Row("mpscl", "mpscl").record(),
            "v": Row("v", "mpscl", sets=("mpscl.temp_src=2.0",), ablations=("no-margin",),
                     starts_from="mpscl").record()}
    a = build_config("cpu", sets=["train.iters=1200", "train.warmup_iters=600"]).to_dict()
    b = build_config("cpu", sets=["train.iters=600", "train.warmup_iters=1200"]).to_dict()
    so = row_config(a, rows, "source-only")
    # one stage: the whole budget, no warm-up key, no seed
    assert so["train"]["iters"] == 1800 and "warmup_iters" not in so["train"] and "seed" not in so["train"]
    assert so == row_config(b, rows, "source-only")
    assert (row_config(b, rows, "mpscl")["train"]["iters"], row_config(b, rows, "mpscl")["train"]["warmup_iters"]) == (600, 1200)
    v = row_config(a, rows, "v")
    # the row's own settings over the recorded config; the ablation named, not applied
    assert v["mpscl"]["temp_src"] == 2.0 and v["mpscl"]["margin_src"] == a["mpscl"]["margin_src"]
    assert v["ablations"] == {"no-margin": {"mpscl.margin_src": 0.0, "mpscl.margin_trg": 0.0}}
    assert v["starts_from"] == row_config(a, rows, "mpscl")
    # what an ablation set is compared, not only its name: a record from when no-margin set
    # one margin differs; an older record without the settings reads today's definition
    then = {**rows["v"], "ablation_settings": {"no-margin": {"mpscl.margin_src": 0.0}}}
    assert diff_configs(row_config(a, {**rows, "v": then}, "v"), v) == ["ablations.no-margin.mpscl.margin_trg"]
    legacy = {k: x for k, x in rows["v"].items() if k != "ablation_settings"}
    assert row_config(a, {**rows, "v": legacy}, "v") == v
    # the oracle trains on target slices only: the source slices' appearance handling is not its
    oracle = {"oracle": Row("oracle", "oracle").record()}
    fda = build_config("cpu", sets=["appearance.fda=0.5"]).to_dict()
    assert row_config(fda, oracle, "oracle") == row_config(build_config("cpu").to_dict(), oracle, "oracle")
    assert row_config(fda, rows, "source-only") != row_config(build_config("cpu").to_dict(), rows, "source-only")
    # a record of a method this version does not know is compared as it stands
    assert row_config(a, {"x": {"method": "gone", "set": []}}, "x") == {"row": {"method": "gone", "set": []}, "config": a}
    # AdaBN changes what the adaptation methods' rows compute, not what source-only or the
    # oracle computes (it leaves them as trained): only the former differ
    on = build_config("cpu", sets=["train.iters=600", "train.warmup_iters=1200", "train.adabn=true"]).to_dict()
    b = build_config("cpu", sets=["train.iters=600", "train.warmup_iters=1200", "train.adabn=false"]).to_dict()
    rows = {**rows, "oracle": Row("oracle", "oracle").record(), "advent": Row("advent", "advent").record()}
    changed = [n for n in rows if row_config(on, rows, n) != row_config(b, rows, n)]
    assert changed == ["mpscl", "v", "advent"]
    assert row_config(on, rows, "mpscl")["train"]["adabn"] is True and "adabn" not in so["train"]


def test_a_changed_budget_split_refuses_only_the_rows_it_changes(tmp_path):
    from mpscl.bench.compare import _write_record, check_record
    from mpscl.config import build_config
    pair = {"name": "p", "source": {}, "target": {}, "scored_on": {}, "test_cases": ["2"], "val_cases": []}
    plain_old = Row("plain", "mpscl", sets=("appearance.gin=0.0",)).record()
    old = {**pair, "config": build_config("cpu", sets=["train.iters=1200", "train.warmup_iters=600"]).to_dict(),
           "rows": {"source-only": Row("source-only", "source-only").record(), "mpscl": Row("mpscl", "mpscl").record(),
                    "plain": plain_old}}
    (tmp_path / "benchmark.json").write_text(json.dumps(old))
    for row in old["rows"]:
        (tmp_path / row).mkdir()
    # the new split, run for source-only only; "plain" now pins the split it was trained with
    plain_new = Row("plain", "mpscl", sets=("appearance.gin=0.0", "train.warmup_iters=600", "train.iters=1200")).record()
    new = {**pair, "config": build_config("cpu", sets=["train.iters=600", "train.warmup_iters=1200"]).to_dict(),
           "rows": {"source-only": old["rows"]["source-only"]}}
    known = {**old["rows"], "plain": plain_new}
    with pytest.raises(BenchmarkError, match=r"differs in: mpscl \(train.iters, train.warmup_iters\)\. Nothing"):
        check_record(tmp_path, new, known)
    # without today's definition of "plain" (its old one read over the new config) it is named too
    with pytest.raises(BenchmarkError, match=r"mpscl \(train.iters, train.warmup_iters\); plain \(train"):
        check_record(tmp_path, new, {})
    (tmp_path / "mpscl").rmdir()  # the changed row's results removed: accepted, and recorded anew
    check_record(tmp_path, new, known)
    _write_record(tmp_path, new, known)
    rec = json.loads((tmp_path / "benchmark.json").read_text())
    assert rec["rows"]["plain"] == plain_new and rec["config"]["train"]["warmup_iters"] == 1200
    check_record(tmp_path, new, known)  # and the next command agrees with what was written
    with pytest.raises(BenchmarkError, match="another pair or case split \\(differs in: test_cases\\)"):
        check_record(tmp_path, {**new, "test_cases": ["3"]}, known)


def test_a_changed_mpscl_setting_refuses_only_the_mpscl_rows(tmp_path):
    # mpscl.* is read by MPSCL stages only: a preset that changes it (e.g. adds self-training)
    # leaves the source-only, AdvEnt and oracle results standing, and names the MPSCL row
    from mpscl.bench.compare import check_record
    from mpscl.config import build_config
    pair = {"name": "p", "source": {}, "target": {}, "scored_on": {}, "test_cases": ["2"], "val_cases": []}
    rows = {n: Row(n, n).record() for n in ("source-only", "advent", "oracle", "mpscl")}
    old = {**pair, "config": build_config("cpu", sets=["mpscl.self_training=0"]).to_dict(), "rows": rows}
    (tmp_path / "benchmark.json").write_text(json.dumps(old))
    for row in rows:
        (tmp_path / row).mkdir()
    new = {**pair, "config": build_config("cpu", sets=["mpscl.self_training=0.3"]).to_dict(), "rows": rows}
    with pytest.raises(BenchmarkError, match=r"differs in: mpscl \(mpscl.self_training\)\. Nothing"):
        check_record(tmp_path, new, rows)
    (tmp_path / "mpscl").rmdir()
    check_record(tmp_path, new, rows)


@pytest.mark.slow
def test_any_pair_end_to_end_then_resume(tiny_phantom, tmp_path, capsys):
    rows = tmp_path / "rows.yaml"
    rows.write_text("rows:\n  - {name: mpscl-t2, method: mpscl, set: {mpscl.temp_src: 2.0}, starts_from: mpscl}\n"
                    "recommended: mpscl\n")
    args = ("--val-cases", "1", "--variants", "mpscl-no-margin,mpscl-t2", "--rows", str(rows))
    assert _bench(tiny_phantom, tmp_path, *args) == 0
    out = capsys.readouterr().out
    res = tmp_path / "results" / "pair"
    s = json.loads((res / "summary.json").read_text())
    assert list(s["methods"]) == ["source-only", "advent", "mpscl", "oracle", "mpscl-no-margin",
                                  "source-only-plain", "mpscl-t2"]
    # a pair's gain is measured from plain source-only (the preset's appearance handling off)
    assert s["baseline"] == "source-only-plain" and "source-only-plain" in s["recommended_vs"]
    plain = json.loads((res / "source-only-plain" / "seed1" / "run.json").read_text())
    assert "appearance.gin=0.0" in plain["sets"]
    assert s["test_cases"] == "2-3" and s["val_cases"] == "1" and s["recommended"] == "mpscl"
    assert set(s["variants_vs_mpscl"]) == {"mpscl-no-margin", "mpscl-t2"}
    assert set(s["paired"]) == {"mpscl vs source-only", "mpscl vs advent"}
    assert (res / "summary.md").is_file() and (res / "dice_per_method.png").is_file()
    assert "[run 1/7] pair: source-only seed 1: source-only 3 it; ETA after the first run" in out
    assert "[run 3/7] pair: mpscl seed 1: warmup 1 it -> mpscl 2 it; ETA" in out and "it/s measured" in out
    assert "mpscl 2 it (from mpscl's warm-up)" in out
    assert re.search(r"^mpscl +1  \d+\.\d\d .*<- recommended$", out, re.M)  # the final table
    info = json.loads((res / "mpscl-t2" / "seed1" / "run.json").read_text())
    assert "mpscl.temp_src=2.0" in info["sets"] and info["init"].endswith("mpscl/seed1/warmup/final.pt")
    metrics = json.loads((res / "oracle" / "seed1" / "metrics.json").read_text())
    assert [c["case"] for c in metrics["cases"]] == ["2", "3"]  # the validation case is not scored
    before = _files(res)
    # resuming runs nothing that is finished
    assert _bench(tiny_phantom, tmp_path, *args) == 0
    out = capsys.readouterr().out
    assert "[run" not in out and out.count("[skip]") == 7
    after = _files(res)
    assert {p: b for p, b in after.items() if p.name.startswith("metrics")} == \
        {p: b for p, b in before.items() if p.name.startswith("metrics")}
    # another configuration in the same results folder: refused, the keys named, nothing touched
    before = _files(res)
    assert _bench(tiny_phantom, tmp_path, *args, "--set", "train.iters=3", "--set", "optim.lr=0.02") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differs in: source-only (optim.lr, train.iters); advent (optim.lr, " in err[0]
    assert _files(res) == before
    # MPSCL's budget split otherwise (same 3 iterations): only the MPSCL rows are refused ...
    split = ("--set", "train.iters=1", "--set", "train.warmup_iters=2")
    assert _bench(tiny_phantom, tmp_path, *args, *split) == 2
    err = capsys.readouterr().err
    named = re.findall(r"(?:: |; )([a-z0-9-]+) \(", err.split("differs in", 1)[1])
    assert named == ["mpscl", "mpscl-no-margin", "mpscl-t2"], err
    assert _files(res) == before
    # ... and once their results are removed, their stale run folders stop it before training
    for row in named:
        shutil.rmtree(res / row)
    before = _files(res)
    assert _bench(tiny_phantom, tmp_path, *args, *split) == 2
    err = capsys.readouterr().err
    assert "run folders made with another configuration: " in err and "mpscl/seed1 (train.iters, " in err
    assert _files(res) == before  # the record is not rewritten either
    shutil.rmtree(tmp_path / "work" / "runs" / "pair")  # every row's runs: the others are finished
    assert _bench(tiny_phantom, tmp_path, *args, *split) == 0
    out = capsys.readouterr().out
    assert re.findall(r"\[run \d/7\] pair: (\S+) seed 1: ([^;]*);", out) == [
        ("mpscl", "warmup 2 it -> mpscl 1 it"), ("mpscl-no-margin", "mpscl 1 it (from mpscl's warm-up)"),
        ("mpscl-t2", "mpscl 1 it (from mpscl's warm-up)")]
    assert {p: b for p, b in _files(res / "source-only").items()} == \
        {p: b for p, b in before.items() if (res / "source-only") in p.parents}


@pytest.mark.slow
def test_a_row_that_trains_as_another_takes_its_training(tiny_phantom, tmp_path, capsys):
    """AdaBN trains exactly as source-only: its row copies source-only's finished training of
    the same seed, then adds the target's BatchNorm statistics; a row that trains otherwise
    (another learning rate) trains its own. The arithmetic is how a run goes, not what it
    trains: a row asking for bf16 still takes the float32 training, and says so."""
    rows = tmp_path / "rows.yaml"
    rows.write_text("rows:\n  - {name: so-adabn, method: adabn, set: {train.amp: bf16}}\n"
                    "  - {name: so-adabn-lr, method: adabn, set: {optim.lr: 0.02}}\n")
    args = ("--rows", str(rows), "--methods", "source-only,so-adabn,so-adabn-lr", "--variants", "none",
            "--set", "train.amp=off")
    assert _bench(tiny_phantom, tmp_path, *args) == 0
    out = capsys.readouterr().out
    runs, res = tmp_path / "work" / "runs" / "pair", tmp_path / "results" / "pair"
    assert re.findall(r"\[reuse\] (\S+) seed 1: trains as (\S+) does", out) == [("so-adabn", "source-only")]
    assert re.findall(r"\[run \d/3\] pair: (\S+) seed 1", out) == ["source-only", "so-adabn", "so-adabn-lr"]
    copied, original = ({p.relative_to(runs / row): b for p, b in _files(runs / row / "seed1" / "source-only").items()}
                        for row in ("so-adabn", "source-only"))
    assert "seed1/source-only/final.pt" in {str(p) for p in copied} and copied == original
    assert not list((runs / "so-adabn" / "seed1").glob(".*copying"))
    info = json.loads((res / "so-adabn" / "seed1" / "run.json").read_text())
    own = json.loads((res / "so-adabn-lr" / "seed1" / "run.json").read_text())
    assert (info["training_from"], info["trained_now"]) == ("source-only", False)
    assert (own["training_from"], own["trained_now"]) == (None, True)
    # the arithmetic is read from the training's checkpoints, not from the row's train.amp
    assert (info["amp"], own["amp"]) == ("off", "off")
    # the same training, then the target's statistics: a final model of its own
    so_final = (runs / "source-only" / "seed1" / "final.pt").read_bytes()
    assert (runs / "so-adabn" / "seed1" / "final.pt").read_bytes() != so_final


@pytest.mark.slow
def test_unlabelled_target_skips_the_oracle(tiny_phantom, tmp_path, capsys):
    from mpscl.data import prepare_dataset
    nifti = tiny_phantom["ct"].parent / "nifti" / "ct"
    unl = tmp_path / "ct_unlabelled"
    prepare_dataset(str(nifti / "case{case}_image.nii.gz"), None, "mmwhs", unl, size=48, log=lambda *a, **k: None)
    common = ["benchmark", "--source", str(tiny_phantom["mr"]), "--target", str(unl), "--name", "u",
              "--results", str(tmp_path / "r"), "--work", str(tmp_path / "w"), *TINY, "--methods", "source-only,oracle"]
    assert main(common) == 2  # nothing to score without --score
    assert "the target has no labels, so nothing can be scored" in capsys.readouterr().err
    assert main(common + ["--score", str(tiny_phantom["ct"])]) == 0
    s = json.loads((tmp_path / "r" / "u" / "summary.json").read_text())
    assert list(s["methods"]) == ["source-only"] and s["skipped"] == {"oracle": "the target has no labels"}
    assert "- oracle: skipped (the target has no labels)." in (tmp_path / "r" / "u" / "summary.md").read_text()


def _with_manifest(src, dst, **changes):
    shutil.copytree(src, dst)
    man = json.loads((dst / "manifest.json").read_text())
    man.update(changes)
    (dst / "manifest.json").write_text(json.dumps(man))
    return dst


@pytest.mark.parametrize("case, words", [
    ("classes", "class maps differ: source"),
    ("size", "sizes differ: source prepared at 48 px, target at 64 px"),
    ("missing", "case spec: "),
    ("overlap", "--val-cases and --test-cases overlap: cases 2 are in both"),
    ("half-pair", "needs --source, --target and --name"),
])
def test_errors_stop_before_anything_is_written(tiny_phantom, tmp_path, capsys, case, words):
    ph = dict(tiny_phantom)
    extra = []
    if case == "classes":
        man = json.loads((ph["ct"] / "manifest.json").read_text())
        ph["ct"] = _with_manifest(ph["ct"], tmp_path / "ct", classes=man["classes"][:-1] + ["PA"])
    elif case == "size":
        ph["ct"] = _with_manifest(ph["ct"], tmp_path / "ct", size=64)
    elif case == "missing":
        extra = ["--test-cases", "2-9"]
    elif case == "overlap":
        extra = ["--val-cases", "1-2", "--test-cases", "2-3"]
    # earlier results of this configuration, which the refused command must leave alone
    assert _bench(tiny_phantom, tmp_path, "--only", "nothing-yet") == 0
    res = tmp_path / "results" / "pair"
    (res / "mine.txt").write_text("earlier results")
    before = _files(res)
    capsys.readouterr()
    if case == "half-pair":
        code = main(["benchmark", "--source", str(ph["mr"]), "--results", str(tmp_path / "results")])
    else:
        code = _bench(ph, tmp_path, *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err
    assert _files(res) == before


@pytest.mark.slow
def test_builtin_suite_runs_through_the_same_path(tmp_path, capsys):
    # the phantom suite is the pair command with its data and case split filled in
    code = main(["benchmark", "--suite", "phantom-mr2ct", "--results", str(tmp_path / "results"),
                 "--work", str(tmp_path / "work"), *TINY, "--set", "data.size=48",
                 "--methods", "source-only", "--variants", "none"])
    assert code == 0
    res = tmp_path / "results" / "phantom_mr2ct"
    s = json.loads((res / "summary.json").read_text())
    assert (s["suite"], s["direction"], s["test_cases"], s["val_cases"]) == ("phantom-mr2ct", "MR -> CT", "4-12", "1-3")
    cases = json.loads((res / "source-only" / "seed1" / "metrics.json").read_text())["cases"]
    assert [c["case"] for c in cases] == [str(i) for i in range(4, 13)]
    assert json.loads((res / "benchmark.json").read_text())["val_cases"] == ["1", "2", "3"]


@pytest.mark.slow
def test_builtin_data_is_prepared_by_one_process_at_a_time(tmp_path):
    """Two benchmarks sharing --work: the second waits for the first's phantom, whole."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_prepare_phantom_suite, args=(str(tmp_path), name))
             for name in ("phantom-mr2ct", "phantom-ct2mr")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    for dom in ("mr", "ct"):
        assert (tmp_path / "data" / f"phantom_{dom}_32" / "manifest.json").is_file()


def _prepare_phantom_suite(work, name):
    from pathlib import Path
    from mpscl.bench.suites import BUILTIN, prepare_builtin
    prepare_builtin(BUILTIN[name], Path(work), 32)
