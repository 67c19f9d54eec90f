"""Run a script under the DeepSpeed launcher or torchrun on CPU ranks, for tests (not a test module)."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shm_segments() -> set[str]:
    """DeepSpeed's CPU all-reduce segments in /dev/shm (each one 69 MB of RAM while it exists)."""
    return {p.name for p in Path("/dev/shm").glob("deepspeed_allreduce_buffer_*")}


def launch_env(env: dict | None = None) -> dict:
    """The environment for launched ranks: one thread each, the source tree importable, the venv first on PATH.

    The venv first on PATH matters: DeepSpeed's CPU comm op is built by torch with the
    first ``ninja`` on PATH, and two ninja versions (the venv's and the system's) hash
    the build command differently, so mixing them rebuilds the shared op every time.
    """
    out = dict(os.environ)
    out.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), out.get("PYTHONPATH", "")])),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), out.get("PATH", "")]))
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        out.pop(name, None)  # a test process inside a job must not leak its own rank
    out.update(env or {})
    return out


def start(cmd: list[str], env: dict | None = None, cwd: Path = ROOT) -> subprocess.Popen:
    """Start ``cmd`` in its own process group (so that a timeout can end the launcher's ranks too)."""
    return subprocess.Popen(cmd, cwd=cwd, env=launch_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(procs: list[subprocess.Popen], timeout: int) -> list[subprocess.CompletedProcess]:
    """Wait for every process; past ``timeout`` seconds kill all their process groups and raise."""
    deadline = time.monotonic() + timeout
    try:
        outs = [p.communicate(timeout=max(deadline - time.monotonic(), 1)) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
        raise
    return [subprocess.CompletedProcess(p.args, p.returncode, out, err)
            for p, (out, err) in zip(procs, outs)]


def run(cmd: list[str], timeout: int, env: dict | None = None,
        cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run ``cmd`` to the end with the launch environment; its whole process group dies on timeout."""
    return finish([start(cmd, env, cwd)], timeout)[0]


def run_deepspeed(script: Path, args: list[str], nprocs: int, timeout: int,
                  env: dict | None = None) -> subprocess.CompletedProcess:
    """``deepspeed --num_gpus nprocs script args`` on CPU with a free master port."""
    launcher = Path(sys.executable).with_name("deepspeed")
    cmd = [str(launcher), "--num_gpus", str(nprocs), "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(script), *args]
    return run(cmd, timeout, env)


def run_torchrun(script: Path, args: list[str], nprocs: int, timeout: int,
                 env: dict | None = None) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node nprocs script args`` (standalone) on CPU with a free master port."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
           "--nproc_per_node", str(nprocs), "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(script), *args]
    return run(cmd, timeout, env)


def run_deepspeed_nodes(script: Path, args: list[str], nodes: int, timeout: int,
                        env: dict | None = None) -> list[subprocess.CompletedProcess]:
    """``nodes`` simulated nodes on loopback: one DeepSpeed launcher each (``--no_ssh``), one CPU rank per node.

    The hostfile names the nodes 127.0.0.1, 127.0.0.2, ... (all loopback), as
    ``deepspeed --hostfile H --no_ssh --node_rank i`` is run on every node of a cluster.
    """
    launcher = Path(sys.executable).with_name("deepspeed")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        hostfile = Path(tmp) / "hostfile"
        hostfile.write_text("".join(f"127.0.0.{i + 1} slots=1\n" for i in range(nodes)))
        return finish([start([str(launcher), "--hostfile", str(hostfile), "--no_ssh",
                              "--node_rank", str(i), "--master_addr", "127.0.0.1",
                              "--master_port", str(port), str(script), *args], env)
                       for i in range(nodes)], timeout)
