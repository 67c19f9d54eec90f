"""Robust accuracy over batches: the paper's Table 6 columns, accumulated, in float32."""
from __future__ import annotations

import itertools
import zlib
from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from aadscale.attacks.registry import parse_attack_name, run_column
from aadscale.errors import InputError
from aadscale.models.modes import eval_mode

TABLE6 = ("clean", "fgsm", "pgd10", "pgd20", "pgd40", "pgd100", "cw10", "cw20", "cw40", "cw100")


def column_seed(seed: int, batch: int, column: str) -> int:
    """The random-start seed of one batch and column. Step and restart counts are left out,
    so pgd10, pgd40 and pgd40x5 start from the same points (pgd40x5's first restart is
    pgd40's run): columns of one attack differ only in what they add."""
    kind = parse_attack_name(column).kind
    return (seed * 1_000_003 + batch * 7919 + zlib.crc32(kind.encode())) % 2 ** 63


def column_generator(seed: int, batch: int, column: str, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded with ``column_seed``."""
    return torch.Generator(device=device).manual_seed(column_seed(seed, batch, column))


def attack_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, columns: Sequence[str], *,
                 eps: float, gamma: float, seed: int, batch: int) -> dict[str, torch.Tensor]:
    """Per column, which images of batch ``batch`` the model still gets right under that attack.

    The one evaluation step of ``robust_accuracy`` and ``evaluate_suite``: each column's random
    starts come from ``column_generator(seed, batch, column)`` and the attacked images are
    classified without gradients in float32. The model is expected in eval mode.
    """
    right = {}
    for column in columns:
        x_adv = run_column(model, x, y, column, eps=eps, gamma=gamma,
                           generator=column_generator(seed, batch, column, x.device))
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            right[column] = model(x_adv).argmax(1) == y
    return right


def worst_case(right: dict[str, torch.Tensor]) -> torch.Tensor:
    """The images that resist every column of ``attack_batch``'s answer."""
    return torch.stack(list(right.values())).all(0)


def robust_accuracy(model: nn.Module, batches: Iterable, attacks: Iterable[str] = TABLE6, *,
                    eps: float, gamma: float = 10.0, device: torch.device | str | None = None,
                    progress: bool = True, max_batches: int | None = None,
                    seed: int = 0, worst: bool = False, stop: Callable[[], bool] | None = None) -> dict[str, float]:
    """Accuracy in percent under each attack, over all ``(x, y)`` batches; ``"n"`` counts images.

    Every attack runs on the same images in float32 with the model in eval mode. Columns
    are Table 6's by default (clean, FGSM, PGD-10/20/40/100, CW-10/20/40/100); a column named
    twice is run once. Random starts come from ``column_generator(seed, batch, column)``: the
    same numbers on every call, whatever the global RNG, and the same starts for every step
    count of an attack. ``worst=True`` adds ``"worst"``: the images that resist every column.
    ``stop``, asked before each batch, ends the evaluation early when it answers True (the result
    then covers the ``"n"`` images seen so far, possibly none).
    """
    columns = list(dict.fromkeys(parse_attack_name(a).name for a in attacks))
    if not columns:
        raise InputError("attacks is empty; give at least one column, e.g. ['clean', 'pgd10']")
    if device is None:
        device = next(model.parameters()).device
    correct = dict.fromkeys(columns + (["worst"] if worst else []), 0)
    n = 0
    with eval_mode(model):
        bar = tqdm(itertools.islice(batches, max_batches), total=_batch_count(batches, max_batches),
                   desc="robust eval", disable=not progress, leave=False)
        for b, (x, y) in enumerate(bar):
            if stop is not None and stop():
                break
            x, y = x.to(device).float(), y.to(device)
            right = attack_batch(model, x, y, columns, eps=eps, gamma=gamma, seed=seed, batch=b)
            if worst:
                right["worst"] = worst_case(right)
            for c, r in right.items():
                correct[c] += int(r.sum())
            n += y.shape[0]
            bar.set_postfix({k: f"{100 * v / n:.1f}" for k, v in list(correct.items())[:4]})
    if n == 0 and not (stop is not None and stop()):
        raise InputError("no images were evaluated: the batches were empty")
    return {**{k: 100.0 * v / max(n, 1) for k, v in correct.items()}, "n": n}


def _batch_count(batches: Iterable, max_batches: int | None) -> int | None:
    """How many batches the progress bar will see (None when ``batches`` has no length)."""
    if not hasattr(batches, "__len__"):
        return None
    return len(batches) if max_batches is None else min(len(batches), max_batches)


def format_table(results: dict[str, float], title: str = "") -> str:
    """A Markdown table row of accuracies (percent) with its header."""
    return format_rows({title or "-": results})


def format_rows(rows: dict[str, dict[str, float]], columns: list[str] | None = None) -> str:
    """A Markdown table of accuracies (percent), one row per model; ``columns`` (default the first row's
    keys) in their order, those a row lacks left out."""
    first = next(iter(rows.values()))
    cols = [k for k in (columns or first) if k != "n" and k in first]
    lines = ["| " + " | ".join(["model"] + cols + ["n"]) + " |", "|" + "---|" * (len(cols) + 2)]
    for title, results in rows.items():
        lines.append("| " + " | ".join([title] + [f"{results[c]:.2f}" for c in cols] +
                                       [str(results.get("n", ""))]) + " |")
    return "\n".join(lines)
