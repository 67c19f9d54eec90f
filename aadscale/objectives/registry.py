"""One table of the defense objectives: ``objective.name`` -> a function ``(model, x, y, x_adv) -> loss dict``.

The config's choices and its "needs a training attack" rule, the engine and the tests read
this table; every option of ``ObjectiveConfig`` reaches the objective through ``build_objective``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from aadscale.errors import InputError
from aadscale.objectives.aad_loss import LAMBDA1, LAMBDA2, aad
from aadscale.objectives.alp_loss import alp
from aadscale.objectives.classification import ClsLoss, plain
from aadscale.objectives.madry_loss import madry
from aadscale.objectives.trades_loss import trades

Objective = Callable[..., dict]


@dataclass(frozen=True)
class ObjectiveKind:
    """One ``objective.name``: its base and whether the AAD terms are added."""
    name: str
    base: str  # plain, madry, alp or trades
    aad: bool
    summary: str
    attack_loss: str = "ce"  # what its training attack ascends: CE on the label, or TRADES' KL

    @property
    def needs_attack(self) -> bool:
        """True if it trains on adversarial images (everything but plain)."""
        return self.base != "plain"


OBJECTIVES: dict[str, ObjectiveKind] = {k.name: k for k in (
    ObjectiveKind("plain", "plain", False, "undefended: L_cls on clean images"),
    ObjectiveKind("madry", "madry", False, "Madry et al.: L_cls on the adversarial twin"),
    ObjectiveKind("alp", "alp", False, "ALP: L_cls on both + beta * ||f(x) - f(x_adv)||^2"),
    ObjectiveKind("madry+aad", "madry", True, "Madry + lambda1 * L_rect + lambda2 * L_pres (eq. 10)"),
    ObjectiveKind("alp+aad", "alp", True, "ALP + lambda1 * L_rect + lambda2 * L_pres (eq. 10)"),
    ObjectiveKind("trades", "trades", False, "TRADES: L_cls on clean + trades_beta * KL(f(x) || f(x_adv))",
                  attack_loss="kl"),
    ObjectiveKind("trades+aad", "trades", True, "TRADES + lambda1 * L_rect + lambda2 * L_pres (eq. 10)",
                  attack_loss="kl"),
)}


def objective_kind(name: str) -> ObjectiveKind:
    """The entry called ``name``; InputError listing the known ones otherwise."""
    if name not in OBJECTIVES:
        raise InputError(f"objective {name!r} must be one of {list(OBJECTIVES)}")
    return OBJECTIVES[name]


def build_objective(name: str, *, lambda1: float = LAMBDA1, lambda2: float = LAMBDA2, beta: float = 0.5,
                    cls_loss: str = "ce", cam_weights: str = "full", theta: str | float = "mean",
                    bn_stats: str = "both", cam_layer: str | None = None, label_smoothing: float = 0.0,
                    trades_beta: float = 6.0) -> Objective:
    """``objective(model, x, y, x_adv) -> loss dict`` for a name such as ``"alp+aad"``.

    Its keywords are exactly the fields of ``ObjectiveConfig``: the engine builds it with
    ``build_objective(**dataclasses.asdict(cfg.objective))``.
    """
    kind = objective_kind(name)
    loss = ClsLoss(cls_loss, label_smoothing)
    if kind.aad:
        return lambda model, x, y, x_adv: aad(model, x, y, x_adv, base=kind.base, lambda1=lambda1,
                                              lambda2=lambda2, beta=beta, trades_beta=trades_beta, cls_loss=loss,
                                              cam_weights=cam_weights, theta=theta, layer=cam_layer or None,
                                              bn_stats=bn_stats)
    if kind.base == "madry":
        return lambda model, x, y, x_adv: madry(model, x, y, x_adv, cls_loss=loss, bn_stats=bn_stats)
    if kind.base == "alp":
        return lambda model, x, y, x_adv: alp(model, x, y, x_adv, cls_loss=loss, beta=beta, bn_stats=bn_stats)
    if kind.base == "trades":
        return lambda model, x, y, x_adv: trades(model, x, y, x_adv, cls_loss=loss, trades_beta=trades_beta,
                                                 bn_stats=bn_stats)
    return lambda model, x, y, x_adv=None: plain(model, x, y, x_adv, cls_loss=loss)
