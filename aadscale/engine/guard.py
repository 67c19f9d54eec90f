"""The step guard: every step's loss and gradients judged on the device, read where the loop syncs anyway.

Reading a flag on the host every step makes the host wait for the GPU every step. Instead
each step writes its verdict into device tensors (summed over ranks, so that every rank
agrees), and a copy of the training state (weights, buffers, optimiser state: what a step
writes) follows the run on the device until a step is flagged, then freezes: whenever the
loop reads the verdict, the state before the first bad step is still at hand. The same
sum carries each rank's note of a stop signal, so every rank learns at the same read that
one of them was asked to stop, at no extra collective or sync.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from aadscale.distributed import all_reduce_sum

LOSS, GRADIENTS = 1, 2  # what was not finite, as bits of a step's verdict
WHAT = {LOSS: "the loss", GRADIENTS: "the gradients' global norm",
        LOSS | GRADIENTS: "the loss and the gradients' global norm"}

Key = tuple[int, int, torch.dtype]  # a tensor's memory: data pointer, size, dtype


@dataclass(frozen=True)
class Reading:
    """What ``verdict()`` read: the first flagged step (None if none) and the first step a rank noted a
    stop signal in (None if none)."""
    nonfinite: "Verdict | None"
    stop_step: int | None


@dataclass(frozen=True)
class Verdict:
    """The first flagged optimiser step (0-based: ``step`` steps were done before it), what was not
    finite, and the loss value when the loss was."""
    step: int
    what: str
    loss: float | None


def _key(t: torch.Tensor) -> Key:
    return t.data_ptr(), t.numel(), t.dtype


def grad_norm(params: list[nn.Parameter]) -> torch.Tensor:
    """The global L2 norm of the gradients in ``.grad`` (0 when there are none)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def step_tensors(engine, extra: Sequence[torch.Tensor] = ()) -> tuple[dict[Key, torch.Tensor], dict]:
    """What a DeepSpeed step writes, by memory: the model's parameters (ZeRO-3: this rank's partition)
    and buffers, the base optimiser's parameters (ZeRO's float32 partitions) and state, and ``extra``
    (the EMA of the weights); and that state."""
    base = getattr(engine.optimizer, "optimizer", engine.optimizer)  # ZeRO wraps the torch optimiser
    model = itertools.chain((getattr(p, "ds_tensor", p) for p in engine.module.parameters()),
                            engine.module.buffers())
    params = (p for group in base.param_groups for p in group["params"])
    state = (v for s in base.state.values() for v in s.values() if torch.is_tensor(v))
    return {_key(t): t for t in itertools.chain(model, params, state, extra) if t.numel()}, base.state


class NonFiniteGuard:
    """Device flags, a frozen-on-flag copy of the state, and the host state of each step since the last read.

    Per optimiser step: ``mark(step, host)`` before it (copies the state unless an earlier step
    was flagged; ``host`` is the loop's own state then: position, loader, RNG, schedule),
    ``flag_loss`` per micro-batch, ``flag_gradients`` before DeepSpeed's step under ZeRO-0 (ZeRO
    1-3 take the global norm in their own step and skip a non-finite update; ``flag_skipped``
    records that), ``close_step`` after it. ``verdict()`` reads the flags; ``restore(step)``
    puts the state before that step back and returns its ``host``. State held off the device
    (AdamW's step counts stay on the CPU of a GPU run) is copied on the host at every mark.
    """

    def __init__(self, engine, device: torch.device, extra: Sequence[torch.Tensor] = ()) -> None:
        self.engine, self.device, self.extra = engine, device, list(extra)
        self.first = torch.full((), -1, dtype=torch.int64, device=device)
        self.what = torch.zeros((), dtype=torch.int64, device=device)
        self.loss = torch.zeros((), device=device)
        self.stop = torch.full((), -1, dtype=torch.int64, device=device)  # first step a rank noted a stop signal
        self._bad = torch.zeros(3, dtype=torch.int64, device=device)  # this step: [loss, gradients] not finite, stop
        self._step_loss = torch.zeros((), device=device)
        self._copies: dict[Key, tuple[torch.Tensor, int]] = {}  # memory -> (copy, step it was made at)
        self._marks: dict[int, tuple[Any, dict[Key, torch.Tensor]]] = {}  # step -> (host, off-device copies)
        self._step = 0

    @torch.no_grad()
    def mark(self, step: int, host: Any) -> None:
        """The state now is the state before ``step``: copy it, unless a step before was flagged."""
        self._step = step
        self._bad.zero_()
        frozen = self.first >= 0
        live, _ = step_tensors(self.engine, self.extra)
        copies, off_device = {}, {}
        for key, t in live.items():
            if t.device != self.device:
                off_device[key] = t.clone()
                continue
            copy, made = self._copies.get(key) or (torch.empty_like(t), step)
            torch.where(frozen, copy, t, out=copy)
            copies[key] = copy, made
        self._copies = copies
        self._marks[step] = host, off_device

    def flag_loss(self, loss: torch.Tensor) -> None:
        """Judge one micro-batch's loss on the device; the step keeps its first non-finite value."""
        loss = loss.detach().float()
        bad = ~torch.isfinite(loss)
        self._step_loss.copy_(torch.where(bad & (self._bad[0] == 0), loss, self._step_loss))
        self._bad[0] += bad.long()

    def flag_gradients(self, params: list[nn.Parameter]) -> None:
        """Judge the global norm of ``params``' gradients (ZeRO-0, after the backward) on the device."""
        self._bad[1] += (~torch.isfinite(grad_norm(params).to(self.device))).long()

    def close_step(self, stop_noted: bool = False) -> None:
        """The step's verdict, counted over ranks on the device; the first flagged step is kept, and the
        first step in which any rank had ``stop_noted`` (a host flag: a step without it launches nothing more)."""
        if stop_noted:
            self._bad[2] += 1
        bad = all_reduce_sum(self._bad.clone()) > 0
        bits = bad[0].long() * LOSS + bad[1].long() * GRADIENTS
        new = (self.first < 0) & (bits > 0)
        self.first.copy_(torch.where(new, self._step, self.first))
        self.what.copy_(torch.where(new, bits, self.what))
        self.loss.copy_(torch.where(new, self._step_loss, self.loss))
        self.stop.copy_(torch.where((self.stop < 0) & bad[2], self._step, self.stop))

    def flag_skipped(self) -> None:
        """DeepSpeed found the gradients non-finite and skipped the update (it read that on the host itself)."""
        self._bad[1] += 1

    def verdict(self) -> Reading:
        """The first flagged step and the first stop step; reads the device once: call it where the loop syncs
        anyway."""
        first, what, loss, stop = torch.stack([self.first.double(), self.what.double(), self.loss.double(),
                                               self.stop.double()]).tolist()
        first, what, stop = int(first), int(what), int(stop) if stop >= 0 else None
        if first >= 0:
            return Reading(Verdict(first, WHAT[what], None if math.isfinite(loss) else loss), stop)  # this rank's loss
        for step in sorted(self._marks)[:-1]:  # all clear: only the latest mark can still be needed
            del self._marks[step]
        return Reading(None, stop)

    @torch.no_grad()
    def restore(self, step: int) -> Any:
        """Restore the state before ``step`` (a verdict's), drop optimiser state made later, return its host state."""
        host, off_device = self._marks[step]
        live, state = step_tensors(self.engine, self.extra)
        restored = set()
        for key, t in live.items():
            copy, made = self._copies.get(key, (None, step + 1))
            source = copy if made <= step else off_device.get(key)
            if source is not None:
                t.copy_(source)
                restored.add(key)
        for s in state.values():
            for name in [k for k, v in s.items() if torch.is_tensor(v) and v.numel() and _key(v) not in restored]:
                del s[name]
        return host
