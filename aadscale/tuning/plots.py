"""The paper's Fig. 8: robust accuracy against each swept number (lambda1, lambda2, eps, ...), and the
sweep's metric over each pair of them."""
from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path
from typing import Iterable


def _number(row: dict, param: str) -> float | None:
    """The row's value of ``param`` when the trial finished and the value is a number, else None."""
    x = row.get(param)
    if row["status"] not in ("done", "stopped") or isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x)


def sensitivity_series(rows: list[dict], param: str) -> dict[str, list[tuple[float, float]]]:
    """For every robust ``eval/<attack>``: (value of ``param``, mean accuracy over trials with it), sorted."""
    sums: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        x = _number(row, param)
        if x is None:
            continue
        for key, acc in row.items():
            if key.startswith("eval/") and key != "eval/clean" and isinstance(acc, (int, float)):
                sums[key][x].append(float(acc))
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


def grid_cells(rows: list[dict], params: tuple[str, str], metric: str) -> dict[tuple[float, float], float]:
    """(value of params[0], value of params[1]) -> mean ``metric`` over the finished trials with them."""
    cells: dict[tuple[float, float], list[float]] = defaultdict(list)
    for row in rows:
        x, y, value = _number(row, params[0]), _number(row, params[1]), row.get(metric)
        if x is not None and y is not None and isinstance(value, (int, float)):
            cells[(x, y)].append(float(value))
    return {xy: sum(v) / len(v) for xy, v in sorted(cells.items())}


def grid_plots(rows: list[dict], params: Iterable[str], metric: str, folder: Path) -> list[Path]:
    """Per pair of swept numbers, the metric as a heatmap with its values: ``grid-<p1>-<p2>.png``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for pair in itertools.combinations(params, 2):
        cells = grid_cells(rows, pair, metric)
        if not cells:
            continue
        xs, ys = sorted({x for x, _ in cells}), sorted({y for _, y in cells})
        table = [[cells.get((x, y), float("nan")) for x in xs] for y in ys]
        fig, ax = plt.subplots(figsize=(1.2 * len(xs) + 2.2, 0.8 * len(ys) + 1.6), dpi=120)
        image = ax.imshow(table, origin="lower", cmap="viridis", aspect="auto")
        for (i, y), (j, x) in itertools.product(enumerate(ys), enumerate(xs)):
            if (x, y) in cells:
                value = cells[(x, y)]
                ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=9,
                        color="k" if image.norm(value) > 0.5 else "w")  # readable on light and dark cells
        ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
        ax.set_yticks(range(len(ys)), [f"{y:g}" for y in ys])
        ax.set_xlabel(pair[0])
        ax.set_ylabel(pair[1])
        ax.set_title(metric)
        fig.colorbar(image, ax=ax)
        fig.tight_layout()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"grid-{pair[0]}-{pair[1]}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
