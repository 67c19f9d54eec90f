"""Every collective the project issues: on the process group's device, run whenever a group exists.

NCCL takes CUDA tensors only ("No backend type associated with device type cpu"), gloo
forgives CPU ones. A helper that skipped the collective with one rank, or let a tensor
through on the wrong device, would hide a call site that breaks on eight GPUs; so the
helpers here run the collective even in a group of one and refuse, with a message naming
both devices, any tensor that is not on the group's device. Outside a process group
(a plain process that never joined one) they are identities.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


class CollectiveDeviceError(RuntimeError):
    """A tensor reached a collective on another device than the process group's."""


def in_group() -> bool:
    """True once this process has joined a process group (one rank included)."""
    return dist.is_available() and dist.is_initialized()


def group_device() -> torch.device:
    """The device the default group runs collectives on: this rank's GPU where the group
    takes CUDA tensors (NCCL; gloo on a GPU machine), else the CPU; the CPU outside a group."""
    if not in_group():
        return torch.device("cpu")
    types = [d.type for d in dist.group.WORLD._device_types] or ["cpu"]
    if "cuda" in types and (torch.cuda.is_available() or "cpu" not in types):
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
            else torch.device("cuda")
    return torch.device("cpu") if "cpu" in types else torch.device(types[0])


def check_on_group_device(tensor: torch.Tensor, op: str) -> None:
    """Refuse ``tensor`` unless it lives on the group's device (NCCL's rule, applied under gloo too)."""
    want = group_device()
    if tensor.device.type != want.type or (want.index is not None and tensor.device.index != want.index):
        raise CollectiveDeviceError(
            f"{op}: the tensor is on {tensor.device} but the process group (backend "
            f"{dist.get_backend()}) runs collectives on {want}; create it there "
            "(aadscale.distributed.group_device()) or use sum_over_ranks, which moves it")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` (on the group's device) over ranks in place and return it; asynchronous on
    the device: nothing waits on the host."""
    if in_group():
        check_on_group_device(tensor, "all_reduce_sum")
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of ``values`` (any device), as a new tensor on the group's device:
    the one rank reduction of counts and metrics."""
    return all_reduce_sum(values.detach().to(group_device(), copy=True))


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable objects; the object itself outside a group)."""
    if not in_group():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=group_device())
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` outside a group)."""
    if not in_group():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (on NCCL, on this rank's GPU); nothing to wait for outside a group."""
    if not in_group():
        return
    device = group_device()
    if device.type == "cuda" and device.index is not None:
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()
