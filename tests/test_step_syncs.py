"""The training step issues no host synchronisation after its first call.

A device-to-host sync stalls the GPU's queue every step, and makes the step impossible to
record as one CUDA graph (``benchmarks/step_throughput.py --modes graph-step``). On CPU
every op still passes the dispatcher, so the ops that would sync on CUDA (reading a value,
or a result whose shape depends on values) are caught here by name.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from aadscale import models
from aadscale.engine.step import compute_loss
from aadscale.fused import AdversarialStep
from aadscale.objectives import build_objective
from aadscale.objectives.registry import OBJECTIVES

# ops that wait for the device on CUDA: a value read on the host, or an output sized by values
SYNC_OPS = {"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten._unique2",
            "aten.unique_dim", "aten.unique_consecutive", "aten.equal", "aten.is_nonzero",
            "aten.repeat_interleave", "aten.item"}


class OpLog(TorchDispatchMode):
    """Records the name of every aten op run inside, backward ops included."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))

    def syncs(self) -> list[str]:
        return [op for op in self.ops if op in SYNC_OPS]


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
