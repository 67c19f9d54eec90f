"""Ray Tune sweeps of AAD training: ``python tuning/sweep.py --preset demo --space <space.yaml>``.

Each trial is a Ray Train TorchTrainer whose workers run the engine's fit() (DeepSpeed
inside). Without --address a local Ray is started; --address auto joins a running cluster.
Overrides are ``section.field=value`` pairs after the options. See docs/tuning.md.
"""
from __future__ import annotations

import argparse
import logging
import sys

from aadscale.distributed import run_main
from aadscale.errors import InputError
from aadscale.tuning import SweepOptions, resume_sweep, run_sweep
from aadscale.tuning.runner import PLACEMENTS, SCHEDULERS
from aadscale.tuning.space import MODES, SEARCHES


def parse_weights(text: str) -> dict[str, float]:
    """``clean=0.3,pgd10=0.7`` -> {"clean": 0.3, "pgd10": 0.7}."""
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"--weights item {item!r} must look like attack=number")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: what to sweep, where it runs, how trials are chosen and scheduled."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="demo", help="base preset (shipped name or .yaml path)")
    p.add_argument("--space", help="search-space YAML (see aadscale/presets/sweeps/)")
    p.add_argument("--data", default=None, help="dataset folder (sets data.root)")
    p.add_argument("--name", default=None, help="sweep name (default <preset>-sweep-<time>)")
    p.add_argument("--resume", default=None, metavar="EXPERIMENT_PATH",
                   help="continue an interrupted sweep (<storage>/<name>); other options are taken from it")
    p.add_argument("--address", default=None, help="Ray cluster to join ('auto' or host:port); none = local Ray")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    p.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train (DeepSpeed) workers per trial")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="0 = CPU-only workers")
    p.add_argument("--placement", choices=PLACEMENTS, default="pack",
                   help="where a trial's workers go: pack (few nodes), spread, strict-pack (one node), "
                        "strict-spread (one node each)")
    p.add_argument("--num-samples", type=int, default=None,
                   help="grid: repeats of the grid (default 1); random/optuna: trials (default 8)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="fifo")
    p.add_argument("--search", choices=SEARCHES, default=None, help="default: the space file's")
    p.add_argument("--metric", default=None, help="eval/<attack> or score (default: the space file's)")
    p.add_argument("--mode", choices=MODES, default=None)
    p.add_argument("--weights", type=parse_weights, default=None, metavar="ATTACK=W,...",
                   help="optimise score = sum of w * accuracy, e.g. clean=0.3,pgd10=0.7")
    p.add_argument("--storage", default=None, help="Tune storage: a shared path or URI (default <log.dir>/ray_results)")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial from its checkpoint")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: what fits)")
    p.add_argument("overrides", nargs="*", help="section.field=value for every trial")
    args = p.parse_args(argv)
    if not args.resume and not args.space:
        p.error("--space is required (or --resume EXPERIMENT_PATH)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run or resume the sweep; print where the table, the best preset and the plots are."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        if args.resume:
            outcome = resume_sweep(args.resume, address=args.address, num_cpus=args.num_cpus)
        else:
            overrides = list(args.overrides) + ([f"data.root={args.data}"] if args.data else [])
            outcome = run_sweep(SweepOptions(
                preset=args.preset, space=args.space, overrides=overrides, name=args.name,
                address=args.address, num_cpus=args.num_cpus, workers_per_trial=args.workers_per_trial,
                cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
                num_samples=args.num_samples, scheduler=args.scheduler, search=args.search,
                metric=args.metric, mode=args.mode, weights=args.weights, storage=args.storage,
                max_failures=args.max_failures, max_concurrent=args.max_concurrent, placement=args.placement))
    except InputError as err:  # bad input; a library's own error keeps its traceback
        print(f"sweep: error: {err}", file=sys.stderr)
        return 2
    print(f"trials: {outcome.tables[0]} and {outcome.tables[1]}")
    if outcome.best_preset:
        print(f"best config: {outcome.best_preset}")
    for plot in outcome.plots:
        print(f"plot: {plot}")
    if not outcome.finished:
        print(f"sweep not finished; continue it with: python tuning/sweep.py --resume {outcome.experiment_path}")
        return 1
    return 0


if __name__ == "__main__":
    run_main(main)
