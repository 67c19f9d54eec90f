"""Defense objectives, each a function returning a dict of loss terms with "loss" the total.

Mode choice (the same in every objective): the training forwards run in whatever mode
the model is in (train mode during training, so BatchNorm uses batch statistics), one
forward per distinct input set; the attacks that make ``x_adv`` run in eval mode.
"""
from __future__ import annotations

from typing import Callable

from aadscale.objectives.aad import aad, mask_attention, preservation, rectification
from aadscale.objectives.alp import alp, alp_terms
from aadscale.objectives.classification import classification_loss, plain
from aadscale.objectives.madry import madry, madry_terms

__all__ = ["madry", "alp", "aad", "plain", "classification_loss", "rectification", "preservation",
           "mask_attention", "madry_terms", "alp_terms", "build_objective", "OBJECTIVES"]

OBJECTIVES = ("plain", "madry", "alp", "madry+aad", "alp+aad")


def build_objective(name: str, *, lambda1: float = 1.0, lambda2: float = 1.0, beta: float = 0.5,
                    cls_loss: str = "ce", cam_weights: str = "full",
                    theta: str | float = "mean", bn_stats: str = "base") -> Callable[..., dict]:
    """``objective(model, x, y, x_adv) -> loss dict`` for a config name such as ``"alp+aad"``."""
    if name == "plain":
        return lambda model, x, y, x_adv=None: plain(model, x, y, x_adv, cls_loss=cls_loss)
    if name == "madry":
        return lambda model, x, y, x_adv: madry(model, x, y, x_adv, cls_loss=cls_loss)
    if name == "alp":
        return lambda model, x, y, x_adv: alp(model, x, y, x_adv, cls_loss=cls_loss, beta=beta)
    if name in ("madry+aad", "alp+aad"):
        base = name.split("+")[0]
        return lambda model, x, y, x_adv: aad(model, x, y, x_adv, base=base, lambda1=lambda1,
                                              lambda2=lambda2, beta=beta, cls_loss=cls_loss,
                                              cam_weights=cam_weights, theta=theta,
                                              bn_stats=bn_stats)
    raise ValueError(f"objective {name!r} must be one of {list(OBJECTIVES)}")
