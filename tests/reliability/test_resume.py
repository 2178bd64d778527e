"""Kill a real ``mpscl train`` subprocess (SIGKILL, SIGTERM), resume it, and get the
uninterrupted run's weights bit for bit (CPU, same settings).

Runs: warm-up 6 iterations, prototypes, MPSCL 8 iterations, a checkpoint every 2,
augmentation on (CPU preset), 48 x 48 slices, one thread.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from mpscl.checkpoint import load_checkpoint
from mpscl.cli import build_parser, main, _build_config
from mpscl.config import ConfigError

from reliability_helpers import PY, subprocess_env, train_argv


def _start(argv, logdir: Path) -> subprocess.Popen:
    logdir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([PY, "-m", "mpscl", *argv], env=subprocess_env(),
                            stdout=open(logdir / "stdout", "w"), stderr=open(logdir / "stderr", "w"))


def _run(argv, logdir: Path, timeout=120) -> subprocess.CompletedProcess:
    p = _start(argv, logdir)
    rc = p.wait(timeout=timeout)
    return subprocess.CompletedProcess(argv, rc, (logdir / "stdout").read_text(),
                                       (logdir / "stderr").read_text())


def _logged_iters(log: Path):
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        try:
            out.append(json.loads(line)["iter"])
        except (ValueError, KeyError):
            pass  # a line being written
    return out


def _wait_for_iter(proc, log: Path, at_least: int, timeout=120) -> int:
    """Poll the stage's log.jsonl until it shows iteration >= at_least; return that iteration."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        its = _logged_iters(log)
        if its and its[-1] >= at_least:
            return its[-1]
        assert proc.poll() is None, f"training exited early (rc {proc.returncode})"
        time.sleep(0.01)
    raise AssertionError(f"{log}: iteration {at_least} not reached in {timeout} s")


def assert_same(a, b, where="checkpoint"):
    """Every tensor bit-identical, every other value equal, recursively."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where}: tensors differ (max |diff| " \
            f"{(a.double() - b.double()).abs().max().item():.3g})"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def reference(phantom_sets, tmp_path_factory):
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("ref") / "run"
    r = _run(train_argv(phantom_sets, out), out.parent / "logs")
    assert r.returncode == 0, r.stderr
    return out


def _compare_runs(ref: Path, run: Path) -> None:
    for name in ("warmup/final.pt", "prototypes.pt", "mpscl/final.pt", "final.pt"):
        a, b = load_checkpoint(ref / name), load_checkpoint(run / name)
        if name == "prototypes.pt":
            a.pop("from"), b.pop("from")  # the path of the warm-up checkpoint
        assert_same(a, b, name)
    for stage in ("warmup", "mpscl"):  # one log entry per iteration, none twice
        n = 6 if stage == "warmup" else 8
        assert _logged_iters(run / stage / "log.jsonl") == list(range(1, n + 1)), stage


@pytest.mark.slow
def test_sigkill_mid_mpscl_then_resume_is_bit_identical(phantom_sets, reference, tmp_path):
    out = tmp_path / "run"
    p = _start(train_argv(phantom_sets, out), tmp_path / "killed")
    seen = _wait_for_iter(p, out / "mpscl" / "log.jsonl", 3)  # past the checkpoint at 2
    p.kill()  # SIGKILL: no handler, no final checkpoint
    assert p.wait(timeout=30) == -signal.SIGKILL
    assert not (out / "mpscl" / "final.pt").exists(), "killed too late"
    killed_at = load_checkpoint(out / "mpscl" / "last.pt")["iteration"]
    assert 2 <= killed_at <= seen + 1

    r = _run(train_argv(phantom_sets, out, "--resume"), tmp_path / "resumed")
    assert r.returncode == 0, r.stderr
    assert "[warmup] already finished" in r.stdout
    assert f"resumed mpscl from {out / 'mpscl' / 'last.pt'} at iteration {killed_at}" in r.stdout
    _compare_runs(reference, out)


@pytest.mark.slow
def test_sigterm_in_warmup_checkpoints_exits_143_and_resumes(phantom_sets, reference, tmp_path):
    out = tmp_path / "run"
    p = _start(train_argv(phantom_sets, out), tmp_path / "stopped")
    _wait_for_iter(p, out / "warmup" / "log.jsonl", 1)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 143
    err = (tmp_path / "stopped" / "stderr").read_text()
    last = load_checkpoint(out / "warmup" / "last.pt")
    it = last["iteration"]
    assert 1 <= it < 6 and not (out / "warmup" / "final.pt").exists()
    assert (f"mpscl train: stopped by SIGTERM at iteration {it}; state saved to "
            f"{out / 'warmup' / 'last.pt'}. Run the same command again (or add --resume)") in err
    assert max(_logged_iters(out / "warmup" / "log.jsonl")) == it

    r = _run(train_argv(phantom_sets, out), tmp_path / "resumed")  # automatic resume
    assert r.returncode == 0, r.stderr
    assert f"resumed warmup from {out / 'warmup' / 'last.pt'} at iteration {it}" in r.stdout
    _compare_runs(reference, out)


def test_resume_refuses_a_different_config_naming_the_keys(phantom_sets, reference, capsys):
    before = {p: p.stat().st_mtime_ns for p in reference.rglob("*") if p.is_file()}
    rc = main(train_argv(phantom_sets, reference, "--resume", "--set", "mpscl.margin_src=0.3",
                         "--set", "train.seed=7", "--checkpoint-every", "5"))
    err = capsys.readouterr().err
    assert rc == 2
    assert "different configuration (differs in: mpscl.margin_src, train.seed)" in err, err
    assert "checkpoint_every" not in err  # runtime settings may change on resume
    assert before == {p: p.stat().st_mtime_ns for p in reference.rglob("*") if p.is_file()}


def test_resume_flag_with_nothing_to_resume(phantom_sets, tmp_path, capsys):
    rc = main(train_argv(phantom_sets, tmp_path / "new", "--resume"))
    err = capsys.readouterr().err
    assert rc == 2 and "nothing to resume" in err and str(tmp_path / "new") in err
    assert not (tmp_path / "new").exists()


def test_checkpoint_every_flag_sets_the_config():
    args = build_parser().parse_args(["train", "--source", "s", "--target", "t", "--out", "o",
                                      "--preset", "cpu", "--checkpoint-every", "7"])
    assert _build_config(args).train.checkpoint_every == 7 and args.resume is False
    with pytest.raises(ConfigError, match="train.checkpoint_every"):
        _build_config(build_parser().parse_args(["train", "--source", "s", "--target", "t",
                                                 "--out", "o", "--checkpoint-every", "-1"]))


def test_resume_refuses_another_number_of_processes(phantom_sets, tmp_path):
    """A checkpoint of a 2-process run (another global batch) is not continued by 1 process."""
    from mpscl.checkpoint import save_checkpoint
    from mpscl.adapt.trainer import Trainer, TrainingError
    from mpscl.config import build_config
    from mpscl.data import SliceDataset

    cfg = build_config("cpu", sets=["data.size=48", "model.width=8", "train.iters=2", "data.context=0",
                                    "data.context_spacing=slices"])
    src = SliceDataset(phantom_sets["mr"])
    trg = SliceDataset(phantom_sets["ct"], labelled=False)
    t = Trainer(cfg, "source-only", src, trg, tmp_path, device=torch.device("cpu"), progress=False)
    state = t.state_dict()
    save_checkpoint(tmp_path / "last.pt", dict(state, world_size=2))
    with pytest.raises(TrainingError, match=r"last\.pt: cannot resume: it was written by 2 "
                                            r"process\(es\), this run has 1"):
        t.fit()
