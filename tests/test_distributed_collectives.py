"""One place for collectives: NCCL's device rule applied in a group of one, and every call site through it.

Each case runs ``collectives_probe.py`` in its own process, in a one-rank group whose
backend accepts one device type only (as NCCL accepts CUDA only), so the test process
never joins a group of its own.
"""
from __future__ import annotations

import ast
import json
import sys
from collections import Counter
from pathlib import Path

import pytest
from dslaunch import ROOT, run

PROBE = Path(__file__).with_name("collectives_probe.py")


def probe(mode: str) -> dict:
    proc = run([sys.executable, str(PROBE), mode], timeout=300)
    rows = [line.split("RESULT ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and rows, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(rows[0])


def test_a_cpu_tensor_is_refused_by_a_cuda_only_group_of_one_rank():
    out = probe("nccl-like")
    assert out["group_device"] == "cuda"
    # torch itself refuses it as NCCL does: the group stands in for NCCL faithfully
    assert "No backend type associated with device type cpu" in out["torch"]
    # the helper runs the collective with one rank, so a one-GPU run shows the bad call site
    assert out["helper"].startswith("CollectiveDeviceError") and "on cpu" in out["helper"] \
        and "runs collectives on cuda" in out["helper"]


def test_every_helper_runs_its_collective_in_a_group_of_one():
    out = probe("helpers")
    assert out["sum"] == [1.0, 2.0] and out["moved"] == [3.0]
    assert out["broadcast"] == {"a": 1} and out["gather"] == ["x"]
    assert out["ops"] == ["all_reduce", "all_reduce", "broadcast_object_list", "all_gather_object", "barrier"]


@pytest.mark.slow  # a short training run and an evaluation in a subprocess
def test_engine_and_evaluation_reach_collectives_only_through_the_helpers():
    calls = probe("call-sites")["calls"]
    # nothing of aadscale calls torch.distributed but aadscale/distributed/collectives.py;
    # the rest is DeepSpeed's own (parameter broadcast, gradient all-reduce, checkpoints)
    assert {c["via"] for c in calls} == {"aadscale/distributed/collectives.py", "deepspeed"}
    ours = Counter((c["op"], c["caller"]) for c in calls if c["via"] != "deepspeed")
    expected = {("all_reduce", "aadscale/engine/guard.py:close_step"),  # the non-finite verdict, each step
                ("all_reduce", "aadscale/engine/trainer.py:reduce_terms"),  # logged scalars
                ("all_reduce", "aadscale/engine/trainer.py:evaluate"),
                ("all_reduce", "aadscale/evaluate/suite.py:evaluate_suite"),
                ("broadcast_object_list", "aadscale/engine/trainer.py:setup"),
                ("barrier", "aadscale/engine/checkpoint.py:save")}
    assert expected <= set(ours), sorted(ours)
    assert ours["all_reduce", "aadscale/engine/guard.py:close_step"] == 2  # train.max_steps=2


def _distributed_uses(path: Path) -> list[str]:
    """Where a module imports torch.distributed or reaches it as an attribute."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch.distributed"):
            found.append(f"{path.name}:{node.lineno} from {node.module} import ...")
        elif isinstance(node, ast.Import) and any(a.name.startswith("torch.distributed") for a in node.names):
            found.append(f"{path.name}:{node.lineno} import torch.distributed")
        elif isinstance(node, ast.Attribute) and node.attr == "distributed" and \
                isinstance(node.value, ast.Name) and node.value.id == "torch":
            found.append(f"{path.name}:{node.lineno} torch.distributed")
    return found


def test_only_aadscale_distributed_touches_torch_distributed():
    sources = [p for d in ("aadscale", "launchers", "tuning") for p in (ROOT / d).rglob("*.py")
               if "aadscale/distributed" not in p.as_posix()]
    assert len(sources) > 50
    uses = [u for p in sources for u in _distributed_uses(p)]
    assert uses == []
