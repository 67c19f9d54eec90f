"""A Ray cluster of several nodes inside this machine, for tests (not a test module).

``ray.cluster_utils.Cluster`` starts each node as its own raylet with its own node id,
object store and resources: trials and workers are scheduled across them as on a real
cluster, and ``remove_node`` kills one with everything on it.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterator

import psutil

RAY_PROCESS = ("raylet", "gcs_server", "plasma_store", "ray::", "default_worker.py",
               "dashboard/agent.py", "log_monitor.py", "runtime_env/agent", "monitor.py")
NODE_ARGS = {"object_store_memory": 80 * 1024 ** 2, "include_dashboard": False}


def ray_processes() -> set[int]:
    """PIDs of this user's Ray processes (raylets, GCS, workers, agents)."""
    out = set()
    for proc in psutil.process_iter(["pid", "cmdline", "uids"]):
        with contextlib.suppress(psutil.Error, TypeError):
            if proc.info["uids"].real == os.getuid() and any(
                    tag in " ".join(proc.info["cmdline"] or ()) for tag in RAY_PROCESS):
                out.add(proc.info["pid"])
    return out


def shm_entries() -> set[str]:
    """What /dev/shm holds (Ray's object stores and DeepSpeed's all-reduce buffers live there)."""
    return {p.name for p in Path("/dev/shm").iterdir()}


def wait_gone(pids: set[int], timeout: float = 60.0) -> set[int]:
    """Wait up to ``timeout`` s for ``pids`` to exit; the ones still running."""
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
        time.sleep(0.5)
    return pids


def node_of(cluster, name: str):
    """The cluster's node whose ``<ip>/<id prefix>`` (aadscale.tuning.worker.node_name) is ``name``."""
    prefix = name.rpartition("/")[2]
    (node,) = [n for n in cluster.list_all_nodes() if n.node_id.startswith(prefix)]
    return node


def add_worker(cluster, cpus: int = 1):
    """Start one more worker node of ``cpus`` CPUs and wait until the cluster lists it."""
    node = cluster.add_node(num_cpus=cpus, **NODE_ARGS)
    cluster.wait_for_nodes()
    return node


@contextlib.contextmanager
def ray_cluster(workers: int = 2, cpus: int = 1) -> Iterator:
    """A head that runs nothing (0 CPUs) and ``workers`` nodes of ``cpus`` CPUs; nothing left behind after.

    Leaving, every Ray process the cluster started has exited and /dev/shm holds nothing new.
    """
    from ray.cluster_utils import Cluster
    processes, shm = ray_processes(), shm_entries()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, **NODE_ARGS})
    try:
        for _ in range(workers):
            add_worker(cluster, cpus)
        yield cluster
    finally:
        cluster.shutdown()
    assert not wait_gone(ray_processes() - processes), "Ray processes outlived the cluster"
    assert shm_entries() <= shm, f"left in /dev/shm: {sorted(shm_entries() - shm)}"
