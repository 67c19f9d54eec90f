"""A3Attack (paper eq. 11-13): a base attack's loss plus gamma * ||M(x) - L_c(x_adv)||_1."""
from __future__ import annotations

import torch
from torch import nn

from aadscale.attacks.ascent import check_inputs, run_attack
from aadscale.attacks.losses import ce_loss, cw_loss, least_likely_loss
from aadscale.attention.gradcam import forward_with_cam
from aadscale.attention.masks import threshold_mask
from aadscale.errors import InputError
from aadscale.models.modes import eval_mode

BASES = {"pgd": dict(steps=3, random_start=True), "iter_step_ll": dict(steps=3, random_start=False),
         "fgsm": dict(steps=1, random_start=False), "step_ll": dict(steps=1, random_start=False),
         "cw": dict(steps=3, random_start=True)}
ATTENTION_ON = ("fooled", "always")


def map_scale(cam: torch.Tensor) -> torch.Tensor:
    """Per-image max of the clean map [N, 1, 1]: divides L_c(x_adv) to the scale of a binary mask."""
    return cam.flatten(1).max(1).values.clamp_min(1e-12).view(-1, 1, 1)


def map_deviation(mask: torch.Tensor, cam: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Eq. 11 per image: ||M(x) - L_c(x_adv) / scale||_1 over the map's cells."""
    return (mask - cam / scale).abs().flatten(1).sum(1)


def attention_weight(logits: torch.Tensor, y: torch.Tensor, attention_on: str) -> torch.Tensor:
    """Per-image weight of the attention term: 1 where the iterate is misclassified ("fooled"), or 1."""
    if attention_on == "always":
        return torch.ones_like(logits[:, 0])
    return (logits.argmax(1) != y).to(logits.dtype)


def base_loss_fn(base: str, y: torch.Tensor, y_ll: torch.Tensor, kappa: float):
    """logits -> the base attack's per-sample loss (to ascend)."""
    if base in ("pgd", "fgsm"):
        return lambda logits: ce_loss(logits, y)
    if base == "cw":
        return lambda logits: cw_loss(logits, y, kappa)
    return lambda logits: least_likely_loss(logits, y_ll)


def a3(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, base: str = "pgd", gamma: float = 10.0,
       eps: float, alpha: float | None = None, steps: int | None = None,
       random_start: bool | None = None, restarts: int = 1, keep_best: bool = True,
       theta: str | float = "mean", layer: str | None = None, cam_weights: str = "full",
       normalize_cam: bool = True, attention_on: str = "fooled", kappa: float = 50.0,
       generator: torch.Generator | None = None) -> torch.Tensor:
    """Attention-augmented attack: the base loss plus gamma times the deviation of x_adv's map.

    M(x) is the binarised map of the clean image (threshold ``theta``), computed once; the
    map of x_adv (toward the true label) is recomputed at every step with a double backward.
    ``normalize_cam`` divides L_c(x_adv) by the clean map's maximum (a constant per image),
    so that the L1 distance to the binary M(x) compares like with like. With
    ``attention_on="fooled"`` the term counts only on iterates the model misclassifies: until
    an image is fooled the attack is exactly its base, after it the attack pushes the map
    away while keep_best holds the fooled iterate of highest loss. ``"always"`` is eq. 12 as
    printed; under signed steps its non-saturating gradient overrides the base's on
    confidently classified images and the attack fooled fewer (BENCHMARKS.md, "A3 against
    gamma"). All losses are ascended, so for the StepLL bases the term keeps the sign that
    pushes the attention away.
    """
    if base not in BASES:
        raise InputError(f"base={base!r} must be one of {sorted(BASES)}")
    if gamma < 0:
        raise InputError(f"gamma={gamma} must be >= 0")
    if attention_on not in ATTENTION_ON:
        raise InputError(f"attention_on={attention_on!r} must be one of {ATTENTION_ON}")
    check_inputs(x, y, eps)
    x = x.detach().float()
    with eval_mode(model), torch.autocast(x.device.type, enabled=False):
        clean = forward_with_cam(model, x, y, layer)
        mask = threshold_mask(clean.cam, theta).float()
        scale = map_scale(clean.cam) if normalize_cam else torch.ones_like(clean.cam[:, :1, :1])
    base_loss = base_loss_fn(base, y, clean.logits.argmin(1), kappa)

    def objective(x_adv):
        out = forward_with_cam(model, x_adv, y, layer, create_graph=True, weights=cam_weights)
        weight = gamma * attention_weight(out.logits, y, attention_on)
        return base_loss(out.logits) + weight * map_deviation(mask, out.cam, scale), out.logits

    defaults = BASES[base]
    return run_attack(model, x, y, objective, eps=eps, alpha=alpha,
                      steps=defaults["steps"] if steps is None else steps,
                      random_start=defaults["random_start"] if random_start is None else random_start,
                      restarts=restarts, keep_best=keep_best, generator=generator)


__all__ = ["a3", "map_deviation", "map_scale", "ATTENTION_ON"]
