"""What a benchmark compares on: a source/target pair, its case split and its rows.

``mpscl benchmark --source DIR --target DIR --name NAME`` builds a :class:`Suite` from its
arguments; the built-in suites are the same with their data and case splits filled in:
- ``mscmrseg19``: bSSFP (C0) -> LGE cardiac MR from ``../shared/data/mscmrseg19``. Target
  images are used unlabelled in training; LGE 1-5 are the providers' validation cases (the
  only target labels that may inform a choice; this benchmark makes none) and every
  reported number is on LGE 6-45.
- ``phantom-mr2ct`` / ``phantom-ct2mr``: the built-in phantom, 12 cases per domain; cases
  1-3 play the validation role, 4-12 are scored.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from ..config import preset_layer
from .rows import Row

SHARED = Path("../shared/data")  # relative to the repository root, where the benchmark is run


@dataclass(frozen=True)
class Suite:
    name: str
    direction: str
    test_cases: Optional[str] = None  # target cases scored; None: every one not in val_cases
    val_cases: Optional[str] = None  # target cases that may inform choices; None: none
    settings_from: Optional[str] = None  # a preset whose own keys apply over --preset
    rows: Tuple[Row, ...] = ()  # rows beside the default ones
    recommended: Optional[str] = None  # a row name, written to summary.json
    # the row the recommended one's gain is measured from (the gap to the oracle it closes)
    baseline: str = "source-only"
    all_variants: bool = False  # run every variant row unless --variants says otherwise
    data: Optional[Tuple[str, ...]] = None  # built-in: how prepare_builtin makes the pair

    def settings(self) -> Optional[Dict]:
        """The settings the suite applies over the preset (a preset's own keys), or None."""
        return preset_layer(self.settings_from) if self.settings_from else None

    @property
    def results_name(self) -> str:
        """Its folder under ``--results``: a pair's ``--name``; a built-in suite's, with ``_``."""
        return self.name.replace("-", "_") if self.data else self.name


# The CPU preset without issue 14's recipe (`cpu-plain`: no appearance handling, the paper's
# one third of the same 3,600 iterations as warm-up): the plain rows, plain source-only and the
# faithful MPSCL, beside the preset's rows. Read from the preset so the two cannot drift apart;
# `train.adabn` pinned off, as in every preset, should a user's preset turn it on.
PLAIN = {**{f"{section}.{key}": value for section, keys in preset_layer("cpu-plain").items()
            for key, value in keys.items()}, "train.adabn": False}
RECIPE_ROWS = (Row("source-only-plain", "source-only", PLAIN), Row("mpscl-plain", "mpscl", PLAIN))
RECIPE = {"rows": RECIPE_ROWS, "recommended": "mpscl", "baseline": "source-only-plain"}
PAIR_ROWS = RECIPE_ROWS[:1]  # a pair of the user's: plain source-only beside the preset's rows

BUILTIN = {s.name: s for s in (
    Suite("mscmrseg19", "C0 -> LGE", test_cases="6-45", val_cases="1-5", all_variants=True,
          data=("mscmrseg19",), **RECIPE),
    Suite("phantom-mr2ct", "MR -> CT", test_cases="4-12", val_cases="1-3", all_variants=True,
          data=("phantom", "mr", "ct"), **RECIPE),
    # the paper's CT -> MR settings, for every method: what presets/paper-ct2mr.yaml sets over
    # its base, applied on --preset and before the ablation switches (so e.g. no-margin still
    # zeroes the margins)
    Suite("phantom-ct2mr", "CT -> MR", test_cases="4-12", val_cases="1-3", all_variants=True,
          settings_from="paper-ct2mr", data=("phantom", "ct", "mr"), **RECIPE),
)}


@contextmanager
def _exclusive(lock: Path):
    """One process at a time (benchmarks of several suites or seeds share ``--work``: the
    second must find the data whole, not half written by the first)."""
    import fcntl
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare_builtin(suite: Suite, work: Path, size: int, data_root: Path = SHARED) -> Dict[str, Path]:
    """Prepared source/target datasets of a built-in suite under ``work/data`` (made once)."""
    with _exclusive(work / "data" / ".prepare.lock"):
        return _prepare_builtin(suite, work, size, data_root)


def _prepare_builtin(suite: Suite, work: Path, size: int, data_root: Path) -> Dict[str, Path]:
    from ..data import prepare_dataset, write_phantom
    out = work / "data"
    if suite.data[0] == "mscmrseg19":
        root = data_root / "mscmrseg19"
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: the MS-CMRSeg data is not there (see ../shared/data/README.md)")
        dirs = {"source": out / f"c0_{size}", "target": out / f"lge_{size}"}
        for key, seq in (("source", "C0"), ("target", "LGE")):
            if not (dirs[key] / "manifest.json").is_file():
                prepare_dataset(str(root / seq / f"patient{{case}}_{seq}.nii.gz"),
                                str(root / seq / f"patient{{case}}_{seq}_manual.nii.gz"),
                                "mscmrseg", dirs[key], size=size)
        return dirs
    ph = out / "phantom"
    if not (ph / "ct").is_dir():
        write_phantom(ph, cases=12, seed=2024)
    dirs = {}
    for key, dom in zip(("source", "target"), suite.data[1:]):
        dirs[key] = out / f"phantom_{dom}_{size}"
        if not (dirs[key] / "manifest.json").is_file():
            prepare_dataset(str(ph / dom / "case{case}_image.nii.gz"), str(ph / dom / "case{case}_label.nii.gz"),
                            "mmwhs", dirs[key], size=size, log=lambda *a, **k: None)
    return dirs
