"""Search spaces from YAML: which config fields a sweep varies, how, and what it optimises."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aadscale.attacks.threat import parse_eps
from aadscale.config import PIXEL_FIELDS, Config, field_names, from_dict, to_dict
from aadscale.errors import InputError

KINDS = ("values", "uniform", "loguniform", "randint")
SEARCHES = ("grid", "random", "optuna")
MODES = ("max", "min")
SCORE = "score"
_OWNED = ("preset", "log.dir", "log.name")  # the sweep names every trial's run folder itself


@dataclass(frozen=True)
class Param:
    """One swept field: ``values`` (a finite list) or a range ``uniform``/``loguniform``/``randint`` [lo, hi]."""
    name: str
    kind: str
    args: tuple


@dataclass(frozen=True)
class SweepSpace:
    """The swept fields, the search over them and the objective (an eval metric or a weighted score)."""
    params: dict[str, Param]
    search: str = "grid"
    metric: str = "eval/worst"
    mode: str = "max"
    weights: dict[str, float] = field(default_factory=dict)


def _param(name: str, spec: Any, where: str) -> Param:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise InputError(f"{where}: {name} must be one of {{values: [...]}}, {{uniform: [lo, hi]}}, "
                         f"{{loguniform: [lo, hi]}} or {{randint: [lo, hi]}}, got {spec!r}")
    (kind, args), = spec.items()
    if kind not in KINDS:
        raise InputError(f"{where}: {name}: unknown kind {kind!r}; use one of {list(KINDS)}")
    if not isinstance(args, list):
        raise InputError(f"{where}: {name}.{kind} must be a list, got {args!r}")
    if name in PIXEL_FIELDS:  # 8/255 as a float, so that Tune's ranges and the plots see numbers
        args = [parse_eps(a, f"{where}: {name}") for a in args]
    if kind == "values":
        if not args:
            raise InputError(f"{where}: {name}.values is empty; list at least one value")
        return Param(name, kind, tuple(args))
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise InputError(f"{where}: {name}.{kind} must be [lo, hi] numbers, got {args!r}")
    lo, hi = args
    if not lo < hi or (kind == "loguniform" and lo <= 0):
        raise InputError(f"{where}: {name}.{kind}={args!r} needs lo < hi" +
                         (" and lo > 0" if kind == "loguniform" else ""))
    if kind == "randint" and not (float(lo).is_integer() and float(hi).is_integer()):
        raise InputError(f"{where}: {name}.randint={args!r} needs integer bounds")
    return Param(name, kind, (lo, hi))


def parse_space(data: Any, where: str = "search space") -> SweepSpace:
    """Build a SweepSpace from the YAML mapping (keys: params, search, metric, mode, weights)."""
    if not isinstance(data, dict):
        raise InputError(f"{where} must be a mapping with a 'params' section, got {data!r}")
    unknown = set(data) - {"params", "search", "metric", "mode", "weights"}
    if unknown:
        raise InputError(f"{where}: unknown keys {sorted(unknown)}; use params, search, metric, mode, weights")
    params = data.get("params")
    if not isinstance(params, dict) or not params:
        raise InputError(f"{where}: 'params' must map at least one dotted config field "
                         "(e.g. objective.lambda1) to {values: [...]} or a range")
    weights = data.get("weights") or {}
    if not isinstance(weights, dict):
        raise InputError(f"{where}: weights must map attack names to numbers, got {weights!r}")
    space = SweepSpace(params={str(k): _param(str(k), v, where) for k, v in params.items()},
                       search=data.get("search", "grid"),
                       metric=data.get("metric", SCORE if weights else "eval/worst"),
                       mode=data.get("mode", "max"), weights={str(k): float(v) for k, v in weights.items()})
    return space


def load_space(path: str | Path) -> SweepSpace:
    """Read a search-space YAML file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"search space {path} not found; see aadscale/presets/sweeps/ for examples")
    return parse_space(yaml.safe_load(path.read_text()), str(path))


def with_choices(space: SweepSpace, *, search: str | None = None, metric: str | None = None,
                 mode: str | None = None, weights: dict[str, float] | None = None) -> SweepSpace:
    """The space with the command line's choices (None keeps the file's)."""
    changes = {k: v for k, v in dict(search=search, metric=metric, mode=mode).items() if v is not None}
    if weights:
        changes.update(weights=dict(weights), metric=metric or SCORE)
    return dataclasses.replace(space, **changes)


def with_params(base: Config, params: dict[str, Any]) -> Config:
    """``base`` with each dotted field in ``params`` set (validated like any config)."""
    data = copy.deepcopy(to_dict(base))
    for name, value in params.items():
        node = data
        *parents, leaf = name.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return from_dict(data)


def _check_objective(space: SweepSpace, attacks: list[str]) -> None:
    if space.mode not in MODES:
        raise InputError(f"mode={space.mode!r} is not valid; use max or min")
    known = [a.lower() for a in attacks] + (["worst"] if len(attacks) > 1 else [])  # as the engine reports
    if space.metric == SCORE:
        if not space.weights:
            raise InputError("metric=score needs weights, e.g. --weights clean=0.3,pgd10=0.7")
        missing = [k for k in space.weights if k.lower() not in known]
        if missing:
            raise InputError(f"weights name {missing}, which eval.attacks={attacks} does not evaluate; "
                             "add them to eval.attacks or change the weights")
        return
    if space.weights:
        raise InputError(f"weights are given but metric={space.metric!r}; weights need metric=score")
    if not space.metric.startswith("eval/") or space.metric[5:].lower() not in known:
        raise InputError(f"metric={space.metric!r} is not reported; use score or one of "
                         f"{['eval/' + a for a in known]} (eval.attacks decides which exist)")


def check_space(space: SweepSpace, base: Config) -> None:
    """Raise InputError, before any trial starts, for anything in ``space`` a trial would trip on."""
    if space.search not in SEARCHES:
        raise InputError(f"search={space.search!r} is not valid; use one of {list(SEARCHES)}")
    names = set(field_names())
    for name, p in space.params.items():
        if name in _OWNED:
            raise InputError(f"{name} cannot be swept: the sweep names each trial's run folder; "
                             "set log.dir with an override instead")
        if name not in names:
            import difflib
            close = difflib.get_close_matches(name, sorted(names), n=3)
            raise InputError(f"unknown config field {name!r} in the search space"
                             + (f"; did you mean {', '.join(close)}?" if close else
                                "; see aadscale.config.field_names() for every dotted name"))
        if space.search == "grid" and p.kind != "values":
            raise InputError(f"search=grid needs a finite list for {name} ({{values: [...]}}), got "
                             f"{p.kind} {list(p.args)}; use --search random or optuna for ranges")
        for value in p.args:  # every listed value and both range ends must make a valid config
            with_params(base, {name: value})
    _check_objective(space, list(base.eval.attacks))


def _domain(p: Param, grid: bool):
    from ray import tune
    if p.kind == "values":
        return tune.grid_search(list(p.args)) if grid else tune.choice(list(p.args))
    lo, hi = p.args
    if p.kind == "uniform":
        return tune.uniform(lo, hi)
    if p.kind == "loguniform":
        return tune.loguniform(lo, hi)
    return tune.randint(int(lo), int(hi) + 1)  # YAML bounds are inclusive, Tune's upper is not


def tune_space(space: SweepSpace) -> dict:
    """The Tune ``param_space``: grid_search lists for grid, sampling domains otherwise."""
    return {name: _domain(p, space.search == "grid") for name, p in space.params.items()}


def pbt_mutations(space: SweepSpace) -> dict:
    """What PBT may perturb: lists stay lists, ranges become sampling domains."""
    return {name: list(p.args) if p.kind == "values" else _domain(p, False)
            for name, p in space.params.items()}


def objective_metrics(accuracy: dict[str, float], weights: dict[str, float]) -> dict[str, float]:
    """``eval/<attack>`` for every evaluated attack, plus ``score`` = sum(w * acc) when weights are set."""
    out = {f"eval/{k}": float(v) for k, v in accuracy.items() if k != "n"}
    if weights:
        lower = {k.lower(): v for k, v in accuracy.items()}
        out[SCORE] = sum(w * float(lower[k.lower()]) for k, w in weights.items())
    return out
