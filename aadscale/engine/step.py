"""One training step's maths: the training attack (eval mode, ``attack.precision``), then the
objective's forwards (train mode, ``train.precision``)."""
from __future__ import annotations

import contextlib
import logging
from typing import Callable

import torch
from torch import nn

from aadscale.attacks.ascent import check_inputs, run_attack
from aadscale.attacks.registry import training_attack_spec
from aadscale.attacks.standard import least_likely_objective
from aadscale.attacks.training import apgd_train, trades_kl
from aadscale.config import AttackConfig
from aadscale.errors import InputError
from aadscale.fused import AdversarialStep, StepOutput
from aadscale.labels import hard_labels
from aadscale.precision import autocast_dtype

log = logging.getLogger("aadscale.engine")

# attack(x, y, generator) -> StepOutput; check_pixels() raises for any bad batch seen so far;
# set_budget(eps, alpha) resizes it (the warm-up)
TrainingAttackStep = Callable[..., StepOutput]


def _step_ll(model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator, *, eps: float, alpha: float,
             steps: int, mode: str, dtype) -> torch.Tensor:
    y = hard_labels(y)  # unused by StepLL's loss (the least-likely class), checked by its loop
    return run_attack(model, x, y, least_likely_objective(model, x, y), eps=eps, alpha=alpha, steps=steps,
                      random_start=False, restarts=1, keep_best=False, generator=generator, dtype=dtype)


def _apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator, *, eps: float, alpha: float,
          steps: int, mode: str, dtype) -> torch.Tensor:
    return apgd_train(model, x, y, eps=eps, steps=steps, mode=mode, dtype=dtype)


def _trades(model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator, *, eps: float, alpha: float,
            steps: int, mode: str, dtype) -> torch.Tensor:
    return trades_kl(model, x, eps=eps, alpha=alpha, steps=steps, generator=generator, mode=mode, dtype=dtype)


# the training attacks that run eagerly (no fused step): attack.name, or "kl" for TRADES' attack
EAGER_ATTACKS = {"step_ll": _step_ll, "apgd": _apgd, "kl": _trades}


class EagerTrainingAttack:
    """A training attack the fused step does not cover (StepLL, APGD-CE, TRADES' KL attack): its
    loop, run eagerly; checks each batch as it comes (one sync per call)."""

    def __init__(self, model: nn.Module, run: Callable[..., torch.Tensor], *, eps: float, alpha: float,
                 steps: int, mode: str = "eval", precision: str = "fp32") -> None:
        self.model, self.run, self.steps, self.mode = model, run, steps, mode
        self.dtype = autocast_dtype(precision)
        self.set_budget(eps, alpha)

    def set_budget(self, eps: float, alpha: float) -> None:
        """Attack with radius ``eps`` and step ``alpha`` from the next call on."""
        self.eps, self.alpha = eps, alpha

    def __call__(self, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator | None = None) -> StepOutput:
        """The adversarial twin of ``(x, y)``: the attack's own point (training needs no restarts)."""
        check_inputs(x, y, self.eps, soft=True)
        return StepOutput(self.run(self.model, x, y, generator, eps=self.eps, alpha=self.alpha, steps=self.steps,
                                   mode=self.mode, dtype=self.dtype), None, None)

    def check_pixels(self) -> None:
        """Nothing is deferred: every call checks its own batch."""


def build_training_attack(model: nn.Module, cfg: AttackConfig, mode: str = "eager",
                          loss: str = "ce") -> TrainingAttackStep | None:
    """The training attack of ``attack.name`` (None for ``none``): the fused PGD step (``mode``
    eager, graph, compile or auto) for the PGD family, the eager attack loop otherwise; ``loss``
    ``kl`` (TRADES) makes the PGD attack ascend TRADES' KL, eagerly."""
    attack = training_attack_spec(cfg.name)
    if attack is None:
        return None
    alpha, steps = attack.alpha(cfg.eps, cfg.steps, cfg.alpha), attack.steps(cfg.steps)
    if loss == "kl" and cfg.name != "pgd":
        raise InputError(f"TRADES' training attack is PGD on its KL term: set attack.name=pgd, not {cfg.name!r}")
    if attack.fused and loss == "ce":
        return AdversarialStep(model, eps=cfg.eps, alpha=alpha, steps=steps, mode=mode, cams=False,
                               precision=cfg.precision, model_mode=cfg.model_mode)
    name = "kl" if loss == "kl" else cfg.name
    if mode in ("graph", "compile"):
        raise InputError(f"train.step_mode={mode!r} covers the PGD family on cross-entropy (pgd, fgsm_rs), not "
                         f"{'TRADES' if name == 'kl' else 'attack.name=' + repr(name)}; use step mode 'eager' or "
                         "'auto' for it")
    if cfg.model_mode == "train" and name == "step_ll":
        raise InputError("attack.model_mode=train covers pgd, fgsm_rs, apgd and TRADES' attack, not step_ll")
    if mode == "auto":
        log.info("training attack %s has no fused step: it runs eagerly", name)
    return EagerTrainingAttack(model, EAGER_ATTACKS[name], eps=cfg.eps, alpha=alpha, steps=steps,
                               mode=cfg.model_mode, precision=cfg.precision)


def warmed_budget(cfg: AttackConfig, epoch: int) -> tuple[float, float]:
    """(eps, alpha) of the training attack in ``epoch`` (0-based): ramped up linearly over the first
    ``attack.warmup_epochs`` epochs, (epoch + 1) / warmup_epochs of the full size, whichever of eps
    and alpha ``attack.warmup`` names (ARES ramps the step size; others the budget)."""
    spec = training_attack_spec(cfg.name)
    alpha = spec.alpha(cfg.eps, cfg.steps, cfg.alpha)
    scale = min(1.0, (epoch + 1) / cfg.warmup_epochs) if cfg.warmup_epochs else 1.0
    return (cfg.eps * scale if cfg.warmup in ("eps", "both") else cfg.eps,
            alpha * scale if cfg.warmup in ("alpha", "both") else alpha)


def compute_loss(model: nn.Module, objective, x: torch.Tensor, y: torch.Tensor,
                 x_adv: torch.Tensor | None, precision: str) -> dict[str, torch.Tensor]:
    """The objective's loss dict, its forwards under autocast for bf16/fp16 (weights stay float32)."""
    dtype = autocast_dtype(precision)
    ctx = torch.autocast(x.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    with ctx:
        out = objective(model, x, y, x_adv)
    out["loss"] = out["loss"].float()
    return out
