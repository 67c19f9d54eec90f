"""What a sweep leaves behind: the trial table (Markdown + CSV), the best config as a preset."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Iterable

import yaml

from aadscale.config import Config, load_config, to_dict
from aadscale.tuning.space import SCORE, with_params


def trial_status(tune_status: str, metrics: dict) -> str:
    """done (trained to the end), stopped (early, by the scheduler), error, or unfinished (interrupted)."""
    if tune_status == "TERMINATED":
        return "done" if metrics.get("final") else "stopped"
    return "error" if tune_status == "ERROR" else "unfinished"


def make_row(trial: str, config: dict, metrics: dict, status: str, params: Iterable[str]) -> dict:
    """One table row: the trial, its swept values, how it ended, its last epoch/step and accuracies."""
    row: dict[str, Any] = {"trial": trial, **{p: config.get(p) for p in params}, "status": status,
                           "epoch": metrics.get("epoch"), "step": metrics.get("step")}
    evals = sorted((k for k in metrics if k.startswith("eval/") and k != "eval/n"),
                   key=lambda k: (k != "eval/clean", k))
    row.update({k: metrics[k] for k in evals})
    if SCORE in metrics:
        row[SCORE] = metrics[SCORE]
    if metrics.get("nodes"):
        row["nodes"] = metrics["nodes"]  # where the workers ran at the last report, rank 0 first
    return row


def rows_from_trials(trials, params: Iterable[str]) -> list[dict]:
    """Rows of Tune's trials (``ExperimentAnalysis.trials``), ordered by trial id."""
    params = list(params)
    rows = [make_row(t.trial_id, t.config or {}, t.last_result or {},
                     trial_status(t.status, t.last_result or {}), params) for t in trials]
    return sorted(rows, key=lambda r: r["trial"])


def _columns(rows: list[dict]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        cols.extend(k for k in row if k not in cols)
    return cols


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown_table(rows: list[dict]) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` (columns in first-seen order)."""
    cols = _columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in cols) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict], folder: Path) -> tuple[Path, Path]:
    """Write ``trials.md`` and ``trials.csv`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    md, table = folder / "trials.md", folder / "trials.csv"
    md.write_text(markdown_table(rows))
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_columns(rows))
        writer.writeheader()
        writer.writerows(rows)
    return md, table


def best_row(rows: list[dict], metric: str, mode: str) -> dict | None:
    """The finished trial with the best ``metric`` (``mode`` max or min), or None."""
    scored = [r for r in rows if r["status"] == "done" and isinstance(r.get(metric), (int, float))]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda r: r[metric])


def write_best_preset(base: Config, params: dict[str, Any], path: Path, note: str) -> Config:
    """Write ``base`` with ``params`` as a preset YAML the launcher accepts; return it as loaded back."""
    cfg = with_params(base, params)
    data = to_dict(cfg)
    data["preset"] = path.stem
    data["log"]["name"] = ""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "".join(f"# {line}\n" for line in note.splitlines())
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return load_config(str(path))
