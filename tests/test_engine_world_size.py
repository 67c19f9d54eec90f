"""Resuming on another number of ranks: the same global batches, steps and schedule, or a refusal before loading."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from dslaunch import ROOT, run_torchrun

from aadscale.config import load_config
from aadscale.data.loader import Loader
from aadscale.distributed import DistContext
from aadscale.engine import fit
from aadscale.engine.checkpoint import CLIENT_JSON, Checkpointer
from aadscale.engine.resume import SavedRun, check_resume_epoch, check_resume_world_size
from aadscale.errors import InputError
from aadscale.tracking import read_events
from tests.test_engine import demo_root  # noqa: F401 (a fixture)

# no BatchNorm and a deterministic attack: the global batch and the weights alone define each step's loss
COMMON = ["data.batch_size=32", "data.image_size=16", "data.workers=0", "model.name=lenet_small",
          "model.in_channels=3", "attack.name=step_ll", "attack.steps=1", "optim.warmup_steps=0",
          "log.scalar_every=1", "log.image_every=0", "eval.subset=16", "eval.batch_size=16", "eval.attacks=clean",
          "train.checkpoint_every=2", "train.keep_checkpoints=3"]
STAGES = {"zero0": ["train.zero_stage=0"],  # SGD, the demo's
          "zero3": ["train.zero_stage=3", "optim.name=adamw", "optim.lr=0.001"]}  # the universal checkpoint's Adam


class Order(Loader):
    """A loader of sample indices only: what ``remaining`` hands each rank."""
    backend = "indices"

    def _batches(self):
        raise NotImplementedError


def global_batches(size: int, batch: int, accum: int, world: int, done: int = 0) -> list[list[int]]:
    """The samples of each remaining micro-batch over all ranks of epoch 1, ``done`` optimiser steps in."""
    ranks = [Order(size=size, batch_size=batch // (world * accum), rank=r, world_size=world, train=True, seed=3,
                   classes=["a"]) for r in range(world)]
    for loader in ranks:
        loader.load_state_dict({"epoch": 1, "batch": done * accum})
    micro = ranks[0].batch_size
    rest = ranks[0].remaining()
    return [sorted(i for r in range(world) for i in rest[r][m * micro:(m + 1) * micro])
            for m in range(len(ranks[0]) - done * accum)]


def saved(world: int, *overrides: str) -> SavedRun:
    return SavedRun(load_config("demo", ["data.batch_size=12", "train.grad_accum=2", *overrides]), None,
                    Path("ckpt"), world)


def test_world_sizes_with_the_same_epoch_read_the_same_global_batches():
    # 100 samples, global batch 12 in 2 micro-batches: 16 per epoch per rank on 1 or 2 ranks, 17 on 3 or 6
    # (the order is padded to 102)
    one = global_batches(100, 12, 2, 1)
    assert len(one) == 16 and one == global_batches(100, 12, 2, 2)
    assert global_batches(100, 12, 2, 2, done=5) == one[10:]  # a resume 5 steps into the epoch
    assert global_batches(100, 12, 2, 3, done=5)[:6] == one[10:]  # the same samples until the padded end
    loader = Order(size=100, batch_size=2, rank=0, world_size=3, train=True, seed=3, classes=["a"])
    with pytest.raises(InputError, match=r"saved by 1 rank\(s\), where an epoch of the 100 training samples has 16 "
                                         r"micro-batches per rank; on 3 rank\(s\) it has 17 .* Resume on 1, 2 rank"):
        check_resume_epoch(saved(1), loader)
    check_resume_epoch(saved(3), loader)  # the same world size


def test_another_world_size_is_refused_where_the_run_cannot_continue():
    assert check_resume_world_size(saved(2), saved(2).config, 2) is False
    assert check_resume_world_size(saved(2), saved(2).config, 1) is False  # ZeRO-0: DeepSpeed loads it as it is
    with pytest.raises(InputError, match=r"saved by 2 rank\(s\); data.batch_size=12 \(the global batch\) does not "
                                         r"split over 4 rank\(s\) x train.grad_accum=2. Resume on 1, 2, 3, 6 rank"):
        check_resume_world_size(saved(2), saved(2).config, 4)
    sgd = saved(2, "train.zero_stage=1")
    with pytest.raises(InputError, match=r"ZeRO stage 1 optimiser state partitioned over 2 rank\(s\); .* for 1, "
                                         r".*optim.name=sgd\). Resume on 2 rank"):
        check_resume_world_size(sgd, sgd.config, 1)
    adam = saved(2, "train.zero_stage=3", "optim.name=adamw")
    assert check_resume_world_size(adam, adam.config, 3) is True


def test_a_checkpoint_says_how_many_ranks_wrote_it(tmp_path):
    checkpointer = Checkpointer(tmp_path, 2, DistContext(0, 0, 1, torch.device("cpu")))
    (tmp_path / "old").mkdir()
    for rank in range(3):
        (tmp_path / "old" / f"rng_rank{rank}.pt").touch()
    assert checkpointer.saved_world_size("old") == 3  # before the client state recorded it: one RNG file per rank
    (tmp_path / "old" / CLIENT_JSON).write_text(json.dumps({"world_size": 2}))
    assert checkpointer.saved_world_size("old") == 2


def overrides(root: Path, demo: str, name: str, *extra: str) -> list[str]:
    return [f"data.root={demo}", f"log.dir={root}", f"log.name={name}", *COMMON, *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, demo_root):  # noqa: F811
    """Per stage an unbroken run of 6 steps on 1 rank, and one resumed 1 -> 2 ranks at step 2 and 2 -> 1 at step 4;
    a ZeRO-1 SGD run of 2 ranks."""
    root = tmp_path_factory.mktemp("world")
    for stage, extra in STAGES.items():
        fit(load_config("demo", overrides(root, demo_root, f"{stage}-ref", *extra, "train.max_steps=6")))
        shutil.copytree(root / f"{stage}-ref" / "checkpoints" / "step2", root / stage / "checkpoints" / "step2")
    jobs = [{"overrides": overrides(root, demo_root, stage, *extra, "train.max_steps=4"), "resume": "step2"}
            for stage, extra in STAGES.items()]
    jobs.append({"overrides": overrides(root, demo_root, "zero1-sgd", "train.zero_stage=1", "train.max_steps=2"),
                 "resume": None})
    proc = run_torchrun(ROOT / "tests" / "fit_jobs.py", [json.dumps(jobs)], nprocs=2, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log, records = logging.getLogger("aadscale.engine"), []
    handler, level = logging.Handler(), log.level
    handler.emit = records.append
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        for stage, extra in STAGES.items():
            fit(load_config("demo", overrides(root, demo_root, stage, *extra, "train.max_steps=6")), resume="auto")
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    return SimpleNamespace(root=root, demo=demo_root, launched=proc.stdout + proc.stderr,
                           logged="\n".join(r.getMessage() for r in records))


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_a_resume_on_another_world_size_continues_the_unbroken_run(runs, stage):
    ref, resumed = (read_events(runs.root / name / "tb")["scalars"] for name in (f"{stage}-ref", stage))
    assert [s for s, _ in resumed["train/loss"]] == [3, 4, 5, 6]
    for name in ("train/loss", "train/lr"):  # the same global batches, weights and schedule, step by step
        want, got = [v for s, v in ref[name] if s > 2], [v for _, v in resumed[name]]
        assert torch.allclose(torch.tensor(got), torch.tensor(want), rtol=1e-4, atol=1e-6), (name, got, want)
    folder = runs.root / stage / "checkpoints"
    assert [json.loads((folder / tag / CLIENT_JSON).read_text())["world_size"] for tag in ("step4", "step6")] == [2, 1]
    universal = stage != "zero0"
    assert (folder / "step2" / "universal").is_dir() == (folder / "step4" / "universal").is_dir() == universal
    via = " via DeepSpeed's universal checkpoint" if universal else ""
    assert f"checkpoint saved by 1 rank(s), resumed on 2{via}" in runs.launched
    assert f"checkpoint saved by 2 rank(s), resumed on 1{via}" in runs.logged


@pytest.mark.slow
def test_zero_state_deepspeed_cannot_convert_is_refused_before_loading(runs):
    cfg = load_config("demo", overrides(runs.root, runs.demo, "zero1-sgd", "train.zero_stage=1", "train.max_steps=4"))
    with pytest.raises(InputError, match=r"ZeRO stage 1 optimiser state partitioned over 2 rank\(s\); .* for 1, .*"
                                         r"optim.name=sgd\). Resume on 2 rank"):
        fit(cfg, resume="auto")
    run = runs.root / "zero1-sgd"
    assert sorted(p.name for p in (run / "configs").iterdir()) == ["000-start.yaml"]
    assert not (run / "checkpoints" / "step2" / "universal").exists()
