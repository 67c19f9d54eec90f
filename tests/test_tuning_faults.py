"""Sweeps that fail and go on: a killed trial worker resumes from its checkpoint; an interrupted sweep resumes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from aadscale.engine import Callback, StepInfo
from aadscale.tuning import SweepOptions, resume_sweep, run_sweep

pytestmark = pytest.mark.slow
# a JIT cache of our own (inherited by the Ray workers): the shared default one is rebuilt by other
# environments' DeepSpeed builds, which costs every worker a minute of compiling
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(tempfile.gettempdir()) / "aadscale-torch-extensions"))
ROOT = Path(__file__).resolve().parent.parent
# demo data: 1442 training images, 128 per rank and step on 2 ranks -> 5 steps per epoch
TINY = ["data.batch_size=256", "eval.subset=16", "eval.batch_size=16", "eval.attacks=clean,fgsm",
        "attack.steps=1", "data.workers=0", "log.image_every=0", "log.scalar_every=1",
        "optim.warmup_steps=0", "train.checkpoint_every=0"]


class KillOnce(Callback):
    """Test-only fault: rank 0 records its steps and dies at the first step of epoch 2, once."""

    def __init__(self, marker: Path, steps: Path) -> None:
        self.marker, self.steps = marker, steps

    def on_step_end(self, info: StepInfo) -> None:
        if os.environ.get("RANK", "0") != "0":
            return
        with self.steps.open("a") as f:
            f.write(f"{os.getpid()} {info.step}\n")
        if info.epoch >= 1 and not self.marker.exists():
            self.marker.write_text(str(info.step))
            os._exit(1)  # a killed worker process: no exception, no cleanup


def _space(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"metric": "eval/fgsm", "params": params}))
    return path


def test_killed_worker_resumes_from_its_checkpoint(tmp_path):
    import ray.cloudpickle
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    marker, steps = tmp_path / "killed", tmp_path / "steps.txt"
    outcome = run_sweep(SweepOptions(
        preset="demo", space=str(_space(tmp_path, {"objective.lambda1": {"values": [0.5]}})), name="faults", num_cpus=2,
        workers_per_trial=2, cpus_per_worker=0.99, max_failures=1,
        overrides=[f"log.dir={tmp_path}", "train.epochs=2", "eval.every_epochs=1", *TINY]),
        callbacks=(KillOnce(marker, steps),))
    killed_at = int(marker.read_text())
    attempts: dict[str, list[int]] = {}
    for line in steps.read_text().split("\n"):
        if line:
            pid, step = line.split()
            attempts.setdefault(pid, []).append(int(step))
    first, second = attempts.values()
    assert first == list(range(1, killed_at + 1)) and killed_at == 6
    assert second[0] == 6 and second[-1] == 10  # went on from the epoch-1 checkpoint (step 5), not from 0
    (row,) = outcome.rows
    assert row["status"] == "done" and row["step"] == 10
    run = Path(outcome.out_dir) / f"trial-{row['trial']}"
    assert json.loads((run / "eval.json").read_text())["step"] == 10
    assert list((run / "tb").iterdir())  # TensorBoard events in the usual run folder


def _eval_files(runs: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime for p in runs.glob("trial-*/eval.json")}


def test_interrupted_sweep_resumes_without_repeating_finished_trials(tmp_path):
    runs = tmp_path / "resumable"
    space = _space(tmp_path, {"train.max_steps": {"values": [2, 8]}})  # a short trial, then a longer one
    cmd = [sys.executable, str(ROOT / "tuning/sweep.py"), "--space", str(space),
           "--name", "resumable", "--num-cpus", "2", "--max-concurrent", "1", "--cpus-per-worker", "1.5",
           f"log.dir={tmp_path}", "train.epochs=8", *TINY]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while len(list(runs.glob("trial-*/config.yaml"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)  # the second trial's run folder: the first trial is over, the second training
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)  # Ctrl-C: Tune saves the experiment and stops
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 1, err[-3000:]
    assert "--resume" in out
    before = _eval_files(runs)
    assert len(before) == 1
    outcome = resume_sweep(str(tmp_path / "ray_results" / "resumable"))
    after = _eval_files(runs)
    assert len(after) == 2 and [r["status"] for r in outcome.rows] == ["done", "done"]
    (done,) = before
    assert after[done] == before[done]  # the finished trial was not run again
    assert outcome.best_preset is not None and outcome.best_preset.is_file()
