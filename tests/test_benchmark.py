"""The benchmark's summary: shape of summary.json, mean/std over seeds, the gap closed."""
import json

import pytest

from mpscl.bench.compare import plan, summarise
from mpscl.bench.rows import VARIANTS, default_rows


def _metrics(path, dice, commit="abc1234", amp=None):
    per = {c: {"dice": d, "dice_std": 1.0, "assd": 2.0 * i + 1, "assd_std": 0.5} for i, (c, d) in enumerate(dice.items())}
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps(
        {"cases": [], "summary": {"dice_mean": sum(dice.values()) / len(dice), "assd_mean": 3.0, "per_class": per}}))
    (path / "run.json").write_text(json.dumps({"seed": int(path.name[4:]), "train_seconds": 60,
                                                    "git_commit": commit, **({"amp": amp} if amp else {})}))


def test_summary_names_each_seeds_arithmetic_and_flags_a_mixed_seed(tmp_path):
    _metrics(tmp_path / "source-only" / "seed1", {"MYO": 40.0}, amp="off")
    _metrics(tmp_path / "source-only" / "seed2", {"MYO": 40.0}, amp="bf16")
    _metrics(tmp_path / "mpscl" / "seed1", {"MYO": 40.0}, amp="bf16")
    _metrics(tmp_path / "mpscl" / "seed2", {"MYO": 40.0}, amp="bf16")
    _metrics(tmp_path / "oracle" / "seed2", {"MYO": 40.0})  # a run older than the record
    s = summarise(tmp_path, "mscmrseg19")
    assert s["methods"]["source-only"]["amp_per_seed"] == ["off", "bf16"]
    md = (tmp_path / "summary.md").read_text()
    assert "- seed 1: off: source-only; bf16: mpscl **(mixed" in md
    # an unrecorded arithmetic is unknown, not a second one
    assert "- seed 2: bf16: source-only, mpscl; not recorded: oracle\n" in md
    assert "- not recorded: runs older than the record" in md


def test_summary_with_one_arithmetic_says_so_in_a_line(tmp_path):
    for row in ("source-only", "mpscl"):
        _metrics(tmp_path / row / "seed1", {"MYO": 40.0}, amp="bf16")
    md = summarise(tmp_path, "mscmrseg19") and (tmp_path / "summary.md").read_text()
    assert "Arithmetic of every run: bf16" in md and "mixed" not in md


def test_summary_over_seeds(tmp_path):
    _metrics(tmp_path / "source-only" / "seed1", {"MYO": 40.0, "LV": 60.0})
    _metrics(tmp_path / "source-only" / "seed2", {"MYO": 50.0, "LV": 70.0}, commit="def5678")
    _metrics(tmp_path / "oracle" / "seed1", {"MYO": 80.0, "LV": 90.0})
    _metrics(tmp_path / "mpscl" / "seed1", {"MYO": 60.0, "LV": 80.0})
    s = summarise(tmp_path, "mscmrseg19")
    so = s["methods"]["source-only"]
    assert so["runs"] == 2 and so["dice_mean"] == pytest.approx(55.0) and so["dice_std"] == pytest.approx(50 ** 0.5)  # sample std of 50, 60
    assert so["per_class"]["MYO"]["dice"] == pytest.approx(45.0)
    assert s["methods"]["oracle"]["dice_std"] is None  # one seed: no spread
    # only seed 1 has all three: source-only's seed 2 must not enter the gap
    assert s["mpscl_gap_closed"] == pytest.approx((70 - 50) / (85 - 50))
    assert s["mpscl_gap_closed_seeds"] == [1]
    assert json.loads((tmp_path / "summary.json").read_text())["methods"].keys() == s["methods"].keys()
    md = (tmp_path / "summary.md").read_text()
    assert "| source-only | 2 |" in md and "**55.0 (7.1)**" in md and "57% of the source-only -> oracle gap (seeds 1)" in md
    assert (tmp_path / "dice_per_method.png").stat().st_size > 5000
    # the code each run used, not HEAD at summary time
    assert so["git_commits"] == ["abc1234", "def5678"] and s["git_commits"] == ["abc1234", "def5678"]
    assert "commit abc1234, def5678" in md


@pytest.mark.parametrize("mpscl, words", [(50.1, "closes none of the source-only -> oracle gap (seeds 1) (+0.3% of the gap)"),
                                          (45.0, "widens it by 14% of the gap"),
                                          (60.0, "closes 29% of the source-only")])
def test_summary_states_the_gap_in_words(tmp_path, mpscl, words):
    # source-only 50, oracle 85: the gap is 35 points
    _metrics(tmp_path / "source-only" / "seed1", {"MYO": 50.0})
    _metrics(tmp_path / "oracle" / "seed1", {"MYO": 85.0})
    _metrics(tmp_path / "mpscl" / "seed1", {"MYO": mpscl})
    summarise(tmp_path, "mscmrseg19")
    assert words in (tmp_path / "summary.md").read_text()


def test_no_gap_when_the_oracle_is_not_above_source_only(tmp_path):
    # (mpscl - so) / (oracle - so) would read 40% here, a "gain" from a worse MPSCL
    _metrics(tmp_path / "source-only" / "seed1", {"MYO": 50.0})
    _metrics(tmp_path / "oracle" / "seed1", {"MYO": 45.0})
    _metrics(tmp_path / "mpscl" / "seed1", {"MYO": 48.0})
    s = summarise(tmp_path, "mscmrseg19")
    assert "mpscl_gap_closed" not in s and s["no_gap_seeds"] == [1]
    md = (tmp_path / "summary.md").read_text()
    assert "no source-only -> oracle gap for MPSCL to close" in md and "closes" not in md


def test_summary_figure_gets_the_mean_over_seeds(tmp_path, monkeypatch):
    from mpscl.evaluate import figures
    seen = {}
    monkeypatch.setattr(figures, "dice_bars", lambda runs, path, title: seen.update(runs))
    _metrics(tmp_path / "source-only" / "seed1", {"MYO": 40.0, "LV": 60.0})
    _metrics(tmp_path / "source-only" / "seed2", {"MYO": 50.0, "LV": 70.0})
    summarise(tmp_path, "mscmrseg19")
    assert seen["source-only"]["dice_mean"] == pytest.approx(55.0)
    assert seen["source-only"]["dice_std"] == pytest.approx(50 ** 0.5)


def test_variants_are_compared_with_mpscl_seed_by_seed(tmp_path):
    _metrics(tmp_path / "mpscl" / "seed1", {"MYO": 60.0})
    _metrics(tmp_path / "mpscl" / "seed2", {"MYO": 70.0})
    _metrics(tmp_path / "mpscl" / "seed3", {"MYO": 65.0})
    _metrics(tmp_path / "mpscl-no-margin" / "seed1", {"MYO": 58.0})
    _metrics(tmp_path / "mpscl-no-margin" / "seed2", {"MYO": 73.0})
    s = summarise(tmp_path, "mscmrseg19")
    c = s["variants_vs_mpscl"]["mpscl-no-margin"]
    # only the seeds both have; mpscl's seed 3 has no partner
    assert c["seeds"] == [1, 2] and c["diff_per_seed"] == pytest.approx([-2.0, 3.0])
    assert c["mean_diff"] == pytest.approx(0.5)
    assert "- mpscl-no-margin: +0.5 (seeds 1, 2: -2.0, +3.0)" in (tmp_path / "summary.md").read_text()
    from mpscl.bench.compare import _signed
    assert [_signed(d) for d in (-0.04, 0.04, -0.06, 1.25)] == ["0.0", "0.0", "-0.1", "+1.2"]


def test_plan_gives_every_method_and_variant():
    runs = plan(default_rows(), [1, 2, 3], [1])
    names = [(r["name"], r["seed"]) for r in runs]
    assert len(runs) == 4 * 3 + len(VARIANTS)
    assert ("mpscl-no-margin", 1) in names and ("oracle", 3) in names
    assert all(r["method"] == "mpscl" for r in runs if r["name"] in VARIANTS)


def test_seed_lists_from_the_command_line():
    from mpscl.cli import _seed_list
    from mpscl.config import ConfigError
    assert _seed_list("1,2,3", "--seeds") == [1, 2, 3] == _seed_list("1-3", "--seeds")
    assert _seed_list("", "--variant-seeds") == []  # none: e.g. only the ablations
    for bad in ("a", "1,,2", "3-1"):
        with pytest.raises(ConfigError, match="--seeds"):
            _seed_list(bad, "--seeds")


def test_ct2mr_suite_uses_the_papers_ct2mr_settings_under_the_ablations():
    from mpscl.bench.compare import suite_settings
    from mpscl.config import build_config
    st = [suite_settings("phantom-ct2mr")]
    cfg = build_config("cpu", st)
    paper = build_config("paper-ct2mr")
    assert (cfg.model.discriminator, cfg.mpscl.margin_src, cfg.mpscl.temp_src) == \
        (paper.model.discriminator, paper.mpscl.margin_src, paper.mpscl.temp_src) == ("patchgan", 0.2, 2.0)
    assert cfg.model.backbone == "resnet18"  # still the CPU preset otherwise
    # the suite's margins must not undo the no-margin switch
    nm = build_config("cpu", st, ablations=["no-margin"])
    assert nm.mpscl.margin_src == 0.0 and nm.mpscl.margin_trg == 0.0


def test_plain_rows_train_what_the_cpu_plain_preset_says():
    """The benchmark's plain rows under --preset cpu are the cpu-plain preset, setting for
    setting (but the seed): the baseline the recipe's gain is measured from."""
    from mpscl.bench.compare import _configure
    from mpscl.bench.suites import BUILTIN
    from mpscl.config import build_config
    runs = [r for r in plan(BUILTIN["mscmrseg19"].rows, [3], []) if r["name"].endswith("-plain")]
    assert [r["name"] for r in runs] == ["source-only-plain", "mpscl-plain"]
    _configure(runs, "cpu", [], [], 3600)
    for r in runs:
        want = build_config("cpu-plain", sets=["train.seed=3"])
        if r["method"] == "source-only":  # a single-stage method gets the whole budget
            want.train.iters = 3600
        assert r["cfg"].to_dict() == want.to_dict(), r["name"]
    mp = next(r["cfg"] for r in runs if r["method"] == "mpscl")
    assert (mp.train.warmup_iters, mp.train.iters, mp.appearance.gin) == (1200, 2400, 0.0)


def _cases(path, per_case):
    path.mkdir(parents=True)
    cases = [{"case": str(i + 1), "dice": {"MYO": d, "LV": d}, "assd": {}} for i, d in enumerate(per_case)]
    (path / "metrics.json").write_text(json.dumps({"cases": cases, "summary": {}}))


def test_paired_case_comparison_hand_values(tmp_path):
    from mpscl.bench.compare import paired_cases
    _cases(tmp_path / "mpscl" / "seed1", [60, 70, 80, 50, 40])
    _cases(tmp_path / "mpscl" / "seed2", [62, 72, 82, 52, 42])
    _cases(tmp_path / "advent" / "seed1", [59, 68, 77, 46, 35])
    _cases(tmp_path / "advent" / "seed2", [61, 70, 79, 48, 37])
    _cases(tmp_path / "advent" / "seed3", [0, 0, 0, 0, 0])  # mpscl has no seed 3: left out
    c = paired_cases(tmp_path, "mpscl", "advent")
    assert c["seeds"] == [1, 2] and c["cases"] == 5
    assert c["mean_diff"] == pytest.approx((1 + 2 + 3 + 4 + 5) / 5)
    assert c["cases_better"] == 5
    # all five differences positive: exact two-sided signed-rank p = 2 / 2**5
    assert c["wilcoxon_p"] == pytest.approx(0.0625)
    assert paired_cases(tmp_path, "mpscl", "oracle") is None


def test_recommended_row_against_the_plain_baseline_hand_values(tmp_path):
    """The built-in suites recommend the MPSCL recipe and measure it from plain source-only."""
    for seed, (plain, so, adv, rec, orc) in {1: (50, 60, 62, 66, 90), 2: (54, 64, 60, 67, 86)}.items():
        for row, d in (("source-only-plain", plain), ("source-only", so), ("advent", adv),
                       ("mpscl", rec), ("oracle", orc)):
            _metrics(tmp_path / row / f"seed{seed}", {"MYO": float(d)})
    s = summarise(tmp_path, "mscmrseg19")
    assert s["recommended"] == "mpscl" and s["baseline"] == "source-only-plain"
    # gap over seeds 1, 2: plain 52, oracle 88, recipe 66.5 -> 14.5 / 36
    assert s["gap_closed"]["mpscl"]["share"] == pytest.approx(14.5 / 36)
    assert s["gap_closed"]["source-only"]["share"] == pytest.approx(10 / 36)
    assert s["recommended_vs"]["advent"]["diff_per_seed"] == pytest.approx([4.0, 7.0])
    assert s["recommended_vs"]["source-only"]["diff_per_seed"] == pytest.approx([6.0, 3.0])
    assert s["recommended_vs"]["source-only-plain"]["mean_diff"] == pytest.approx(14.5)
    md = (tmp_path / "summary.md").read_text()
    assert "mpscl closes 40% of the source-only-plain -> oracle gap (seeds 1, 2)" in md
    assert "mpscl minus advent, mean Dice seed by seed: +5.5 (+4.0, +7.0)" in md


def test_a_gap_share_that_rounds_to_zero_prints_without_a_sign(tmp_path):
    for row, d in (("source-only-plain", 50.0), ("mpscl", 49.9), ("oracle", 90.0)):
        _metrics(tmp_path / row / "seed1", {"MYO": d})
    summarise(tmp_path, "mscmrseg19")
    md = (tmp_path / "summary.md").read_text()
    assert "mpscl closes 0% of the source-only-plain -> oracle gap" in md and "-0%" not in md


def test_logged_train_seconds_hand_values(tmp_path):
    # what a run found already trained took: sec_per_iter x the logging interval, per record
    from mpscl.bench.compare import logged_train_seconds
    (tmp_path / "warmup").mkdir()
    (tmp_path / "mpscl").mkdir()
    recs = [{"iter": 10, "sec_per_iter": 0.5}, {"iter": 20, "sec_per_iter": 0.25},
            {"iter": 20, "sec_per_iter": 0.75},  # logged again after a resume: the last one counts
            {"iter": 30, "sec_per_iter": 1.0}, {"iter": 35, "sec_per_iter": 2.0}]  # 35: the last iteration
    (tmp_path / "warmup" / "log.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + '\n{"iter": 4')
    (tmp_path / "mpscl" / "log.jsonl").write_text(json.dumps({"iter": 5, "sec_per_iter": 3.0}) + "\n")
    # warm-up: interval 10, (0.5 + 0.75 + 1.0 + 2.0) x 10 = 42.5; mpscl: one record, 5 x 3.0 = 15
    assert logged_train_seconds(tmp_path, ["warmup"]) == pytest.approx(42.5)
    assert logged_train_seconds(tmp_path, ["warmup", "mpscl"]) == pytest.approx(57.5)
    assert logged_train_seconds(tmp_path, ["missing"]) == 0.0
