"""Who am I in the job: rank, world and device under the DeepSpeed launcher, torchrun or a plain process."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from aadscale.distributed.collectives import barrier, in_group
from aadscale.errors import InputError

LAUNCHER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on global rank 0 (the one that logs and writes files)."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    if not raw.isdigit():
        raise InputError(f"environment variable {name}={raw!r} must be a non-negative integer; "
                         "it is set by the DeepSpeed launcher or torchrun, do not set it by hand")
    return int(raw)


def init_distributed(backend: str | None = None) -> DistContext:
    """Join the job's process group (through DeepSpeed's comm layer) and pick this rank's device.

    Launched (DeepSpeed launcher or torchrun: RANK/WORLD_SIZE/... set), the group is
    created with ``backend`` (default nccl on GPU, gloo on CPU; DeepSpeed's CPU
    accelerator adds its own shared-memory all-reduce op on top of gloo). A plain
    process gets a group of one on a free loopback port and RANK/LOCAL_RANK/WORLD_SIZE
    set to 0/0/1 (DeepSpeed's engine reads them), so ``deepspeed.initialize`` works
    there too. Calling it again returns the same context.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world > 1:
        missing = [v for v in LAUNCHER_ENV if v not in os.environ]
        if missing:
            raise InputError(f"WORLD_SIZE={world} but {', '.join(missing)} not set; start the job "
                             "with `deepspeed --num_gpus N ...` or `torchrun --nproc_per_node N ...`")
    if rank >= world or local_rank >= world:
        raise InputError(f"RANK={rank} / LOCAL_RANK={local_rank} must be < WORLD_SIZE={world}")
    cuda = torch.cuda.is_available()
    if backend is None:
        backend = "nccl" if cuda else "gloo"
    if backend == "nccl" and not cuda:
        raise InputError("backend='nccl' needs CUDA GPUs; use backend='gloo' (or None) on CPU")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)  # before the group, so NCCL binds this rank's GPU
    if not dist.is_initialized():
        import deepspeed.comm  # late: heavy import, and only the distributed path needs it
        if world > 1:
            deepspeed.comm.init_distributed(dist_backend=backend, auto_mpi_discovery=False,
                                            verbose=False)
        else:
            for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
                os.environ.setdefault(name, value)
            deepspeed.comm.init_distributed(dist_backend=backend, auto_mpi_discovery=False,
                                            verbose=False, init_method="tcp://127.0.0.1:0",
                                            rank=0, world_size=1)
        if not cuda:  # only DeepSpeed's CPU accelerator makes the segment
            barrier()  # every rank has mapped every shared-memory segment by now
            _unlink_shm_segment(dist.get_rank())
    return DistContext(rank=dist.get_rank(), local_rank=local_rank,
                       world_size=dist.get_world_size(), device=device)


def _unlink_shm_segment(rank: int) -> None:
    """Unlink this rank's /dev/shm segment of DeepSpeed's CPU all-reduce (its mapping stays valid).

    DeepSpeed's CPU accelerator, with every rank on one node (LOCAL_SIZE = world), gives
    each rank a 69 MB shared-memory segment that it never unlinks: RAM held until reboot,
    job after job. Unlinked once every rank has mapped it, the memory goes with the ranks.
    """
    name = (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}_"
            f"{os.environ.get('MASTER_PORT', '')}_{rank}")
    Path("/dev/shm", name).unlink(missing_ok=True)


def rank_and_world() -> tuple[int, int]:
    """(global rank, world size) of the process group, (0, 1) outside one."""
    if in_group():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on global rank 0, and in a process that never joined a group."""
    return not in_group() or dist.get_rank() == 0
