"""The training loop: ``fit(cfg, callbacks)`` under DeepSpeed, from one CPU process to many GPUs."""
from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from aadscale import models
from aadscale.attacks import eval_mode
from aadscale.attention import grad_cam
from aadscale.config import Config, to_dict
from aadscale.data import DEFAULT_DEMO_ROOT, build_loader, ensure_demo_data
from aadscale.distributed import (DistContext, all_reduce_sum, barrier, broadcast_object,
                                  deepspeed_config, init_distributed, load_user_config,
                                  micro_batch_size)
from aadscale.engine.callbacks import Callback, StepInfo
from aadscale.engine.checkpoint import Checkpointer, atomic_torch_save
from aadscale.engine.optim import build_optimizer, build_scheduler
from aadscale.engine.step import compute_loss, training_attack
from aadscale.evaluate import robust_accuracy
from aadscale.fused import from_attack_config
from aadscale.logging import Progress, RunFolder, TBLogger, cam_grid, default_run_name, flatten
from aadscale.memory_format import MEMORY_FORMATS, resolve_memory_format
from aadscale.objectives import build_objective

log = logging.getLogger("aadscale.engine")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the state before that step is saved."""


@dataclass
class Position:
    """Where the loop is: optimiser steps done and the current epoch."""
    step: int = 0
    epoch: int = 0


def seed_everything(seed: int, deterministic: bool) -> None:
    """Same initial weights on every rank and a reproducible run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def data_root(cfg: Config, ctx: DistContext) -> str:
    """The dataset folder; the demo data is made once, by rank 0, before any loader starts."""
    if cfg.data.dataset != "demo":
        if not cfg.data.root:
            raise ValueError(f"data.dataset={cfg.data.dataset!r} needs a folder: pass --data /path "
                             "(or data.root=/path)")
        return cfg.data.root
    root = cfg.data.root or str(Path(cfg.log.dir) / Path(DEFAULT_DEMO_ROOT).name)
    if ctx.is_main:
        ensure_demo_data(root)
    barrier()
    return root


def build_data(cfg: Config, ctx: DistContext, root: str, layout: str):
    """Train loader (per-rank micro-batches) and the held-out evaluation loader, batches in ``layout``."""
    micro = micro_batch_size(cfg.data.batch_size, ctx.world_size, cfg.train.grad_accum)
    common = dict(backend=cfg.data.backend, image_size=cfg.data.image_size, rank=ctx.rank,
                  world_size=ctx.world_size, dataset=cfg.data.dataset, seed=cfg.train.seed,
                  workers=cfg.data.workers, val_resize=cfg.data.val_resize,
                  memory_format=layout)
    train = build_loader(root, cfg.data.train_split, batch_size=micro, **common)
    val = build_loader(root, cfg.data.val_split, batch_size=cfg.eval.batch_size, train=False, **common)
    if train.num_classes != cfg.model.num_classes:
        raise ValueError(f"the data at {root} has {train.num_classes} classes but "
                         f"model.num_classes={cfg.model.num_classes}; set model.num_classes="
                         f"{train.num_classes} or point --data at the right folder")
    if len(train) == 0:
        raise ValueError(f"the training split has fewer images per rank than the micro-batch ({micro}); "
                         "lower data.batch_size or use fewer ranks")
    return train, val


def evaluate(model, val_loader, cfg: Config, ctx: DistContext) -> dict[str, float]:
    """Robust accuracy on a fixed subset of the validation split, summed over ranks."""
    per_rank = math.ceil(cfg.eval.subset / ctx.world_size / cfg.eval.batch_size)
    val_loader.load_state_dict({"epoch": 0, "batch": 0})  # the same images every time
    local = robust_accuracy(model, val_loader, cfg.eval.attacks, eps=cfg.eval.eps,
                            progress=ctx.is_main, max_batches=per_rank, worst=len(cfg.eval.attacks) > 1)
    names = [k for k in local if k != "n"]
    counts = torch.tensor([local[k] * local["n"] / 100 for k in names] + [local["n"]], dtype=torch.float64)
    all_reduce_sum(counts)
    n = counts[-1].item()
    return {**{k: 100.0 * counts[i].item() / n for i, k in enumerate(names)}, "n": int(n)}


def reduce_terms(out: dict[str, torch.Tensor], y: torch.Tensor, world_size: int) -> dict[str, float]:
    """Mean loss terms and accuracies over ranks (one collective for all of them)."""
    keys = [k for k, v in out.items() if not k.startswith("logits") and v.dim() == 0]
    values = [out[k].detach().float() for k in keys]
    for name in ("logits_clean", "logits_adv"):
        if name in out:
            keys.append("acc_" + name.split("_")[1])
            values.append((out[name].argmax(1) == y).float().mean())
    stacked = torch.stack(values).double().cpu()
    return dict(zip(keys, (all_reduce_sum(stacked) / world_size).tolist()))


def export_model(engine, cfg: Config, path: Path, ctx: DistContext) -> None:
    """A plain float32 state_dict plus the config, gathered from ZeRO-3 shards where needed."""
    import deepspeed
    module = engine.module
    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None,
                                           enabled=cfg.train.zero_stage == 3):
        if ctx.is_main:
            state = {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}
            atomic_torch_save({"model": state, "config": to_dict(cfg)}, path)
    barrier()


def build_engine(cfg: Config, ctx: DistContext, steps_per_epoch: int,
                 deepspeed_config_path: str | None, layout: str):
    """The model under DeepSpeed, its optimiser and learning-rate schedule (weights in ``layout`` at ZeRO-0)."""
    import deepspeed
    model = models.build(cfg.model.name, cfg.model.num_classes, cfg.model.pretrained or False,
                         in_channels=cfg.model.in_channels, dropout=cfg.model.dropout).to(ctx.device)
    optimizer = build_optimizer(cfg.optim, model.parameters())
    scheduler = build_scheduler(optimizer, cfg.optim, steps_per_epoch, steps_per_epoch * cfg.train.epochs)
    ds_cfg = (load_user_config(deepspeed_config_path, cfg, ctx.world_size) if deepspeed_config_path
              else deepspeed_config(cfg, ctx.world_size))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=ds_cfg)
    # After initialize: DeepSpeed broadcasts parameters as flat bytes, which needs NCHW ones.
    # Under ZeRO 1-3 the parameters are views of DeepSpeed's flat buffers (or partitions), so
    # they stay NCHW and the activations carry the layout (a convolution follows its input).
    if cfg.train.zero_stage == 0:
        engine.module.to(memory_format=MEMORY_FORMATS[layout])
    if ctx.is_main:
        log.info("memory format %s (train.memory_format=%s), weights %s", layout, cfg.train.memory_format,
                 layout if cfg.train.zero_stage == 0 else "contiguous (ZeRO's flat buffers)")
    return engine, scheduler


def log_cam_grid(tb: TBLogger, net, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                 step: int, n: int = 8) -> None:
    """Clean and adversarial images with their Grad-CAM overlays, as one TensorBoard grid."""
    n = min(n, x.shape[0])
    with eval_mode(net):  # a logging pass must not move BatchNorm statistics
        cams = grad_cam(net, x[:n], y[:n]), grad_cam(net, x_adv[:n], y[:n])
    tb.image_grid("train/clean_adv_cam", cam_grid(x[:n], x_adv[:n], *cams), step)


def fit(cfg: Config, callbacks: Sequence[Callback] = (), *, resume: str | None = None,
        deepspeed_config_path: str | None = None) -> dict:
    """Train ``cfg`` to the end (or ``train.max_steps``); return the final metrics.

    Every run writes ``<log.dir>/<log.name>/``: config.yaml, tb/, checkpoints/, eval.json,
    model.pt. ``resume``: None (fresh start; refuses a folder with checkpoints), "auto"
    (latest checkpoint if any) or a checkpoint tag.
    """
    ctx = init_distributed()
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    name = broadcast_object(cfg.log.name or default_run_name(cfg.preset))
    run = RunFolder(Path(cfg.log.dir), name)
    checkpointer = Checkpointer(run.checkpoints, cfg.train.keep_checkpoints, ctx)
    if resume is None and checkpointer.latest() is not None:
        raise ValueError(f"{run.path} already holds checkpoints; pass --resume auto to continue "
                         "it or choose another --name")
    layout = resolve_memory_format(cfg.train.memory_format, ctx.device)
    train_loader, val_loader = build_data(cfg, ctx, data_root(cfg, ctx), layout)
    if ctx.is_main:
        run.write_config(cfg)
        log.info("run folder %s, %d rank(s), data backend %s", run.path, ctx.world_size,
                 train_loader.backend)

    steps_per_epoch = len(train_loader) // cfg.train.grad_accum
    engine, scheduler = build_engine(cfg, ctx, steps_per_epoch, deepspeed_config_path, layout)
    generator = torch.Generator(device=ctx.device).manual_seed(cfg.train.seed * 1000 + ctx.rank)
    pos = Position()
    tag = checkpointer.latest() if resume == "auto" else resume
    if tag:
        client = checkpointer.load(engine, tag, generator)
        pos = Position(**client["position"])
        train_loader.load_state_dict(client["loader"])
        if ctx.is_main:
            log.info("resumed from %s at step %d, epoch %d", tag, pos.step, pos.epoch)

    oc = cfg.objective
    objective = build_objective(oc.name, lambda1=oc.lambda1, lambda2=oc.lambda2, beta=oc.beta,
                                cls_loss=oc.cls_loss, cam_weights=oc.cam_weights,
                                theta=oc.theta if oc.theta == "mean" else float(oc.theta),
                                bn_stats=oc.bn_stats)
    net = engine.module  # attacks and Grad-CAM call the module, not the engine (FINDINGS: ZeRO hooks)
    attack_step = from_attack_config(net, cfg.attack, mode=cfg.train.step_mode)
    max_steps = cfg.train.max_steps or steps_per_epoch * cfg.train.epochs
    tb = TBLogger(run.tb, enabled=ctx.is_main)
    bar = Progress(total=max_steps, initial=pos.step, enabled=ctx.is_main, desc=name,
                   log_every=cfg.log.scalar_every)
    metrics: dict = {}
    saved_at = pos.step if tag else -1

    def save(tag_name: str) -> Path:
        nonlocal saved_at
        saved_at = pos.step
        if attack_step is not None:
            attack_step.check_pixels()  # never save a state trained on out-of-range pixels unnoticed
        client = {"position": vars(pos).copy(), "loader": train_loader.state_dict(),
                  "config": to_dict(cfg)}
        folder = checkpointer.save(engine, tag_name, client, generator)
        for cb in callbacks:
            cb.on_checkpoint(StepInfo(pos.step, pos.epoch, dict(metrics), run.path, folder))
        return folder

    try:
        while pos.epoch < cfg.train.epochs and pos.step < max_steps:
            train_loader.set_epoch(pos.epoch)
            t_data = time.perf_counter()
            for x, y in train_loader:
                # the one layout conversion, on the device (a no-op for DALI's channels_last batches)
                x = x.to(ctx.device, non_blocking=True, memory_format=MEMORY_FORMATS[layout])
                y = y.to(ctx.device, non_blocking=True)
                t_step = time.perf_counter()
                net.train()
                x_adv = (attack_step(x, y, generator).x_adv if attack_step is not None
                         else training_attack(net, x, y, cfg.attack, generator))
                out = compute_loss(net, objective, x, y, x_adv, cfg.train.precision)
                bad = torch.tensor([0.0 if torch.isfinite(out["loss"]) else 1.0])
                if all_reduce_sum(bad).item() > 0:  # every rank stops together, weights untouched
                    folder = save(f"step{pos.step}-before-nonfinite")
                    raise NonFiniteLossError(
                        f"the loss became {out['loss'].item()} at step {pos.step + 1} (epoch {pos.epoch}); "
                        f"the state before that step is saved in {folder}. Lower optim.lr, set "
                        "optim.grad_clip, check the data, then resume with --resume auto")
                boundary = engine.is_gradient_accumulation_boundary()  # this step() updates weights
                engine.backward(out["loss"])
                engine.step()
                if not boundary:
                    continue
                pos.step += 1
                if pos.step % cfg.log.scalar_every == 0 or pos.step == max_steps:
                    if attack_step is not None:
                        attack_step.check_pixels()  # deferred from every step to this sync point
                    metrics = reduce_terms(out, y, ctx.world_size)
                    now = time.perf_counter()
                    metrics.update(lr=scheduler.get_last_lr()[0],
                                   images_per_s=x.shape[0] * ctx.world_size / max(now - t_step, 1e-9),
                                   data_wait_s=t_step - t_data)
                    if torch.cuda.is_available():
                        metrics["gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
                    tb.scalars(metrics, pos.step, prefix="train")
                bar.update(1, loss=metrics.get("loss", float("nan")),
                           acc_adv=metrics.get("acc_adv", float("nan")))
                if ctx.is_main and cfg.log.image_every and x_adv is not None \
                        and pos.step % cfg.log.image_every == 0:
                    log_cam_grid(tb, net, x, x_adv, y, pos.step)
                if cfg.train.checkpoint_every and pos.step % cfg.train.checkpoint_every == 0:
                    save(f"step{pos.step}")
                for cb in callbacks:
                    cb.on_step_end(StepInfo(pos.step, pos.epoch, dict(metrics), run.path))
                if cfg.train.max_steps and pos.step >= max_steps:
                    break  # a full last epoch instead ends through the for-else below
                t_data = time.perf_counter()
            else:
                pos.epoch += 1
                if cfg.eval.every_epochs and pos.epoch % cfg.eval.every_epochs == 0 \
                        and pos.epoch < cfg.train.epochs:
                    metrics.update({f"eval/{k}": v for k, v in evaluate(net, val_loader, cfg, ctx).items()})
                    tb.scalars({k: v for k, v in metrics.items() if k.startswith("eval/")}, pos.step)
                save(f"epoch{pos.epoch}")
                for cb in callbacks:
                    cb.on_epoch_end(StepInfo(pos.step, pos.epoch, dict(metrics), run.path))
        if saved_at != pos.step:
            save(f"step{pos.step}")
        final = evaluate(net, val_loader, cfg, ctx)
        tb.scalars({f"eval/{k}": v for k, v in final.items()}, pos.step)
        if ctx.is_main:
            run.write_json("eval.json", {"step": pos.step, "epoch": pos.epoch, "eps": cfg.eval.eps,
                                         "accuracy": final})
            tb.hparams(flatten(to_dict(cfg)), {f"hparam/{k}": v for k, v in final.items() if k != "n"})
        export_model(engine, cfg, run.path / "model.pt", ctx)
        return {"step": pos.step, "epoch": pos.epoch, "eval": final, "run_dir": str(run.path),
                "train": metrics}
    finally:
        bar.close()
        tb.close()
