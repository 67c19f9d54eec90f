"""AutoAttack standard on every model of an ``aadscale compare`` study, beside the suite's own worst case.

    .venv/bin/python benchmarks/autoattack_study.py runs/compare-control [--limit N] [--version standard]

Each run's model is attacked by ``aadscale evaluate --autoattack`` on the images the study's suite
used (all of the validation split; resumable: ``<run>/autoattack-<version>``), or with ``--limit N``
on evaluate's fixed subset of N images, where the suite is run again on the same images
(``<run>/autoattack-<version>-N``, ``<run>/suite-N``). The table gives, per objective over seeds,
clean and AutoAttack accuracy, the suite's worst case and the paired difference worst - AutoAttack
(the own worst case must not sit below AutoAttack's by more than the seed spread: AutoAttack is the
stronger evaluation).
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from aadscale.cli import main as aadscale
from aadscale.analysis.compare import PAPER_COLUMNS, STRONG_COLUMNS
from aadscale.analysis.compare import mean_std as compare_stats
from aadscale.distributed import run_main


def _evaluate(run: Path, out: Path, options: list[str], limit: int | None, batch_size: int) -> None:
    """``aadscale evaluate`` of the run's model into ``out`` (resumed where a previous call stopped)."""
    args = ["evaluate", str(run / "model.pt"), *options, "--out", str(out), "--batch-size", str(batch_size),
            "--workers", "0", "--device", "cpu"] + (["--limit", str(limit)] if limit else [])
    if aadscale(args) != 0:
        raise SystemExit(f"aadscale evaluate failed on {run}")


def attack_run(run: Path, version: str, limit: int | None, batch_size: int) -> dict:
    """AutoAttack on one run's model; its report."""
    out = run / (f"autoattack-{version}-{limit}" if limit else f"autoattack-{version}")
    _evaluate(run, out, ["--autoattack", version], limit, batch_size)
    return json.loads((out / "autoattack.json").read_text())


def suite_row(run: Path, limit: int | None, batch_size: int) -> dict:
    """The suite's accuracies: the study's own row, or on evaluate's subset of ``limit`` images the suite
    run again with the study's columns."""
    if not limit:
        return json.loads((run / "compare.json").read_text())["row"]
    _evaluate(run, run / f"suite-{limit}", ["--attacks", ",".join(PAPER_COLUMNS), "--strong", ",".join(STRONG_COLUMNS)],
              limit, batch_size)
    return json.loads((run / f"suite-{limit}" / "results.json").read_text())["results"]


def mean_std(values: list[float]) -> str:
    """``mean ± std`` as the study's own table prints it."""
    mean, std = compare_stats(values)
    return f"{mean:.1f} ± {std:.1f}"


def table(rows: dict[str, list[dict]]) -> str:
    """One line per objective: clean, the suite's worst case, AutoAttack, worst - AutoAttack (paired)."""
    lines = ["| objective | seeds | clean | suite worst case | AutoAttack | worst - AutoAttack |",
             "|---|---|---|---|---|---|"]
    for objective, runs in rows.items():
        clean = [float(r["aa"]["clean_acc"]) for r in runs]
        worst = [r["suite"]["worst"] for r in runs]
        auto = [float(r["aa"]["autoattack_acc"]) for r in runs]
        lines.append(f"| {objective} | {len(runs)} | {mean_std(clean)} | {mean_std(worst)} | {mean_std(auto)} | "
                     f"{mean_std([w - a for w, a in zip(worst, auto)])} |")
    return "\n".join(lines)


def main() -> None:
    """Attack every finished run of the study and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", type=Path, help="an `aadscale compare --out` folder")
    p.add_argument("--version", default="standard")
    p.add_argument("--limit", type=int, help="images of the validation split (default: all, as the suite)")
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args()
    rows: dict[str, list[dict]] = defaultdict(list)
    for run in sorted(args.study.glob("*-s*")):
        if not (run / "model.pt").is_file() or not (run / "compare.json").is_file():
            continue  # not trained or not evaluated by the study yet
        rows[run.name.rsplit("-s", 1)[0]].append({"suite": suite_row(run, args.limit, args.batch_size),
                                                  "aa": attack_run(run, args.version, args.limit, args.batch_size)})
    print(table(rows))


if __name__ == "__main__":
    run_main(main)
