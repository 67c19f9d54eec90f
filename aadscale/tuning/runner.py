"""A whole sweep: check the inputs, start (or join) Ray, run or restore the Tuner, write the outcome."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from aadscale.config import Config, from_dict, load_config, to_dict
from aadscale.errors import InputError
from aadscale.tuning.space import (
    SweepSpace,
    check_space,
    load_space,
    parse_space,
    pbt_mutations,
    tune_space,
    with_choices,
)
from aadscale.tuning.storage import absolute, filesystem

log = logging.getLogger("aadscale.tuning")

SCHEDULERS = ("fifo", "asha", "pbt")
PLACEMENTS = ("pack", "spread", "strict-pack", "strict-spread")  # Ray placement-group strategies
STATE_FILE = "aadscale_sweep.json"
TRIAL_CPU = 0.01  # the Tune trial only waits on its Ray Train workers (zero is refused)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")


@dataclass
class SweepOptions:
    """The command line of ``tuning/sweep.py`` as one typed object."""
    preset: str
    space: str
    overrides: list[str] = field(default_factory=list)
    name: str | None = None
    address: str | None = None
    num_cpus: int | None = None
    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    num_samples: int | None = None
    scheduler: str = "fifo"
    search: str | None = None
    metric: str | None = None
    mode: str | None = None
    weights: dict[str, float] | None = None
    storage: str | None = None
    max_failures: int = 2
    max_concurrent: int | None = None
    placement: str = "pack"


@dataclass
class SweepOutcome:
    """Where everything went and what came out."""
    experiment_path: str
    out_dir: Path
    rows: list[dict]
    best: dict | None
    best_preset: Path | None
    tables: tuple[Path, Path]
    plots: list[Path]

    @property
    def finished(self) -> bool:
        """True when no trial was left unfinished (an interrupted sweep is resumed with --resume)."""
        return all(r["status"] != "unfinished" for r in self.rows)


@dataclass
class _Plan:
    name: str
    base: Config
    space: SweepSpace
    storage: str
    runs_dir: str
    options: SweepOptions

    @property
    def experiment_path(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.name}"


def _check_options(o: SweepOptions, space: SweepSpace) -> None:
    if o.scheduler not in SCHEDULERS:
        raise InputError(f"--scheduler {o.scheduler!r} is not valid; use one of {list(SCHEDULERS)}")
    if o.placement not in PLACEMENTS:
        raise InputError(f"--placement {o.placement!r} is not valid; use one of {list(PLACEMENTS)}")
    if o.scheduler == "pbt" and space.search == "optuna":
        raise InputError("--scheduler pbt chooses the configs itself; use it with --search grid or random")
    for flag, value, low in (("--workers-per-trial", o.workers_per_trial, 1), ("--num-samples", o.num_samples, 1),
                             ("--max-failures", o.max_failures, 0), ("--max-concurrent", o.max_concurrent, 1),
                             ("--num-cpus", o.num_cpus, 1)):
        if value is not None and value < low:
            raise InputError(f"{flag} {value} must be >= {low}")
    if o.cpus_per_worker <= 0 or o.gpus_per_worker < 0:
        raise InputError(f"--cpus-per-worker {o.cpus_per_worker} must be > 0 and --gpus-per-worker "
                         f"{o.gpus_per_worker} >= 0")
    if o.name is not None and not _NAME.match(o.name):
        raise InputError(f"--name {o.name!r} must be letters, digits and . _ + = - (one path component)")


def plan_sweep(o: SweepOptions) -> _Plan:
    """Everything that can be checked without Ray: config, space, objective, options, paths."""
    base = load_config(o.preset, o.overrides)
    space = with_choices(load_space(o.space), search=o.search, metric=o.metric, mode=o.mode, weights=o.weights)
    check_space(space, base)
    _check_options(o, space)
    log_dir = os.path.abspath(base.log.dir)
    if base.data.dataset == "demo" and not base.data.root:  # one copy of the demo data for every trial
        from aadscale.data import DEFAULT_DEMO_ROOT
        base.data.root = os.path.join(log_dir, Path(DEFAULT_DEMO_ROOT).name)
    name = o.name or f"{base.preset}-sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = o.storage or os.path.join(log_dir, "ray_results")
    storage = absolute(storage)
    return _Plan(name, base, space, storage, os.path.join(log_dir, name), o)


def _write_state(plan: _Plan) -> None:
    fs, path = filesystem(plan.experiment_path)
    if fs.get_file_info(f"{path}/{STATE_FILE}").type.name != "NotFound":
        raise InputError(f"{plan.experiment_path} already holds a sweep; continue it with "
                         f"--resume {plan.experiment_path} or choose another --name")
    fs.create_dir(path, recursive=True)
    space = {"params": {k: {p.kind: list(p.args)} for k, p in plan.space.params.items()},
             "search": plan.space.search, "metric": plan.space.metric, "mode": plan.space.mode,
             "weights": plan.space.weights}
    state = {"name": plan.name, "base": to_dict(plan.base), "space": space, "storage": plan.storage,
             "runs_dir": plan.runs_dir, "options": dataclasses.asdict(plan.options)}
    with fs.open_output_stream(f"{path}/{STATE_FILE}") as f:
        f.write(json.dumps(state, indent=1).encode())


def _read_state(experiment_path: str) -> _Plan:
    experiment_path = absolute(experiment_path)
    fs, path = filesystem(experiment_path)
    if fs.get_file_info(f"{path}/{STATE_FILE}").type.name == "NotFound":
        raise InputError(f"--resume {experiment_path}: no {STATE_FILE} there; give the experiment folder "
                         "a sweep printed when it started (<storage>/<name>)")
    with fs.open_input_stream(f"{path}/{STATE_FILE}") as f:
        state = json.loads(f.read().decode())
    options = SweepOptions(**state["options"])
    return _Plan(state["name"], from_dict(state["base"]), parse_space(state["space"]), state["storage"],
                 state["runs_dir"], options)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a ``host:port`` (or ``ray://host:port``) nobody listens on; Ray itself waits minutes."""
    if address == "auto":
        return  # Ray finds a local cluster itself and says so at once when there is none
    host, sep, port = address.split("://")[-1].rpartition(":")
    if not sep or not port.isdigit():
        raise InputError(f"--address {address!r} must be 'auto', host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise InputError(f"--address {address}: no Ray cluster answers ({err}). Start one with "
                         "`ray start --head` (see docs/tuning.md), or leave --address out for a local Ray") from None


@contextmanager
def ray_session(address: str | None, num_cpus: int | None) -> Iterator[dict]:
    """Join the cluster at ``address`` or start a local Ray; yield its total resources."""
    import ray

    from aadscale.tuning.trial import V2_ENV
    runtime_env = {"env_vars": {V2_ENV: "1"}}  # every trial and worker process uses Ray Train V2
    if address:
        check_reachable(address)
        try:
            ray.init(address=address, runtime_env=runtime_env)
        except ConnectionError as err:
            raise InputError(f"--address {address}: no Ray cluster answers ({err}). Start one with "
                             "`ray start --head` (see docs/tuning.md), or leave --address out for a "
                             "local Ray") from None
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, runtime_env=runtime_env)
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()


def _concurrency(o: SweepOptions, resources: dict, local: bool) -> int:
    cpus, gpus = o.workers_per_trial * o.cpus_per_worker, o.workers_per_trial * o.gpus_per_worker
    have_cpu, have_gpu = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if local and (cpus + TRIAL_CPU > have_cpu + 1e-9 or gpus > have_gpu):
        raise InputError(f"a trial needs {cpus + TRIAL_CPU:g} CPUs and {gpus:g} GPUs "
                         f"({o.workers_per_trial} workers x {o.cpus_per_worker:g} CPU, {o.gpus_per_worker:g} GPU, "
                         f"plus {TRIAL_CPU} for the trial) but the local Ray has {have_cpu:g} CPUs and "
                         f"{have_gpu:g} GPUs; lower --cpus-per-worker (e.g. "
                         f"{math.floor((have_cpu - TRIAL_CPU) / o.workers_per_trial * 100) / 100:g}) "
                         "or --workers-per-trial")
    if o.max_concurrent:
        return o.max_concurrent
    fits = [math.floor((have_cpu + 1e-9) / (cpus + TRIAL_CPU))] + ([math.floor(have_gpu / gpus)] if gpus else [])
    return max(1, min(fits))


def _scheduler(plan: _Plan):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining
    epochs = plan.base.train.epochs
    if plan.options.scheduler == "asha":
        return ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=1, reduction_factor=2)
    if plan.options.scheduler == "pbt":
        return PopulationBasedTraining(time_attr="epoch", perturbation_interval=1,
                                       hyperparam_mutations=pbt_mutations(plan.space))
    return FIFOScheduler()


def _searcher(plan: _Plan):
    if plan.space.search != "optuna":
        return None  # grid and random: Tune's BasicVariantGenerator
    try:
        from ray.tune.search.optuna import OptunaSearch
        return OptunaSearch()
    except (ImportError, AssertionError) as err:
        raise InputError(f"--search optuna needs the optuna package ({err}); pip install optuna") from None


def _trainable(plan: _Plan, callbacks: tuple):
    from ray import tune

    from aadscale.tuning.trial import TrialSetup, run_trial
    o = plan.options
    setup = TrialSetup(base=to_dict(plan.base), runs_dir=plan.runs_dir,
                       train_storage=f"{plan.experiment_path}/train", metric=plan.space.metric,
                       weights=plan.space.weights, workers=o.workers_per_trial, cpus_per_worker=o.cpus_per_worker,
                       gpus_per_worker=o.gpus_per_worker, max_failures=o.max_failures,
                       placement=o.placement.upper().replace("-", "_"), callbacks=tuple(callbacks))
    return tune.with_resources(tune.with_parameters(run_trial, setup=setup), {"CPU": TRIAL_CPU})


def _outcome(plan: _Plan) -> SweepOutcome:
    from ray.tune import ExperimentAnalysis

    from aadscale.tuning.plots import grid_plots, sensitivity_plots
    from aadscale.tuning.results import best_row, rows_from_trials, write_best_preset, write_table
    params = list(plan.space.params)
    rows = rows_from_trials(ExperimentAnalysis(plan.experiment_path).trials, params)
    out = Path(plan.runs_dir)
    tables = write_table(rows, out)
    best = best_row(rows, plan.space.metric, plan.space.mode)
    preset = None
    if best is not None:
        preset = out / f"{plan.name}-best.yaml"
        note = (f"Best trial {best['trial']} of sweep {plan.name}: {plan.space.metric}="
                f"{best[plan.space.metric]:.4g} ({plan.space.mode}).\n"
                f"Train it: python launchers/train_imagenet.py --preset {preset}")
        write_best_preset(plan.base, {p: best[p] for p in params}, preset, note)
    return SweepOutcome(plan.experiment_path, out, rows, best, preset, tables,
                        sensitivity_plots(rows, params, out) + grid_plots(rows, params, plan.space.metric, out))


def _fit(plan: _Plan, callbacks: tuple, restore: bool) -> SweepOutcome:
    from ray import tune
    o = plan.options
    with ray_session(o.address, o.num_cpus) as resources:
        concurrency = _concurrency(o, resources, local=not o.address)
        trainable = _trainable(plan, callbacks)
        if restore:
            tuner = tune.Tuner.restore(plan.experiment_path, trainable=trainable, resume_errored=True)
        else:
            if plan.base.data.dataset == "demo":
                from aadscale.data import ensure_demo_data
                ensure_demo_data(plan.base.data.root)
            _write_state(plan)
            num_samples = o.num_samples or (1 if plan.space.search == "grid" else 8)
            tuner = tune.Tuner(
                trainable, param_space=tune_space(plan.space),
                tune_config=tune.TuneConfig(metric=plan.space.metric, mode=plan.space.mode,
                                            num_samples=num_samples, scheduler=_scheduler(plan),
                                            search_alg=_searcher(plan), max_concurrent_trials=concurrency),
                run_config=tune.RunConfig(name=plan.name, storage_path=plan.storage,
                                          failure_config=tune.FailureConfig(max_failures=o.max_failures)))
        log.info("sweep %s: experiment %s, run folders %s, up to %d trial(s) at once", plan.name,
                 plan.experiment_path, plan.runs_dir, concurrency)
        tuner.fit()
        return _outcome(plan)


def run_sweep(options: SweepOptions, callbacks: tuple = ()) -> SweepOutcome:
    """Run a new sweep; ``callbacks`` are extra engine callbacks every trial's workers run (picklable)."""
    return _fit(plan_sweep(options), tuple(callbacks), restore=False)


def resume_sweep(experiment_path: str, callbacks: tuple = (), address: str | None = None,
                 num_cpus: int | None = None) -> SweepOutcome:
    """Continue an interrupted sweep: finished trials stay as they are, the others go on."""
    plan = _read_state(experiment_path)
    plan.options.address, plan.options.num_cpus = address, num_cpus or plan.options.num_cpus
    return _fit(plan, tuple(callbacks), restore=True)
