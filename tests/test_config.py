import math

import pytest
import yaml

from mpscl.config import (ABLATIONS, Config, ConfigError, build_config, config_from_dict,
                          diff_configs, load_preset, preset_names)


def test_presets_exist_and_paper_values():
    assert {"paper-mr2ct", "paper-ct2mr", "cpu"} <= set(preset_names())
    mr2ct, ct2mr = load_preset("paper-mr2ct"), load_preset("paper-ct2mr")
    assert (mr2ct.mpscl.margin_src, mr2ct.mpscl.margin_trg) == (0.4, 0.2)
    assert (ct2mr.mpscl.margin_src, ct2mr.mpscl.temp_src) == (0.2, 2.0)
    assert mr2ct.model.discriminator == "fc" and ct2mr.model.discriminator == "patchgan"
    for c in (mr2ct, ct2mr):
        assert c.model.backbone == "resnet101" and c.data.size == 256 and c.train.iters == 50000
        assert c.mpscl.momentum == 0.2 and c.mpscl.threshold == 0.25
        assert c.optim.lr == 2.5e-4 and c.optim.head_lr_mult == 10.0 and c.train.seed == 1234
        assert c.loss.adv_main == 0.003 and c.loss.adv_aux == 0.00002


def test_override_layers_in_order(tmp_path):
    f = tmp_path / "o.yaml"
    f.write_text("mpscl: {margin_src: 0.3}\ntrain: {iters: 7}\n")
    cfg = build_config("cpu", [str(f)], ["mpscl.margin_src=0.1", "train.amp=off"])
    assert cfg.mpscl.margin_src == 0.1  # --set wins over the file
    assert cfg.train.iters == 7 and cfg.train.amp == "off"
    assert cfg.model.backbone == "resnet18"  # preset value kept


@pytest.mark.parametrize("item,msg", [
    ("mpscl.margn_src=0.1", "did you mean 'mpscl.margin_src'"),
    ("mpscl.margin_src=3.2", "out of range"),
    ("mpscl.threshold=-0.1", "out of range"),
    ("mpscl.momentum=1.5", "out of range"),
    ("train.iters=1.5", "must be int"),
    ("train.amp=maybe", "must be one of"),
    ("loss.adversarial=3", "must be bool"),
    ("model.backbone=vgg", "must be one of"),
    ("data.size=abc", "must be int"),
    ("nosection.x=1", "unknown config key"),
    ("margin", "expected KEY=VALUE"),
])
def test_invalid_values_are_refused(item, msg):
    with pytest.raises(ConfigError, match=msg):
        build_config("paper-mr2ct", sets=[item])


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mpscl: {margin_source: 0.3}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown config key 'mpscl.margin_source'"):
        build_config("cpu", [str(bad)])
    evil = tmp_path / "evil.yaml"
    evil.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config("cpu", [str(evil)])


def test_ablation_switches():
    assert set(ABLATIONS) == {"no-margin", "no-target-contrastive", "no-source-contrastive",
                              "no-selection", "no-adversarial", "authors-contrastive"}
    assert build_config("cpu", ablations=["no-source-contrastive"]).mpscl.lambda_src == 0
    c = build_config("paper-mr2ct", ablations=["no-margin", "no-selection"])
    assert c.mpscl.margin_src == 0 and c.mpscl.margin_trg == 0 and c.mpscl.threshold == 0
    assert build_config("cpu", ablations=["no-target-contrastive"]).mpscl.lambda_trg == 0
    assert build_config("cpu", ablations=["no-adversarial"]).loss.adversarial is False
    assert build_config("cpu", ablations=["authors-contrastive"]).mpscl.variant == "authors"
    with pytest.raises(ConfigError, match="unknown ablation"):
        build_config("cpu", ablations=["no-everything"])


def test_round_trip_and_diff():
    c = build_config("paper-ct2mr", sets=["train.iters=5"])
    d = yaml.safe_load(c.to_yaml())
    assert config_from_dict(d).to_dict() == c.to_dict()
    assert diff_configs(d, Config().to_dict()) == sorted(diff_configs(d, Config().to_dict()))
    assert "train.iters" in diff_configs(d, Config().to_dict())
    assert "mpscl.temp_src" in diff_configs(d, Config().to_dict())


def test_margin_upper_bound_is_open():
    build_config("cpu", sets=[f"mpscl.margin_src={math.pi - 1e-6}"])
    with pytest.raises(ConfigError):
        build_config("cpu", sets=[f"mpscl.margin_src={math.pi}"])


def test_presets_inherit_from_their_base():
    from mpscl.config import preset_layer
    layer = preset_layer("paper-ct2mr")
    assert "base" not in layer and layer["model"] == {"discriminator": "patchgan"}
    ct2mr, mr2ct = load_preset("paper-ct2mr").to_dict(), load_preset("paper-mr2ct").to_dict()
    assert diff_configs(ct2mr, mr2ct) == ["model.discriminator", "mpscl.margin_src", "mpscl.temp_src"]


def test_type_checks_come_from_the_type_hints():
    cfg = build_config("cpu", sets=["optim.betas_d=[0.5, 0.9]", "model.imagenet_init=null", "train.amp=off"])
    assert cfg.optim.betas_d == (0.5, 0.9) and cfg.model.imagenet_init is None and cfg.train.amp == "off"
    for item, msg in [("optim.betas_d=[0.5]", "Tuple"), ("model.imagenet_init=3", "str"),
                      ("data.size=1.5", "int"), ("loss.adversarial=1", "bool")]:
        with pytest.raises(ConfigError, match=msg):
            build_config("cpu", sets=[item])


def test_retired_keys_old_runs_load_new_settings_refuse(tmp_path):
    from mpscl.adapt.pipeline import check_run_config
    old = build_config("cpu").to_dict()
    old["train"].update(val_every=0, val_fraction=0.0)  # what runs before the registry saved
    assert config_from_dict(old).to_dict() == build_config("cpu").to_dict()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old) + "method: mpscl\n")
    check_run_config(tmp_path, build_config("cpu"), "mpscl")  # the old run folder is accepted
    with pytest.raises(ConfigError, match="retired"):
        build_config("cpu", sets=["train.val_every=5"])


def test_a_single_stage_run_says_mpscl_would_train_longer(tmp_path):
    from mpscl.cli import budget_note
    cfg = build_config("cpu", sets=["train.iters=600", "train.warmup_iters=1200"])
    note = budget_note("source-only", cfg, [])
    assert note.startswith("note: source-only trains train.iters = 600 iterations; mpscl under this "
                           "config trains 1800 (1200 warm-up + 600)") and "--set train.iters=1800" in note
    assert budget_note("mpscl", cfg, []) is None  # its own budget
    assert budget_note("advent", cfg, ["train.iters = 1800"]) is None  # the user chose the length
    assert budget_note("oracle", build_config("cpu", sets=["train.warmup_iters=0"]), []) is None
    # a --config file that sets the length counts as the user's choice; one that does not, not
    chosen, other = tmp_path / "len.yaml", tmp_path / "lr.yaml"
    chosen.write_text("train: {iters: 1800}\n")
    other.write_text("optim: {lr: 0.02}\ntrain: {seed: 3}\n")
    assert budget_note("advent", cfg, [], [chosen]) is None
    assert budget_note("advent", cfg, [], [other]) == note.replace("source-only", "advent")
