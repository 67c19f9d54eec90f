"""Adversarial training with AAD: ``deepspeed [--num_gpus N | --hostfile H] launchers/train_imagenet.py``.

Also runs under ``torchrun`` and as a plain ``python`` process. Overrides are
``section.field=value`` pairs before, between or after the options, e.g. ``train.epochs=2
objective.lambda1=0.5``.
"""
from __future__ import annotations

import argparse
import logging
import sys

from aadscale.config import list_presets, load_config
from aadscale.distributed import run_main
from aadscale.engine import fit
from aadscale.errors import InputError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: preset, data, run name, resume, DeepSpeed JSON, overrides (in any order)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="imagenet-resnet50",
                   help=f"shipped preset ({', '.join(list_presets())}) or a .yaml path")
    p.add_argument("--data", default=None, help="dataset folder (sets data.root)")
    p.add_argument("--name", default=None, help="run name: the folder runs/<name>/ (sets log.name)")
    p.add_argument("--resume", default=None, help="'auto' (latest checkpoint of the run) or a checkpoint tag")
    p.add_argument("--allow-change", action="extend", default=[], metavar="FIELD[,FIELD]",
                   type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
                   help="on resume, let these config fields (or sections, e.g. objective) differ from "
                        "the checkpoint's on purpose")
    p.add_argument("--deepspeed_config", default=None, help="a DeepSpeed JSON to use instead of the generated one")
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # set by the launcher
    p.add_argument("overrides", nargs="*", help="section.field=value")
    return p.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the config and hand it to the engine."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    extra = {}
    if args.data:
        extra["data"] = {"root": args.data}
    if args.name:
        extra["log"] = {"name": args.name}
    try:
        cfg = load_config(args.preset, args.overrides, extra=extra)
        result = fit(cfg, resume=args.resume, deepspeed_config_path=args.deepspeed_config,
                     allow_changes=args.allow_change)
    except InputError as err:  # bad input; a library's own error keeps its traceback
        print(f"train_imagenet: error: {err}", file=sys.stderr)
        return 2
    print(f"finished at step {result['step']}; run folder {result['run_dir']}")
    return 0


if __name__ == "__main__":
    run_main(main)
