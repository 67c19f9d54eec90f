"""Two "nodes" on this machine train together: DeepSpeed hostfile launch, and the SLURM script saving on its
warning signal, requeueing itself and resuming."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dslaunch import ROOT, finish, free_port, run_deepspeed_nodes, start

FAKE_SRUN = """#!/usr/bin/env bash
# srun stand-in: run the command once per node of the allocation and pass USR1 and TERM on to every
# node's task, as SLURM would; exit with the highest code.
while [[ "$1" == --* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NNODES; i++)); do SLURM_NODEID=$i SLURM_PROCID=$i "$@" & pids+=($!); done
trap 'kill -USR1 "${pids[@]}" 2>/dev/null' USR1
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM
rc=0
for pid in "${pids[@]}"; do
  while :; do code=0; wait "$pid" || code=$?; kill -0 "$pid" 2>/dev/null || break; done
  (( code > rc )) && rc=$code
done
exit $rc
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
# scontrol stand-in: `show hostnames LIST` prints one loopback address per node; `requeue ID` is logged.
if [[ "$1" == requeue ]]; then echo "$2" >> "$FAKE_SLURM_LOG"; exit 0; fi
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


def start_slurm_script(tmp_path: Path, launcher: str, args: list[str], restart: int = 0) -> subprocess.Popen:
    """``launchers/slurm_train.sh args`` as SLURM would start it (job 4242, 2 nodes, fake srun/scontrol)."""
    bin_dir = tmp_path / "bin"
    if not bin_dir.is_dir():
        fake_slurm(tmp_path)
    env = {
        "PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]]),
        "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_NNODES": "2", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "aa",
        "SLURM_RESTART_COUNT": str(restart), "SLURM_SUBMIT_DIR": str(ROOT), "LAUNCHER": launcher,
        "GPUS_PER_NODE": "1", "MASTER_PORT": str(free_port()), "PYTHON": sys.executable,
        "HOSTFILE": str(tmp_path / "hostfile"), "AADSCALE_EXIT_DIR": str(tmp_path / f"exit{restart}"),
        "FAKE_SLURM_LOG": str(tmp_path / "requeued"),
    }
    return start(["bash", str(ROOT / "launchers" / "slurm_train.sh"), *args], env=env, cwd=tmp_path)


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
@pytest.mark.parametrize("launcher, requeued_start", [("deepspeed", True), ("torchrun", False)])
def test_a_slurm_job_saves_on_its_warning_signal_requeues_itself_and_resumes(tmp_path, launcher, requeued_start):
    # what the requeued start adds (--resume auto) does not depend on the launcher: run it once
    from aadscale.data import ensure_demo_data
    root = ensure_demo_data(tmp_path / "demo")
    args = ["--preset", "demo", "--data", str(root), f"log.dir={tmp_path / 'runs'}", "model.name=lenet_small",
            "model.in_channels=3", "attack.name=step_ll", "attack.steps=1", "data.batch_size=64",
            "data.image_size=16", "data.workers=1", "train.max_steps=20", "train.checkpoint_every=2",
            "log.scalar_every=2", "log.image_every=0", "eval.subset=16", "eval.batch_size=16", "eval.attacks=clean"]
    run = tmp_path / "runs" / "aa-4242"  # no --name given: the job's name and id
    job = start_slurm_script(tmp_path, launcher, args)
    while not (run / "checkpoints" / "step2").is_dir() and job.poll() is None:
        time.sleep(0.05)
    job.send_signal(signal.SIGUSR1)  # what #SBATCH --signal=B:USR1@300 sends before the time limit
    first = finish([job], timeout=300)[0]
    out = first.stdout + first.stderr
    assert first.returncode == 75, out[-3000:]
    assert "2 rank(s)" in out and "SIGUSR1 reached rank(s) 0, 1" in out, out[-3000:]
    stopped = int((run / "checkpoints" / "latest").read_text().removeprefix("step"))
    assert 2 < stopped < 20
    assert (tmp_path / "requeued").read_text() == "4242\n"
    if not requeued_start:
        return
    assert (tmp_path / "hostfile").read_text() == "127.0.0.1 slots=1\n127.0.0.2 slots=1\n"
    second = finish([start_slurm_script(tmp_path, launcher, args, restart=1)], timeout=300)[0]
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-3000:]
    assert "adding --resume auto" in out and f"resumed from step{stopped} at step {stopped}" in out
    assert json.loads((run / "eval.json").read_text())["step"] == 20
    assert (tmp_path / "requeued").read_text() == "4242\n"  # no second requeue


def test_slurm_script_refuses_an_unknown_launcher(tmp_path):
    proc = finish([start_slurm_script(tmp_path, "mpirun", [])], timeout=60)[0]
    assert proc.returncode == 2 and "LAUNCHER=mpirun must be deepspeed or torchrun" in proc.stderr
