"""Score finished validation runs another way, without training (issue 14): the mean
teacher's weights instead of the student's (``--teacher``, sixteenth round), test-time
flips (``--tta``, ``mpscl evaluate --tta``) and/or each structure's largest connected piece
only (``--largest-component``, ``mpscl evaluate --largest-component``); or the same runs
on the suite's TEST cases (``--test-cases``), once a round has decided on validation.

A run with ``mpscl.self_training_teacher`` in (0, 1) keeps, in ``RUN/mpscl/final.pt``, the
teacher: an exponential moving average of the segmenter's weights. Runs are scored on the
suite's VALIDATION cases (LGE 1-5, phantom cases 1-3), exactly as ``appearance_validation.py``
scores the run's final model, into RESULTS/<suite>/<run>-teacher (-tta, -lcc, -teacher-tta...)/seed<k>/
(metrics.*, run.json), which ``validation_rule.py`` reads:

    python benchmarks/rescore_validation.py --teacher --suite mscmrseg19 \\
        --run mpscl-gin-long2x-st-gentle-mt995 --seeds 1,2,3 \\
        --work bench_work --results benchmarks/results/validation-3600

``--test-cases`` scores the run's final model as trained on the test cases (LGE 6-45,
phantom cases 4-12) into SCORES/<suite>/<run>-test/seed<k>/ (``--scores``, default RESULTS):
the runs of a validation pair are the benchmark's own training (same data, seed and
config), so an adopted change can be confirmed, paired, on the test cases without training.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Tuple

import torch

from mpscl.bench.compare import _git_commit
from mpscl.bench.suites import BUILTIN, SHARED, prepare_builtin
from mpscl.checkpoint import load_checkpoint, load_model
from mpscl.evaluate import evaluate_checkpoint
from mpscl.runtime import machine_line

from appearance_validation import VAL_CASES


def labels_network(run: Path) -> Tuple[torch.nn.Module, bool]:
    """The run's final segmenter with the mean teacher's weights and buffers when the run
    keeps a teacher (RUN/mpscl/final.pt), else the segmenter itself; in eval mode, and
    whether it is the teacher."""
    model, _ = load_model(run / "final.pt")
    ck = run / "mpscl" / "final.pt"
    state = load_checkpoint(ck).get("teacher") if ck.is_file() else None
    if state:
        model.load_state_dict(state)  # strict: the same network, key for key
    return model.eval(), bool(state)


def teacher_of(run: Path) -> torch.nn.Module:
    """The run's final segmenter with the mean teacher's weights and buffers."""
    net, is_teacher = labels_network(run)
    if not is_teacher:
        raise SystemExit(f"{run / 'mpscl' / 'final.pt'}: no mean teacher in this run "
                         f"(mpscl.self_training_teacher was 0)")
    return net


def score(suite: str, run_name: str, seed: int, work: Path, results: Path, teacher: bool = False,
          tta: bool = False, largest_component: bool = False, test_cases: bool = False,
          scores: Optional[Path] = None) -> float:
    run = work / "appearance-runs" / suite / run_name / f"seed{seed}"
    model = teacher_of(run) if teacher else None
    name = run_name + ("-teacher" if teacher else "") + ("-tta" if tta else "") + \
        ("-lcc" if largest_component else "") + ("-test" if test_cases else "")
    cases = BUILTIN[suite].test_cases if test_cases else VAL_CASES[suite]
    size = load_checkpoint(run / "final.pt")["config"]["data"]["size"]
    dirs = prepare_builtin(BUILTIN[suite], work, size, SHARED)
    res = (scores or results) / suite / name / f"seed{seed}"
    res.mkdir(parents=True, exist_ok=True)
    m = evaluate_checkpoint(run / "final.pt", dirs["target"], res, cases=cases, progress=False,
                            per_case=None if model is None else (lambda loaded, image: model), tta=tta,
                            largest_component=largest_component)
    base = json.loads((results / suite / run_name / f"seed{seed}" / "run.json").read_text())
    scored = ("the mean teacher's weights (RUN/mpscl/final.pt 'teacher')" if teacher else "the final model") \
        + (", test-time flips" if tta else "") + (", largest component" if largest_component else "")
    info = {"suite": suite, "run": name, "method": base["method"], "seed": seed, "sets": base["sets"],
            "scored": scored, ("test_cases" if test_cases else "val_cases"): cases, "train_seconds": 0.0, "git_commit": _git_commit(),
            "machine": machine_line(), "amp": base.get("amp"), "dice_mean": m["summary"]["dice_mean"]}
    (res / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"[done] {suite} {name} seed {seed}: {'test' if test_cases else 'val'} Dice {info['dice_mean']:.2f} "
          f"(as trained, on the validation cases {base['dice_mean']:.2f})", flush=True)
    return info["dice_mean"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=sorted(VAL_CASES), required=True)
    ap.add_argument("--run", required=True, help="a finished appearance_validation.py run")
    ap.add_argument("--teacher", action="store_true", help="score the run's mean teacher (it must keep one)")
    ap.add_argument("--tta", action="store_true", help="test-time flips (mpscl evaluate --tta)")
    ap.add_argument("--largest-component", action="store_true",
                    help="each structure's largest connected piece only (mpscl evaluate --largest-component)")
    ap.add_argument("--test-cases", action="store_true",
                    help="score on the suite's test cases instead (once a round has decided)")
    ap.add_argument("--scores", type=Path, help="where the new scores go (default: --results)")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--work", type=Path, default=Path("bench_work"))
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/validation-3600"))
    a = ap.parse_args(argv)
    if not (a.teacher or a.tta or a.largest_component or a.test_cases):
        ap.error("nothing to score differently: pass --teacher, --tta, --largest-component and/or --test-cases")
    for k in (int(s) for s in a.seeds.split(",")):
        score(a.suite, a.run, k, a.work, a.results, teacher=a.teacher, tta=a.tta,
              largest_component=a.largest_component, test_cases=a.test_cases, scores=a.scores)
    return 0


if __name__ == "__main__":
    sys.exit(main())
