"""Defenses compared on equal terms: every objective x seed trained the same steps on the same data,
then evaluated by the suite on the same images with strong and gradient-free attacks.

A defense is only worth its name against its base objective (madry+aad vs madry, alp+aad vs
alp) on the same budget and seeds, so the summary gives each "+aad" minus its base per
seed, with the spread of that difference, next to the mean +- std of every column.
"""
from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from aadscale.atomic import atomic_write_text
from aadscale.attacks.registry import run_column
from aadscale.attention import grad_cam, iou, topk_mask
from aadscale.config import Config, load_config
from aadscale.errors import InputError
from aadscale.evaluate.loading import load_model
from aadscale.evaluate.robust import column_generator
from aadscale.evaluate.suite import WORST, evaluate_suite
from aadscale.objectives.registry import OBJECTIVES as REGISTERED

log = logging.getLogger("aadscale.compare")

# the objective registry's names, each "+aad" right after its base (stable sort on the base's place)
OBJECTIVES = tuple(sorted(REGISTERED, key=lambda name: list(REGISTERED).index(name.split("+")[0])))
# compared unless --objectives says otherwise: the bases of the demo's study and their +aad
DEFAULT_OBJECTIVES = ("plain", "madry", "madry+aad", "alp", "alp+aad")
PAPER_COLUMNS = ("clean", "fgsm", "pgd20", "cw20", "a3pgd10")
STRONG_COLUMNS = ("pgd20x3", "apgd50", "apgd_dlr50", "square500")
IOU_ATTACK = "pgd20"


@dataclass
class CompareOptions:
    """What to train and how to attack it; the same for every objective and seed."""
    preset: str = "demo"
    objectives: Sequence[str] = DEFAULT_OBJECTIVES
    seeds: Sequence[int] = (0, 1, 2)
    out: str = "runs/compare"
    overrides: list[str] = field(default_factory=list)
    attacks: Sequence[str] = PAPER_COLUMNS
    strong: Sequence[str] = STRONG_COLUMNS
    limit: int | None = None
    eval_seed: int = 0
    batch_size: int = 128
    top_n: int = 5
    progress: bool = True


def run_name(objective: str, seed: int) -> str:
    """The run folder's name for one objective and seed."""
    return f"{objective}-s{seed}"


def run_config(o: CompareOptions, objective: str, seed: int) -> Config:
    """The preset with the run's objective and seed; plain training gets no training attack."""
    extra = ["attack.name=none"] if objective == "plain" else []
    return load_config(o.preset, [*o.overrides, f"objective.name={objective}", f"train.seed={seed}",
                                  f"log.dir={o.out}", f"log.name={run_name(objective, seed)}", *extra])


def train_run(cfg: Config) -> Path:
    """Train one run to its end, resuming a run that was cut short; a finished run is kept."""
    from aadscale.engine import fit
    run = Path(cfg.log.dir) / cfg.log.name
    if (run / "model.pt").is_file():
        return run
    resume = "auto" if (run / "checkpoints" / "latest").is_file() else None
    start = time.perf_counter()
    fit(cfg, resume=resume)
    atomic_write_text(run / "train_time.json", json.dumps({"seconds": time.perf_counter() - start}))
    return run


def attention_iou(model: torch.nn.Module, dataset, indices: Sequence[int], eps: float, n: int,
                  seed: int, batch_size: int) -> float:
    """Mean IoU of the top-n Grad-CAM cells of clean and PGD images (paper Table 3), maps toward
    the true label, over the same images and with the same starts as the suite's ``pgd20``."""
    values = []
    for b, start in enumerate(range(0, len(indices), batch_size)):
        items = [dataset[i] for i in indices[start:start + batch_size]]
        x = torch.stack([it[0] for it in items]).float()
        y = torch.tensor([int(it[1]) for it in items])
        x_adv = run_column(model, x, y, IOU_ATTACK, eps=eps,
                           generator=column_generator(seed, b, IOU_ATTACK, x.device))
        cam, cam_adv = grad_cam(model, x, y), grad_cam(model, x_adv, y)
        cells = min(n, cam[0].numel())
        values.append(iou(topk_mask(cam, cells), topk_mask(cam_adv, cells)))
    return float(torch.cat(values).mean())


def evaluate_run(run: Path, o: CompareOptions) -> dict:
    """The suite's accuracies (with ``worst``) and the attention IoU of one trained run."""
    from aadscale.data import build_dataset
    cached = run / "compare.json"
    spec = {"attacks": list(o.attacks), "strong": list(o.strong), "limit": o.limit,
            "eval_seed": o.eval_seed, "top_n": o.top_n}
    if cached.is_file():
        saved = json.loads(cached.read_text())
        if saved.get("spec") == spec:
            return saved["row"]
    loaded = load_model(run / "model.pt")
    cfg = loaded.config
    dataset = build_dataset(cfg.data.root, cfg.data.val_split, image_size=cfg.data.image_size,
                            dataset=cfg.data.dataset, val_resize=cfg.data.val_resize)
    loaded.check_classes(dataset.classes, f"split {cfg.data.val_split!r} of {cfg.data.root}")
    report = evaluate_suite(loaded.model, dataset, run / "compare-eval", eps=cfg.eval.eps,
                            attacks=o.attacks, strong=o.strong, limit=o.limit, seed=o.eval_seed,
                            batch_size=o.batch_size, model_label=run.name, progress=o.progress)
    row = dict(report["results"])
    row[f"iou_top{o.top_n}"] = attention_iou(loaded.model, dataset, report["indices"], cfg.eval.eps,
                                             o.top_n, o.eval_seed, o.batch_size)
    timing = run / "train_time.json"
    if timing.is_file():
        row["train_s"] = json.loads(timing.read_text())["seconds"]
    atomic_write_text(cached, json.dumps({"spec": spec, "row": row}, indent=1))
    return row


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(rows: dict[tuple[str, int], dict], objectives: Sequence[str], seeds: Sequence[int]) -> dict:
    """Mean +- std per objective and column, and each "+aad" minus its base paired by seed."""
    columns = [k for k in next(iter(rows.values())) if k not in ("n", "train_s")]
    per = {obj: {c: mean_std([rows[obj, s][c] for s in seeds]) for c in columns} for obj in objectives}
    deltas = {}
    for obj in objectives:
        base = obj.split("+")[0]
        if obj.endswith("+aad") and base in objectives:
            deltas[obj] = {c: mean_std([rows[obj, s][c] - rows[base, s][c] for s in seeds]) for c in columns}
    return {"columns": columns, "objectives": per, "aad_minus_base": deltas, "seeds": list(seeds),
            "n": next(iter(rows.values()))["n"]}


def to_markdown(summary: dict, title: str) -> str:
    """Two tables: mean +- std per objective, and AAD minus its base (paired by seed)."""
    cols = summary["columns"]
    head = "| objective | " + " | ".join(cols) + " |\n|" + "---|" * (len(cols) + 1)

    def row(label, stats, sign=""):
        return f"| {label} | " + " | ".join(f"{stats[c][0]:{sign}.1f} ± {stats[c][1]:.1f}" for c in cols) + " |"

    parts = [f"# {title}", "",
             f"Accuracy (%) on {summary['n']} held-out images, mean ± std over seeds "
             f"{', '.join(map(str, summary['seeds']))}; `worst` = images that resist every column; "
             f"`iou_top*` = IoU of the top Grad-CAM cells of clean and PGD images (x 100).", "", head]
    parts += [row(obj, _percent_iou(stats)) for obj, stats in summary["objectives"].items()]
    if summary["aad_minus_base"]:
        parts += ["", "AAD minus its base, paired by seed (mean ± std of the difference):", "", head]
        parts += [row(f"{obj} - {obj.split('+')[0]}", _percent_iou(stats), "+")
                  for obj, stats in summary["aad_minus_base"].items()]
    return "\n".join(parts) + "\n"


def _percent_iou(stats: dict) -> dict:
    return {c: ((m * 100, s * 100) if c.startswith("iou") else (m, s)) for c, (m, s) in stats.items()}


def plot(summary: dict, path: Path) -> Path:
    """Left: clean, worst-case and the strongest single attack's accuracy per objective; right: each
    "+aad" minus its base (paired by seed) for the same columns and the attention IoU; std as bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    per, deltas = summary["objectives"], summary["aad_minus_base"]
    attacks = [c for c in summary["columns"] if c not in ("clean", WORST) and not c.startswith("iou")]
    shown = ["clean", WORST] + ([min(attacks, key=lambda c: statistics.mean(per[o][c][0] for o in per))]
                                if attacks else [])
    fig, axes = plt.subplots(1, 2 if deltas else 1, figsize=(4 + 1.4 * len(per) + 2.5 * bool(deltas), 3.6),
                             gridspec_kw={"width_ratios": [len(per), max(len(deltas), 1)]} if deltas else None,
                             squeeze=False)
    _bars(axes[0][0], {o: per[o] for o in per}, shown, "accuracy (%)")
    axes[0][0].set_ylim(0, 100)
    if deltas:
        iou = [c for c in summary["columns"] if c.startswith("iou")]
        _bars(axes[0][1], {f"{o}\n- {o.split('+')[0]}": _percent_iou(d) for o, d in deltas.items()}, shown + iou,
              "AAD minus base (points)")
        axes[0][1].axhline(0, color="black", linewidth=0.8)
    fig.suptitle(f"mean ± std over {len(summary['seeds'])} seeds, {summary['n']} images", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _bars(ax, groups: dict[str, dict], columns: list[str], ylabel: str) -> None:
    width = 0.8 / len(columns)
    for i, col in enumerate(columns):
        xs = [j + i * width for j in range(len(groups))]
        ax.bar(xs, [g[col][0] for g in groups.values()], width, yerr=[g[col][1] for g in groups.values()],
               capsize=3, label=col)
    ax.set_xticks([j + width * (len(columns) - 1) / 2 for j in range(len(groups))], list(groups), fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)


def compare(o: CompareOptions) -> dict:
    """Train and evaluate every objective x seed (finished parts are reused), then summarize.

    Writes ``<out>/compare.md``, ``compare.json`` and ``compare.png``.
    """
    unknown = [obj for obj in o.objectives if obj not in OBJECTIVES]
    if unknown or not o.objectives or not o.seeds:
        raise InputError(f"objectives {list(o.objectives)} must be a non-empty subset of {list(OBJECTIVES)} "
                         f"and seeds {list(o.seeds)} non-empty")
    configs = {(obj, s): run_config(o, obj, s) for obj in o.objectives for s in o.seeds}  # checks overrides
    rows = {}
    for (obj, s), cfg in configs.items():
        log.info("compare: %s seed %d", obj, s)
        rows[obj, s] = evaluate_run(train_run(cfg), o)
    summary = summarize(rows, o.objectives, o.seeds)
    out = Path(o.out)
    summary["options"] = asdict(o)
    summary["runs"] = {run_name(obj, s): row for (obj, s), row in rows.items()}
    atomic_write_text(out / "compare.json", json.dumps(summary, indent=1))
    cfg = next(iter(configs.values()))
    title = (f"{o.preset}: {cfg.model.name}, eps {cfg.eval.eps:.4g}, "
             f"{cfg.train.max_steps or cfg.train.epochs} {'steps' if cfg.train.max_steps else 'epochs'}, "
             f"BatchNorm statistics of {cfg.objective.bn_stats} (objective.bn_stats, every run)")
    atomic_write_text(out / "compare.md", to_markdown(summary, title))
    plot(summary, out / "compare.png")
    return summary
