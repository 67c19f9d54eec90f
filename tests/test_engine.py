"""The engine in one process: run folder, TensorBoard, checkpoints, bitwise resume, NaN handling, errors."""
from __future__ import annotations

import json

import pytest
import torch

from aadscale import config as C
from aadscale.data import ensure_demo_data
from aadscale.engine import Callback, NonFiniteLossError, fit
from aadscale.engine import trainer as loop
from aadscale.tracking import read_events


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    return str(ensure_demo_data(tmp_path_factory.mktemp("data") / "demo"))


def small_cfg(tmp_path, demo_root, *overrides):
    return C.load_config("demo", [
        f"data.root={demo_root}", f"log.dir={tmp_path}", "log.name=run", "data.batch_size=32",
        "data.workers=0", "attack.steps=2", "train.max_steps=6", "eval.subset=64",
        "eval.attacks=clean,pgd3", "eval.batch_size=64", "log.scalar_every=1", "log.image_every=3",
        "train.checkpoint_every=3", "train.deterministic=true", *overrides])


def test_fit_writes_the_run_folder(tmp_path, demo_root):
    result = fit(small_cfg(tmp_path, demo_root, "eval.attacks=clean,pgd3,aa_proxy5"))
    run = tmp_path / "run"
    assert result["step"] == 6 and result["run_dir"] == str(run)
    assert (run / "config.yaml").is_file() and "git_commit" in (run / "config.yaml").read_text()
    ev = (run / "eval.json").read_text()
    assert '"pgd3"' in ev and '"clean"' in ev
    exported = torch.load(run / "model.pt", weights_only=True)
    assert exported["config"]["model"]["name"] == "resnet9_small"
    assert (run / "checkpoints" / "latest").read_text() == "step6"
    events = read_events(run / "tb")
    scalars = events["scalars"]
    for tag in ("train/loss", "train/cls", "train/rect", "train/pres", "train/acc_clean",
                "train/acc_adv", "train/lr", "train/images_per_s", "train/data_wait_s", "eval/pgd3",
                "eval/aa_proxy5"):  # the AutoAttack proxy, named as one
        assert tag in scalars, tag
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert events["images"].get("train/clean_adv_cam", 0) == 2
    assert events["hparams"]
    # the exported model goes straight into `aadscale evaluate`; exact orderings: the clean point
    # is a candidate of every attack, pgd10x2's first restart is pgd10's run
    from aadscale.cli import main
    out = tmp_path / "eval"
    assert main(["evaluate", str(run / "model.pt"), "--data", demo_root, "--limit", "48",
                 "--attacks", "clean,pgd10", "--strong", "pgd10x2", "--out", str(out),
                 "--no-progress", "--workers", "0"]) == 0
    acc = json.loads((out / "results.json").read_text())["results"]
    assert acc["clean"] >= acc["pgd10"] >= acc["pgd10x2"]
    # and into AutoAttack standard (pyautoattack), on 4 images
    assert main(["evaluate", str(run / "model.pt"), "--data", demo_root, "--limit", "4", "--autoattack", "standard",
                 "--out", str(tmp_path / "aa"), "--no-progress", "--workers", "0"]) == 0
    report = json.loads((tmp_path / "aa" / "autoattack.json").read_text())
    assert report["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"] and report["n_examples"] == 4
    assert float(report["autoattack_acc"]) <= float(report["clean_acc"])


class StopAt(Callback):
    """Simulates a kill after a given optimiser step."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, info):
        if info.step == self.step:
            raise KeyboardInterrupt


# the recipe, each piece on: EMA, Mixup/CutMix, label smoothing, APGD-CE with an eps warm-up,
# AdamW's betas and weight-decay exclusions
RECIPE = ["train.zero_stage=2", "train.ema_decay=0.9", "train.ema_export=true", "augment.mixup=0.8",
          "augment.cutmix=1.0", "objective.label_smoothing=0.1", "attack.name=apgd", "attack.warmup_epochs=2",
          "optim.name=adamw", "optim.lr=0.001", "optim.betas=[0.9,0.95]", "optim.no_decay_1d=true",
          "eval.subset=32", "eval.attacks=clean"]


@pytest.mark.parametrize("overrides", [["train.zero_stage=0"], ["train.zero_stage=3"], RECIPE],
                         ids=["zero0", "zero3", "recipe"])  # ZeRO 1-3 optimiser state holds DeepSpeed classes
def test_killed_and_resumed_run_equals_unbroken_run(tmp_path, demo_root, overrides, caplog):
    caplog.set_level("INFO", logger="aadscale.engine")
    unbroken = fit(small_cfg(tmp_path / "a", demo_root, "train.max_steps=5", *overrides))
    cfg = small_cfg(tmp_path / "b", demo_root, "train.max_steps=5", *overrides)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, [StopAt(4)])  # killed mid-epoch, a step after the checkpoint at step 3
    with pytest.raises(ValueError, match="--resume auto"):
        fit(cfg)  # a fresh start would clobber the interrupted run
    resumed = fit(cfg, resume="auto")
    assert resumed["step"] == unbroken["step"] == 5
    exported = {}
    for name in ["model.pt", "model_raw.pt"] if overrides is RECIPE else ["model.pt"]:
        a, b = (torch.load(tmp_path / run / "run" / name, weights_only=True)["model"] for run in "ab")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
        exported[name] = b
    if overrides is RECIPE:  # epoch 0 of a 2-epoch warm-up attacks at half the demo's eps
        assert "epoch 0: training attack at eps 0.03135 (warm-up)" in caplog.text
        # the EMA is evaluated beside the trained weights, exported as model.pt, and is not them
        report = json.loads((tmp_path / "b" / "run" / "eval.json").read_text())
        assert report["accuracy_ema"].keys() == report["accuracy"].keys()
        ema, raw = exported["model.pt"], exported["model_raw.pt"]
        assert not all(torch.equal(raw[k], ema[k]) for k in raw)
        assert not (tmp_path / "b" / "run" / "model_ema.pt").exists()


def test_nan_loss_stops_with_a_loadable_checkpoint(tmp_path, demo_root, monkeypatch):
    calls = {"n": 0}
    real = loop.compute_loss

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(loop, "compute_loss", poisoned)
    cfg = small_cfg(tmp_path, demo_root)
    with pytest.raises(NonFiniteLossError, match=r"the loss .*became non-finite \(loss nan\) at step 5"):
        fit(cfg)
    ckpt = tmp_path / "run" / "checkpoints"
    assert (ckpt / "latest").read_text() == "step4-before-nonfinite"
    monkeypatch.setattr(loop, "compute_loss", real)
    resumed = fit(small_cfg(tmp_path, demo_root), resume="auto")
    assert resumed["step"] == 6


def poison_step(monkeypatch, step: int, where: str) -> None:
    """Make optimiser step ``step`` (1-based) non-finite: its loss, or only its gradients (the loss stays finite)."""
    calls = {"n": 0}
    real = loop.compute_loss

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == step:
            if where == "loss":
                out["loss"] = out["loss"] * float("nan")
            else:
                out["loss"].register_hook(lambda g: g * float("nan"))
        return out

    monkeypatch.setattr(loop, "compute_loss", poisoned)


def test_a_bad_step_read_later_still_saves_the_state_before_it(tmp_path, demo_root, monkeypatch):
    # the guard is read on logging steps only (every 3rd here): step 2's NaN is seen at step 3,
    # and the state saved is the one before step 2, weights, optimiser, data position and RNG
    common = ["log.scalar_every=3", "train.checkpoint_every=0", "log.image_every=0", "train.max_steps=5"]
    unbroken = fit(small_cfg(tmp_path / "a", demo_root, *common))
    cfg = small_cfg(tmp_path / "b", demo_root, *common)
    poison_step(monkeypatch, 2, "loss")
    with pytest.raises(NonFiniteLossError, match=r"the loss .*non-finite \(loss nan\) at step 2 "):
        fit(cfg)
    assert (tmp_path / "b" / "run" / "checkpoints" / "latest").read_text() == "step1-before-nonfinite"
    monkeypatch.undo()
    resumed = fit(cfg, resume="auto")
    assert resumed["step"] == unbroken["step"] == 5
    a = torch.load(tmp_path / "a" / "run" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "run" / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # as if the bad step had never been tried


def test_a_bad_first_step_of_an_epoch_resumes_in_that_epoch(tmp_path, demo_root, monkeypatch):
    from aadscale.data import build_loader
    per_epoch = len(build_loader(demo_root, "train", batch_size=256, image_size=32, dataset="demo", workers=0))
    common = ["model.name=lenet_small", "model.in_channels=3", "attack.name=step_ll", "attack.steps=1",
              "objective.name=madry", "data.batch_size=256", "train.epochs=2", "train.max_steps=0",
              "log.scalar_every=4", "train.checkpoint_every=0", "log.image_every=0", "eval.attacks=clean",
              "eval.every_epochs=1"]
    unbroken = fit(small_cfg(tmp_path / "a", demo_root, *common))
    cfg = small_cfg(tmp_path / "b", demo_root, *common)
    poison_step(monkeypatch, per_epoch + 1, "loss")  # read a few steps later, inside epoch 2
    with pytest.raises(NonFiniteLossError, match=f"at step {per_epoch + 1} \\(epoch 1\\)"):
        fit(cfg)
    assert (tmp_path / "b" / "run" / "checkpoints" / "latest").read_text() == f"step{per_epoch}-before-nonfinite"
    monkeypatch.undo()
    resumed = fit(cfg, resume="auto")
    assert resumed["step"] == unbroken["step"] == 2 * per_epoch and resumed["epoch"] == 2
    a = torch.load(tmp_path / "a" / "run" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "run" / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_non_finite_gradients_under_a_finite_loss_stop_the_run(tmp_path, demo_root, monkeypatch, zero_stage):
    # ZeRO-0: the guard takes the gradients' norm on the device; ZeRO 1-3: DeepSpeed takes it and skips;
    # read two steps later, while the run went on
    common = [f"train.zero_stage={zero_stage}", "train.checkpoint_every=0", "log.image_every=0",
              "log.scalar_every=4", "objective.name=madry", "train.max_steps=5", "model.name=lenet_small",
              "model.in_channels=3", "attack.name=step_ll", "attack.steps=1", "eval.attacks=clean"]
    unbroken = fit(small_cfg(tmp_path / "a", demo_root, *common))
    cfg = small_cfg(tmp_path / "b", demo_root, *common)
    poison_step(monkeypatch, 2, "gradients")
    with pytest.raises(NonFiniteLossError, match="the gradients' global norm became non-finite at step 2 "):
        fit(cfg)
    ckpt = tmp_path / "b" / "run" / "checkpoints"
    assert (ckpt / "latest").read_text() == "step1-before-nonfinite"
    monkeypatch.undo()
    assert fit(cfg, resume="auto")["step"] == unbroken["step"] == 5
    a = torch.load(tmp_path / "a" / "run" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "run" / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_data_and_class_count(tmp_path, demo_root):
    with pytest.raises(ValueError, match="model.num_classes=7"):
        fit(small_cfg(tmp_path, demo_root, "model.num_classes=7"))
    with pytest.raises(ValueError):
        fit(small_cfg(tmp_path, demo_root, "data.dataset=folder", f"data.root={tmp_path}/missing",
                      "log.name=run2"))
    with pytest.raises(ValueError, match="needs a folder"):
        fit(small_cfg(tmp_path, demo_root, "data.dataset=imagenet", "data.root=", "log.name=run3"))


def test_evaluation_reads_the_same_subset_every_time(tmp_path, demo_root):
    from aadscale import models
    from aadscale.data import build_loader
    from aadscale.distributed import init_distributed
    cfg = small_cfg(tmp_path, demo_root, "eval.subset=48", "eval.batch_size=32", "eval.attacks=clean,fgsm")
    val = build_loader(demo_root, "val", batch_size=32, image_size=32, dataset="demo", workers=0, train=False)
    model = models.build("resnet9_small", 10)
    ctx = init_distributed()
    first = loop.evaluate(model, val, cfg, ctx)
    assert first["n"] == 64  # two batches of 32 cover the subset of 48
    assert loop.evaluate(model, val, cfg, ctx) == first


def test_gradient_accumulation_matches_the_full_batch(tmp_path, demo_root):
    # no BatchNorm and a deterministic attack: two micro-batches of 16 == one batch of 32
    common = ["model.name=lenet_small", "model.in_channels=3", "attack.name=step_ll", "attack.steps=1",
              "train.max_steps=3", "log.image_every=0", "eval.attacks=clean", "train.checkpoint_every=0"]
    fit(small_cfg(tmp_path / "full", demo_root, *common))
    fit(small_cfg(tmp_path / "accum", demo_root, *common, "train.grad_accum=2"))
    full = torch.load(tmp_path / "full" / "run" / "model.pt", weights_only=True)["model"]
    accum = torch.load(tmp_path / "accum" / "run" / "model.pt", weights_only=True)["model"]
    assert all(torch.allclose(full[k], accum[k], rtol=1e-4, atol=1e-6) for k in full)
    loss = read_events(tmp_path / "accum" / "run" / "tb")["scalars"]["train/loss"]
    assert [s for s, _ in loss] == [1, 2, 3]  # steps count optimiser steps, not micro-batches


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_trains_with_finite_losses(tmp_path, demo_root, precision):
    fit(small_cfg(tmp_path, demo_root, f"train.precision={precision}", f"attack.precision={precision}",
                  "train.max_steps=2", "log.image_every=0", "eval.attacks=clean"))
    losses = [v for _, v in read_events(tmp_path / "run" / "tb")["scalars"]["train/loss"]]
    assert len(losses) == 2 and all(abs(v) < 1e3 for v in losses)


def test_an_fp16_engine_leaves_no_loss_scaler_to_the_next_engine_of_the_process(tmp_path, demo_root):
    # DeepSpeed keeps an fp16 engine's autocast dtype in module globals, and a ZeRO 1-3 optimiser built later
    # in the process reads it: without build_engine clearing them, an fp32 ZeRO-3 engine built after an fp16
    # one gets a GradScaler that divides its unscaled gradients by 65536 at every step
    from aadscale.distributed import init_distributed
    from aadscale.engine.setup import build_engine
    ctx = init_distributed()
    build_engine(small_cfg(tmp_path, demo_root, "train.precision=fp16"), ctx, 10, None, "contiguous")
    fp32 = small_cfg(tmp_path, demo_root, "train.zero_stage=3", "optim.name=adamw")
    assert build_engine(fp32, ctx, 10, None, "contiguous")[0].optimizer.torch_autocast_gradscaler is None


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_channels_last_run_trains_in_that_layout(tmp_path, demo_root, monkeypatch, zero_stage):
    seen = []
    real = loop.compute_loss

    def spy(model, objective, x, y, x_adv, precision):
        out = real(model, objective, x, y, x_adv, precision)
        layout = [t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
                  for t in (model.net.prep[0].weight, x, x_adv)]
        seen.append((layout, out["loss"].item()))
        return out

    monkeypatch.setattr(loop, "compute_loss", spy)
    common = ["train.max_steps=2", "log.image_every=0", "eval.attacks=clean", "train.checkpoint_every=0",
              "objective.name=madry", f"train.zero_stage={zero_stage}"]
    fit(small_cfg(tmp_path / "cl", demo_root, *common, "train.memory_format=channels_last"))
    fit(small_cfg(tmp_path / "nchw", demo_root, *common, "train.memory_format=contiguous"))
    (cl, nchw) = seen[:2], seen[2:]
    # ZeRO 1-3 keep the weights in DeepSpeed's flat NCHW buffers; the batches carry the layout
    assert [layout for layout, _ in cl] == [[zero_stage == 0, True, True]] * 2
    assert [layout for layout, _ in nchw] == [[False, False, False]] * 2
    # the first step starts from the same weights and images (later PGD steps may flip a pixel)
    assert cl[0][1] == pytest.approx(nchw[0][1], rel=1e-4)


@pytest.mark.parametrize("name, cam_layer", [("timm/convnext_tiny", "net.stages.3"),
                                             ("timm/vit_small_patch16_224", "net.aad_cam"),
                                             ("timm/swin_tiny_patch4_window7_224", "net.aad_cam")])
def test_fit_trains_a_tiny_timm_model_and_evaluate_rebuilds_it(tmp_path, demo_root, name, cam_layer):
    from aadscale.evaluate import load_model
    from tests.conftest import TINY_TIMM
    kwargs = "{" + ", ".join(f"{k}: {v}" for k, v in TINY_TIMM[name].items()) + "}"
    fit(small_cfg(tmp_path, demo_root, f"model.name={name}", f"model.kwargs={kwargs}", "train.max_steps=2",
                  "eval.attacks=clean", "log.image_every=2", "train.checkpoint_every=0",
                  "optim.name=adamw", "optim.lr=0.001"))
    run = tmp_path / "run"
    events = read_events(run / "tb")
    assert [s for s, _ in events["scalars"]["train/pres"]] == [1, 2]
    assert all(v > 0 for _, v in events["scalars"]["train/pres"])  # the maps of x and x_adv differ
    assert events["images"].get("train/clean_adv_cam", 0) == 1
    loaded = load_model(run / "model.pt")  # the exported config carries model.kwargs
    assert loaded.config.model.kwargs == TINY_TIMM[name] and loaded.model.cam_layer == cam_layer
    assert loaded.model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_deterministic_kernels_follow_each_runs_own_config():
    from aadscale.engine.setup import seed_everything
    before = torch.are_deterministic_algorithms_enabled()
    try:
        seed_everything(0, True)
        assert torch.are_deterministic_algorithms_enabled()
        seed_everything(0, False)  # a later run of the same process, without train.deterministic
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before, warn_only=True)
