"""The paper's Fig. 8: robust accuracy against each swept number (lambda1, lambda2, eps, ...)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterable


def sensitivity_series(rows: list[dict], param: str) -> dict[str, list[tuple[float, float]]]:
    """For every robust ``eval/<attack>``: (value of ``param``, mean accuracy over trials with it), sorted."""
    sums: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        x = row.get(param)
        if row["status"] not in ("done", "stopped") or isinstance(x, bool) or not isinstance(x, (int, float)):
            continue
        for key, acc in row.items():
            if key.startswith("eval/") and key != "eval/clean" and isinstance(acc, (int, float)):
                sums[key][float(x)].append(float(acc))
    return {key: sorted((x, sum(v) / len(v)) for x, v in by_x.items()) for key, by_x in sorted(sums.items())}


def sensitivity_plots(rows: list[dict], params: Iterable[str], folder: Path) -> list[Path]:
    """One PNG per numeric swept parameter: ``sensitivity-<dotted name>.png`` (log x when the values span 10x)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for param in params:
        series = sensitivity_series(rows, param)
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
        xs = [x for points in series.values() for x, _ in points]
        for key, points in series.items():
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key[5:])
        if min(xs) > 0 and max(xs) >= 10 * min(xs):
            ax.set_xscale("log")
        ax.set_xlabel(param)
        ax.set_ylabel("robust accuracy (%)")
        ax.set_title(f"sensitivity to {param.split('.')[-1]}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = folder / f"sensitivity-{param}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
