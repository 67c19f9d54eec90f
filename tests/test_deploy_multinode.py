"""Two "nodes" on this machine train together: DeepSpeed hostfile launch and the SLURM script."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dslaunch import ROOT, free_port, run, run_deepspeed_nodes
from test_distributed_launch import SCRIPT, check_data_parallel_step, results

FAKE_SRUN = """#!/usr/bin/env bash
# srun stand-in: run the command once per node of the allocation, as SLURM would.
while [[ "$1" == --* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NNODES; i++)); do SLURM_NODEID=$i SLURM_PROCID=$i "$@" & pids+=($!); done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
exit $rc
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
# scontrol stand-in: `scontrol show hostnames LIST` prints one loopback address per node.
[[ "$1 $2" == "show hostnames" ]] || exit 1
for ((i = 1; i <= SLURM_NNODES; i++)); do echo "127.0.0.$i"; done
"""


def fake_slurm(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def run_slurm_script(tmp_path: Path, launcher: str, args: list[str]) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.pathsep.join([str(fake_slurm(tmp_path)), str(Path(sys.executable).parent),
                                 os.environ["PATH"]]),  # fake srun/scontrol first
        "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_NNODES": "2", "SLURM_JOB_ID": "4242",
        "SLURM_SUBMIT_DIR": str(ROOT), "LAUNCHER": launcher, "GPUS_PER_NODE": "1",
        "MASTER_PORT": str(free_port()), "AADSCALE_SCRIPT": str(SCRIPT),
        "HOSTFILE": str(tmp_path / "hostfile"),
    }
    return run(["bash", str(ROOT / "launchers" / "slurm_train.sh"), *args], timeout=300, env=env,
               cwd=tmp_path)


@pytest.mark.slow
def test_two_nodes_train_the_demo_preset_with_a_hostfile(tmp_path):
    from aadscale.data import ensure_demo_data
    root = ensure_demo_data(tmp_path / "demo")
    procs = run_deepspeed_nodes(ROOT / "launchers" / "train_imagenet.py", [
        "--preset", "demo", "--data", str(root), "--name", "nodes", f"log.dir={tmp_path}",
        "train.zero_stage=2", "train.max_steps=2", "data.batch_size=16", "data.workers=0",
        "attack.steps=1", "eval.subset=16", "eval.attacks=clean", "log.image_every=0"], nodes=2, timeout=300)
    for proc in procs:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = "".join(p.stdout + p.stderr for p in procs)
    assert "2 rank(s)" in out and "finished at step 2" in out
    assert (tmp_path / "nodes" / "eval.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["deepspeed", "torchrun"])
def test_slurm_script_trains_on_two_simulated_nodes(tmp_path, launcher):
    proc = run_slurm_script(tmp_path, launcher, ["--zero", "2"])
    check_data_parallel_step(results(proc, 2), 2)
    if launcher == "deepspeed":
        assert (tmp_path / "hostfile").read_text() == "127.0.0.1 slots=1\n127.0.0.2 slots=1\n"


def test_slurm_script_refuses_an_unknown_launcher(tmp_path):
    proc = run_slurm_script(tmp_path, "mpirun", [])
    assert proc.returncode == 2 and "LAUNCHER=mpirun must be deepspeed or torchrun" in proc.stderr
