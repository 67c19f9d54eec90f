"""The evaluation suite: Table 6 and 7 columns plus strong attacks on a fixed subset, resumable,
sharded over ranks, with a gradient-masking check."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from aadscale.atomic import atomic_write_text
from aadscale.attacks.registry import parse_attack_name
from aadscale.distributed import rank_and_world, sum_over_ranks
from aadscale.errors import InputError
from aadscale.evaluate.folder import claim_folder
from aadscale.evaluate.robust import TABLE6, attack_batch, format_table, worst_case
from aadscale.models.modes import eval_mode

TABLE7 = ("iter_step_ll10", "a3iter_step_ll10", "pgd10", "a3pgd10")
PAPER = TABLE6 + TABLE7
STRONG = ("pgd40x5", "apgd100")
WORST = "worst"  # images that resist every attack column: the per-image worst case


def select_subset(total: int, limit: int | None, seed: int) -> list[int]:
    """``limit`` dataset indices drawn with ``seed`` (all when None or >= total), sorted."""
    if total < 1:
        raise InputError("the dataset is empty")
    if limit is None or limit >= total:
        return list(range(total))
    if limit < 1:
        raise InputError(f"limit={limit} must be >= 1")
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(total, generator=g)[:limit].tolist())


def masking_check(results: dict[str, float], paper: Sequence[str], strong: Sequence[str],
                  threshold: float) -> dict:
    """Compare the lowest accuracy of the paper's attacks with the strong attacks' lowest.

    ``suspected`` is True when the strong attacks find accuracy more than ``threshold``
    points lower: the paper's attacks then over-state robustness (gradient masking).
    """
    weak = [c for c in paper if c != "clean"]
    if not weak or not strong:
        return {"run": False, "suspected": False, "message": "not run: needs paper and strong columns"}
    w = min(weak, key=lambda c: results[c])
    s = min(strong, key=lambda c: results[c])
    gap = results[w] - results[s]
    suspected = gap > threshold
    msg = (f"{s} finds {results[s]:.2f}% vs {results[w]:.2f}% for the strongest paper attack {w} "
           f"(gap {gap:.2f} points, threshold {threshold:g})")
    if suspected:
        msg = ("WARNING: possible gradient masking: " + msg + ". The paper's attacks over-state "
               "this model's robustness; report the strong-attack accuracy.")
    return {"run": True, "suspected": suspected, "gap": gap, "weakest_paper": w, "strongest": s,
            "threshold": threshold, "message": msg}


@dataclass
class SuiteSpec:
    """What was evaluated, recorded in ``meta.json``; a resume must match it exactly."""
    attacks: list[str]
    strong: list[str]
    eps: float
    seed: int
    batch_size: int
    gamma: float
    indices: list[int]
    model: str
    extra: dict = field(default_factory=dict)


def _read_done(out: Path, columns: list[str]) -> dict[int, dict]:
    """Finished batches from every ``batches.rank*.jsonl`` (a torn last line is ignored)."""
    done: dict[int, dict] = {}
    for path in sorted(out.glob("batches.rank*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill: that batch is simply redone
            if isinstance(rec, dict) and set(rec.get("correct", {})) == set(columns):
                done[int(rec["batch"])] = rec
    return done


def evaluate_suite(model: nn.Module, dataset: Dataset, out_dir: str | Path, *, eps: float,
                   attacks: Sequence[str] = PAPER, strong: Sequence[str] = STRONG,
                   limit: int | None = 1000, seed: int = 0, batch_size: int = 64,
                   gamma: float = 10.0, masking_threshold: float = 5.0, workers: int = 0,
                   model_label: str = "", progress: bool = True) -> dict:
    """Accuracy (%) under every column on a fixed subset; results.json / results.md in ``out_dir``.

    Batch b holds the subset's images b*batch_size ... and each column runs with its own
    seed (``column_seed``), so a batch gives the same numbers whichever rank or run
    computes it. ``worst`` counts the images that resist every column (the per-image worst
    case). Each finished batch is appended to ``batches.rank<r>.jsonl``; a rerun skips the
    batches found there. Under torch.distributed, rank r takes the batches b with
    b % world == r and the counts are summed over ranks. (Resuming with another
    world size needs the folder shared by all ranks.)
    """
    paper_cols, strong_cols, columns = _suite_columns(attacks, strong)
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size} must be >= 1")
    indices = select_subset(len(dataset), limit, seed)
    out = Path(out_dir)
    rank, world = rank_and_world()
    claim_folder(out, asdict(SuiteSpec(paper_cols, strong_cols, eps, seed, batch_size, gamma, indices,
                                       model_label)), rank)
    batches = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    done = _read_done(out, columns + [WORST])
    mine = [b for b in range(len(batches)) if b % world == rank]
    todo = [b for b in mine if b not in done]
    counts = sum((_as_counts(done[b], columns) for b in mine if b in done),
                 torch.zeros(2 + len(columns), dtype=torch.float64))
    loader = DataLoader(Subset(dataset, [i for b in todo for i in batches[b]]),
                        batch_size=batch_size, shuffle=False, num_workers=workers)
    bar = tqdm(zip(todo, loader), total=len(todo), desc=f"evaluate (rank {rank})",
               disable=not progress or rank != 0)
    counts += _evaluate_batches(model, bar, columns, out / f"batches.rank{rank}.jsonl",
                                eps=eps, gamma=gamma, seed=seed)
    results = _percentages(sum_over_ranks(counts).cpu(), columns, len(indices), out)
    check = masking_check(results, paper_cols, strong_cols, masking_threshold)
    report = {"results": results, "masking_check": check, "eps": eps, "seed": seed,
              "indices": indices, "model": model_label, "resumed_batches": len(mine) - len(todo)}
    if rank == 0:
        _write_report(out, report, paper_cols, strong_cols)
    return report


def _suite_columns(attacks: Sequence[str], strong: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """The paper's and the strong columns by canonical name, and all columns once each in order."""
    paper_cols = [parse_attack_name(a).name for a in attacks]
    strong_cols = [parse_attack_name(a).name for a in strong]
    columns = list(dict.fromkeys(paper_cols + strong_cols))
    if not columns:
        raise InputError("no attack columns; give --attacks and/or --strong")
    return paper_cols, strong_cols, columns


def _as_counts(record: dict, columns: list[str]) -> torch.Tensor:
    """One batch record as ``[n, correct per column..., worst]`` counts in float64."""
    return torch.tensor([record["n"]] + [record["correct"][c] for c in columns + [WORST]],
                        dtype=torch.float64)


def _evaluate_batches(model: nn.Module, bar: tqdm, columns: list[str], log: Path, *,
                      eps: float, gamma: float, seed: int) -> torch.Tensor:
    """Attack each ``(b, (x, y))`` batch of ``bar``, append its record to ``log`` (synced, so a
    kill loses at most the batch in flight) and return the summed counts (``_as_counts``' layout)."""
    device = next(model.parameters()).device
    counts = torch.zeros(2 + len(columns), dtype=torch.float64)
    with eval_mode(model), log.open("a") as fh:
        for b, (x, y) in bar:
            x, y = x.to(device).float(), y.to(device)
            right = attack_batch(model, x, y, columns, eps=eps, gamma=gamma, seed=seed, batch=b)
            right[WORST] = worst_case(right)
            record = {"batch": b, "n": int(y.shape[0]),
                      "correct": {c: int(r.sum()) for c, r in right.items()}}
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            counts += _as_counts(record, columns)
            bar.set_postfix({c: f"{100 * record['correct'][c] / y.shape[0]:.0f}" for c in columns[:4]})
    return counts


def _percentages(counts: torch.Tensor, columns: list[str], expected: int, out: Path) -> dict[str, float]:
    """Summed counts as percent per column and ``worst``, with ``"n"``; InputError when the number
    of images is not the subset's (logs from another evaluation)."""
    n = int(counts[0])
    if n != expected:
        raise InputError(f"counted {n} images but the subset has {expected}; "
                         f"the batch logs in {out} are inconsistent: delete the folder and rerun")
    return {**{c: 100.0 * float(counts[1 + i]) / n for i, c in enumerate(columns + [WORST])}, "n": n}


def _write_report(out: Path, report: dict, paper: Sequence[str], strong: Sequence[str]) -> None:
    """results.json and results.md in ``out``; a suspected gradient masking also goes to stderr."""
    atomic_write_text(out / "results.json", json.dumps(report, indent=1))
    atomic_write_text(out / "results.md", format_report(report, paper, strong))
    check = report["masking_check"]
    if check["suspected"]:
        print("\n" + "!" * 78 + "\n" + check["message"] + "\n" + "!" * 78, file=sys.stderr)


def format_report(report: dict, paper: Sequence[str], strong: Sequence[str]) -> str:
    """Markdown: the paper's columns, the strong attacks, and the masking check."""
    res, n = report["results"], report["results"]["n"]
    title = report["model"] or "model"
    parts = [f"# Robust accuracy (%), eps = {report['eps']:.5g}, {n} images, seed {report['seed']}"]
    if paper:
        parts += ["", "## Paper attacks (Tables 6 and 7)", "",
                  format_table({**{c: res[c] for c in paper}, "n": n}, title)]
    if strong:
        parts += ["", "## Strong attacks (gradient-masking check)", "",
                  format_table({**{c: res[c] for c in strong}, "n": n}, title)]
    parts += ["", f"Worst case per image over all {len(dict.fromkeys([*paper, *strong]))} columns: "
              f"{res[WORST]:.2f} %", "", report["masking_check"]["message"], ""]
    return "\n".join(parts)
