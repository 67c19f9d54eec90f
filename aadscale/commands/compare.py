"""``aadscale compare``: defenses against their bases, trained and attacked on equal terms."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from aadscale.errors import InputError
from aadscale.analysis.compare import (DEFAULT_OBJECTIVES, OBJECTIVES, PAPER_COLUMNS, STRONG_COLUMNS, CompareOptions,
                                       compare)


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def run(args: argparse.Namespace) -> int:
    """Train and evaluate every objective x seed, then print the comparison."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        seeds = [int(s) for s in _names(args.seeds)]
    except ValueError:
        raise InputError(f"--seeds {args.seeds!r} must be integers separated by commas, e.g. 0,1,2") from None
    o = CompareOptions(preset=args.preset, objectives=_names(args.objectives), seeds=seeds, out=args.out,
                       overrides=args.overrides, attacks=_names(args.attacks), strong=_names(args.strong),
                       limit=args.limit, eval_seed=args.eval_seed, batch_size=args.batch_size,
                       top_n=args.top_n, progress=not args.no_progress)
    compare(o)
    print((Path(o.out) / "compare.md").read_text())
    print(f"plot: {Path(o.out) / 'compare.png'}   runs and their TensorBoard logs: {o.out}/<objective>-s<seed>/")
    return 0


def register(sub) -> None:
    """Add the ``compare`` sub-command."""
    p = sub.add_parser("compare", help="train each objective x seed the same way and compare their robustness")
    p.add_argument("--preset", default="demo", help="preset every run starts from (name or .yaml)")
    p.add_argument("--objectives", default=",".join(DEFAULT_OBJECTIVES),
                   help=f"comma-separated, from {', '.join(OBJECTIVES)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default="runs/compare", help="folder of the runs and the summary (reused: "
                   "finished runs and evaluations are not repeated)")
    p.add_argument("--attacks", default=",".join(PAPER_COLUMNS), help="paper columns")
    p.add_argument("--strong", default=",".join(STRONG_COLUMNS),
                   help="strong and gradient-free columns (pgd<k>x<r>, apgd[_dlr]<k>, square<queries>)")
    p.add_argument("--limit", type=int, default=None, help="held-out images (default: the whole split)")
    p.add_argument("--eval-seed", type=int, default=0, help="seed of the subset and the attacks' starts")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--top-n", type=int, default=5, help="Grad-CAM cells compared for the attention IoU")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", help="section.field=value for every run, e.g. train.epochs=8")
    p.set_defaults(run=run)
