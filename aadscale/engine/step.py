"""One training step's maths: the training attack (eval mode, ``attack.precision``), then the
objective's forwards (train mode, ``train.precision``)."""
from __future__ import annotations

import contextlib
import logging
from typing import Callable

import torch
from torch import nn

from aadscale.attacks.ascent import run_attack
from aadscale.attacks.registry import TrainingAttack, training_attack_spec
from aadscale.attacks.standard import least_likely_objective
from aadscale.config import AttackConfig
from aadscale.errors import InputError
from aadscale.fused import AdversarialStep, StepOutput
from aadscale.precision import autocast_dtype

log = logging.getLogger("aadscale.engine")

# attack(x, y, generator) -> StepOutput; check_pixels() raises for any bad batch seen so far
TrainingAttackStep = Callable[..., StepOutput]


class EagerTrainingAttack:
    """A training attack the fused step does not cover (StepLL): the attack loop, run eagerly."""

    def __init__(self, model: nn.Module, attack: TrainingAttack, cfg: AttackConfig) -> None:
        self.model, self.cfg = model, cfg
        self.alpha, self.steps = attack.alpha(cfg.eps, cfg.steps, cfg.alpha), attack.steps(cfg.steps)
        self.random_start = attack.random_start

    def __call__(self, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator | None = None) -> StepOutput:
        """The adversarial twin of ``(x, y)``: the last iterate (training needs no restarts)."""
        x_adv = run_attack(self.model, x, y, least_likely_objective(self.model, x, y), eps=self.cfg.eps,
                           alpha=self.alpha, steps=self.steps, random_start=self.random_start, restarts=1,
                           keep_best=False, generator=generator, dtype=autocast_dtype(self.cfg.precision))
        return StepOutput(x_adv, None, None)

    def check_pixels(self) -> None:
        """Nothing is deferred: every call checks its own batch."""


def build_training_attack(model: nn.Module, cfg: AttackConfig, mode: str = "eager") -> TrainingAttackStep | None:
    """The training attack of ``attack.name`` (None for ``none``): the fused PGD step (``mode``
    eager, graph, compile or auto) for the PGD family, the eager attack loop otherwise."""
    attack = training_attack_spec(cfg.name)
    if attack is None:
        return None
    if attack.fused:
        return AdversarialStep(model, eps=cfg.eps, alpha=attack.alpha(cfg.eps, cfg.steps, cfg.alpha),
                               steps=attack.steps(cfg.steps), mode=mode, cams=False, precision=cfg.precision)
    if mode in ("graph", "compile"):
        raise InputError(f"train.step_mode={mode!r} covers the PGD family (pgd, fgsm_rs), not "
                         f"attack.name={cfg.name!r}; use step mode 'eager' or 'auto' for it")
    if mode == "auto":
        log.info("attack %s has no fused step: it runs eagerly", cfg.name)
    return EagerTrainingAttack(model, attack, cfg)


def compute_loss(model: nn.Module, objective, x: torch.Tensor, y: torch.Tensor,
                 x_adv: torch.Tensor | None, precision: str) -> dict[str, torch.Tensor]:
    """The objective's loss dict, its forwards under autocast for bf16/fp16 (weights stay float32)."""
    dtype = autocast_dtype(precision)
    ctx = torch.autocast(x.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    with ctx:
        out = objective(model, x, y, x_adv)
    out["loss"] = out["loss"].float()
    return out
