"""The training step issues no host synchronisation after its first call, nor does the trainer's loop.

A device-to-host sync stalls the GPU's queue every step, and makes the step impossible to
record as one CUDA graph (``benchmarks/step_throughput.py --modes graph-step``). On CPU
every op still passes the dispatcher, so the ops that would sync on CUDA (reading a value,
or a result whose shape depends on values) are caught here by name, with the code that
asked for them.
"""
from __future__ import annotations

import os
import signal
import traceback
from typing import Callable

import deepspeed
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import aadscale
from aadscale import models
from aadscale.config import load_config
from aadscale.data import ensure_demo_data
from aadscale.distributed import SavedOnSignal, StopSignals
from aadscale.engine import Callback
from aadscale.engine import trainer as loop
from aadscale.engine.step import compute_loss
from aadscale.fused import AdversarialStep
from aadscale.objectives import build_objective
from aadscale.objectives.registry import OBJECTIVES

# ops that wait for the device on CUDA: a value read on the host, or an output sized by values
SYNC_OPS = {"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten._unique2",
            "aten.unique_dim", "aten.unique_consecutive", "aten.equal", "aten.is_nonzero",
            "aten.repeat_interleave", "aten.item"}


# the installed packages' folders (a checkout's own folder may be called aadscale too)
AADSCALE, DEEPSPEED = (os.path.dirname(m.__file__) + os.sep for m in (aadscale, deepspeed))


def asker(stack: traceback.StackSummary) -> str:
    """Whose code ran a sync op: deepspeed, or the aadscale module:function nearest to it."""
    for frame in reversed(stack):
        if frame.filename.startswith(DEEPSPEED):
            return "deepspeed"
        if frame.filename.startswith(AADSCALE):
            return f"aadscale/{frame.filename[len(AADSCALE):]}:{frame.name}"
    return "other"


class OpLog(TorchDispatchMode):
    """Records the name of every aten op run inside, backward ops included, and who asked for each sync
    (``label`` of the stack: ``asker`` here; benchmarks/engine_syncs.py names the function too)."""

    def __init__(self, label: Callable[[traceback.StackSummary], str] = asker) -> None:
        super().__init__()
        self.label = label
        self.ops: list[str] = []
        self.askers: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        self.ops.append(name)
        if name in SYNC_OPS:
            self.askers.append(f"{name} by {self.label(traceback.extract_stack())}")
        return func(*args, **(kwargs or {}))

    def syncs(self) -> list[str]:
        return [op for op in self.ops if op in SYNC_OPS]


# tensor methods that read values on the host: on a CPU tensor some run no aten op at all (tolist)
HOST_READS = {"tolist", "item", "__bool__", "__int__", "__float__", "__index__", "numpy", "cpu"}


class HostReads(TorchFunctionMode):
    """Adds every host read of a tensor's values (``HOST_READS``), with who asked, to ``log.askers``."""

    def __init__(self, log: OpLog) -> None:
        super().__init__()
        self.log = log

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.log.askers.append(f"Tensor.{name} by {self.log.label(traceback.extract_stack())}")
        return func(*args, **(kwargs or {}))


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = models.build("resnet9_small", 10)
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    attack = AdversarialStep(model, eps=8 / 255, steps=2, mode="eager", cams=False)
    with OpLog() as first:
        attack(x, y, torch.Generator().manual_seed(0))
    # the detector works: the first call checks the pixel range at once, on purpose
    assert "aten._local_scalar_dense" in first.syncs()
    return model, x, y, attack


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_attack_loss_backward_and_update_have_no_host_sync(setup, name, precision):
    model, x, y, attack = setup
    objective = build_objective(name, theta=0.5 if name == "alp+aad" else "mean")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, foreach=True)
    g = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(2):  # the second step has momentum buffers: the one a graph would record
        with OpLog() as log:
            x_adv = attack(x, y, g).x_adv if OBJECTIVES[name].needs_attack else None
            loss = compute_loss(model, objective, x, y, x_adv, precision)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        assert log.syncs() == [], f"{name} ({precision}) syncs with the host: {sorted(set(log.syncs()))}"
    assert "aten.convolution_backward" in log.ops  # backward ops pass the detector too


class SplitSteps(Callback):
    """Cuts the op log at every optimiser step's end: step i's syncs are ``per_step[i - 1]``."""

    def __init__(self, log: OpLog) -> None:
        self.log, self.per_step = log, []

    def on_step_end(self, info) -> None:
        self.per_step.append(self.log.askers)
        self.log.askers = []


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return str(ensure_demo_data(tmp_path_factory.mktemp("data") / "demo"))


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_the_trainers_loop_waits_on_the_host_only_on_logging_steps(tmp_path, demo_root, zero_stage):
    # steps 1-3 log nothing (log.scalar_every=100), step 4 is the last and logs; loader in a worker process
    cfg = load_config("demo", [f"data.root={demo_root}", f"log.dir={tmp_path}", "log.name=run",
                               "data.batch_size=16", "data.workers=1", "attack.steps=1", "train.max_steps=4",
                               "log.scalar_every=100", "log.image_every=0", "train.checkpoint_every=0",
                               f"train.zero_stage={zero_stage}"])
    log = OpLog()
    steps = SplitSteps(log)
    run = loop.setup(cfg, [steps], None, None)
    try:
        with log, HostReads(log):
            loop.train_one_epoch(run)
    finally:
        run.bar.close()
        run.tb.close()
    first, *steady, last = steps.per_step
    assert len(steady) == 2
    assert any("check_pixel_range" in a for a in first)  # the detector works: the first batch's check
    assert any("guard.py:verdict" in a for a in last), last  # the logging step reads the guard
    if zero_stage == 0:
        assert steady == [[], []]
    else:  # ZeRO-2's own: the overflow flag and the gradient norm read in DeepSpeed's step (README)
        assert all(s and {a.split(" by ")[1] for a in s} == {"deepspeed"} for s in steady), steady


COLLECTIVES = ("c10d.allreduce_", "c10d.broadcast_", "c10d.allgather_", "c10d.barrier")


def collective_ops(ops: list[str]) -> list[str]:
    return [op for op in ops if op in COLLECTIVES]


class SignalAfter(SplitSteps):
    """SplitSteps that also sends this process SIGUSR1 at the end of step ``at``; keeps each step's ops too."""

    def __init__(self, log: OpLog, at: int) -> None:
        super().__init__(log)
        self.at, self.ops = at, []

    def on_step_end(self, info) -> None:
        self.ops.append(collective_ops(self.log.ops))
        self.log.ops = []
        super().on_step_end(info)
        if info.step == self.at:
            os.kill(os.getpid(), signal.SIGUSR1)


def test_a_stop_signal_costs_no_sync_and_no_collective_until_the_read(tmp_path, demo_root):
    # SIGUSR1 after step 2: steps 3 and 4 carry the note in the guard's own sum (no sync, the collectives
    # of step 2, which had none); step 5 logs, reads the guard, and every rank stops there
    cfg = load_config("demo", [f"data.root={demo_root}", f"log.dir={tmp_path}", "log.name=run",
                               "data.batch_size=16", "data.workers=0", "attack.steps=1", "train.max_steps=8",
                               "log.scalar_every=5", "log.image_every=0", "train.checkpoint_every=0"])
    log = OpLog()
    steps = SignalAfter(log, at=2)
    with StopSignals(cfg.train.stop_signals) as signals:
        run = loop.setup(cfg, [steps], None, None, signals=signals)
        try:
            with log, HostReads(log), pytest.raises(SavedOnSignal):
                loop.train_one_epoch(run)
        finally:
            run.bar.close()
            run.tb.close()
    first, *steady, last = steps.per_step
    assert len(steady) == 3  # steps 2-4; the stop came at step 5, after its callbacks
    assert steady == [[], [], []], steady  # the note rides along without a host sync
    assert any("guard.py:verdict" in a for a in last)
    assert steps.ops[1] and steps.ops[1] == steps.ops[2] == steps.ops[3]  # the same collectives as before it
    assert run.pos.step == 5 and (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step5"
