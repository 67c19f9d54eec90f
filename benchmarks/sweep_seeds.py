"""One grid from sweeps that differ only in ``train.seed``: mean ± std per cell and the heatmap of the mean.

    python tuning/sweep.py --preset demo --space aadscale/presets/sweeps/demo-lambdas.yaml \
        --workers-per-trial 1 --cpus-per-worker 1 --num-cpus 2 --name demo-fig8-seed1 log.dir=runs train.seed=1
    .venv/bin/python benchmarks/sweep_seeds.py runs/demo-fig8 runs/demo-fig8-seed1 runs/demo-fig8-seed2 \
        --out docs/img/sweep-demo-lambdas.png

Reads each sweep's ``trials.csv``; a cell's spread is over the sweeps (seeds) that finished it.
"""
from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

from aadscale.analysis.compare import mean_std
from aadscale.tuning.plots import grid_cells, grid_plots
from aadscale.distributed import run_main

PARAMS = ("objective.lambda1", "objective.lambda2")


def read_rows(folder: Path) -> list[dict]:
    """The rows of a sweep's trials.csv, numbers as floats."""
    with (folder / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key, value in row.items():
            try:
                row[key] = float(value)
            except (TypeError, ValueError):
                pass
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep folders (runs/<name>) holding trials.csv")
    parser.add_argument("--metric", default="eval/worst")
    parser.add_argument("--out", type=Path, help="where to copy the heatmap of the mean")
    args = parser.parse_args()
    sweeps = [read_rows(folder) for folder in args.sweeps]
    per_sweep = [grid_cells(rows, PARAMS, args.metric) for rows in sweeps]
    xs = sorted({x for cells in per_sweep for x, _ in cells})
    ys = sorted({y for cells in per_sweep for _, y in cells})
    print(f"{args.metric} (%), mean ± std over {len(args.sweeps)} sweeps; rows {PARAMS[1]}, columns {PARAMS[0]}\n")
    print("| | " + " | ".join(f"{PARAMS[0].split('.')[-1]} = {x:g}" for x in xs) + " |")
    print("|---" * (len(xs) + 1) + "|")
    for y in ys:
        cells = []
        for x in xs:
            values = [c[(x, y)] for c in per_sweep if (x, y) in c]
            if values:
                mean, std = mean_std(values)
                cells.append(f"{mean:.1f} ± {std:.1f} (n={len(values)})")
            else:
                cells.append("-")
        print(f"| {PARAMS[1].split('.')[-1]} = {y:g} | " + " | ".join(cells) + " |")
    if args.out:
        rows = [row for sweep in sweeps for row in sweep]
        with tempfile.TemporaryDirectory() as tmp:
            (path,) = grid_plots(rows, list(PARAMS), args.metric, Path(tmp))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_bytes(path.read_bytes())
        print(f"\nheatmap of the mean: {args.out}")


if __name__ == "__main__":
    run_main(main)
