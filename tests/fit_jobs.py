"""Launched script: ``fit`` the demo preset once per job, in order, on these ranks (several runs, one launch).

Argument: a JSON list of jobs ``{"overrides": [...], "resume": tag or null}``, each optionally with
``"signal": {"rank": r, "step": s}``: rank r sends itself SIGUSR1 at the end of step s (the run
then stops, and the process exits 75 through the exit path). Prints one ``RESULT {json}`` line
per rank and job with the step the run ended at.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys

import torch

from aadscale.config import load_config
from aadscale.distributed import init_distributed, run_main
from aadscale.engine import Callback, fit


class SignalAt(Callback):
    """Sends this process SIGUSR1 at the end of optimiser step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, info) -> None:
        if info.step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)


def main() -> None:
    jobs = json.loads(next(a for a in sys.argv[1:] if not a.startswith("--local_rank")))
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    torch.set_num_threads(1)
    rank = init_distributed().rank
    for job in jobs:
        signalled = job.get("signal", {})
        callbacks = [SignalAt(signalled["step"])] if signalled.get("rank") == rank else []
        result = fit(load_config("demo", job["overrides"]), callbacks, resume=job["resume"])
        os.write(1, f"RESULT {json.dumps({'rank': rank, 'step': result['step']})}\n".encode())


if __name__ == "__main__":
    run_main(main)
