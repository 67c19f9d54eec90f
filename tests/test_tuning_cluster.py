"""Sweeps on a Ray cluster of several nodes (tests/raycluster.py): where trials and workers land,
a two-node trial against the same trial on one node, a node lost mid-trial, the driver killed.

Every node is a raylet of its own with 1 CPU; the head runs no trial (0 CPUs). Storage is a
``file://`` URI, as a shared file system or object store would be given on a real cluster.
"""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml

from aadscale.config import load_config
from aadscale.engine import Callback, StepInfo
from aadscale.tuning import SweepOptions, run_sweep
from raycluster import add_worker, node_of, ray_cluster

pytestmark = pytest.mark.slow
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(tempfile.gettempdir()) / "aadscale-torch-extensions"))
ROOT = Path(__file__).resolve().parent.parent
# demo data: 1442 training images, 256 per step -> 5 steps per epoch, a Ray checkpoint after each;
# 16-pixel images: a third of the 32-pixel step time, the nodes and checkpoints are what is tested
TINY = ["data.batch_size=256", "data.image_size=16", "eval.subset=16", "eval.batch_size=16",
        "eval.attacks=clean,fgsm", "attack.steps=1", "data.workers=0", "log.image_every=0", "log.scalar_every=1",
        "optim.warmup_steps=0", "train.checkpoint_every=0", "eval.every_epochs=1"]


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


def _space(folder: Path, params: dict) -> Path:
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump({"search": "grid", "metric": "eval/fgsm", "params": params}))
    return path


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "model.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def cluster():
    """A head and two 1-CPU worker nodes for the whole module; on leaving, nothing of Ray remains."""
    with ray_cluster(workers=2, cpus=1) as c:
        yield c


@pytest.fixture(scope="module")
def packed(cluster, tmp_path_factory):
    """A 2-trial grid, two DeepSpeed workers per trial on one node (strict-pack), two epochs."""
    folder = tmp_path_factory.mktemp("packed")
    return run_sweep(SweepOptions(
        preset="demo", space=str(_space(folder, {"objective.lambda1": {"values": [0.1, 1.0]}})), name="packed",
        address=cluster.address, workers_per_trial=2, cpus_per_worker=0.49, placement="strict-pack",
        storage=f"file://{folder}/storage", overrides=[f"log.dir={folder}/runs", "train.epochs=2", *TINY]))


def test_trials_land_on_different_nodes_with_table_best_preset_and_plots(packed):
    rows = packed.rows
    assert [r["status"] for r in rows] == ["done", "done"] and all(r["step"] == 10 for r in rows)
    nodes = [r["nodes"].split(",") for r in rows]  # each worker's node, rank 0 first
    assert all(len(n) == 2 and n[0] == n[1] for n in nodes)  # a trial's two workers on one node
    assert nodes[0][0] != nodes[1][0]  # a 1-CPU node holds one trial: the two ran side by side, apart
    md, csv_path = packed.tables
    assert md.read_text().count("| done |") == 2 and "| nodes |" in md.read_text()
    assert len(csv_path.read_text().splitlines()) == 3
    for r in rows:
        run = packed.out_dir / f"trial-{r['trial']}"
        assert (run / "eval.json").is_file() and list((run / "tb").iterdir())
    assert packed.best["eval/fgsm"] == max(r["eval/fgsm"] for r in rows)
    assert load_config(str(packed.best_preset)).objective.lambda1 == packed.best["objective.lambda1"]
    assert [p.name for p in packed.plots] == ["sensitivity-objective.lambda1.png"]
    assert packed.experiment_path.startswith("file://")


def test_two_node_trial_killed_and_resumed_equals_the_one_node_trial(cluster, packed, tmp_path):
    import ray.cloudpickle
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    marker, steps = tmp_path / "killed", tmp_path / "steps.txt"
    outcome = run_sweep(SweepOptions(
        preset="demo", space=str(_space(tmp_path, {"objective.lambda1": {"values": [0.1]}})), name="spread",
        address=cluster.address, workers_per_trial=2, cpus_per_worker=0.49, placement="strict-spread",
        max_failures=1, storage=f"file://{tmp_path}/storage",
        overrides=[f"log.dir={tmp_path}/runs", "train.epochs=2", *TINY]), callbacks=(KillOnce(marker, steps),))
    (row,) = outcome.rows
    assert row["status"] == "done" and row["step"] == 10
    first, second = row["nodes"].split(",")
    assert first != second  # one worker on each node
    attempts: dict[str, list[int]] = {}
    for pid, step in (line.split() for line in steps.read_text().splitlines()):
        attempts.setdefault(pid, []).append(int(step))
    assert list(attempts.values()) == [[1, 2, 3, 4, 5, 6], [6, 7, 8, 9, 10]]  # resumed at the epoch-1 checkpoint
    (same,) = [r for r in packed.rows if r["objective.lambda1"] == 0.1]
    one_node = _weights(packed.out_dir / f"trial-{same['trial']}")
    two_nodes = _weights(outcome.out_dir / f"trial-{row['trial']}")
    # Bitwise: a sum of two ranks' gradients is rounded once whichever way the all-reduce goes
    # (DeepSpeed's shared-memory one on one node, gloo across two), and the resumed run replays
    # each rank's RNG and BatchNorm statistics and the loader position from the checkpoint.
    assert one_node.keys() == two_nodes.keys()
    assert all(torch.equal(one_node[k], two_nodes[k]) for k in one_node)


def _results(experiment: Path) -> dict[int, list[dict]]:
    """Tune's result rows per trial, keyed by the trial's train.max_steps."""
    out = {}
    for path in experiment.glob("run_trial_*/result.json"):
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # Tune is still writing this line
                break
        if rows:
            out[rows[-1]["config"]["train.max_steps"]] = rows
    return out


def _wait(what: str, ready, proc: subprocess.Popen, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        assert proc.poll() is None, f"the sweep ended before {what}"
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _results_table(path: Path) -> list[dict]:
    with path.open() as f:
        return [{k: (int(v) if k in ("train.max_steps", "step") else v) for k, v in row.items()}
                for row in csv.DictReader(f)]


RESUMED = (r"trial-\S+: resuming at step (\d+) from (file:///\S+) \(checkpoint reported by node {lost}, a node the "
           r"cluster has lost\); rank 0 now runs on node (\S+)")


def test_node_lost_mid_trial_then_driver_killed_resumes_across_nodes(cluster, tmp_path):
    add_worker(cluster)  # a spare for the lost node's trial
    # a short trial A and a longer one B: B's 20 steps after its first checkpoint outlast Tune's delay in
    # recording results (a full-suite run saw B's whole 10 steps pass before its first row was read)
    space = _space(tmp_path, {"train.max_steps": {"values": [5, 25]}})
    experiment = tmp_path / "storage" / "lost"
    sweep = [sys.executable, str(ROOT / "tuning/sweep.py"), "--address", cluster.address]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = tmp_path / "first.log"
    with first.open("w") as log:
        proc = subprocess.Popen(sweep + ["--space", str(space), "--name", "lost", "--cpus-per-worker", "0.99",
                                         "--max-concurrent", "2", "--storage", f"file://{tmp_path}/storage",
                                         f"log.dir={tmp_path}/runs", "train.epochs=5", *TINY],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            res = _wait("B checkpointed", lambda: (r := _results(experiment)) and 25 in r and r, proc)
            lost = res[25][-1]["nodes"]
            cluster.remove_node(node_of(cluster, lost), allow_graceful=False)  # B's node, B at its first epoch
            # B restarts on the spare node from its checkpoint while A ends; the head's sweep process is
            # killed outright once A is recorded done and B's rank 0 says it resumed, long before B can end
            resumed = _wait("A done and B resumed on another node", lambda: (r := _results(experiment)) and 5 in r
                            and r[5][-1]["final"] and re.search(RESUMED.format(lost=re.escape(lost)),
                                                                 first.read_text()), proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            proc.kill()
    a_done = {p.parent.name: p.stat().st_mtime for p in (tmp_path / "runs" / "lost").glob("trial-*/eval.json")}
    assert len(a_done) == 1
    assert int(resumed.group(1)) in (5, 10, 15) and resumed.group(2).startswith(f"file://{experiment}/train/")
    assert resumed.group(3) != lost

    done = subprocess.run(sweep + ["--resume", f"file://{experiment}"], capture_output=True, text=True,
                          env=env, timeout=400)
    assert done.returncode == 0, done.stderr[-5000:]
    rows = {r["train.max_steps"]: r for r in _results_table(tmp_path / "runs" / "lost" / "trials.csv")}
    assert {k: (r["status"], r["step"]) for k, r in rows.items()} == {5: ("done", 5), 25: ("done", 25)}
    again = re.findall(r"(trial-\S+): resuming at step (\d+) from file://", done.stdout + done.stderr)
    (a_run, a_time), = a_done.items()
    assert len(again) == 1 and again[0][0] != a_run  # B went on; the finished trial A was not run again
    assert int(again[0][1]) >= int(resumed.group(1))  # from B's newest checkpoint
    assert (tmp_path / "runs" / "lost" / a_run / "eval.json").stat().st_mtime == a_time
    assert lost not in rows[25]["nodes"]
