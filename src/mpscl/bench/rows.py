"""The rows of a benchmark: what is trained and scored, one row per name.

A row is a method plus config overrides (``KEY=VALUE``), optional ablation switches, and
optionally ``starts_from``: another row whose warm-up (same seed) it starts from instead of
training its own, so that the two are paired seed by seed. The main rows are the registry's
benchmark methods; the MPSCL ablation variants are rows that start from ``mpscl``'s warm-up.
A suite (built-in or ``--rows FILE.yaml``) may add rows and name a ``recommended`` one:

```yaml
rows:
  - name: source-only+appearance
    method: source-only
    set: {appearance.gin: 0.5}          # or a list: ["appearance.gin=0.5"]
  - name: mpscl+appearance
    method: mpscl
    set: ["appearance.gin=0.5"]
    ablations: []                       # the paper's switches (config.ABLATIONS)
    starts_from: mpscl                  # mpscl's warm-up of the same seed (a variant)
    variant: true                       # seeds of --variant-seeds; default: has starts_from
recommended: mpscl+appearance
```
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .. import methods
from ..config import ABLATIONS, ConfigError, load_yaml, parse_set


class BenchmarkError(ValueError):
    """The benchmark cannot start as asked; the message names what to change."""


VARIANT_OF = "mpscl"  # the row the built-in variants start from
VARIANTS = {  # name -> ablation switches; all start from the seed's MPSCL warm-up
    "mpscl-no-margin": ["no-margin"],
    "mpscl-no-target-contrastive": ["no-target-contrastive"],
    "mpscl-no-selection": ["no-selection"],
    "mpscl-authors-loss": ["authors-contrastive"],
    # control: the MPSCL stage with both contrastive terms off (AdvEnt continued from the
    # warm-up with fresh optimiser state and the prototype machinery idle)
    "mpscl-no-contrastive": ["no-source-contrastive", "no-target-contrastive"],
}
ROW_KEYS = ("name", "method", "set", "ablations", "starts_from", "variant")


def _as_sets(overrides: Any, where: str) -> Tuple[str, ...]:
    """``{"a.b": 1}``, ``{"a": {"b": 1}}`` or ``["a.b=1"]`` -> ``("a.b=1",)``."""
    if overrides is None:
        return ()
    if isinstance(overrides, str):
        overrides = [overrides]
    if isinstance(overrides, dict):
        out = []
        for k, v in overrides.items():
            if isinstance(v, dict):
                out += [f"{k}.{item}" for item in _as_sets(v, where)]
            else:
                out.append(f"{k}={json.dumps(v)}")
        return tuple(out)
    if isinstance(overrides, (list, tuple)) and all(isinstance(s, str) for s in overrides):
        try:
            for s in overrides:
                parse_set(s)
        except ConfigError as e:
            raise BenchmarkError(f"{where}: {e}") from None
        return tuple(overrides)
    raise BenchmarkError(f"{where}: 'set' is a mapping KEY: VALUE or a list of KEY=VALUE")


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    sets: Tuple[str, ...] = ()  # KEY=VALUE, applied after the user's --set
    ablations: Tuple[str, ...] = ()
    starts_from: Optional[str] = None  # row whose warm-up (same seed) this row starts from
    variant: Optional[bool] = None  # seeds of --variant-seeds; None: whether it has starts_from

    def __post_init__(self):
        where = f"row {self.name!r}"
        object.__setattr__(self, "sets", _as_sets(self.sets, where))
        object.__setattr__(self, "ablations", tuple(self.ablations or ()))
        try:
            spec = methods.get_method(self.method)
        except KeyError as e:
            raise BenchmarkError(f"{where}: {e.args[0]}") from None
        bad = [a for a in self.ablations if a not in ABLATIONS]
        if bad:
            raise BenchmarkError(f"{where}: unknown ablations {bad} (available: {', '.join(ABLATIONS)})")
        if self.starts_from and not self.shared_stage(spec):
            raise BenchmarkError(f"{where}: starts_from {self.starts_from!r}, but {self.method} "
                                 f"has no stage that starts from a warm-up")

    @property
    def is_variant(self) -> bool:
        return bool(self.starts_from) if self.variant is None else bool(self.variant)

    def shared_stage(self, spec=None) -> Optional[str]:
        """The stage whose final checkpoint ``starts_from`` provides (MPSCL: ``warmup``)."""
        spec = spec or methods.get_method(self.method)
        return next((s.init_from for s in spec.stages if s.init_from), None)

    def record(self) -> Dict[str, Any]:
        """What defines the row (``benchmark.json``): a changed definition is a new config."""
        return {"method": self.method, "set": list(self.sets), "ablations": list(self.ablations),
                "ablation_settings": {a: dict(ABLATIONS[a]) for a in self.ablations},
                "starts_from": self.starts_from}


def default_rows() -> List[Row]:
    """The registry's main methods, then the MPSCL ablation variants."""
    rows = [Row(m, m) for m in methods.benchmark_methods()]
    return rows + [Row(v, VARIANT_OF, ablations=tuple(a), starts_from=VARIANT_OF) for v, a in VARIANTS.items()]


def row_from_dict(d: Any, where: str) -> Row:
    if not isinstance(d, dict) or "name" not in d or "method" not in d:
        raise BenchmarkError(f"{where}: a row is a mapping with at least name and method")
    unknown = [k for k in d if k not in ROW_KEYS]
    if unknown:
        raise BenchmarkError(f"{where}: unknown keys {unknown} (a row has {', '.join(ROW_KEYS)})")
    return Row(str(d["name"]), str(d["method"]), sets=_as_sets(d.get("set"), f"{where} {d['name']}"),
               ablations=tuple(d.get("ablations") or ()), starts_from=d.get("starts_from"),
               variant=d.get("variant"))


def load_rows(path: Union[str, Path]) -> Tuple[List[Row], Optional[str]]:
    """``--rows FILE.yaml`` -> (its rows, its ``recommended`` row or None)."""
    try:
        data = load_yaml(path)
    except ConfigError as e:
        raise BenchmarkError(str(e)) from None
    if not isinstance(data, dict) or not isinstance(data.get("rows", []), list):
        raise BenchmarkError(f"{path}: expected a mapping with 'rows:' (a list) and optionally 'recommended:'")
    unknown = [k for k in data if k not in ("rows", "recommended")]
    if unknown:
        raise BenchmarkError(f"{path}: unknown keys {unknown} (expected rows, recommended)")
    rows = [row_from_dict(d, f"{path}: row {i + 1}") for i, d in enumerate(data.get("rows") or [])]
    rec = data.get("recommended")
    return rows, (str(rec) if rec is not None else None)


def merge_rows(base: Sequence[Row], extra: Sequence[Row]) -> List[Row]:
    """``base`` then ``extra``; a name twice, or a ``starts_from`` naming no row, is refused."""
    out: Dict[str, Row] = {}
    for r in [*base, *extra]:
        if r.name in out:
            raise BenchmarkError(f"row {r.name!r} is declared twice")
        out[r.name] = r
    for r in out.values():
        if r.starts_from and r.starts_from not in out:
            raise BenchmarkError(f"row {r.name!r} starts from {r.starts_from!r}, which is not a row")
        if r.starts_from and out[r.starts_from].method != r.method:
            raise BenchmarkError(f"row {r.name!r} ({r.method}) starts from the warm-up of "
                                 f"{r.starts_from!r}, a {out[r.starts_from].method} row")
    return list(out.values())


def select_rows(rows: Sequence[Row], methods_sel: Optional[List[str]], variants_sel: Optional[List[str]],
                default_variants: bool) -> List[Row]:
    """The rows to run: ``--methods`` among the main rows (default: all of them), ``--variants``
    among the variant rows (default: all for the built-in suites, none otherwise; ``all``)."""
    main = [r for r in rows if not r.is_variant]
    var = [r for r in rows if r.is_variant]

    def pick(pool, sel, flag, default_all):
        if sel is None:
            return list(pool) if default_all else []
        if sel == ["all"]:
            return list(pool)
        if sel == ["none"]:
            return []
        names = [r.name for r in pool]
        bad = [s for s in sel if s not in names]
        if bad:
            raise BenchmarkError(f"{flag}: unknown {bad} (choose from {', '.join(names) or 'none'}, all, none)")
        return [r for r in pool if r.name in sel]

    return pick(main, methods_sel, "--methods", True) + pick(var, variants_sel, "--variants", default_variants)
