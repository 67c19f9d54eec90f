"""Run a script under the DeepSpeed launcher or torchrun on CPU ranks, for tests (not a test module)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env(env: dict | None = None) -> dict:
    """The environment for launched ranks: one thread each, the source tree importable."""
    out = dict(os.environ)
    out.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), out.get("PYTHONPATH", "")])))
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        out.pop(name, None)  # a test process inside a job must not leak its own rank
    out.update(env or {})
    return out


def _run(cmd: list[str], timeout: int, env: dict | None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=launch_env(env), capture_output=True, text=True,
                          timeout=timeout)


def run_deepspeed(script: Path, args: list[str], nprocs: int, timeout: int,
                  env: dict | None = None) -> subprocess.CompletedProcess:
    """``deepspeed --num_gpus nprocs script args`` on CPU with a free master port."""
    launcher = Path(sys.executable).with_name("deepspeed")
    cmd = [str(launcher), "--num_gpus", str(nprocs), "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(script), *args]
    return _run(cmd, timeout, env)


def run_torchrun(script: Path, args: list[str], nprocs: int, timeout: int,
                 env: dict | None = None) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node nprocs script args`` (standalone) on CPU with a free master port."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
           "--nproc_per_node", str(nprocs), "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(script), *args]
    return _run(cmd, timeout, env)
