"""The DeepSpeed JSON, generated from the typed config or read from a user file and checked against it."""
from __future__ import annotations

import json
from pathlib import Path

from aadscale.config import Config
from aadscale.errors import InputError

STEPS_PER_PRINT = 10**9  # the engine logs; keep DeepSpeed's own step printing out of the way


def micro_batch_size(global_batch: int, world_size: int, grad_accum: int) -> int:
    """Per-rank batch of one forward: global / (world * accumulation), which must divide exactly."""
    if world_size < 1:
        raise InputError(f"world size {world_size} must be >= 1")
    if global_batch % (world_size * grad_accum):
        raise InputError(f"data.batch_size={global_batch} (global) is not divisible by world size "
                         f"{world_size} x train.grad_accum={grad_accum}; choose a batch size that is "
                         f"a multiple of {world_size * grad_accum}")
    return global_batch // (world_size * grad_accum)


def deepspeed_config(cfg: Config, world_size: int) -> dict:
    """The DeepSpeed config dict for ``cfg`` on ``world_size`` ranks (the engine passes a torch optimiser)."""
    accum = cfg.train.grad_accum
    out: dict = {
        "train_batch_size": cfg.data.batch_size,
        "train_micro_batch_size_per_gpu": micro_batch_size(cfg.data.batch_size, world_size, accum),
        "gradient_accumulation_steps": accum,
        "zero_optimization": {"stage": cfg.train.zero_stage},
        "zero_allow_untested_optimizer": True,
        # weights stay float32 so that attacks and Grad-CAM can run in float32; the training
        # forwards run under torch.autocast (the engine's step), which DeepSpeed knows about
        # (loss scaling for fp16 without ZeRO)
        "torch_autocast": {"enabled": cfg.train.precision != "fp32",
                           "dtype": {"bf16": "bfloat16", "fp16": "float16"}.get(cfg.train.precision,
                                                                               "float32")},
        "steps_per_print": STEPS_PER_PRINT,
        "wall_clock_breakdown": False,
    }
    if cfg.optim.grad_clip > 0:
        out["gradient_clipping"] = cfg.optim.grad_clip
    return out


def _check_batch(user: dict, key: str, expected: int, source: str, path: Path) -> None:
    if key in user and user[key] != expected:
        raise InputError(f"{path}: {key}={user[key]} disagrees with {source}={expected}; "
                         f"remove {key} from the JSON or change {source}")


def load_user_config(path: str | Path, cfg: Config, world_size: int) -> dict:
    """Read a user ``--deepspeed_config`` JSON, require its batch sizes to match ``cfg``, fill the rest.

    Keys the user left out are taken from :func:`deepspeed_config`; the user's other
    keys (ZeRO details, offload, precision options) win.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"DeepSpeed config {path} does not exist; give a JSON file path")
    try:
        user = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"DeepSpeed config {path} is not valid JSON: {err}") from None
    if not isinstance(user, dict):
        raise InputError(f"DeepSpeed config {path} must hold a JSON object, got {type(user).__name__}")
    generated = deepspeed_config(cfg, world_size)
    _check_batch(user, "train_batch_size", generated["train_batch_size"], "data.batch_size", path)
    _check_batch(user, "gradient_accumulation_steps", generated["gradient_accumulation_steps"],
                 "train.grad_accum", path)
    _check_batch(user, "train_micro_batch_size_per_gpu", generated["train_micro_batch_size_per_gpu"],
                 f"data.batch_size / (world {world_size} x train.grad_accum)", path)
    stage = user.get("zero_optimization", {}).get("stage")
    if stage is not None and stage != cfg.train.zero_stage:
        raise InputError(f"{path}: zero_optimization.stage={stage} disagrees with "
                         f"train.zero_stage={cfg.train.zero_stage}; make them equal")
    for mode in ("bf16", "fp16"):
        if user.get(mode, {}).get("enabled"):
            raise InputError(f"{path}: {mode}.enabled=true would cast the weights to half precision "
                             "and push the attacks out of float32; remove it and set "
                             f"train.precision={mode} (autocast for the training forwards) instead")
    # one level deep: a user's "zero_optimization": {"offload_optimizer": ...} keeps the stage
    return {k: {**generated[k], **v} if isinstance(v, dict) and isinstance(generated.get(k), dict)
            else v for k, v in {**generated, **user}.items()}
