"""AutoAttack by its authors' code (``pyautoattack`` 0.2.0, Croce & Hein, the code RobustBench runs):
its versions, and its cascade run one attack at a time so that every image's fate is recorded.

Each attack is pyautoattack's own ``run_standard_evaluation`` restricted to that attack, on the
images that survived the attacks before it: the same per-image worst case as its cascade over
the same batch, attack by attack, which is what lets an evaluation save and resume between
attacks. The model runs in eval mode in float32; pyautoattack reseeds the global RNG at every
attack, so the caller's RNG state is restored afterwards.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from aadscale.attacks.ascent import check_inputs
from aadscale.errors import InputError
from aadscale.models.modes import eval_mode

VERSIONS = ("standard", "plus", "rand")
ATTACKS = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
TARGETS = 9  # target classes of APGD-T and FAB-T in every version
PROXY = ("apgd-ce", "apgd-t")  # the cheap in-training proxy: rarely more than a few tenths above AutoAttack
log = logging.getLogger("aadscale.attacks")


@dataclass(frozen=True)
class AutoAttackPlan:
    """A version (``standard``, ``plus``, ``rand``) or ``custom``: a named subset run with standard's settings
    (``steps``: APGD's iterations instead of AutoAttack's 100, for the in-training proxy)."""
    version: str
    attacks: tuple[str, ...]
    steps: int | None = None


def _reference():
    try:
        import pyautoattack
    except ImportError:
        raise InputError("AutoAttack needs the package pyautoattack (pip install pyautoattack==0.2.0)") from None
    return pyautoattack


def parse_autoattack(text: str) -> AutoAttackPlan:
    """``standard``, ``plus``, ``rand``, or attack names separated by commas (e.g. ``apgd-ce,apgd-t``)."""
    name = str(text).strip().lower()
    if name in VERSIONS:
        reference = _reference().AutoAttack(nn.Identity(), version=name)
        return AutoAttackPlan(name, tuple(reference.attacks_to_run))
    attacks = tuple(a.strip() for a in name.split(",") if a.strip())
    unknown = [a for a in attacks if a not in ATTACKS]
    if not attacks or unknown or len(set(attacks)) != len(attacks):
        raise InputError(f"--autoattack {text!r}: give one of {', '.join(VERSIONS)} or distinct attack "
                         f"names among {', '.join(ATTACKS)} separated by commas (e.g. apgd-ce,apgd-t)")
    return AutoAttackPlan("custom", attacks)


def build_reference(model: nn.Module, plan: AutoAttackPlan, *, eps: float, seed: int,
                    num_classes: int, device: torch.device | str):
    """pyautoattack's ``AutoAttack`` set to ``plan`` (custom subsets take standard's settings), with at
    most ``num_classes - 1`` target classes (the standard's 9 need 10 classes: fewer are logged)."""
    version = "standard" if plan.version == "custom" else plan.version
    reference = _reference().AutoAttack(model, version=version, eps=eps, norm="Linf", seed=seed,
                                        device=torch.device(device))
    targets = target_classes(num_classes)
    if targets < TARGETS and {"apgd-t", "fab-t"} & set(plan.attacks):
        log.warning("the model has %d classes: APGD-T and FAB-T use %d target classes instead of "
                    "AutoAttack's %d", num_classes, targets, TARGETS)
    reference.apgd_targeted.n_target_classes = reference.fab.n_target_classes = targets
    if plan.steps:
        reference.apgd.n_iter = reference.apgd_targeted.n_iter = plan.steps
    reference.logger.setLevel(logging.WARNING)  # its own checks (randomised, dynamic defenses) stay audible
    return reference


def target_classes(num_classes: int) -> int:
    """The target classes APGD-T and FAB-T use for a model of ``num_classes`` classes."""
    return min(TARGETS, num_classes - 1)


def attack_survivors(reference, name: str, x: torch.Tensor, y: torch.Tensor,
                     eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Attack ``name`` on images the model classifies correctly: (fooled mask, the adversarial images).

    Raises if any adversarial image leaves the eps ball or [0, 1] (that would be a bug, not a result).
    """
    check_inputs(x, y, eps)
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), eval_mode(reference.model), \
            torch.autocast(x.device.type, enabled=False):
        reference.attacks_to_run = [name]
        x_adv, y_adv = reference.run_standard_evaluation(x.float(), y, batch_size=x.shape[0])
    distance = (x_adv - x).abs().flatten(1).amax(1)
    if bool((distance > eps * (1 + 1e-5) + 1e-7).any()) or x_adv.min() < 0 or x_adv.max() > 1:
        raise RuntimeError(f"{name} returned images outside the eps={eps:.6g} ball or [0, 1] "
                           f"(max distance {float(distance.max()):.6g})")
    return y_adv.to(y.device) != y, x_adv


@dataclass
class Fates:
    """Per image, what fooled it (``"clean"``: already misclassified; an attack's name; None: nothing yet),
    and the steps done so far (``"clean"`` and the attacks in order)."""
    fooled_by: list[str | None] = field(default_factory=list)
    done: list[str] = field(default_factory=list)


def cascade(model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: AutoAttackPlan, *, eps: float,
            seed: int = 0, fates: Fates | None = None,
            after: Callable[[Fates], None] | None = None) -> tuple[torch.Tensor, Fates]:
    """The plan's attacks in turn on the images still standing: the worst-case batch and every image's fate.

    ``fates`` continues a cascade stopped part way (its done steps are skipped; their adversarial
    images are not in the returned batch); ``after`` is called after the clean pass and each attack.
    """
    x, fates = x.detach().float(), fates or Fates()
    with eval_mode(model), torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        logits = model(x if not fates.done else x[:1])
    if not fates.done:
        fates.fooled_by = ["clean" if wrong else None for wrong in (logits.argmax(1) != y).tolist()]
        fates.done.append("clean")
        if after:
            after(fates)
    reference = build_reference(model, plan, eps=eps, seed=seed, num_classes=logits.shape[1], device=x.device)
    x_worst = x.clone()
    for name in (a for a in plan.attacks if a not in fates.done):
        index = torch.tensor([i for i, f in enumerate(fates.fooled_by) if f is None], dtype=torch.long,
                             device=x.device)
        if len(index):
            fooled, x_adv = attack_survivors(reference, name, x[index], y[index], eps)
            for i in index[fooled].tolist():
                fates.fooled_by[i] = name
            x_worst[index[fooled]] = x_adv[fooled]
        fates.done.append(name)
        if after:
            after(fates)
    return x_worst, fates


def proxy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 100,
          seed: int = 0) -> torch.Tensor:
    """The in-training proxy for AutoAttack (not AutoAttack): APGD-CE then APGD-T, ``steps`` iterations each."""
    return cascade(model, x, y, AutoAttackPlan("custom", PROXY, steps), eps=eps, seed=seed)[0]
