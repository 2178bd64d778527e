"""Target self-training on top of MPSCL (``mpscl.self_training*``, beyond the paper)."""
import json
import math

import pytest
import torch

from mpscl.adapt.pipeline import train
from mpscl.adapt.steps import agreed_selection, self_training_labels, update_teacher
from mpscl.config import ConfigError, build_config
from resume_helpers import assert_resume_bit_identical


def test_labels_keep_confident_pixels_that_agree_with_the_prototypes():
    # 2 classes, 2 x 2 pixels; softmax of (a, 0) for class 0 is 1 / (1 + e^-a)
    a = math.log(19.0)  # p = 0.95
    logits = torch.tensor([[[a, -a], [0.1, 5.0]],
                           [[0.0, 0.0], [0.0, 0.0]]])[None]  # (1, 2, 2, 2)
    # pixel (0,0): class 0 at 0.95; (0,1): class 1 at 0.95; (1,0): class 0 at 0.525; (1,1): class 0 at 0.993
    protos = torch.tensor([[[0]]])  # (1, 1, 1): upsampled to every pixel: class 0
    logits = torch.softmax(logits, dim=1)  # the labels are read from probabilities
    got = self_training_labels(logits, protos, 0.9, agree=False)
    assert got.tolist() == [[[0, 1], [-1, 0]]]
    got = self_training_labels(logits, protos, 0.9, agree=True)
    assert got.tolist() == [[[0, -1], [-1, 0]]]  # (0,1) says 1, the prototypes 0
    got = self_training_labels(logits, protos, 0.0, agree=False)
    assert got.tolist() == [[[0, 1], [0, 0]]]
    # class-balanced: class 0's maxima are 0.95, 0.525, 0.993; its top half (>= the median
    # 0.95) passes a threshold of 0.99; class 1's single pixel (0.95) is its own median
    got = self_training_labels(logits, protos, 0.99, agree=False, class_fraction=0.5)
    assert got.tolist() == [[[0, 1], [-1, 0]]]
    got = self_training_labels(logits, protos, 0.99, agree=False, class_fraction=0.0)
    assert got.tolist() == [[[-1, -1], [-1, 0]]]
    # nearest upsampling of a 1 x 2 prototype map: left column 1, right column 0
    got = self_training_labels(logits, torch.tensor([[[1, 0]]]), 0.5, agree=True)
    assert got.tolist() == [[[-1, -1], [-1, 0]]]


def test_agreed_selection_keeps_selected_pixels_whose_self_training_label_repeats_the_prototypes():
    # feature resolution 2 x 2, labels at 4 x 4: nearest downsampling reads pixels (0,0),
    # (0,2), (2,0), (2,2) of the labels
    sel = torch.tensor([[[True, True], [True, False]]])
    protos = torch.tensor([[[1, 2], [0, 1]]])
    labels = torch.full((1, 4, 4), -1)
    labels[0, 0, 0] = 1   # agrees, selected: kept
    labels[0, 0, 2] = 1   # says 1 where the prototypes say 2: dropped
    labels[0, 2, 0] = -1  # no confident label: dropped
    labels[0, 2, 2] = 1   # agrees but not selected by the margin: stays out
    labels[0, 1, 1] = 2   # between the read pixels: never seen
    labels[0, 3, 3] = 1
    got = agreed_selection(sel, protos, labels)
    assert got.tolist() == [[[True, False], [False, False]]]
    labels[0, 2, 0] = 0
    assert agreed_selection(sel, protos, labels).tolist() == [[[True, False], [True, False]]]


def test_target_contrast_labels_need_self_training_and_the_target_term():
    assert build_config("cpu").mpscl.target_contrast_labels == "prototypes"  # the paper's selection
    on = build_config("cpu", sets=["mpscl.target_contrast_labels=self-training"]).mpscl
    assert on.target_contrast_labels == "self-training"
    for off in ("mpscl.self_training=0", "mpscl.lambda_trg=0"):
        with pytest.raises(ConfigError, match="target_contrast_labels=self-training"):
            build_config("cpu", sets=["mpscl.target_contrast_labels=self-training", off])
    with pytest.raises(ConfigError, match="target_contrast_labels"):
        build_config("cpu", sets=["mpscl.target_contrast_labels=teacher"])


def test_flipped_labels_need_the_teacher():
    with pytest.raises(ConfigError, match="self_training_flips needs a mean teacher"):
        build_config("cpu", sets=["mpscl.self_training_flips=true", "mpscl.self_training_teacher=0"])
    assert build_config("cpu", sets=["mpscl.self_training_flips=true"]).mpscl.self_training_flips
    assert not build_config("cpu").mpscl.self_training_flips
    # without self-training the setting does nothing, so it is not refused
    build_config("cpu-plain", sets=["mpscl.self_training_flips=true"])


def test_mean_teacher_update_is_the_ema_of_weights_and_copies_buffers():
    teacher, student = torch.nn.BatchNorm2d(2), torch.nn.BatchNorm2d(2)
    with torch.no_grad():
        teacher.weight.copy_(torch.tensor([1.0, 2.0]))
        student.weight.copy_(torch.tensor([3.0, -2.0]))
        student.running_mean.copy_(torch.tensor([0.5, 0.25]))
    student.num_batches_tracked.fill_(7)
    update_teacher(teacher, student, 0.75)
    assert torch.allclose(teacher.weight, torch.tensor([1.5, 1.0]))  # 0.75 * t + 0.25 * s
    assert torch.equal(teacher.running_mean, student.running_mean) and int(teacher.num_batches_tracked) == 7


def test_settings_are_validated():
    cfg = build_config("cpu", sets=["mpscl.self_training=0.5", "mpscl.self_training_view=randomised"])
    assert cfg.mpscl.self_training == 0.5 and cfg.mpscl.self_training_view == "randomised"
    assert build_config("paper-mr2ct").mpscl.self_training == 0.0  # the paper's method: off
    plain = build_config("cpu-plain").mpscl  # the faithful MPSCL at CPU scale: no self-training, no teacher
    assert (plain.self_training, plain.self_training_teacher, plain.size_prior) == (0.0, 0.0, 0.0)
    # the recommended CPU recipe: the gentle setting (eleventh round), labels from a mean teacher (fifteenth)
    c = build_config("cpu").mpscl
    assert (c.self_training, c.self_training_view, c.self_training_threshold, c.self_training_agree,
            c.self_training_teacher) == (0.3, "randomised", 0.95, True, 0.995)
    assert c.size_prior == 0.1  # in the MPSCL stage alone (twenty-sixth round)
    assert build_config("cpu", sets=["mpscl.self_training_teacher=1"]).mpscl.self_training_teacher == 1.0
    with pytest.raises(ConfigError, match="self_training_teacher"):
        build_config("cpu", sets=["mpscl.self_training_teacher=1.01"])
    with pytest.raises(ConfigError, match="self_training_view"):
        build_config("cpu", sets=["mpscl.self_training_view=strong"])
    with pytest.raises(ConfigError, match="self_training_threshold"):
        build_config("cpu", sets=["mpscl.self_training_threshold=1.5"])


TINY = ["data.context=0", "data.context_spacing=slices",  # one slice in: data.context has its own tests
        "data.size=48", "data.batch_size=2", "train.iters=4", "train.warmup_iters=2",
        "train.log_every=1", "train.checkpoint_every=2", "train.threads=1",
        "train.device=cpu"]  # CPU: weights compared bit for bit across runs
# (CUDA's atomic adds differ in the last bits)


@pytest.mark.slow
@pytest.mark.parametrize("view,teacher", [("clean", 0.0), ("randomised", 0.0), ("randomised", 0.9),
                                          ("randomised", 1.0)])
def test_self_training_trains_logs_and_changes_the_weights(tiny_phantom, tmp_path, view, teacher):
    on = build_config("cpu", sets=TINY + ["mpscl.self_training=1.0", "mpscl.self_training_threshold=0.3",
                                          f"mpscl.self_training_view={view}",
                                          f"mpscl.self_training_teacher={teacher}"])
    off = build_config("cpu", sets=TINY + ["mpscl.self_training=0"])
    a = train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", on, tmp_path / "on", progress=False)
    b = train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", off, tmp_path / "off", progress=False)
    recs = [json.loads(l) for l in (tmp_path / "on" / "mpscl" / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["st_trg"]) and 0.0 <= r["st_selected"] <= 1.0 for r in recs)
    assert any(r["st_selected"] > 0 for r in recs)
    off_recs = (tmp_path / "off" / "mpscl" / "log.jsonl").read_text()
    assert "st_trg" not in off_recs
    wa, wb = torch.load(a, weights_only=True)["model"], torch.load(b, weights_only=True)["model"]
    # same warm-up (the switch only acts in the MPSCL stage), different MPSCL weights
    w0 = torch.load(tmp_path / "on" / "warmup" / "final.pt", weights_only=True)["model"]
    w1 = torch.load(tmp_path / "off" / "warmup" / "final.pt", weights_only=True)["model"]
    assert all(torch.equal(v, w1[k]) for k, v in w0.items())
    assert any(not torch.equal(v, wb[k]) for k, v in wa.items())
    ck = torch.load(tmp_path / "on" / "mpscl" / "final.pt", weights_only=True)
    if teacher:  # checkpointed (resume), and the EMA of the segmenter's path: not the segmenter
        key = "main_head.branches.0.weight"
        t, s, w = ck["teacher"][key], ck["model"][key], w0[key]
        assert not torch.equal(t, s)
        # momentum 1: the warm-up segmenter's weights, unchanged; below 1 they move
        assert torch.equal(t, w) if teacher == 1.0 else not torch.equal(t, w)
    else:
        assert ck.get("teacher") is None


@pytest.mark.slow
def test_flipped_teacher_labels_change_training_and_log_the_foreground_share(tiny_phantom, tmp_path):
    # a threshold the flipped average moves pixels across (at 0.3 every pixel passes either way)
    sets = TINY + ["mpscl.self_training=1.0", "mpscl.self_training_threshold=0.7",
                   "mpscl.self_training_teacher=0.9"]
    runs = {}
    for flips in (False, True):
        cfg = build_config("cpu", sets=sets + [f"mpscl.self_training_flips={str(flips).lower()}"])
        runs[flips] = train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", cfg, tmp_path / str(flips),
                            progress=False)
        recs = [json.loads(l) for l in (tmp_path / str(flips) / "mpscl" / "log.jsonl").read_text().splitlines()]
        assert all(0.0 <= r["st_selected_fg"] <= 1.0 for r in recs)
    wa, wb = (torch.load(runs[f], weights_only=True)["model"] for f in (False, True))
    # the same warm-up and batches: only the labels' views differ, and so do the weights
    assert any(not torch.equal(v, wb[k]) for k, v in wa.items())


@pytest.mark.slow
def test_target_contrast_on_self_training_labels_selects_fewer_pixels_and_changes_training(tiny_phantom, tmp_path):
    # margin 0: the prototypes select every pixel of the barely trained network
    sets = TINY + ["mpscl.threshold=0", "mpscl.self_training=1.0", "mpscl.self_training_threshold=0.5",
                   "mpscl.self_training_teacher=0.9"]
    runs, first = {}, {}
    for which in ("prototypes", "self-training"):
        cfg = build_config("cpu", sets=sets + [f"mpscl.target_contrast_labels={which}"])
        runs[which] = train(tiny_phantom["mr"], tiny_phantom["ct"], "mpscl", cfg, tmp_path / which, progress=False)
        recs = [json.loads(l) for l in (tmp_path / which / "mpscl" / "log.jsonl").read_text().splitlines()]
        assert all(math.isfinite(r["mpcl_trg"]) for r in recs)
        first[which] = recs[0]
    # the same warm-up, weights and batch at the stage's first step: a subset of the pixels
    assert 0 < first["self-training"]["selected"] < first["prototypes"]["selected"]
    assert first["self-training"]["st_selected"] == first["prototypes"]["st_selected"]
    wa, wb = (torch.load(runs[w], weights_only=True)["model"] for w in runs)
    assert any(not torch.equal(v, wb[k]) for k, v in wa.items())


def test_target_view_is_deterministic_per_iteration_and_position(tiny_phantom):
    from mpscl.adapt.trainer import Trainer
    from mpscl.data import SliceDataset

    cfg = build_config("cpu", sets=TINY)
    src, trg = SliceDataset(tiny_phantom["mr"]), SliceDataset(tiny_phantom["ct"], labelled=False)
    t = Trainer(cfg, "source-only", src, trg, "unused", device=torch.device("cpu"), progress=False)
    x = torch.rand(2, 1, 48, 48) * 2 - 1
    v = t.target_view(x, 5)
    assert v.shape == x.shape and torch.isfinite(v).all() and not torch.equal(v, x)
    assert torch.equal(v, t.target_view(x, 5))
    assert not torch.equal(v, t.target_view(x, 6))
    # position k of the batch: the same view whatever else is in the batch
    assert torch.equal(t.target_view(x[:1], 5), v[:1])


@pytest.mark.slow
def test_resume_is_bit_identical_with_the_randomised_view_flipped_teacher_anatomy_prior_mix_and_size_prior(
        tiny_phantom, tmp_path):
    from mpscl.adapt.trainer import Trainer
    from mpscl.data import SliceDataset

    cfg = build_config("cpu", sets=TINY + ["train.iters=6", "mpscl.self_training=1.0",
                                           "mpscl.self_training_threshold=0.3", "mpscl.self_training_teacher=0.9",
                                           "mpscl.self_training_view=randomised", "mpscl.self_training_flips=true",
                                           "mpscl.self_training_anatomy=true", "mpscl.self_training_prior=0.5",
                                           "mpscl.self_training_mix=true", "loss.size_prior=1.0",
                                           "mpscl.target_contrast_labels=self-training"])
    src, trg = SliceDataset(tiny_phantom["mr"], augment=True), SliceDataset(tiny_phantom["ct"], labelled=False)
    from mpscl.models import build_segmenter
    torch.manual_seed(0)
    protos = torch.randn(5, build_segmenter(cfg.model, 5).feature_dim)

    def trainer(out):
        return Trainer(cfg, "mpscl", src, trg, out, device=torch.device("cpu"), prototypes=protos,
                       progress=False)

    ref = assert_resume_bit_identical(trainer, tmp_path, entries=("model", "teacher"))
    # the running class shares continue too (a bound of 0.5 caps the tiny teacher's background)
    got = torch.load(tmp_path / "b" / "final.pt", weights_only=True)["class_prior"]
    assert got == ref["class_prior"] and ref["class_prior"]["running"][0] > 0.5
    # and the size prior's running shares (they moved off the source's start)
    got = torch.load(tmp_path / "b" / "final.pt", weights_only=True)["size_prior"]
    assert got == ref["size_prior"] and got["running"] != Trainer(cfg, "mpscl", src, trg, tmp_path / "c", device=torch.device(
        "cpu"), prototypes=protos, progress=False).size_prior.state_dict()["running"]


def test_the_teacher_reads_no_imagenet_file(tmp_path):
    from mpscl.adapt.networks import self_training_teacher
    cfg = build_config("cpu", sets=["model.width=8", "mpscl.self_training=1.0", "mpscl.self_training_teacher=0.99",
                                    f"model.imagenet_init={tmp_path / 'absent.pth'}", "model.input_mode=torchvision"])
    teacher = self_training_teacher(cfg, 4)  # its weights come from the segmenter at the first step
    assert teacher.input_mode == "torchvision" and not any(p.requires_grad for p in teacher.parameters())
