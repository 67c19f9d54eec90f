"""The one iterative attack loop: eval mode, float32, projection, restarts keeping the worst case."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from aadscale.attacks.threat import LinfStep, check_eps
from aadscale.errors import InputError
from aadscale.labels import check_targets
from aadscale.models.modes import eval_mode

# objective(x_adv) -> (per-sample loss to ascend, logits)
AttackObjective = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


def check_shapes(x: torch.Tensor, y: torch.Tensor, eps: float, soft: bool = False) -> None:
    """Reject shapes, label dtypes and eps that would make an attack silently wrong (no device sync);
    ``soft`` also takes soft targets [N, C] (a training attack under Mixup/CutMix)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.dtype.is_floating_point:
        raise InputError(f"x must be a float tensor [N, C, H, W], got "
                         f"{getattr(x, 'dtype', type(x))} {tuple(getattr(x, 'shape', ()))}")
    check_targets(y, x.shape[0], soft=soft)
    check_eps(eps)


def check_pixel_range(lo: torch.Tensor, hi: torch.Tensor) -> None:
    """Refuse pixels outside [0, 1] (or NaN) given their minimum and maximum; one device sync."""
    if not (lo >= 0 and hi <= 1):  # also catches NaN
        raise InputError(f"pixel values must be in [0, 1], got [{lo.item():.3f}, {hi.item():.3f}]; "
                         "pass un-normalised images: normalisation is the model's first layer")


def check_inputs(x: torch.Tensor, y: torch.Tensor, eps: float, soft: bool = False) -> None:
    """Reject what would make an attack silently wrong: shapes, label dtype, eps, pixel range
    (``soft``: soft targets [N, C] are labels too)."""
    check_shapes(x, y, eps, soft)
    check_pixel_range(*torch.aminmax(x.detach()))  # one sync per attack, not per step


def attack_autocast(device_type: str, dtype: torch.dtype | None = None) -> torch.autocast:
    """Autocast off (float32: every evaluation attack), or autocast to ``dtype`` (a training attack)."""
    if dtype is None:
        return torch.autocast(device_type, enabled=False)
    return torch.autocast(device_type, dtype=dtype)


def default_alpha(eps: float, steps: int) -> float:
    """eps for one step; 2.5 * eps / steps otherwise (Madry et al.'s rule)."""
    return eps if steps == 1 else 2.5 * eps / steps


def _better(fooled: torch.Tensor, loss: torch.Tensor, best_fooled: torch.Tensor,
            best_loss: torch.Tensor) -> torch.Tensor:
    """Worse for the model: fooled beats not fooled, then a higher loss."""
    return (fooled & ~best_fooled) | ((fooled == best_fooled) & (loss > best_loss))


def ascend(objective: AttackObjective, threat: LinfStep, x_adv: torch.Tensor, steps: int,
           on_iterate: Callable | None = None) -> torch.Tensor:
    """``steps`` signed-gradient ascent steps on ``objective`` from ``x_adv``, each projected.

    No host synchronisation, so it also runs under torch.compile and CUDA-graph capture;
    ``on_iterate(x, loss, logits)`` sees every iterate before its step.
    """
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss, logits = objective(x_adv)
        if on_iterate is not None:
            on_iterate(x_adv.detach(), loss, logits)
        (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        x_adv = threat.step(x_adv.detach(), grad)
    return x_adv


def run_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, objective: AttackObjective, *,
               eps: float, alpha: float | None, steps: int, random_start: bool, restarts: int,
               keep_best: bool, generator: torch.Generator | None = None,
               dtype: torch.dtype | None = None) -> torch.Tensor:
    """Ascend ``objective`` by signed-gradient steps in the eps ball; return the worst point found.

    Runs in eval mode and float32 (autocast off). With ``keep_best`` the clean point and
    every iterate are candidates; across restarts the candidate that fools the model, else
    has the highest loss, is kept per sample. ``dtype`` (bf16/fp16) runs the forwards under
    autocast instead: for the training attack only (``attack.precision``); the iterates
    stay float32, and every evaluation attack leaves it None.
    """
    check_inputs(x, y, eps)
    if steps < 1 or restarts < 1:
        raise InputError(f"steps={steps} and restarts={restarts} must be >= 1")
    alpha = default_alpha(eps, steps) if alpha is None else alpha
    if alpha <= 0 and eps > 0:
        raise InputError(f"alpha={alpha} must be > 0")
    x = x.detach().float()
    y = y.to(x.device)
    track = keep_best or restarts > 1
    with eval_mode(model), attack_autocast(x.device.type, dtype), torch.enable_grad():
        threat = LinfStep(x, eps, alpha)
        best_x = x.clone()
        best_fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)

        def consider(x_cand, loss, logits):
            nonlocal best_fooled, best_loss
            fooled = logits.argmax(1) != y
            take = _better(fooled, loss.detach(), best_fooled, best_loss)
            best_x[take] = x_cand[take]
            best_fooled = torch.where(take, fooled, best_fooled)
            best_loss = torch.where(take, loss.detach(), best_loss)

        if track:  # the clean point is a candidate too: accuracy under attack <= clean accuracy
            consider(x, *objective(x.clone().requires_grad_(True)))
        for _ in range(restarts):
            x_adv = threat.random_perturb(x, generator) if random_start else x.clone()
            x_adv = ascend(objective, threat, x_adv, steps, consider if keep_best else None)
            if not track:
                return x_adv.detach()
            x_adv.requires_grad_(True)  # Grad-CAM objectives need a graph even to evaluate
            loss, logits = objective(x_adv)
            consider(x_adv.detach(), loss, logits)
    return best_x
