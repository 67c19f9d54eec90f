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
from aadscale.attacks.registry import parse_attack_name, run_column
from aadscale.distributed import barrier, rank_and_world, sum_over_ranks
from aadscale.errors import InputError
from aadscale.evaluate.robust import TABLE6, column_generator, format_table
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


def _prepare_folder(out: Path, spec: SuiteSpec, rank: int) -> None:
    meta = out / "meta.json"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if meta.exists():
            old = json.loads(meta.read_text())
            diff = [k for k, v in asdict(spec).items() if old.get(k) != v]
            if diff:
                raise InputError(f"{out} holds another evaluation ({', '.join(diff)} differ); "
                                 "use a new --out folder or delete this one")
        else:
            atomic_write_text(meta, json.dumps(asdict(spec), indent=1))
    barrier()


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
    paper_cols = [parse_attack_name(a).name for a in attacks]
    strong_cols = [parse_attack_name(a).name for a in strong]
    columns = list(dict.fromkeys(paper_cols + strong_cols))
    if not columns:
        raise InputError("no attack columns; give --attacks and/or --strong")
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size} must be >= 1")
    indices = select_subset(len(dataset), limit, seed)
    spec = SuiteSpec(paper_cols, strong_cols, eps, seed, batch_size, gamma, indices, model_label)
    out = Path(out_dir)
    rank, world = rank_and_world()
    _prepare_folder(out, spec, rank)
    batches = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    tracked = columns + [WORST]
    done = _read_done(out, tracked)
    mine = [b for b in range(len(batches)) if b % world == rank]
    todo = [b for b in mine if b not in done]
    device = next(model.parameters()).device
    counts = torch.zeros(1 + len(tracked), dtype=torch.float64)
    for b in mine:
        if b in done:
            counts += torch.tensor([done[b]["n"]] + [done[b]["correct"][c] for c in tracked],
                                   dtype=torch.float64)
    loader = DataLoader(Subset(dataset, [i for b in todo for i in batches[b]]),
                        batch_size=batch_size, shuffle=False, num_workers=workers)
    log = out / f"batches.rank{rank}.jsonl"
    bar = tqdm(zip(todo, loader), total=len(todo), desc=f"evaluate (rank {rank})",
               disable=not progress or rank != 0, initial=0)
    with eval_mode(model), log.open("a") as fh:
        for b, (x, y) in bar:
            x, y = x.to(device).float(), y.to(device)
            correct, resists = {}, torch.ones_like(y, dtype=torch.bool)
            for c in columns:
                x_adv = run_column(model, x, y, c, eps=eps, gamma=gamma,
                                   generator=column_generator(seed, b, c, device))
                with torch.no_grad(), torch.autocast(device.type, enabled=False):
                    right = model(x_adv).argmax(1) == y
                correct[c] = int(right.sum())
                resists &= right
            correct[WORST] = int(resists.sum())
            fh.write(json.dumps({"batch": b, "n": int(y.shape[0]), "correct": correct}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            counts += torch.tensor([y.shape[0]] + [correct[c] for c in tracked], dtype=torch.float64)
            bar.set_postfix({c: f"{100 * correct[c] / y.shape[0]:.0f}" for c in columns[:4]})
    counts = sum_over_ranks(counts).cpu()
    n = int(counts[0])
    if n != len(indices):
        raise InputError(f"counted {n} images but the subset has {len(indices)}; "
                         f"the batch logs in {out} are inconsistent: delete the folder and rerun")
    results = {c: 100.0 * float(counts[1 + i]) / n for i, c in enumerate(tracked)}
    check = masking_check(results, paper_cols, strong_cols, masking_threshold)
    report = {"results": {**results, "n": n}, "masking_check": check, "eps": eps, "seed": seed,
              "indices": indices, "model": model_label, "resumed_batches": len(mine) - len(todo)}
    if rank == 0:
        atomic_write_text(out / "results.json", json.dumps(report, indent=1))
        atomic_write_text(out / "results.md", format_report(report, paper_cols, strong_cols))
        if check["suspected"]:
            print("\n" + "!" * 78 + "\n" + check["message"] + "\n" + "!" * 78, file=sys.stderr)
    return report


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
