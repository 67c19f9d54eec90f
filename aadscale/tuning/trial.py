"""One Tune trial: a Ray Train ``TorchTrainer`` over the engine, its reports forwarded to Tune with checkpoints."""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aadscale.config import Config, from_dict
from aadscale.tuning.space import with_params
from aadscale.tuning.storage import checkpoint_uri

V2_ENV = "RAY_TRAIN_V2_ENABLED"
POINTER = "train_checkpoint.json"
log = logging.getLogger("aadscale.tuning")


def require_train_v2() -> None:
    """Select Ray Train V2 (the Tune integration this module uses); it is chosen when ray.train is imported."""
    import sys
    if "ray.train" not in sys.modules:
        os.environ.setdefault(V2_ENV, "1")
    from ray.train.v2._internal.constants import is_v2_enabled
    if not is_v2_enabled():
        raise RuntimeError(f"Ray Train V1 is active; set {V2_ENV}=1 in the environment (and on every "
                           "node: `RAY_TRAIN_V2_ENABLED=1 ray start ...`) before ray.train is imported")


require_train_v2()
import ray.train  # noqa: E402  (after the V2 switch above)


@dataclass(frozen=True)
class TrialSetup:
    """Everything a trial needs besides its sampled parameters (saved with the sweep for --resume)."""
    base: dict
    runs_dir: str
    train_storage: str
    metric: str
    weights: dict[str, float] = field(default_factory=dict)
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 2
    placement: str = "PACK"
    callbacks: tuple = ()


def trial_config(setup: TrialSetup, params: dict[str, Any], trial_id: str) -> Config:
    """The base config with the trial's parameters, writing to ``<runs_dir>/trial-<id>/``."""
    cfg = with_params(from_dict(setup.base), params)
    cfg.log.dir, cfg.log.name = setup.runs_dir, f"trial-{trial_id}"
    return cfg


def read_pointer(checkpoint) -> dict:
    """What a Tune checkpoint holds: ``uri`` of the Ray Train checkpoint, and the ``trial`` whose ``final``
    metrics it carries once that trial has finished (PBT hands a donor's to another); {} without one."""
    if checkpoint is None:
        return {}
    with checkpoint.as_directory() as folder:
        return json.loads((Path(folder) / POINTER).read_text())


class ForwardReports(ray.train.UserCallback):
    """Runs in the Ray Train controller: hands rank 0's metrics and the checkpoint URI to the trial."""

    def __init__(self, queue, storage: str) -> None:
        self.queue, self.storage = queue, storage

    def after_report(self, run_context, metrics, checkpoint) -> None:
        uri = checkpoint_uri(checkpoint.path, self.storage) if checkpoint else None
        nodes = ",".join(m.pop("node", "?") for m in metrics)  # every rank's node, in rank order
        self.queue.put(({**metrics[0], "nodes": nodes}, uri))


def _report_to_tune(metrics: dict, uri: str | None) -> None:
    from ray import tune
    if uri is None:
        tune.report(metrics)
        return
    folder = tempfile.mkdtemp(prefix="aadscale-pointer-")
    try:
        final = metrics if metrics.get("final") else None
        Path(folder, POINTER).write_text(json.dumps({"uri": uri, "step": metrics.get("step"), "final": final,
                                                     "trial": tune.get_context().get_trial_id()}))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_trial(params: dict, setup: TrialSetup) -> None:
    """The Tune trainable: train ``params`` on ``setup.workers`` Ray Train workers, reporting each epoch.

    Ray Train retries failed workers from the newest Ray checkpoint (``max_failures``); a
    trial Tune restarts (FailureConfig, Tuner.restore, PBT) continues from the engine
    checkpoint its last Tune checkpoint points to.
    """
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Empty, Queue

    from aadscale.config import to_dict
    from aadscale.tuning.worker import train_worker

    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(setup, params, trial_id)
    pointer = read_pointer(tune.get_checkpoint())
    if pointer.get("final") and pointer.get("trial") == trial_id:  # finished; the sweep stopped before Tune saw it
        log.warning("%s: finished at step %s before the sweep stopped; not run again", cfg.log.name, pointer["step"])
        tune.report(pointer["final"])
        return
    uri = pointer.get("uri")
    queue = Queue(actor_options={"num_cpus": 0})
    resources = {"CPU": setup.cpus_per_worker, **({"GPU": setup.gpus_per_worker} if setup.gpus_per_worker else {})}
    trainer = TorchTrainer(
        train_worker,
        # PBT restores a donor's checkpoint under mutated parameters: the swept fields may differ on resume
        train_loop_config={"config": to_dict(cfg), "restore_from": uri, "storage": setup.train_storage,
                           "weights": setup.weights, "callbacks": setup.callbacks, "allow_changes": sorted(params)},
        scaling_config=ray.train.ScalingConfig(num_workers=setup.workers, use_gpu=setup.gpus_per_worker > 0,
                                               resources_per_worker=resources, placement_strategy=setup.placement),
        run_config=ray.train.RunConfig(
            name=f"{cfg.log.name}-{uuid.uuid4().hex[:8]}",  # a fresh Train run per Tune attempt
            storage_path=setup.train_storage,
            failure_config=ray.train.FailureConfig(max_failures=setup.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=3),
            callbacks=[ForwardReports(queue, setup.train_storage)]))
    outcome: dict = {}

    def train() -> None:
        try:
            trainer.fit()
        except BaseException as err:  # handed to the trial thread below, which raises it to Tune
            outcome["error"] = err

    thread = threading.Thread(target=train, name="aadscale-train", daemon=True)
    thread.start()
    # tune.report must come from this (the trial's) thread; Ray Train's reports arrive on the queue
    while thread.is_alive() or not queue.empty():
        try:
            metrics, new_uri = queue.get(timeout=1.0)
        except Empty:
            continue
        uri = new_uri or uri
        if setup.metric in metrics:  # Tune wants the objective in every result
            _report_to_tune(metrics, uri)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
