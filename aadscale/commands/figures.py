"""``aadscale figures``: Grad-CAM overlays (paper Fig. 1/7/9), map evolution over checkpoints
(Fig. 6), robust accuracy vs attack steps and vs eps; PNG files."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from aadscale.analysis.figures import (
    accuracy_vs_eps,
    accuracy_vs_steps,
    attention_figure,
    curve_figure,
    evolution_figure,
)
from aadscale.attacks.threat import parse_eps
from aadscale.commands.evaluate import (
    add_data_args,
    add_model_args,
    dataset_from_args,
    eps_from_args,
    model_from_args,
)
from aadscale.errors import InputError
from aadscale.evaluate.suite import select_subset


def _images(args: argparse.Namespace, loaded) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed random subset (``--limit``, ``--seed``) as one batch."""
    dataset, _ = dataset_from_args(args, loaded)
    items = [dataset[i] for i in select_subset(len(dataset), args.limit, args.seed)]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])


def _batches(x: torch.Tensor, y: torch.Tensor, size: int) -> list:
    return list(zip(x.split(size), y.split(size)))


def run_attention(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    loaded = model_from_args(args)
    x, y = _images(args, loaded)
    size = attention_figure(loaded.model, x, y, args.out, attack=args.attack, eps=eps_from_args(args, loaded))
    print(f"wrote {args.out} ({size[0]}x{size[1]} px)")
    return 0


def run_evolution(args: argparse.Namespace) -> int:
    if not args.checkpoints:
        raise InputError("give the run's checkpoint files in training order with --checkpoints")
    loaded = [model_from_args(args, checkpoint=c) for c in args.checkpoints]
    x, y = _images(args, loaded[-1])
    labels = [Path(c).stem for c in args.checkpoints]
    size = evolution_figure(list(zip(labels, (m.model for m in loaded))), x, y, args.out)
    print(f"wrote {args.out} ({size[0]}x{size[1]} px)")
    return 0


def run_curve(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    loaded = model_from_args(args)
    x, y = _images(args, loaded)
    batches = _batches(x.to(args.device), y.to(args.device), args.batch_size)
    kinds = [k.strip() for k in args.attacks.split(",") if k.strip()]
    if args.command_figure == "steps":
        xs = [int(s) for s in args.steps.split(",")]
        series = accuracy_vs_steps(loaded.model, batches, kinds, xs, eps_from_args(args, loaded))
        xlabel = "attack steps"
    else:
        xs = [parse_eps(e) for e in args.eps_values.split(",")]
        series = accuracy_vs_eps(loaded.model, batches, kinds, xs)
        xlabel = "eps"
    size = curve_figure(xs, series, xlabel, args.out, title=f"{loaded.description}, {len(y)} images")
    Path(args.out).with_suffix(".json").write_text(json.dumps({"x": xs, "accuracy": series}, indent=1))
    print(f"wrote {args.out} ({size[0]}x{size[1]} px) and its data as .json")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("figures", help="PNG figures: overlays, map evolution, accuracy curves",
                              description=__doc__)
    sub = p.add_subparsers(dest="command_figure", required=True)
    specs = {"attention": ("clean vs adversarial images with Grad-CAM overlays", run_attention),
             "evolution": ("Grad-CAM of the same images over a run's checkpoints", run_evolution),
             "steps": ("robust accuracy vs attack steps", run_curve),
             "eps": ("robust accuracy vs eps", run_curve)}
    for name, (help_text, fn) in specs.items():
        q = sub.add_parser(name, help=help_text, description=help_text)
        add_model_args(q)
        add_data_args(q)
        q.set_defaults(run=fn, limit=4 if name in ("attention", "evolution") else 256)
        q.add_argument("--out", required=True, help="PNG file to write")
        if name == "evolution":
            q.add_argument("--checkpoints", nargs="+", help="checkpoint files in training order")
        if name in ("attention", "steps"):
            q.add_argument("--eps", help="default: the checkpoint's eval.eps")
        if name == "attention":
            q.add_argument("--attack", default="step_ll")
        if name == "steps":
            q.add_argument("--attacks", default="pgd,cw", help="iterative attack kinds")
            q.add_argument("--steps", default="1,2,5,10,20,40")
        if name == "eps":
            q.add_argument("--attacks", default="fgsm,pgd10", help="attack columns")
            q.add_argument("--eps-values", default="1/255,2/255,4/255,8/255,16/255")
