"""``mpscl benchmark``: every row on one source/target pair, same backbone, budget and seeds,
scored on the target's test cases with the last checkpoint.

One code path: ``--source DIR --target DIR --name NAME`` (a :class:`~.suites.Suite` made of
the arguments) or a built-in suite (the same, with its data and case split filled in).

Budget: every row gets ``warmup_iters + iters`` iterations in all; MPSCL spends
``warmup_iters`` of them on its AdvEnt warm-up, and a row with ``starts_from`` (the MPSCL
ablations, the authors' loss) starts from that row's warm-up checkpoint of the same seed, as
in the paper. A row whose method trains exactly as another row's (e.g. ``adabn``: source-only
training, then the target's BatchNorm statistics) takes that row's finished training of the
same seed and configuration instead of repeating it. The oracle trains on the labels of all
target cases (test cases included), so it is an optimistic upper bound; it is skipped when
the target has no labels.

Resumable: a run whose ``metrics.json`` exists is skipped, and an unfinished run resumes
from its last checkpoint, so the benchmark can be completed over several sessions.
``RESULTS/benchmark.json`` records the pair, case split, configuration and rows; before
anything runs, another pair or split is refused, and so is a row whose results (or unfinished
run folder) were trained with another configuration than this command's (:func:`row_config`),
so that changing one row's settings re-runs that row only once its folders are removed.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

from .. import methods
from ..config import ABLATIONS, ConfigError, build_config, config_from_dict, diff_configs, parse_set, set_value
from .rows import VARIANT_OF, VARIANTS, BenchmarkError, Row, default_rows, merge_rows, select_rows  # noqa: F401
from .suites import BUILTIN, SHARED, Suite, prepare_builtin
from .summary import _signed, paired_cases, summarise, table  # noqa: F401

def _say(msg: str) -> None:
    print(msg, flush=True)


def main_methods() -> List[str]:
    return methods.benchmark_methods()


def suite_settings(suite: str) -> Optional[Dict]:
    """The settings a built-in suite applies over the preset (a preset's own keys), or None."""
    return BUILTIN[suite].settings()


def _machine() -> str:
    from ..runtime import machine_line
    return machine_line()


def _amp(cfg, stage_finals: Sequence[Path] = ()) -> str:
    """The arithmetic the run trained in, as its stages' checkpoints record it (a training
    taken from another row, or resumed on another CPU, may differ from this machine's);
    else what ``train.amp`` gives here ("auto" depends on the machine)."""
    from ..adapt.provenance import trained_amp
    from ..runtime import resolve_device, use_bf16
    here = "bf16" if use_bf16(cfg.train.amp, resolve_device(cfg.train.device)) else "off"
    return trained_amp(stage_finals, here) if stage_finals else here


def _git_commit() -> Optional[str]:
    """HEAD, with ``+dirty`` when the package's tree has uncommitted changes."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              cwd=Path(__file__).parents[1], check=True).stdout.strip()
    try:
        head = git("rev-parse", "--short", "HEAD")
        return head + ("+dirty" if git("status", "--porcelain", "--", ".") else "")
    except Exception:
        return None


def plan(rows: Sequence[Row], seeds: List[int], variant_seeds: List[int]) -> List[Dict]:
    """(row, seed) runs: the main rows over ``seeds``, then the variants over ``variant_seeds``."""
    runs = [{"row": r, "name": r.name, "method": r.method, "seed": s, "ablations": list(r.ablations)}
            for s in seeds for r in rows if not r.is_variant]
    return runs + [{"row": r, "name": r.name, "method": r.method, "seed": s, "ablations": list(r.ablations)}
                   for s in variant_seeds for r in rows if r.is_variant]


def _fingerprint(ds) -> Dict:
    return {"classes": list(ds.classes), "label_values": list(ds.label_values), "size": ds.size,
            "labelled": ds.labelled, "cases": list(ds.case_ids)}


def check_pair(source, target, score, suite: Suite) -> Dict:
    """Open and check the datasets and the case split before anything runs.

    Returns ``{"source", "target", "score"}`` datasets and the ``test``/``val`` case ids;
    raises :class:`BenchmarkError` (or ``DataError``) naming what to change."""
    from ..data import DataError, PreparedDataset
    src, trg = PreparedDataset(source), PreparedDataset(target)
    if score is None and not trg.labelled:
        raise BenchmarkError(f"{trg.root}: the target has no labels, so nothing can be scored; "
                             f"give --score DIR, a labelled prepared dataset of its test cases")
    scored = PreparedDataset(score) if score is not None else trg
    if not src.labelled:
        raise BenchmarkError(f"{src.root}: the source dataset has no labels")
    for name, ds in (("target", trg), ("scored", scored)):
        if (list(ds.classes), list(ds.label_values)) != (list(src.classes), list(src.label_values)):
            raise BenchmarkError(f"class maps differ: source {dict(zip(src.label_values, src.classes))} vs "
                                 f"{name} {dict(zip(ds.label_values, ds.classes))} ({ds.root})")
        if ds.size != src.size:
            raise BenchmarkError(f"sizes differ: source prepared at {src.size} px, {name} at {ds.size} px "
                                 f"({ds.root}); prepare both with the same --size")
    try:
        val = trg.select(suite.val_cases) if suite.val_cases else []
        test = scored.select(suite.test_cases) if suite.test_cases else \
            [c for c in scored.case_ids if c not in val]
    except DataError as e:
        raise BenchmarkError(f"case spec: {e}") from None
    both = [c for c in test if c in val]
    if both:
        raise BenchmarkError(f"--val-cases and --test-cases overlap: cases {', '.join(both)} are in both")
    if not test:
        raise BenchmarkError("no target case left to score (every case is a --val-cases case)")
    return {"source": src, "target": trg, "score": scored, "test": test, "val": val}


def row_config(config: Dict, rows: Dict[str, Dict], name: str) -> Dict:
    """What row ``name`` of a record trains with: the recorded config, the row's overrides and
    the shared budget (``warmup_iters + iters`` for a single-stage method), without the seed
    or a budget its stages do not spend; a ``starts_from`` row's warm-up row nested in it.
    Records that agree on it trained the row alike, whatever else changed (e.g. MPSCL's split
    of the budget leaves source-only untouched)."""
    row = rows[name]
    try:
        spec = methods.get_method(row["method"])
        cfg = config_from_dict(config, "benchmark.json")
    except (KeyError, ConfigError, TypeError, AttributeError):
        return {"row": row, "config": config}  # a method or key this version lacks: compared as is
    total = cfg.train.iters + cfg.train.warmup_iters
    try:
        for item in row.get("set") or []:
            set_value(cfg, *parse_set(item), where=f"row {name}")
    except ConfigError:
        return {"row": row, "config": config}
    if "warmup_iters" not in spec.budgets:
        cfg.train.iters = total
    out = cfg.to_dict()
    unread = {"train.seed", *spec.unspent_budgets, *(() if spec.reads_adabn_setting else ("train.adabn",))}
    out["train"] = {k: v for k, v in out["train"].items() if f"train.{k}" not in unread}
    for section in spec.unread_sections:  # e.g. the oracle's appearance.*, AdvEnt's mpscl.*
        del out[section]
    # not applied: over the recorded config (the user's --set included) an ablation could
    # hide a change the real run, which applies the user's --set after it, would see. What
    # each one set when the row was recorded (older records: today's definition)
    saved = row.get("ablation_settings") or {}
    out["ablations"] = {a: saved.get(a, ABLATIONS.get(a)) for a in row.get("ablations") or []}
    start = row.get("starts_from")
    if start:
        out["starts_from"] = row_config(config, rows, start) if start in rows else start
    return out


def _rows_after(old_rows: Dict[str, Dict], record: Dict, known: Optional[Dict[str, Dict]]) -> Dict[str, Dict]:
    """The rows a results folder holds after this command: those recorded before, at this
    version's definition where it has one (a definition may change without changing what the
    row trains, e.g. a setting pinned to the value it had), and the rows run now."""
    known = known or {}
    return {**old_rows, **{n: known[n] for n in old_rows if n in known}, **record["rows"]}


def check_record(results: Path, record: Dict, known: Optional[Dict[str, Dict]] = None) -> None:
    """Refuse a results folder of another pair or case split, or holding a row whose results
    were trained with another configuration than this command would train it with (rows
    without results, and rows the change does not touch, are fine). ``known``: the definitions
    of every row this command knows, run now or not."""
    from ..adapt.trainer import RUNTIME_KEYS  # how a run goes, not what it computes
    path = results / "benchmark.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    diff = [k for k in ("name", "source", "target", "scored_on", "test_cases", "val_cases")
            if old.get(k) != record[k]]
    if diff:
        raise BenchmarkError(f"{results} holds results of another pair or case split (differs in: "
                             f"{', '.join(diff)}); nothing was changed; choose another --results or --name")
    old_rows = old.get("rows", {})
    new_rows = _rows_after(old_rows, record, known)
    changed = []
    for name in old_rows:
        if not (results / name).is_dir():
            continue
        keys = [k for k in diff_configs(row_config(old.get("config", {}), old_rows, name),
                                        row_config(record["config"], new_rows, name))
                if k not in RUNTIME_KEYS and k.replace("starts_from.", "") not in RUNTIME_KEYS]
        if keys:
            changed.append(f"{name} ({', '.join(keys)})")
    if changed:
        raise BenchmarkError(f"{results} holds rows trained with another configuration; differs in: "
                             f"{'; '.join(changed)}. Nothing was changed; to train them again with this "
                             f"one, remove those rows' folders there (and their runs under --work), or "
                             f"choose another --results or --name")


def check_run_folders(todo: List[Dict], runs: Path) -> None:
    """Refuse, before anything trains, unfinished runs whose folder under ``--work`` was
    made with another configuration (it would otherwise stop the benchmark midway)."""
    from ..adapt.pipeline import TrainingError, run_config_diff
    stale = []
    for r in todo:
        folder = runs / r["name"] / f"seed{r['seed']}"
        try:
            diff = run_config_diff(folder, r["cfg"], r["method"])
        except TrainingError as e:
            raise BenchmarkError(str(e)) from None
        if diff:
            stale.append(f"{folder} ({', '.join(diff)})")
    if stale:
        raise BenchmarkError("run folders made with another configuration: " + "; ".join(stale) +
                             ". Nothing was changed; remove them to train those runs again, or choose "
                             "another --work")


def _trains_alike(a: "methods.Method", b: "methods.Method") -> bool:
    """Do methods ``a`` and ``b`` train the same way (they may differ after training)?"""
    return a.stages == b.stages and a.decay_key == b.decay_key


def reuse_training(row: Row, cfg, run_dir: Path, runs: Path, seed: int, rows: Sequence[Row]) -> Optional[str]:
    """Copy into ``run_dir`` the finished stages of another row's run of this seed that trained
    exactly as ``row`` would (same stages, same training settings); return that row's name, or
    None (nothing to take, or ``run_dir`` has training of its own)."""
    from ..adapt.pipeline import run_config_diff
    spec = methods.get_method(row.method)
    names = [s.name for s in spec.stages]
    if row.starts_from or any((run_dir / n).exists() for n in names):
        return None
    for other in rows:
        if other.name == row.name or other.starts_from:
            continue
        try:
            if not _trains_alike(spec, methods.get_method(other.method)):
                continue
        except KeyError:
            continue
        src = runs / other.name / f"seed{seed}"
        if not all((src / n / "final.pt").is_file() for n in names) or run_config_diff(src, cfg, other.method):
            continue
        for n in names:  # copied whole or not at all: a half copy would read as a started run
            tmp = run_dir / f".{n}.copying"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(src / n, tmp)
            tmp.rename(run_dir / n)
        return other.name
    return None


def _write_record(results: Path, record: Dict, known: Optional[Dict[str, Dict]] = None) -> None:
    from ..fileio import atomic_write_text
    path = results / "benchmark.json"
    if path.is_file():  # rows run before stay recorded
        record = {**record, "rows": _rows_after(json.loads(path.read_text()).get("rows", {}), record, known)}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def logged_train_seconds(run_dir: Path, stages: Sequence[str]) -> float:
    """Training time the stages' logs record: each record's ``sec_per_iter`` times the logging
    interval it was computed over (the most common step between logged iterations), the last
    record of an iteration kept when a resumed run logged it twice. What a run this command
    found already trained took; startup and scoring are not in it."""
    total = 0.0
    for name in stages:
        per_iter: Dict[int, float] = {}
        path = run_dir / name / "log.jsonl"
        for line in path.read_text().splitlines() if path.is_file() else []:
            try:
                rec = json.loads(line)
                per_iter[int(rec["iter"])] = float(rec["sec_per_iter"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill
        iters = sorted(per_iter)
        steps = [b - a for a, b in zip(iters, iters[1:])]
        every = max(set(steps), key=steps.count) if steps else (iters[0] if iters else 0)
        total += sum(per_iter.values()) * every
    return total


def _stages(row: Row, cfg, shared: bool) -> List[tuple]:
    """(stage, iterations) this run trains; a shared warm-up is not trained again."""
    skip = row.shared_stage() if shared else None
    return [(s.name, getattr(cfg.train, s.budget)) for s in methods.get_method(row.method).stages if s.name != skip]


def _spec(ids: List[str]) -> str:
    """Case ids -> the shortest spec: ``["2", "3", "4", "7"]`` -> ``"2-4,7"``."""
    out: List[str] = []
    run: List[int] = []
    for c in ids + [None]:
        if c is not None and c.isdigit() and run and int(c) == run[-1] + 1:
            run.append(int(c))
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
            run = []
        if c is not None and c.isdigit() and str(int(c)) == c:
            run = [int(c)]
        elif c is not None:
            out.append(c)
    return ",".join(out)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _eta(run_its: int, left_its: int, done_its: int, done_s: float) -> str:
    """ETA of this run and of all left, from the it/s measured over the runs trained so far."""
    if not done_its or done_s <= 0:
        return "ETA after the first run"
    rate = done_its / done_s
    return (f"ETA {_minutes(run_its / rate)} for this run, {_minutes(left_its / rate)} for all left, "
            f"at {rate:.2f} it/s measured")


def _configure(runs: List[Dict], preset: str, layers: List[Dict], sets: List[str], total: int) -> None:
    """Each run's ``sets`` and config: the user's, the row's, its seed and the shared budget
    (built before anything trains, so a bad override stops the benchmark at once)."""
    for r in runs:
        r["sets"] = sets + list(r["row"].sets) + [f"train.seed={r['seed']}"]
        if "warmup_iters" not in methods.get_method(r["method"]).budgets:
            r["sets"].append(f"train.iters={total}")  # same total budget as warm-up + MPSCL
        r["cfg"] = build_config(preset, layers, sets=r["sets"], ablations=r["ablations"])


def run_benchmark(suite: Union[str, Suite], results: Path, work: Path, seeds: List[int],
                  variant_seeds: List[int], preset: str = "cpu", sets: Optional[List[str]] = None,
                  only: Optional[List[str]] = None, data_root: Path = SHARED,
                  source: Optional[Path] = None, target: Optional[Path] = None,
                  score: Optional[Path] = None, methods_sel: Optional[List[str]] = None,
                  variants_sel: Optional[List[str]] = None, device: Optional[str] = None,
                  log: Callable[[str], None] = _say) -> Dict:
    """Train and score every selected (row, seed) not finished yet; return the summary."""
    from ..adapt.pipeline import train
    from ..evaluate import evaluate_checkpoint

    if isinstance(suite, str):
        if suite not in BUILTIN:
            raise BenchmarkError(f"unknown suite {suite!r} (choose from {', '.join(BUILTIN)})")
        suite = BUILTIN[suite]
    sets = list(sets or []) + ([f"train.device={device}"] if device else [])
    settings = suite.settings()
    suite_layers = [settings] if settings else []
    rows = merge_rows(default_rows(), suite.rows)
    if suite.recommended and suite.recommended not in [r.name for r in rows]:
        raise BenchmarkError(f"recommended row {suite.recommended!r} is not a row")
    chosen = select_rows(rows, methods_sel, variants_sel, suite.all_variants)
    base = build_config(preset, suite_layers, sets=sets)
    if suite.data:
        dirs = prepare_builtin(suite, work, base.data.size, data_root)
        source, target = dirs["source"], dirs["target"]
    pair = check_pair(source, target, score, suite)
    suite = replace(suite, test_cases=suite.test_cases or _spec(pair["test"]))  # said as scored
    size = pair["source"].size
    if base.data.size != size:
        if any(s.split("=", 1)[0].strip() == "data.size" for s in sets):
            raise BenchmarkError(f"the datasets are prepared at {size} px but --set data.size={base.data.size}")
        sets.append(f"data.size={size}")  # the size the datasets were prepared at
        base = build_config(preset, suite_layers, sets=sets)
    skipped = {}
    if not pair["target"].labelled:
        skipped = {r.name: "the target has no labels" for r in rows if methods.get_method(r.method).needs_target_labels}
    runs = [r for r in plan(chosen, seeds, variant_seeds) if not (only and r["name"] not in only)
            and r["name"] not in skipped]
    _configure(runs, preset, suite_layers, sets, base.train.iters + base.train.warmup_iters)
    record = {"name": suite.name, "direction": suite.direction,
              "source": _fingerprint(pair["source"]), "target": _fingerprint(pair["target"]),
              "scored_on": _fingerprint(pair["score"]), "test_cases": pair["test"], "val_cases": pair["val"],
              "config": base.to_dict(),
              "rows": {r.name: r.record() for r in chosen}}
    known = {r.name: r.record() for r in rows}
    check_record(results, record, known)
    todo = [r for r in runs if not (results / r["name"] / f"seed{r['seed']}" / "metrics.json").is_file()]
    check_run_folders(todo, work / "runs" / suite.name)
    results.mkdir(parents=True, exist_ok=True)
    _write_record(results, record, known)
    for name, why in skipped.items():
        log(f"[skip] {name}: {why}")
    commit = _git_commit()  # the code this process loaded, not HEAD when each run ends
    its = {id(r): sum(n for _, n in _stages(r["row"], r["cfg"], bool(r["row"].starts_from))) for r in todo}
    done_its, done_s = 0, 0.0
    for k, r in enumerate(runs, 1):
        row, seed = r["row"], r["seed"]
        res_dir = results / r["name"] / f"seed{seed}"
        if (res_dir / "metrics.json").is_file():
            log(f"[skip] {r['name']} seed {seed}: {res_dir / 'metrics.json'} exists")
            continue
        run_dir = work / "runs" / suite.name / r["name"] / f"seed{seed}"
        init = None
        if row.starts_from:  # paired: the warm-up of the same seed of the row it starts from
            init = work / "runs" / suite.name / row.starts_from / f"seed{seed}" / row.shared_stage() / "final.pt"
            if not init.is_file():
                log(f"[wait] {r['name']} seed {seed}: needs {init} (run {row.starts_from} first)")
                continue
        reused = None if init else reuse_training(row, r["cfg"], run_dir, work / "runs" / suite.name, seed, rows)
        if reused:
            log(f"[reuse] {r['name']} seed {seed}: trains as {reused} does; its finished training taken from "
                f"{work / 'runs' / suite.name / reused / f'seed{seed}'}")
        stages = " -> ".join(f"{n} {i} it" for n, i in _stages(row, r["cfg"], bool(init)))
        shared = f" (from {row.starts_from}'s warm-up)" if init else ""
        left = sum(its[id(q)] for q in todo[todo.index(r):])
        log(f"\n[run {k}/{len(runs)}] {suite.name}: {r['name']} seed {seed}: {stages}{shared}; "
            f"{_eta(its[id(r)], left, done_its, done_s)}")
        names = [n for n, _ in _stages(row, r["cfg"], bool(init))]
        trained = not all((run_dir / n / "final.pt").is_file() for n in names)
        t0 = time.perf_counter()
        final = train(source, target, r["method"], r["cfg"], run_dir, init=init)
        train_s = time.perf_counter() - t0
        if trained:
            done_its, done_s = done_its + its[id(r)], done_s + train_s
        else:  # only RUN/final.pt made and scored: report the training its logs record
            train_s = logged_train_seconds(run_dir, names)
        metrics = evaluate_checkpoint(final, pair["score"].root, res_dir, cases=pair["test"], device=device or "auto")
        finals = ([Path(init)] if init else []) + [run_dir / n / "final.pt" for n in names]
        info = {"suite": suite.name, "run": r["name"], "method": r["method"], "seed": seed,
                "ablations": r["ablations"], "preset": preset, "suite_settings": settings,
                "sets": r["sets"],
                "init": str(init) if init else None, "train_seconds": round(train_s, 1),
                "trained_now": trained, "training_from": reused,
                "test_cases": suite.test_cases or "all", "git_commit": commit,
                "machine": _machine(), "amp": _amp(r["cfg"], finals),
                "dice_mean": metrics["summary"]["dice_mean"]}
        (res_dir / "run.json").write_text(json.dumps(info, indent=2) + "\n")
        log(f"[done] {r['name']} seed {seed}: target Dice {info['dice_mean']:.2f}% "
            f"(train {train_s / 60:.1f} min)")
    return summarise(results, suite, rows, skipped=skipped)
