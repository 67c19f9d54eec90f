"""The launcher under the DeepSpeed launcher and torchrun with CPU ranks: sharded runs agree with one rank."""
from __future__ import annotations

import json

import pytest
import torch
from dslaunch import ROOT, run_deepspeed, run_torchrun, shm_segments

from aadscale.data import ensure_demo_data
from aadscale.tracking import read_events

LAUNCHER = ROOT / "launchers" / "train_imagenet.py"


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return str(ensure_demo_data(tmp_path_factory.mktemp("data") / "demo"))


def args(tmp_path, demo_root, name, *overrides):
    # no BatchNorm and a deterministic attack, so that the global batch fully defines each step
    return ["--preset", "demo", "--data", demo_root, "--name", name, f"log.dir={tmp_path}",
            "model.name=lenet_small", "model.in_channels=3", "attack.name=step_ll", "attack.steps=1",
            "data.batch_size=32", "data.workers=0", "train.max_steps=4", "log.scalar_every=1",
            "log.image_every=0", "eval.subset=32", "eval.attacks=clean,fgsm", *overrides]


def check(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_two_zero2_ranks_match_one_rank(tmp_path, demo_root):
    before = shm_segments()
    check(run_deepspeed(LAUNCHER, args(tmp_path, demo_root, "one"), nprocs=1, timeout=400))
    two = run_deepspeed(LAUNCHER, args(tmp_path, demo_root, "two", "train.zero_stage=2"), nprocs=2,
                        timeout=400)
    check(two)
    assert "2 rank(s)" in two.stdout + two.stderr
    one_loss = [v for _, v in read_events(tmp_path / "one" / "tb")["scalars"]["train/loss"]]
    two_loss = [v for _, v in read_events(tmp_path / "two" / "tb")["scalars"]["train/loss"]]
    assert len(one_loss) == len(two_loss) == 4
    assert torch.allclose(torch.tensor(one_loss), torch.tensor(two_loss), rtol=1e-4, atol=1e-5), \
        (one_loss, two_loss)
    assert (tmp_path / "two" / "eval.json").is_file()
    assert shm_segments() <= before  # each launched rank unlinks its segment


@pytest.mark.slow
def test_zero3_runs_the_aad_objective_on_dali_cpu(tmp_path, demo_root):
    proc = run_deepspeed(LAUNCHER, args(tmp_path, demo_root, "z3", "train.zero_stage=3",
                                        "model.name=resnet9_small", "objective.name=alp+aad",
                                        "attack.name=pgd", "attack.steps=2", "train.max_steps=2",
                                        "data.backend=dali-cpu"),
                         nprocs=2, timeout=400)
    check(proc)
    assert "data backend dali-cpu" in proc.stdout + proc.stderr
    scalars = read_events(tmp_path / "z3" / "tb")["scalars"]
    assert {"train/rect", "train/pres", "train/alp"} <= set(scalars)
    exported = torch.load(tmp_path / "z3" / "model.pt", weights_only=True)["model"]
    assert exported["net.layer3.0.0.weight"].shape == (128, 64, 3, 3)  # gathered, not a ZeRO-3 shard


@pytest.mark.slow
def test_torchrun_launch(tmp_path, demo_root):
    proc = run_torchrun(LAUNCHER, args(tmp_path, demo_root, "tr", "train.zero_stage=1",
                                       "train.max_steps=2"), nprocs=2, timeout=400)
    check(proc)
    assert "2 rank(s)" in proc.stdout + proc.stderr
    assert len(read_events(tmp_path / "tr" / "tb")["scalars"]["train/loss"]) == 2


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_every_rank_at_the_same_step(tmp_path, demo_root):
    # rank 1's loss turns NaN at step 2 and the guard is read at step 3: both ranks stop there,
    # with one checkpoint of the state before step 2
    proc = run_deepspeed(ROOT / "tests" / "nonfinite_rank.py",
                         [demo_root, str(tmp_path), "1", "model.name=lenet_small", "model.in_channels=3",
                          "attack.name=step_ll", "attack.steps=1", "data.batch_size=32", "data.workers=0",
                          "train.max_steps=4", "log.scalar_every=3", "log.image_every=0",
                          "train.checkpoint_every=0", "eval.subset=32", "eval.attacks=clean"],
                         nprocs=2, timeout=400)
    check(proc)
    rows = sorted((json.loads(line.split("RESULT ", 1)[1]) for line in proc.stdout.splitlines()
                   if line.startswith("RESULT ")), key=lambda r: r["rank"])
    assert [r["rank"] for r in rows] == [0, 1], proc.stdout[-3000:]
    assert all(r["error"].startswith("the loss") and "non-finite" in r["error"] and "at step 2 " in r["error"]
               for r in rows), rows
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step1-before-nonfinite"
    assert not (tmp_path / "run" / "eval.json").exists()


@pytest.mark.slow
def test_a_two_rank_run_signalled_mid_epoch_exits_75_and_resumes_to_the_unbroken_weights(tmp_path, demo_root):
    common = [f"data.root={demo_root}", f"log.dir={tmp_path}", "model.name=lenet_small", "model.in_channels=3",
              "attack.name=step_ll", "attack.steps=1", "data.batch_size=64", "data.image_size=16", "data.workers=1",
              "train.max_steps=8", "log.scalar_every=3", "train.checkpoint_every=0", "log.image_every=0",
              "eval.subset=16", "eval.batch_size=16", "eval.attacks=clean"]
    # the unbroken run, then the same run whose rank 1 alone gets SIGUSR1 after step 2: both ranks stop at
    # step 3, where the guard is read; the launcher was not signalled, so it passes the ranks' 75 on
    jobs = [{"overrides": [*common, "log.name=unbroken"], "resume": None},
            {"overrides": [*common, "log.name=run"], "resume": None, "signal": {"rank": 1, "step": 2}}]
    first = run_deepspeed(ROOT / "tests" / "fit_jobs.py", [json.dumps(jobs)], nprocs=2, timeout=400)
    out = first.stdout + first.stderr
    assert first.returncode == 75, out[-3000:]
    assert "SIGUSR1 reached rank(s) 1 during step 3; every rank stopped at step 3 (epoch 0)" in out, out[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step3"
    second = run_torchrun(LAUNCHER, ["--preset", "demo", "--name", "run", "--resume", "auto", *common],
                          nprocs=2, timeout=400)
    check(second)
    a, b = (torch.load(tmp_path / name / "model.pt", weights_only=True)["model"] for name in ("unbroken", "run"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [read_events(tmp_path / name / "tb")["scalars"]["train/loss"] for name in ("unbroken", "run")]
    assert losses[0] == losses[1] and [s for s, _ in losses[1]] == [3, 6, 8]  # no step lost or repeated
