"""Launched script: ``fit`` the demo preset once per job, in order, on these ranks (several runs, one launch).

Argument: a JSON list of jobs ``{"overrides": [...], "resume": tag or null}``. Prints one
``RESULT {json}`` line per rank and job with the step the run ended at.
"""
from __future__ import annotations

import json
import logging
import os
import sys

import torch

from aadscale.config import load_config
from aadscale.distributed import init_distributed, run_main
from aadscale.engine import fit


def main() -> None:
    jobs = json.loads(next(a for a in sys.argv[1:] if not a.startswith("--local_rank")))
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    torch.set_num_threads(1)
    rank = init_distributed().rank
    for job in jobs:
        result = fit(load_config("demo", job["overrides"]), resume=job["resume"])
        os.write(1, f"RESULT {json.dumps({'rank': rank, 'step': result['step']})}\n".encode())


if __name__ == "__main__":
    run_main(main)
