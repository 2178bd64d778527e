"""Which config keys make a run folder another run: not those the method never reads."""
import pytest

from mpscl.adapt.pipeline import train
from mpscl.config import build_config

TINY = ["data.size=48", "data.batch_size=2", "train.iters=4", "train.warmup_iters=2",
        "train.log_every=1", "train.checkpoint_every=2", "train.threads=1"]


@pytest.mark.slow
def test_a_budget_the_method_never_reads_does_not_make_its_run_folder_stale(tiny_phantom, tmp_path):
    # source-only records MPSCL's warm-up budget in its config but never reads it: a folder
    # trained under one split of a preset is continued under another (nothing retrained),
    # mid-stage too; its own budget still refuses
    from mpscl.adapt.trainer import TrainingError

    src, trg, out = tiny_phantom["mr"], tiny_phantom["ct"], tmp_path / "so"
    train(src, trg, "source-only", build_config("cpu", sets=TINY), out, progress=False)
    stage = out / "source-only" / "final.pt"
    before, lines = stage.read_bytes(), []
    other_split = build_config("cpu", sets=TINY + ["train.warmup_iters=7"])
    train(src, trg, "source-only", other_split, out, progress=False, log=lines.append)
    assert stage.read_bytes() == before and any("already finished" in l for l in lines)
    stage.unlink()  # from last.pt (iteration 4 of 4) under the other split: resumed, not refused
    train(src, trg, "source-only", other_split, out, progress=False)
    assert stage.is_file()
    with pytest.raises(TrainingError, match=r"differs in: train.iters\)"):
        train(src, trg, "source-only", build_config("cpu", sets=TINY + ["train.iters=6"]), out, progress=False)
    from mpscl import methods
    assert methods.get_method("source-only").unspent_budgets == ("train.warmup_iters",)
    assert methods.get_method("mpscl").unspent_budgets == ()


@pytest.mark.slow
def test_the_oracle_run_folder_ignores_the_source_image_handling(tiny_phantom, tmp_path):
    # appearance.* transforms source slices, which the oracle never trains on: its folder is
    # continued, not refused, when only those change; any key it does read still refuses
    from mpscl.adapt.trainer import TrainingError

    src, trg, out = tiny_phantom["mr"], tiny_phantom["ct"], tmp_path / "oracle"
    train(src, trg, "oracle", build_config("cpu", sets=TINY + ["appearance.gin=0"]), out, progress=False)
    stage = out / "oracle" / "final.pt"
    before, lines = stage.read_bytes(), []
    changed = build_config("cpu", sets=TINY + ["appearance.gin=0.7", "appearance.consistency=1.0"])
    train(src, trg, "oracle", changed, out, progress=False, log=lines.append)
    assert stage.read_bytes() == before and any("already finished" in l for l in lines)
    with pytest.raises(TrainingError, match=r"differs in: data.batch_size\)"):
        train(src, trg, "oracle", build_config("cpu", sets=TINY + ["data.batch_size=4"]), out, progress=False)
    # a method that trains on source slices is still refused for the same change
    so = tmp_path / "so"
    train(src, trg, "source-only", build_config("cpu", sets=TINY + ["appearance.gin=0"]), so, progress=False)
    with pytest.raises(TrainingError, match=r"appearance.gin"):
        train(src, trg, "source-only", changed, so, progress=False)


@pytest.mark.slow
def test_run_folders_without_an_mpscl_stage_ignore_the_mpscl_settings(tiny_phantom, tmp_path):
    # mpscl.* is read by MPSCL stages only: an AdvEnt folder is continued when only they
    # change; an MPSCL folder is refused
    from mpscl import methods
    from mpscl.adapt.trainer import TrainingError

    src, trg, out = tiny_phantom["mr"], tiny_phantom["ct"], tmp_path / "advent"
    train(src, trg, "advent", build_config("cpu", sets=TINY + ["mpscl.self_training=0"]), out, progress=False)
    stage, lines = out / "advent" / "final.pt", []
    before = stage.read_bytes()
    changed = build_config("cpu", sets=TINY + ["mpscl.self_training=0.3", "mpscl.lambda_trg=1.0"])
    train(src, trg, "advent", changed, out, progress=False, log=lines.append)
    assert stage.read_bytes() == before and any("already finished" in l for l in lines)
    mp = tmp_path / "mpscl"
    train(src, trg, "mpscl", build_config("cpu", sets=TINY + ["mpscl.self_training=0"]), mp, progress=False)
    with pytest.raises(TrainingError, match=r"mpscl.self_training"):
        train(src, trg, "mpscl", changed, mp, progress=False)
    assert [m for m in methods.method_names() if methods.get_method(m).reads_mpscl_settings] == \
        [m for m in methods.method_names() if any(s.prototypes for s in methods.get_method(m).stages)]
    assert not methods.get_method("advent").reads_mpscl_settings and methods.get_method("mpscl").reads_mpscl_settings
