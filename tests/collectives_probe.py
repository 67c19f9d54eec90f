"""Run as a script: the project's collectives in a one-rank group whose backend takes one device type only.

``cudaonly``: gloo registered for CUDA tensors alone, so that torch itself refuses a CPU
tensor exactly as NCCL does ("No backend type associated with device type cpu");
``cpuonly``: gloo registered for CPU tensors alone. Every torch.distributed collective is
wrapped to record which aadscale function issued it and through which module. Prints one
``RESULT {json}`` line.
"""
from __future__ import annotations

import functools
import json
import os
import socket
import sys
import tempfile
import traceback
from pathlib import Path

import torch
import torch.distributed as dist

from aadscale.distributed import run_main

ROOT = Path(__file__).resolve().parent.parent
COLLECTIVES = ("all_reduce", "broadcast", "broadcast_object_list", "all_gather_object", "barrier")


def join(backend: str, device_type: str) -> None:
    """A group of one rank with gloo registered as ``backend`` for ``device_type`` only."""
    dist.Backend.register_backend(backend, lambda store, rank, size, timeout:
                                  dist.ProcessGroupGloo(store, rank, size, timeout), devices=[device_type])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


def issuer(stack: traceback.StackSummary) -> dict:
    """``via``: the package whose code called torch.distributed (deepspeed, or an aadscale module);
    ``caller``: the aadscale function that led there (the one that called the helper)."""
    inside = [f for f in stack if "/torch/" not in f.filename]
    last = inside[-1].filename
    via = "deepspeed" if "/deepspeed/" in last else str(Path(last).relative_to(ROOT))
    ours = [f"{Path(f.filename).relative_to(ROOT)}:{f.name}" for f in inside
            if f.filename.startswith(str(ROOT / "aadscale")) and "aadscale/distributed/" not in f.filename]
    return {"via": via, "caller": ours[-1] if ours else ""}


def record_collectives() -> list[dict]:
    """Wrap torch.distributed's collectives; each call appends its name and who issued it (``issuer``)."""
    calls: list[dict] = []

    def wrap(name, fn):
        @functools.wraps(fn)
        def recorded(*args, **kwargs):
            calls.append({"op": name, **issuer(traceback.extract_stack()[:-1])})
            return fn(*args, **kwargs)
        return recorded

    for name in COLLECTIVES:
        setattr(dist, name, wrap(name, getattr(dist, name)))
    return calls


def nccl_like() -> dict:
    """What torch and the helpers say to a CPU tensor in a CUDA-only group."""
    from aadscale.distributed import all_reduce_sum, group_device
    join("cudaonly", "cuda")
    out = {"group_device": str(group_device())}
    for name, fn in (("torch", dist.all_reduce), ("helper", all_reduce_sum)):
        try:
            fn(torch.ones(2))
            out[name] = "accepted"
        except RuntimeError as err:
            out[name] = f"{type(err).__name__}: {err}"
    dist.destroy_process_group()  # a CUDA-only group on a CPU machine cannot run the exit path's barrier
    return out


def helpers() -> dict:
    """Every helper in a one-rank CPU-only group: results and the collectives they ran."""
    from aadscale import distributed as d
    join("cpuonly", "cpu")
    calls = record_collectives()
    t = torch.tensor([1.0, 2.0])
    out = {"sum": d.all_reduce_sum(t).tolist(), "moved": d.sum_over_ranks(torch.tensor([3.0])).tolist(),
           "broadcast": d.broadcast_object({"a": 1}), "gather": d.all_gather_object("x")}
    d.barrier()
    return {**out, "ops": [c["op"] for c in calls]}


def call_sites() -> dict:
    """A short training run and an evaluation suite: which aadscale functions reached a collective, and how."""
    from aadscale.config import load_config
    from aadscale.data import build_dataset, ensure_demo_data
    from aadscale.engine import fit
    from aadscale.evaluate.suite import evaluate_suite
    from aadscale.models import build
    join("cpuonly", "cpu")
    calls = record_collectives()
    with tempfile.TemporaryDirectory() as tmp:
        root = str(ensure_demo_data(Path(tmp) / "demo"))
        fit(load_config("demo", [f"data.root={root}", f"log.dir={tmp}", "log.name=run", "data.batch_size=16",
                                 "data.workers=0", "attack.steps=1", "train.max_steps=2", "eval.subset=16",
                                 "eval.attacks=clean,fgsm", "eval.batch_size=16", "log.scalar_every=1",
                                 "log.image_every=0", "train.checkpoint_every=0"]))
        evaluate_suite(build("resnet9_small", 10), build_dataset(root, "val", image_size=32, dataset="demo"),
                       Path(tmp) / "suite", eps=8 / 255, attacks=["clean"], strong=[], limit=8, batch_size=8,
                       progress=False)
    return {"calls": calls}


def main() -> None:
    """Run the probe named by the first argument and print its RESULT line."""
    torch.set_num_threads(1)
    result = {"nccl-like": nccl_like, "helpers": helpers, "call-sites": call_sites}[sys.argv[1]]()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    run_main(main)
