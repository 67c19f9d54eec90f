"""A sweep on a local Ray (no cluster), stopped with Ctrl-C and resumed: finished trials are not repeated.
Trials across nodes, killed workers and lost nodes: tests/test_tuning_cluster.py."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from aadscale.tuning import resume_sweep

pytestmark = pytest.mark.slow
# a JIT cache of our own (inherited by the Ray workers): the shared default one is rebuilt by other
# environments' DeepSpeed builds, which costs every worker a minute of compiling
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(tempfile.gettempdir()) / "aadscale-torch-extensions"))
ROOT = Path(__file__).resolve().parent.parent
# demo data: 1442 training images, 256 per step -> 5 steps per epoch
TINY = ["data.batch_size=256", "eval.subset=16", "eval.batch_size=16", "eval.attacks=clean,fgsm",
        "attack.steps=1", "data.workers=0", "log.image_every=0", "log.scalar_every=1",
        "optim.warmup_steps=0", "train.checkpoint_every=0"]


def _space(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"metric": "eval/fgsm", "params": params}))
    return path


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
