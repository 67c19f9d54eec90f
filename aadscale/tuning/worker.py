"""What each Ray Train worker of a trial runs: ``fit(cfg)`` reporting every epoch with a Ray checkpoint."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from aadscale.config import from_dict
from aadscale.distributed import shutdown
from aadscale.engine import Callback, StepInfo, fit
from aadscale.engine.checkpoint import files_of_rank
from aadscale.tracking import RunFolder
from aadscale.tuning.space import objective_metrics
from aadscale.tuning.storage import checkpoint_uri

ENGINE_JSON = "aadscale_checkpoint.json"
log = logging.getLogger("aadscale.tuning")


def node_label(ip: str, node_id: str) -> str:
    """A Ray node as ``<ip>/<first 8 hex digits of its id>`` (nodes may share an IP)."""
    return f"{ip}/{node_id[:8]}"


def node_name() -> str:
    """This process's Ray node, as ``node_label``."""
    import ray
    return node_label(ray.util.get_node_ip_address(), ray.get_runtime_context().get_node_id())


def live_nodes() -> set[str]:
    """``node_label`` of every node the cluster holds alive now."""
    import ray
    return {node_label(n["NodeManagerAddress"], n["NodeID"]) for n in ray.nodes() if n["Alive"]}


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem: copy instead
        shutil.copy2(src, dst)


def stage_checkpoint(folder: Path, rank: int, meta: dict) -> Path:
    """A temporary folder holding this rank's files of the engine checkpoint ``folder`` (rank 0: also the
    record of every rank's files, ``manifest.json``, and meta).

    Every rank reports its own part; Ray Train merges the parts into one checkpoint in storage,
    so ranks on machines without a shared disk still produce a complete checkpoint.
    """
    staged = Path(tempfile.mkdtemp(prefix="aadscale-ckpt-"))
    for name in files_of_rank([p.name for p in folder.iterdir() if p.is_file()], rank):
        _link_or_copy(folder / name, staged / name)
    if rank == 0:
        (staged / ENGINE_JSON).write_text(json.dumps(meta))
    return staged


def restore_tag(source: Path, checkpoints: Path, key: str) -> str:
    """Copy the Ray checkpoint folder ``source`` to a tag under the run's ``checkpoints/``; return the tag.

    Always from ``source`` (the sweep's storage), never from a copy a node may hold: the
    files go to ``ray-<hash of key>``, each written under a temporary name and renamed, so
    ranks sharing a disk may copy the same files at once. The copy holds the checkpoint's record of
    its files, which the resume verifies.
    """
    tag = "ray-" + hashlib.sha1(key.encode()).hexdigest()[:12]
    target = checkpoints / tag
    target.mkdir(parents=True, exist_ok=True)
    for src in source.iterdir():
        dst = target / src.name
        if src.name == ENGINE_JSON or (dst.is_file() and dst.stat().st_size == src.stat().st_size):
            continue
        tmp = target / f".{src.name}.{os.getpid()}.tmp"
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    return tag


class EpochReporter(Callback):
    """Reports metrics and a Ray checkpoint of the engine's checkpoint after every epoch, and at the end."""

    def __init__(self, rank: int, weights: dict[str, float]) -> None:
        self.rank, self.weights = rank, weights
        self.latest: StepInfo | None = None
        self.reported: Path | None = None

    def on_checkpoint(self, info: StepInfo) -> None:
        self.latest = info

    def on_epoch_end(self, info: StepInfo) -> None:
        metrics = info.metrics if info.evaluated else {k: v for k, v in info.metrics.items()
                                                       if not k.startswith("eval/")}
        self.report(info.step, info.epoch, metrics)  # eval/* only from an epoch the engine evaluated

    def finish(self, result: dict) -> None:
        """The last report: the final evaluation, with the final checkpoint if it is new."""
        accuracy = {f"eval/{k}": v for k, v in result["eval"].items()}
        self.report(result["step"], result["epoch"], {**result["train"], **accuracy}, final=True)

    def report(self, step: int, epoch: int, metrics: dict, final: bool = False) -> None:
        """Every rank calls this (Ray Train waits for all of them); rank 0's metrics reach Tune."""
        import ray.train
        accuracy = {k[5:]: v for k, v in metrics.items() if k.startswith("eval/")}
        out = {"step": step, "epoch": epoch, "final": int(final),
               **{f"train/{k}": float(v) for k, v in metrics.items()
                  if not k.startswith("eval/") and isinstance(v, (int, float))},
               **(objective_metrics(accuracy, self.weights) if accuracy else {}), "node": node_name()}
        info = self.latest
        if info is None or info.checkpoint == self.reported:
            ray.train.report(out)
            return
        meta = {"tag": info.checkpoint.name, "run_dir": str(info.run_dir), "step": info.step, "node": out["node"]}
        staged = stage_checkpoint(info.checkpoint, self.rank, meta)
        try:
            ray.train.report(out, checkpoint=ray.train.Checkpoint.from_directory(str(staged)))
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        self.reported = info.checkpoint


def resume_message(trial: str, meta: dict, source: str) -> str:
    """What a restarted trial says: the step and storage path it resumes from, where it ran and runs now."""
    writer, here = meta.get("node", "?"), node_name()
    lost = "" if writer in live_nodes() else ", a node the cluster has lost"
    return (f"{trial}: resuming at step {meta['step']} from {source} (checkpoint reported by node "
            f"{writer}{lost}); rank 0 now runs on node {here}")


def train_worker(loop_config: dict) -> None:
    """The Ray Train loop of one trial: restore the newest Ray checkpoint if any, ``fit``, leave the groups."""
    import ray.train
    cfg = from_dict(loop_config["config"])
    rank = ray.train.get_context().get_world_rank()
    checkpoints = RunFolder(cfg.log.dir, cfg.log.name).checkpoints
    resume = "auto"  # no Ray checkpoint: continue whatever this run folder already holds
    checkpoint = ray.train.get_checkpoint()  # set when Ray Train retries this trial's workers
    if checkpoint is None and loop_config.get("restore_from"):  # a Tune restart, or PBT's donor
        checkpoint = ray.train.Checkpoint(loop_config["restore_from"])
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = restore_tag(Path(folder), checkpoints, checkpoint.path)
            meta = json.loads((Path(folder) / ENGINE_JSON).read_text())
        if rank == 0:
            source = checkpoint_uri(checkpoint.path, loop_config["storage"])
            log.warning(resume_message(cfg.log.name, meta, source))
    reporter = EpochReporter(rank, loop_config.get("weights") or {})
    result = fit(cfg, [reporter, *loop_config.get("callbacks", ())], resume=resume,
                 allow_changes=loop_config.get("allow_changes", ()))
    reporter.finish(result)
    shutdown()  # the exit path's first half: Ray owns this process and ends it
