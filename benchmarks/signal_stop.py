"""From a stop signal to the job's exit: a 2-rank run under the relay, signalled after its first checkpoint.

    .venv/bin/python benchmarks/signal_stop.py                       # CPU ranks, DeepSpeed's launcher, 3 runs
    .venv/bin/python benchmarks/signal_stop.py --launcher torchrun --runs 5 log.scalar_every=10

Each run trains the demo preset (lenet, 16 px unless overridden) under
``python -m aadscale.distributed.relay -- <launcher>``, sends SIGTERM to the relay once
``checkpoints/step2`` exists, and reads the ranks' "stopping at step N, X s after SIGTERM"
lines. The table gives per run: the steps run after the signal, the seconds to the stop
(the step boundary every rank agreed on, its checkpoint written), and to the relay's exit.
"""
from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aadscale.data import ensure_demo_data
from aadscale.distributed import run_main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from dslaunch import free_port, start  # noqa: E402

TINY = ["model.name=lenet_small", "model.in_channels=3", "attack.name=step_ll", "attack.steps=1",
        "data.batch_size=64", "data.image_size=16", "data.workers=1", "train.max_steps=100000", "train.epochs=1000",
        "log.scalar_every=4", "train.checkpoint_every=2", "log.image_every=0", "eval.subset=16",
        "eval.batch_size=16", "eval.attacks=clean"]


def one_run(folder: Path, data: Path, launcher: str, overrides: list[str]) -> dict:
    """One signalled run: steps after the signal, seconds to the stop and to the exit, the exit code."""
    script = ROOT / "launchers" / "train_imagenet.py"
    args = ["--preset", "demo", "--data", str(data), "--name", "run", f"log.dir={folder}", *TINY, *overrides]
    if launcher == "deepspeed":
        cmd = [str(Path(sys.executable).with_name("deepspeed")), "--num_gpus", "2"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script), *args]
    job = start([sys.executable, "-m", "aadscale.distributed.relay", "--", *cmd])
    while not (folder / "run" / "checkpoints" / "step2").is_dir():
        if job.poll() is not None:
            raise RuntimeError(f"the run ended before its first checkpoint:\n{job.stderr.read()[-3000:]}")
        time.sleep(0.01)
    sent = time.monotonic()
    job.send_signal(signal.SIGTERM)
    out, err = job.communicate(timeout=600)
    exited = time.monotonic() - sent
    stops = [(int(m[1]), float(m[2])) for m in re.finditer(r"stopping at step (\d+), ([\d.]+) s after", out + err)]
    if job.returncode != 75 or not stops:
        raise RuntimeError(f"exit code {job.returncode}, no stop logged:\n{(out + err)[-3000:]}")
    return {"after": max(s for s, _ in stops) - 2, "stop_s": max(t for _, t in stops), "exit_s": exited}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--launcher", choices=("deepspeed", "torchrun"), default="deepspeed")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("overrides", nargs="*", help="section.field=value for the run")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = ensure_demo_data(Path(tmp) / "demo")
        rows = [one_run(Path(tmp) / f"r{i}", data, args.launcher, args.overrides) for i in range(args.runs)]
    print(f"| run | steps after the signal | signal -> stop (s) | signal -> exit 75 (s) |  ({args.launcher})")
    print("| --- | --- | --- | --- |")
    for i, r in enumerate(rows):
        print(f"| {i} | {r['after']} | {r['stop_s']:.2f} | {r['exit_s']:.2f} |")


if __name__ == "__main__":
    run_main(main)
