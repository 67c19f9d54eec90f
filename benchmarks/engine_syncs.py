"""Host syncs per training step of the real engine: CUDA's sync debug mode on a GPU, the op detector on CPU.

    deepspeed --num_gpus 1 benchmarks/engine_syncs.py --steps 8 train.zero_stage=0
    deepspeed --num_gpus 1 benchmarks/engine_syncs.py --steps 8 train.zero_stage=2
    .venv/bin/python benchmarks/engine_syncs.py --steps 4 train.zero_stage=3 train.precision=fp32

Under the DeepSpeed launcher on a GPU the group is NCCL with one rank, so the project's
collectives run and refuse any tensor off the GPU: a run that finishes
shows none. There ``torch.cuda.set_sync_debug_mode("warn")`` warns at every synchronising
CUDA call. On CPU the calls that would sync on CUDA are caught by name with
``tests/test_step_syncs.py``'s detector (ops such as ``_local_scalar_dense``, host reads such
as ``tolist``). Each is counted per optimiser step, with the code that made it (the
innermost frame of aadscale, DeepSpeed or torch's amp). Logging steps (``log.scalar_every``)
read the non-finite guard and the metrics on purpose; the first step checks the pixel range.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import os
import sys
import tempfile
import traceback
import types
import warnings
from pathlib import Path
from typing import Any, Iterator

import deepspeed
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aadscale  # noqa: E402
from aadscale.config import load_config  # noqa: E402
from aadscale.distributed import run_main  # noqa: E402
from aadscale.engine import Callback  # noqa: E402
from aadscale.engine import trainer as loop  # noqa: E402

# the code a sync is charged to: the innermost frame in one of these packages' folders
PACKAGES = {name: os.path.dirname(module.__file__) + os.sep
            for name, module in (("aadscale", aadscale), ("deepspeed", deepspeed), ("torch/amp", torch.amp))}


def origin(stack: traceback.StackSummary) -> str:
    """The innermost frame of ``stack`` in a package of ``PACKAGES``, as package/file:function."""
    for frame in reversed(stack):
        for name, folder in PACKAGES.items():
            if frame.filename.startswith(folder):
                return f"{name}/{frame.filename[len(folder):]}:{frame.name}"
    return "other"


# host reads that also reach the dispatcher as a sync op (_local_scalar_dense): counted there, once
ALSO_AN_OP = {"Tensor.item", "Tensor.__bool__", "Tensor.__int__", "Tensor.__float__", "Tensor.__index__"}


class PerStep(Callback):
    """Cuts the syncs recorded in ``log.askers`` at every optimiser step's end."""

    def __init__(self, log) -> None:
        self.log, self.steps = log, []

    def on_step_end(self, info) -> None:
        self.steps.append([a for a in self.log.askers if a.split(" by ")[0] not in ALSO_AN_OP])
        self.log.askers = []


@contextlib.contextmanager
def cuda_sync_warnings(log) -> Iterator[None]:
    """Every synchronising CUDA call inside, with its origin, into ``log.askers``."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *rest: log.askers.append(
            f"sync by {origin(traceback.extract_stack())}") if "synchronizing" in str(message) else None
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")


@contextlib.contextmanager
def cpu_sync_ops(log) -> Iterator[None]:
    """The ops and host reads inside that would sync on CUDA (``log``: the sync test's ``OpLog``)."""
    from tests.test_step_syncs import HostReads
    with log, HostReads(log):
        yield


def counter(cuda: bool) -> tuple[Any, contextlib.AbstractContextManager]:
    """A log whose ``askers`` gathers the syncs, and the context that records them: CUDA's sync debug
    mode, or on CPU the sync test's detector (which needs pytest: kept off the GPU path)."""
    if cuda:
        log = types.SimpleNamespace(askers=[])
        return log, cuda_sync_warnings(log)
    from tests.test_step_syncs import OpLog
    log = OpLog(label=origin)
    return log, cpu_sync_ops(log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--log-every", type=int, default=4)
    parser.add_argument("--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="section.field=value")
    args = parser.parse_intermixed_args()
    cuda = torch.cuda.is_available()
    log, counting = counter(cuda)
    steps = PerStep(log)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.preset, [f"log.dir={tmp}", "log.name=syncs", f"train.max_steps={args.steps}",
                                        f"log.scalar_every={args.log_every}", "log.image_every=0",
                                        "train.checkpoint_every=0", *args.overrides])
        run = loop.setup(cfg, [steps], None, None)
        with counting:
            loop.train_one_epoch(run)
        run.bar.close()
        run.tb.close()
    device = torch.cuda.get_device_name() if cuda else "CPU (ops that would sync on CUDA)"
    print(f"torch {torch.__version__}, {device}, ZeRO-{cfg.train.zero_stage}, step mode {cfg.train.step_mode}, "
          f"precision {cfg.train.precision}, objective {cfg.objective.name}")
    print("| step | logging step | syncs | by |\n| --- | --- | --- | --- |")
    for i, found in enumerate(steps.steps, start=1):
        by = ", ".join(f"{n} {k.split(' by ')[1]}" for k, n in collections.Counter(found).most_common())
        print(f"| {i} | {'yes' if i % args.log_every == 0 or i == args.steps else 'no'} | {len(found)} | {by} |")


if __name__ == "__main__":
    run_main(main)
