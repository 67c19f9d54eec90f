"""Rank helpers in a single process, and checks of the launcher environment."""
from __future__ import annotations

import pytest
import torch

from aadscale.distributed import (all_reduce_sum, barrier, broadcast_object, init_distributed,
                                  is_main)


def test_helpers_are_identities_in_a_single_process():
    t = torch.tensor([1.0, 2.0])
    assert is_main()
    barrier()
    assert all_reduce_sum(t) is t and t.tolist() == [1.0, 2.0]
    obj = {"eval": [1, 2]}
    assert broadcast_object(obj) is obj


def test_partial_launcher_environment_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR.*deepspeed --num_gpus"):
        init_distributed()


def test_rank_outside_world_is_refused(monkeypatch):
    for name, value in dict(WORLD_SIZE="2", RANK="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                            MASTER_PORT="29500").items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="RANK=2.*WORLD_SIZE=2"):
        init_distributed()


def test_nccl_without_gpu_is_refused(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="nccl.*gloo"):
        init_distributed(backend="nccl")
