"""One training step's maths: the training attack (eval mode, float32) then the objective (train mode)."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from aadscale import attacks
from aadscale.config import AttackConfig

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def training_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: AttackConfig,
                    generator: torch.Generator | None = None) -> torch.Tensor | None:
    """The adversarial twin of the batch for training (None for ``attack.name=none``).

    Runs in float32 with the model in eval mode (the attack functions guarantee both);
    only the final iterate is kept, since training needs no restarts.
    """
    alpha = cfg.alpha or None
    if cfg.name == "none":
        return None
    if cfg.name == "pgd":
        return attacks.pgd(model, x, y, eps=cfg.eps, alpha=alpha, steps=cfg.steps, keep_best=False,
                           generator=generator)
    if cfg.name == "fgsm_rs":  # Wong et al.: random start, one step of 1.25 eps
        return attacks.fgsm(model, x, y, eps=cfg.eps, alpha=alpha or 1.25 * cfg.eps,
                            random_start=True, generator=generator)
    if cfg.name == "step_ll":
        return attacks.step_ll(model, x, y, eps=cfg.eps, alpha=alpha, steps=cfg.steps,
                               keep_best=False, generator=generator)
    raise ValueError(f"attack.name={cfg.name!r} must be pgd, fgsm_rs, step_ll or none")


def compute_loss(model: nn.Module, objective, x: torch.Tensor, y: torch.Tensor,
                 x_adv: torch.Tensor | None, precision: str) -> dict[str, torch.Tensor]:
    """The objective's loss dict, its forwards under autocast for bf16/fp16 (weights stay float32)."""
    dtype = AUTOCAST[precision]
    ctx = torch.autocast(x.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    with ctx:
        out = objective(model, x, y, x_adv)
    out["loss"] = out["loss"].float()
    return out
