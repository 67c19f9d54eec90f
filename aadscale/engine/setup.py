"""What a run is built from, once: seeds, data, the model under DeepSpeed, and the exported model."""
from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch

from aadscale import models
from aadscale.atomic import atomic_torch_save
from aadscale.config import Config, to_dict
from aadscale.data import DEFAULT_DEMO_ROOT, build_loader, ensure_demo_data
from aadscale.data.classes import class_difference
from aadscale.distributed import DistContext, barrier, deepspeed_config, load_user_config, micro_batch_size
from aadscale.engine.optim import build_optimizer, build_scheduler
from aadscale.errors import InputError
from aadscale.memory_format import MEMORY_FORMATS
from aadscale.tracking import RunFolder

log = logging.getLogger("aadscale.engine")


def seed_everything(seed: int, deterministic: bool) -> None:
    """Same initial weights on every rank and a reproducible run; deterministic kernels exactly when asked
    (an earlier run of the process may have turned them on)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if deterministic:
        torch.backends.cudnn.benchmark = False


def data_root(cfg: Config, ctx: DistContext) -> str:
    """The dataset folder; the demo data is made once, by rank 0, before any loader starts."""
    if cfg.data.dataset != "demo":
        if not cfg.data.root:
            raise InputError(f"data.dataset={cfg.data.dataset!r} needs a folder: pass --data /path "
                             "(or data.root=/path)")
        return cfg.data.root
    root = cfg.data.root or str(Path(cfg.log.dir) / Path(DEFAULT_DEMO_ROOT).name)
    if ctx.is_main:
        ensure_demo_data(root)
    barrier()
    return root


def build_data(cfg: Config, ctx: DistContext, root: str, layout: str):
    """Train loader (per-rank micro-batches) and the held-out evaluation loader, batches in ``layout``;
    both splits must have the same classes, in the same order."""
    micro = micro_batch_size(cfg.data.batch_size, ctx.world_size, cfg.train.grad_accum)
    common = dict(backend=cfg.data.backend, image_size=cfg.data.image_size, rank=ctx.rank,
                  world_size=ctx.world_size, dataset=cfg.data.dataset, seed=cfg.train.seed,
                  workers=cfg.data.workers, val_resize=cfg.data.val_resize,
                  memory_format=layout)
    policy = dict(rand_augment=cfg.augment.rand_augment, color_jitter=cfg.augment.color_jitter,
                  erasing=cfg.augment.erasing)
    train = build_loader(root, cfg.data.train_split, batch_size=micro, **policy, **common)
    val = build_loader(root, cfg.data.val_split, batch_size=cfg.eval.batch_size, train=False, **common)
    if train.num_classes != cfg.model.num_classes:
        raise InputError(f"the data at {root} has {train.num_classes} classes but "
                         f"model.num_classes={cfg.model.num_classes}; set model.num_classes="
                         f"{train.num_classes} or point --data at the right folder")
    difference = class_difference(train.classes, val.classes, (cfg.data.train_split, cfg.data.val_split))
    if difference:
        raise InputError(f"the splits at {root} have other classes, so their labels would differ: "
                         f"{difference}. Give both splits the same class folders")
    if len(train) == 0:
        raise InputError(f"the training split has fewer images per rank than the micro-batch ({micro}); "
                         "lower data.batch_size or use fewer ranks")
    return train, val


def forget_deepspeed_autocast() -> None:
    """Clear the torch autocast dtype an earlier engine of this process left in DeepSpeed's module globals.

    deepspeed 0.19.8 records it (``deepspeed.runtime.torch_autocast``) when an engine enables
    ``torch_autocast`` and never clears it, and a ZeRO 1-3 optimiser built later reads it: after an fp16
    run, an fp32 ZeRO 1-3 engine of the same process gets a GradScaler that divides its (unscaled)
    gradients by 65536 at every step, and trains otherwise than the same run in a fresh process. An
    engine that enables autocast sets both again (``init_autocast_params``, before its optimiser)."""
    from deepspeed.runtime import torch_autocast
    torch_autocast.TORCH_AUTOCAST_INITIALIZED = False
    torch_autocast.TORCH_AUTOCAST_DTYPE = None


def build_engine(cfg: Config, ctx: DistContext, steps_per_epoch: int,
                 deepspeed_config_path: str | None, layout: str):
    """The model under DeepSpeed, its optimiser and learning-rate schedule (weights in ``layout`` at ZeRO-0)."""
    import deepspeed
    forget_deepspeed_autocast()  # the engine's own config alone decides its precision
    model = models.build_from_config(cfg.model).to(ctx.device)
    optimizer = build_optimizer(cfg.optim, model, cfg.data.batch_size)
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


def build_ema(cfg: Config, module: torch.nn.Module) -> torch.nn.Module | None:
    """The EMA of the weights (timm's ``ModelEmaV3``, parameters and buffers) when ``train.ema_decay`` > 0."""
    if not cfg.train.ema_decay:
        return None
    from timm.utils import ModelEmaV3
    return ModelEmaV3(module, decay=cfg.train.ema_decay)


def _write_model(module: torch.nn.Module, cfg: Config, classes: list[str], path: Path) -> None:
    state = {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}
    atomic_torch_save({"model": state, "config": to_dict(cfg), "classes": classes}, path)


def export_model(engine, cfg: Config, classes: list[str], folder: RunFolder, ctx: DistContext,
                 ema: torch.nn.Module | None = None) -> None:
    """A plain float32 state_dict plus the config and the class names, gathered from ZeRO-3 shards where
    needed: the trained weights as model.pt and the EMA as model_ema.pt, or with ``train.ema_export``
    the EMA as model.pt and the trained weights as model_raw.pt."""
    import deepspeed
    module = engine.module
    raw, averaged = (folder.raw_model_path, folder.model_path) if cfg.train.ema_export else \
        (folder.model_path, folder.ema_model_path)
    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None,
                                           enabled=cfg.train.zero_stage == 3):
        if ctx.is_main:
            _write_model(module, cfg, classes, raw if ema is not None else folder.model_path)
            if ema is not None:
                _write_model(ema.module, cfg, classes, averaged)
    barrier()
