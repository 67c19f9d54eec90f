"""Host syncs per training step of the real engine on a GPU, counted by CUDA's sync debug mode.

    deepspeed --num_gpus 1 benchmarks/engine_syncs.py --steps 8 train.zero_stage=0
    deepspeed --num_gpus 1 benchmarks/engine_syncs.py --steps 8 train.zero_stage=2

Under the DeepSpeed launcher the group is NCCL with one rank, so the project's collectives
run and refuse any tensor off the GPU (issue 20, item 1): a run that finishes shows none.
``torch.cuda.set_sync_debug_mode("warn")`` warns at every synchronising CUDA call; each is
counted per optimiser step, with the code that made it (the innermost frame of aadscale,
DeepSpeed or torch's amp). Logging steps (``log.scalar_every``) read the non-finite guard
and the metrics on purpose. On CPU, ``tests/test_step_syncs.py`` counts the same by op name.
"""
from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aadscale.config import load_config  # noqa: E402
from aadscale.distributed import exit_process, shutdown  # noqa: E402
from aadscale.engine import Callback  # noqa: E402
from aadscale.engine import trainer as loop  # noqa: E402

PACKAGES = ("/aadscale/", "/deepspeed/", "/torch/amp/")


def origin() -> str:
    """The innermost frame of the calling stack in a package of interest, as package/file:function."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        for package in PACKAGES:
            if package in frame.filename:
                return f"{package.strip('/')}/{frame.filename.split(package)[-1]}:{frame.name}"
    return "other"


class PerStep(Callback):
    """Collects each step's sync warnings, cut at every optimiser step's end."""

    def __init__(self) -> None:
        self.current: list[str] = []
        self.steps: list[list[str]] = []

    def on_step_end(self, info) -> None:
        self.steps.append(self.current)
        self.current = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--log-every", type=int, default=4)
    parser.add_argument("--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="section.field=value")
    args = parser.parse_intermixed_args()
    if not torch.cuda.is_available():
        print("no CUDA device: not measured (tests/test_step_syncs.py counts syncs on CPU)")
        return
    steps = PerStep()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.preset, [f"log.dir={tmp}", "log.name=syncs", f"train.max_steps={args.steps}",
                                        f"log.scalar_every={args.log_every}", "log.image_every=0",
                                        "train.checkpoint_every=0", *args.overrides])
        run = loop.setup(cfg, [steps], None, None)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda message, *rest: steps.current.append(origin()) \
                if "synchronizing" in str(message) else None
            torch.cuda.set_sync_debug_mode("warn")
            loop.train_one_epoch(run)
            torch.cuda.set_sync_debug_mode("default")
        run.bar.close()
        run.tb.close()
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, ZeRO-{cfg.train.zero_stage}, "
          f"step mode {cfg.train.step_mode}, precision {cfg.train.precision}, objective {cfg.objective.name}")
    print("| step | logging step | syncs | by |\n| --- | --- | --- | --- |")
    for i, found in enumerate(steps.steps, start=1):
        by = ", ".join(f"{n} {k}" for k, n in collections.Counter(found).most_common())
        print(f"| {i} | {'yes' if i % args.log_every == 0 or i == args.steps else 'no'} | {len(found)} | {by} |")
    shutdown()
    exit_process(0)


if __name__ == "__main__":
    main()
