"""The training loop, as timm's ``train.py`` splits it: ``fit`` = set up, then per epoch
``train_one_epoch`` and ``end_of_epoch`` (evaluation, checkpoint, callbacks), then ``finish``."""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from aadscale.attention import grad_cam
from aadscale.config import Config, to_dict
from aadscale.data.loader import Loader
from aadscale.distributed import (DistContext, SavedOnSignal, StopSignals, all_gather_object, broadcast_object,
                                  init_distributed, sum_over_ranks)
from aadscale.engine.callbacks import Callback, StepInfo
from aadscale.engine.checkpoint import Checkpointer, rng_state, set_rng_state
from aadscale.engine.guard import NonFiniteGuard, Reading
from aadscale.engine.resume import (check_resume_classes, check_resume_config, check_resume_epoch,
                                    check_resume_world_size, describe_changes, read_saved_run)
from aadscale.data.mix import build_mix
from aadscale.engine.setup import build_data, build_ema, build_engine, data_root, export_model, seed_everything
from aadscale.engine.step import TrainingAttackStep, build_training_attack, compute_loss, warmed_budget
from aadscale.errors import InputError
from aadscale.evaluate import robust_accuracy
from aadscale.labels import hard_labels
from aadscale.memory_format import MEMORY_FORMATS, resolve_memory_format
from aadscale.models.modes import eval_mode
from aadscale.objectives import build_objective
from aadscale.objectives.registry import Objective, objective_kind
from aadscale.tracking import Progress, RunFolder, TBLogger, cam_grid, default_run_name, flatten

log = logging.getLogger("aadscale.engine")
ENGINE_COUNTERS = ("global_steps", "global_samples", "skipped_steps", "micro_steps")


class NonFiniteLossError(RuntimeError):
    """The loss or the gradients became NaN or inf; the state before that step is saved."""


@dataclass
class Position:
    """Where the loop is: optimiser steps done, the current epoch, and whether the evaluation of the epoch
    just ended is still due (a stop signal cut it short)."""
    step: int = 0
    epoch: int = 0
    eval_due: bool = False


@dataclass
class Window:
    """Images and host waits since the last logging step: throughput over the interval, not one async step."""
    start: float = field(default_factory=time.perf_counter)
    images: int = 0
    steps: int = 0
    data_wait: float = 0.0

    def rates(self, now: float) -> dict[str, float]:
        """images/s over the interval and the mean host wait for data per step."""
        return {"images_per_s": self.images / max(now - self.start, 1e-9),
                "data_wait_s": self.data_wait / max(self.steps, 1)}


@dataclass
class Run:
    """Everything ``fit`` set up, and the loop's state: position, latest metrics, last save."""
    cfg: Config
    ctx: DistContext
    folder: RunFolder
    checkpointer: Checkpointer
    train_loader: Loader
    val_loader: Loader
    engine: "deepspeed.DeepSpeedEngine"  # noqa: F821 (imported where DeepSpeed is set up)
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    attack: TrainingAttackStep | None
    objective: Objective
    layout: str
    max_steps: int
    tb: TBLogger
    bar: Progress | None
    signals: StopSignals
    guard: NonFiniteGuard | None = None
    mix: Callable | None = None  # Mixup/CutMix of the device batch (timm's Mixup)
    ema: torch.nn.Module | None = None  # the EMA of the weights (timm's ModelEmaV3)
    callbacks: Sequence[Callback] = ()
    pos: Position = field(default_factory=Position)
    window: Window = field(default_factory=Window)
    metrics: dict = field(default_factory=dict)
    saved_at: int = -1
    last_checkpoint: Path | None = None
    stop_noted: bool = False  # this rank has folded a stop signal into a step's reduction

    @property
    def net(self) -> torch.nn.Module:
        """The wrapped model: attacks and Grad-CAM call it, not the engine (FINDINGS: ZeRO hooks)."""
        return self.engine.module

    def info(self, **extra) -> StepInfo:
        """The callbacks' view of the run now."""
        return StepInfo(self.pos.step, self.pos.epoch, dict(self.metrics), self.folder.path, **extra)


def setup(cfg: Config, callbacks: Sequence[Callback], resume: str | None,
          deepspeed_config_path: str | None, allow_changes: Sequence[str] = (),
          signals: StopSignals | None = None) -> Run:
    """Run folder, data, model under DeepSpeed, attack and objective; the state of a checkpoint if resuming
    (refused if it would change the run's config beyond ``allow_changes``, or its classes). ``signals``: the
    stop signals caught for the run (none by default)."""
    ctx = init_distributed()
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    folder = RunFolder(Path(cfg.log.dir), broadcast_object(cfg.log.name or default_run_name(cfg.preset)))
    checkpointer = Checkpointer(folder.checkpoints, cfg.train.keep_checkpoints, ctx)
    if resume is None and checkpointer.latest() is not None:
        raise InputError(f"{folder.path} already holds checkpoints; pass --resume auto to continue "
                         "it or choose another --name")
    tag = checkpointer.resume_tag(resume) if resume else None
    saved = read_saved_run(checkpointer, tag, folder.config_path) if tag else None
    changes = check_resume_config(saved, cfg, allow_changes) if saved else {}
    universal = check_resume_world_size(saved, cfg, ctx.world_size) if saved else False
    layout = resolve_memory_format(cfg.train.memory_format, ctx.device)
    train_loader, val_loader = build_data(cfg, ctx, data_root(cfg, ctx), layout)
    if saved:
        check_resume_classes(saved, train_loader.classes)
        check_resume_epoch(saved, train_loader)
    if ctx.is_main:
        log.info("run folder %s, %d rank(s), data backend %s; evaluates at eps %.4g (%s)", folder.path,
                 ctx.world_size, train_loader.backend, cfg.eval.eps, "= attack.eps" if
                 cfg.eval.eps == cfg.attack.eps else f"set by eval.eps; attack.eps is {cfg.attack.eps:.4g}")
    steps_per_epoch = len(train_loader) // cfg.train.grad_accum
    engine, scheduler = build_engine(cfg, ctx, steps_per_epoch, deepspeed_config_path, layout)
    generator = torch.Generator(device=ctx.device).manual_seed(cfg.train.seed * 1000 + ctx.rank)
    run = Run(cfg, ctx, folder, checkpointer, train_loader, val_loader, engine, scheduler, generator,
              attack=None, objective=build_objective(**dataclasses.asdict(cfg.objective)), layout=layout,
              max_steps=cfg.train.max_steps or steps_per_epoch * cfg.train.epochs,
              tb=TBLogger(folder.tb, enabled=ctx.is_main), bar=None, signals=signals or StopSignals([]),
              callbacks=callbacks,
              mix=build_mix(cfg.augment.mixup, cfg.augment.cutmix, prob=cfg.augment.mix_prob,
                            switch=cfg.augment.mix_switch, num_classes=cfg.model.num_classes,
                            micro_batch=train_loader.batch_size),
              ema=build_ema(cfg, engine.module))
    if tag:
        client = checkpointer.load(engine, tag, generator, run.ema, seed=cfg.train.seed, universal=universal)
        load_position(run, client)
        run.saved_at, run.last_checkpoint = run.pos.step, checkpointer.directory / tag
        if ctx.is_main:
            log.info("resumed from %s at step %d, epoch %d%s", tag, run.pos.step, run.pos.epoch,
                     f"; changed: {describe_changes(changes)}" if changes else "")
            if saved.world_size != ctx.world_size:
                log.info("checkpoint saved by %d rank(s), resumed on %d%s: the same global batches and schedule; "
                         "ranks it has no RNG of draw from (seed, rank, step) with rank 0's BatchNorm buffers",
                         saved.world_size, ctx.world_size, " via DeepSpeed's universal checkpoint" if universal else "")
    if ctx.is_main:
        folder.record_config(cfg, f"resume-{tag}" if tag else "start")
        folder.write_json("classes", train_loader.classes)
    run.attack = build_training_attack(run.net, cfg.attack, mode=cfg.train.step_mode,
                                       loss=objective_kind(cfg.objective.name).attack_loss)
    run.bar = Progress(total=run.max_steps, initial=run.pos.step, enabled=ctx.is_main, desc=folder.path.name,
                       log_every=cfg.log.scalar_every)
    run.guard = NonFiniteGuard(engine, ctx.device, extra=ema_tensors(run.ema))
    run.guard.mark(run.pos.step, loop_state(run))
    return run


def ema_tensors(ema: torch.nn.Module | None) -> list[torch.Tensor]:
    """The EMA's parameters and buffers (the guard restores them with the weights)."""
    return [] if ema is None else [*ema.module.parameters(), *ema.module.buffers()]


def position(run: Run) -> dict:
    """Where the loop is: optimiser steps, epoch, and the batches of the epoch already consumed."""
    return {"position": vars(run.pos).copy(), "loader": run.train_loader.state_dict()}


def load_position(run: Run, state: dict) -> None:
    """Inverse of ``position``."""
    run.pos = Position(**state["position"])
    run.train_loader.load_state_dict(state["loader"])


def loop_state(run: Run) -> dict:
    """The host side of the state before the next step: position, RNG, schedule, DeepSpeed's counters."""
    return {**position(run), "rng": rng_state(run.generator), "scheduler": run.scheduler.state_dict(),
            "engine": {k: getattr(run.engine, k) for k in ENGINE_COUNTERS}}


def load_loop_state(run: Run, state: dict) -> None:
    """Inverse of ``loop_state`` (the learning rate of the optimiser's groups included)."""
    load_position(run, state)
    set_rng_state(state["rng"], run.generator)
    run.scheduler.load_state_dict(state["scheduler"])
    for group, lr in zip(run.scheduler.optimizer.param_groups, run.scheduler.get_last_lr()):
        group["lr"] = lr
    for name, value in state["engine"].items():
        setattr(run.engine, name, value)


def read_guard(run: Run) -> Reading:
    """Read the guard (one device sync); after a flagged step put back the state before it, save it, and stop.
    A stop signal a rank noted is returned for the caller to stop at its own step boundary."""
    reading = run.guard.verdict()
    verdict = reading.nonfinite
    if verdict is None:
        return reading
    load_loop_state(run, run.guard.restore(verdict.step))
    folder = save(run, f"step{verdict.step}-before-nonfinite")
    value = "" if verdict.loss is None else f" (loss {verdict.loss})"
    raise NonFiniteLossError(
        f"{verdict.what} became non-finite{value} at step {verdict.step + 1} (epoch {run.pos.epoch}); "
        f"the state before that step is saved in {folder}. Lower optim.lr or set optim.grad_clip, check "
        "the data, then resume with --resume auto --allow-change optim.lr,optim.grad_clip")


def stop_on_signal(run: Run, during: str) -> None:
    """Every rank is here at the same step: make sure a checkpoint of it exists, say which signal reached which
    rank, and raise ``SavedOnSignal`` (exit code 75 through the exit path)."""
    folder = run.last_checkpoint if run.saved_at == run.pos.step else save(run, f"step{run.pos.step}")
    received = run.signals.received
    names = all_gather_object(None if received is None else received.name)  # once, at the stop
    if received is not None:
        log.warning("rank %d: stopping at step %d, %.2f s after %s", run.ctx.rank, run.pos.step,
                    time.monotonic() - received.at, received.name)
    ranks = [r for r, name in enumerate(names) if name]
    first = next(name for name in names if name)
    if run.ctx.is_main:
        log.warning("%s reached rank(s) %s during %s; every rank stopped at step %d (epoch %d) and saved %s; "
                    "exit code 75 (saved, resume me): run the same command with --resume auto to continue",
                    first, ", ".join(map(str, ranks)), during, run.pos.step, run.pos.epoch, folder)
    raise SavedOnSignal(first, run.pos.step, folder)


def save(run: Run, tag: str) -> Path:
    """A checkpoint of the whole state under ``tag``; the callbacks hear of it."""
    run.saved_at = run.pos.step
    if run.attack is not None:
        run.attack.check_pixels()  # never save a state trained on out-of-range pixels unnoticed
    client = {**position(run), "config": to_dict(run.cfg), "classes": run.train_loader.classes,
              "world_size": run.ctx.world_size}
    folder = run.checkpointer.save(run.engine, tag, client, run.generator, run.ema)
    run.last_checkpoint = folder
    for cb in run.callbacks:
        cb.on_checkpoint(run.info(checkpoint=folder))
    return folder


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor) -> tuple[dict, torch.Tensor | None, bool]:
    """Attack, loss, backward and DeepSpeed's step for one micro-batch: (loss dict, x_adv, weights updated).

    Nothing here waits on the host: the guard judges the loss and (ZeRO-0, no fp16 loss
    scaling) the gradients' global norm on the device; ZeRO 1-3 take that norm in their own
    step and skip a non-finite update, which the guard hears of.
    """
    run.net.train()
    x_adv = run.attack(x, y, run.generator).x_adv if run.attack is not None else None
    out = compute_loss(run.net, run.objective, x, y, x_adv, run.cfg.train.precision)
    run.guard.flag_loss(out["loss"])
    boundary = run.engine.is_gradient_accumulation_boundary()  # this step() updates the weights
    run.engine.backward(out["loss"])
    if boundary and run.engine.zero_optimization_stage() == 0 and run.engine.torch_autocast_z0_gradscaler is None:
        run.guard.flag_gradients(list(run.net.parameters()))
    run.engine.step()
    if boundary:
        if not run.engine.was_step_applied():
            run.guard.flag_skipped()
        elif run.ema is not None:
            run.ema.update(run.net, step=run.pos.step + 1)  # timm's count: the first update copies the weights
        noted = run.signals.received
        if noted is not None and not run.stop_noted:
            run.stop_noted = True
            log.warning("rank %d: %s received during step %d; every rank stops at the next step that reads the "
                        "device (logging, checkpoint or epoch end)", run.ctx.rank, noted.name, run.pos.step + 1)
        run.guard.close_step(stop_noted=noted is not None)  # a host flag: a step without a signal adds nothing
    return out, x_adv, boundary


def after_update(run: Run, out: dict, x: torch.Tensor, x_adv: torch.Tensor | None, y: torch.Tensor) -> None:
    """Count the optimiser step; on logging and checkpoint steps read the guard (the loop's only syncs),
    log scalars over the interval, images, checkpoint; mark the state before the next step; callbacks."""
    cfg, pos = run.cfg, run.pos
    pos.step += 1
    run.window.images += x.shape[0] * run.ctx.world_size * cfg.train.grad_accum
    run.window.steps += 1
    logging = pos.step % cfg.log.scalar_every == 0 or pos.step == run.max_steps
    checkpoint = bool(cfg.train.checkpoint_every and pos.step % cfg.train.checkpoint_every == 0)
    reading = read_guard(run) if logging or checkpoint else None
    if logging:
        if run.attack is not None:
            run.attack.check_pixels()  # deferred from every step to this sync point
        run.metrics = reduce_terms(out, y, run.ctx.world_size)
        run.metrics.update(lr=run.scheduler.get_last_lr()[0], **run.window.rates(time.perf_counter()))
        run.window = Window()
        if torch.cuda.is_available():
            run.metrics["gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
        run.tb.scalars(run.metrics, pos.step, prefix="train")
    run.bar.update(1, loss=run.metrics.get("loss", float("nan")), acc_adv=run.metrics.get("acc_adv", float("nan")))
    if run.ctx.is_main and cfg.log.image_every and x_adv is not None and pos.step % cfg.log.image_every == 0:
        log_cam_grid(run.tb, run.net, x, x_adv, y, pos.step)
    if checkpoint:
        save(run, f"step{pos.step}")
    run.guard.mark(pos.step, loop_state(run))
    for cb in run.callbacks:
        cb.on_step_end(run.info())
    if reading is not None and reading.stop_step is not None:
        stop_on_signal(run, f"step {reading.stop_step + 1}")


def train_one_epoch(run: Run) -> bool:
    """Train through the rest of the current epoch; False if ``train.max_steps`` ended it early."""
    run.train_loader.set_epoch(run.pos.epoch)
    if run.attack is not None and run.pos.epoch < run.cfg.attack.warmup_epochs:  # full size from the last one on
        eps, alpha = warmed_budget(run.cfg.attack, run.pos.epoch)
        run.attack.set_budget(eps, alpha)
        if run.ctx.is_main:
            step = "" if run.cfg.attack.warmup == "eps" else f", step {alpha:.4g}"
            log.info("epoch %d: training attack at eps %.4g%s (warm-up)", run.pos.epoch, eps, step)
    memory_format = MEMORY_FORMATS[run.layout]
    t_data = time.perf_counter()
    for x, y in run.train_loader:
        run.window.data_wait += time.perf_counter() - t_data
        # the one layout conversion, on the device (a no-op for DALI's channels_last batches)
        x = x.to(run.ctx.device, non_blocking=True, memory_format=memory_format)
        y = y.to(run.ctx.device, non_blocking=True)
        if run.mix is not None:
            x, y = run.mix(x, y)
        out, x_adv, updated = train_step(run, x, y)
        if updated:
            after_update(run, out, x, x_adv, y)
            if run.cfg.train.max_steps and run.pos.step >= run.max_steps:
                return False
        t_data = time.perf_counter()
    return True


def end_of_epoch(run: Run) -> None:
    """The epoch is over: evaluate when due (not after the last: ``finish`` does), save, tell the callbacks.
    After a stop signal the state is saved at once, the evaluation left due for the resumed run."""
    cfg = run.cfg
    reading = read_guard(run)
    run.pos.epoch += 1
    run.saved_at = -1  # a checkpoint of this step (train.checkpoint_every) holds the epoch before
    run.pos.eval_due = bool(cfg.eval.every_epochs and run.pos.epoch % cfg.eval.every_epochs == 0
                            and run.pos.epoch < cfg.train.epochs)
    if reading.stop_step is not None:
        stop_on_signal(run, f"step {reading.stop_step + 1}")
    evaluated = evaluate_epoch(run)
    save(run, f"epoch{run.pos.epoch}")
    run.guard.mark(run.pos.step, loop_state(run))  # the next step starts the next epoch
    for cb in run.callbacks:
        cb.on_epoch_end(run.info(evaluated=evaluated))


def evaluate_epoch(run: Run) -> bool:
    """The epoch-end evaluation if it is due; True if it ran. A stop signal during it ends it early on every
    rank: the state is saved with the evaluation still due (a resumed run runs it first) and the run stops."""
    if not run.pos.eval_due:
        return False
    scores = {}
    for prefix, model in evaluated_models(run).items():
        accuracy = evaluate(model, run.val_loader, run.cfg, run.ctx, run.signals)
        if accuracy is None:
            stop_on_signal(run, "the evaluation")
        scores.update({f"{prefix}/{k}": v for k, v in accuracy.items()})
    run.metrics.update(scores)
    run.tb.scalars(scores, run.pos.step)
    run.pos.eval_due = False
    return True


def finish(run: Run) -> dict:
    """The last checkpoint if it is new, the final evaluation, eval.json, hparams and model.pt."""
    cfg, pos = run.cfg, run.pos
    reading = read_guard(run)
    if run.saved_at != pos.step:
        save(run, f"step{pos.step}")
    if reading.stop_step is not None:
        stop_on_signal(run, f"step {reading.stop_step + 1}")
    results = {prefix: evaluate(model, run.val_loader, cfg, run.ctx, run.signals)
               for prefix, model in evaluated_models(run).items()}
    if None in results.values():  # cut short by a stop signal: a resumed run evaluates again
        stop_on_signal(run, "the final evaluation")
    final = results["eval"]
    for prefix, accuracy in results.items():
        run.tb.scalars({f"{prefix}/{k}": v for k, v in accuracy.items()}, pos.step)
    if run.ctx.is_main:
        ema = {"accuracy_ema": results["eval_ema"]} if "eval_ema" in results else {}
        run.folder.write_json("eval", {"step": pos.step, "epoch": pos.epoch, "eps": cfg.eval.eps, "accuracy": final,
                                       **ema})
        run.tb.hparams(flatten(to_dict(cfg)), {f"hparam/{k}": v for k, v in final.items() if k != "n"})
    export_model(run.engine, cfg, run.train_loader.classes, run.folder, run.ctx, run.ema)
    return {"step": pos.step, "epoch": pos.epoch, "eval": final, "run_dir": str(run.folder.path),
            "train": run.metrics}


def fit(cfg: Config, callbacks: Sequence[Callback] = (), *, resume: str | None = None,
        deepspeed_config_path: str | None = None, allow_changes: Sequence[str] = ()) -> dict:
    """Train ``cfg`` to the end (or ``train.max_steps``); return the final metrics.

    Every run writes ``<log.dir>/<log.name>/``: config.yaml, configs/, classes.json, tb/,
    checkpoints/, eval.json, model.pt. ``resume``: None (fresh start; refuses a folder with
    checkpoints), "auto" (latest checkpoint if any) or a checkpoint tag. A resume refuses
    config changes outside ``resume.ALLOWED_ON_RESUME`` unless ``allow_changes`` names the
    fields (or sections), and data of other classes.

    With ``train.save_on_signal``, a stop signal (``train.stop_signals``) makes every rank stop at the
    next step boundary where the loop reads the device, with a complete checkpoint there, and raise
    ``SavedOnSignal`` (the entry points exit with code 75: resume me).
    """
    signals = StopSignals(cfg.train.stop_signals if cfg.train.save_on_signal else []).install()
    try:
        run = setup(cfg, callbacks, resume, deepspeed_config_path, allow_changes, signals)
        try:
            if evaluate_epoch(run):  # a stop signal cut the last epoch's evaluation short
                for cb in run.callbacks:
                    cb.on_epoch_end(run.info(evaluated=True))
            while run.pos.epoch < cfg.train.epochs and run.pos.step < run.max_steps:
                if not train_one_epoch(run):
                    break
                end_of_epoch(run)
            return finish(run)
        finally:
            run.bar.close()
            run.tb.close()
    finally:
        signals.close()


def evaluated_models(run: Run) -> dict[str, torch.nn.Module]:
    """What an evaluation attacks, by metric prefix: the trained weights (``eval``) and their EMA (``eval_ema``)."""
    return {"eval": run.net, **({"eval_ema": run.ema.module} if run.ema is not None else {})}


def evaluate(model: torch.nn.Module, val_loader: Loader, cfg: Config, ctx: DistContext,
             signals: StopSignals | None = None) -> dict[str, float] | None:
    """Robust accuracy on a fixed subset of the validation split, summed over ranks, ``worst`` included;
    None when a stop signal (``signals``) cut it short on any rank (the sum carries that, so all agree)."""
    per_rank = math.ceil(cfg.eval.subset / ctx.world_size / cfg.eval.batch_size)
    val_loader.load_state_dict({"epoch": 0, "batch": 0})  # the same images every time
    stop = None if signals is None else (lambda: signals.received is not None)
    local = robust_accuracy(model, val_loader, cfg.eval.attacks, eps=cfg.eval.eps, progress=ctx.is_main,
                            max_batches=per_rank, worst=len(cfg.eval.attacks) > 1, stop=stop)
    names = [k for k in local if k != "n"]
    cut = float(stop is not None and stop())
    counts = sum_over_ranks(torch.tensor([local[k] * local["n"] / 100 for k in names] + [local["n"], cut],
                                         dtype=torch.float64)).cpu()
    if counts[-1].item() > 0:
        return None
    n = counts[-2].item()
    return {**{k: 100.0 * counts[i].item() / n for i, k in enumerate(names)}, "n": int(n)}


def reduce_terms(out: dict[str, torch.Tensor], y: torch.Tensor, world_size: int) -> dict[str, float]:
    """Mean loss terms and accuracies over ranks (one collective for all of them)."""
    keys = [k for k, v in out.items() if not k.startswith("logits") and v.dim() == 0]
    values = [out[k].detach().float() for k in keys]
    for name in ("logits_clean", "logits_adv"):
        if name in out:
            keys.append("acc_" + name.split("_")[1])
            values.append((out[name].argmax(1) == hard_labels(y)).float().mean())
    return dict(zip(keys, (sum_over_ranks(torch.stack(values).double()) / world_size).tolist()))


def log_cam_grid(tb: TBLogger, net, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                 step: int, n: int = 8) -> None:
    """Clean and adversarial images with their Grad-CAM overlays, as one TensorBoard grid."""
    n = min(n, x.shape[0])
    with eval_mode(net):  # a logging pass must not move BatchNorm statistics
        cams = grad_cam(net, x[:n], y[:n]), grad_cam(net, x_adv[:n], y[:n])
    tb.image_grid("train/clean_adv_cam", cam_grid(x[:n], x_adv[:n], *cams), step)
