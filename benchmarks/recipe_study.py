"""The recipe's demo-scale study: madry and madry+aad with the recipe's regularisers that make sense on digits
(EMA, label smoothing, the attack's eps warm-up) against the same objectives without them (an ``aadscale compare``
study, e.g. runs/compare-control), seeds 0-2, every model attacked by the suite on the same images.

    .venv/bin/python benchmarks/recipe_study.py runs/compare-control runs/compare-recipe [--limit 64]

Trains each missing ``<out>/<objective>-s<seed>`` with the demo preset plus ``RECIPE`` (the EMA exported as
model.pt), runs the suite (``aadscale evaluate``, the compare study's columns) on evaluate's fixed subset of
``--limit`` images for both arms (``<run>/suite-<limit>``, resumable), the recipe arm's trained weights
(model_raw.pt, ``suite-<limit>-raw``) too, and prints per objective and arm the mean ± std over seeds, then the
paired differences with - without and madry+aad - madry.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aadscale.cli import main as aadscale  # noqa: E402
from aadscale.analysis.compare import PAPER_COLUMNS, STRONG_COLUMNS, mean_std  # noqa: E402
from aadscale.distributed import run_main  # noqa: E402

OBJECTIVES = ("madry", "madry+aad")
SEEDS = (0, 1, 2)
# the regularisers of the recipe that make sense on 88 steps of digits: an EMA over ~20 steps, label
# smoothing, and the attack's budget ramped over the first 2 of 4 epochs
RECIPE = ["train.ema_decay=0.95", "train.ema_export=true", "objective.label_smoothing=0.1", "attack.warmup_epochs=2"]
COLUMNS = ("clean", "pgd20", "cw20", "apgd50", "apgd_dlr50", "square500", "worst")


def train(out: Path, objective: str, seed: int, data: Path) -> Path:
    """The recipe arm's run (trained once: an existing model.pt is kept)."""
    run = out / f"{objective}-s{seed}"
    if not (run / "model.pt").is_file():
        subprocess.run([sys.executable, str(ROOT / "launchers" / "train_imagenet.py"), "--preset", "demo",
                        f"log.dir={out}", f"log.name={run.name}", f"objective.name={objective}",
                        f"train.seed={seed}", f"data.root={data}", *RECIPE], check=True)
    return run


def suite(run: Path, limit: int, raw: bool = False) -> dict[str, float]:
    """The suite's accuracies (%) of the run's model.pt (``raw``: model_raw.pt) on evaluate's subset of
    ``limit`` images."""
    out = run / (f"suite-{limit}-raw" if raw else f"suite-{limit}")
    weights = run / ("model_raw.pt" if raw else "model.pt")
    args = ["evaluate", str(weights), "--limit", str(limit), "--batch-size", "64", "--workers", "0", "--device", "cpu",
            "--attacks", ",".join(PAPER_COLUMNS), "--strong", ",".join(STRONG_COLUMNS), "--out", str(out),
            "--no-progress"]
    if aadscale(args) != 0:
        raise SystemExit(f"aadscale evaluate failed on {run}")
    return json.loads((out / "results.json").read_text())["results"]


def row(label: str, values: list[dict[str, float]]) -> str:
    """One table line: mean ± std over seeds of each column."""
    cells = []
    for c in COLUMNS:
        mean, std = mean_std([v[c] for v in values])
        cells.append(f"{mean:+.1f} ± {std:.1f}" if label.startswith(("with -", "madry+aad -")) else
                     f"{mean:.1f} ± {std:.1f}")
    return f"| {label} | " + " | ".join(cells) + " |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("without", type=Path, help="the compare study without the regularisers")
    p.add_argument("out", type=Path, help="where the recipe arm's runs go")
    p.add_argument("--limit", type=int, default=64)
    args = p.parse_args()
    data = args.without / "demo-data"
    arms = ("without", "with", "with, trained weights")  # the last: the recipe arm without its EMA's average
    acc = {(arm, o): [] for arm in arms for o in OBJECTIVES}
    for seed in SEEDS:
        for objective in OBJECTIVES:
            run = train(args.out, objective, seed, data)
            acc["without", objective].append(suite(args.without / f"{objective}-s{seed}", args.limit))
            acc["with", objective].append(suite(run, args.limit))
            acc["with, trained weights", objective].append(suite(run, args.limit, raw=True))
    lines = [f"| {args.limit} images, seeds {SEEDS} | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for objective in OBJECTIVES:
        for arm in arms:
            lines.append(row(f"{objective}, {arm}", acc[arm, objective]))
        lines.append(row(f"with - without, {objective} (paired)", [
            {c: w[c] - wo[c] for c in COLUMNS} for w, wo in zip(acc["with", objective], acc["without", objective])]))
    for arm in ("without", "with"):
        lines.append(row(f"madry+aad - madry, {arm} (paired)", [
            {c: a[c] - m[c] for c in COLUMNS} for a, m in zip(acc[arm, "madry+aad"], acc[arm, "madry"])]))
    print("\n".join(lines))


if __name__ == "__main__":
    run_main(main)
