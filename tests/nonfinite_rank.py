"""Launched script: the loss of one rank only turns NaN at step 2; every rank must stop, at the same step.

Arguments: the demo data folder, the run folder's parent, the rank to poison, then config
overrides. Prints one ``RESULT {json}`` line per rank with the error it stopped with.
"""
from __future__ import annotations

import json
import os
import sys

import torch

from aadscale.config import load_config
from aadscale.distributed import init_distributed, run_main
from aadscale.engine import NonFiniteLossError, fit
from aadscale.engine import trainer as loop


def main() -> None:
    root, log_dir, bad_rank, *overrides = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
    torch.set_num_threads(1)
    ctx = init_distributed()
    real, calls = loop.compute_loss, {"n": 0}

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2 and ctx.rank == int(bad_rank):
            out["loss"] = out["loss"] * float("nan")
        return out

    loop.compute_loss = poisoned
    cfg = load_config("demo", [f"data.root={root}", f"log.dir={log_dir}", "log.name=run", *overrides])
    try:
        fit(cfg)
        error = ""
    except NonFiniteLossError as err:
        error = str(err)
    os.write(1, f"RESULT {json.dumps({'rank': ctx.rank, 'error': error})}\n".encode())


if __name__ == "__main__":
    run_main(main)
