"""AAD (paper eq. 7-10): attention rectification and preservation added to a base objective."""
from __future__ import annotations

import torch
from torch import nn

from aadscale.attention.gradcam import forward_with_cam
from aadscale.attention.masks import resize, threshold_mask
from aadscale.errors import InputError
from aadscale.models.modes import frozen_running_stats
from aadscale.objectives.alp_loss import alp_terms
from aadscale.objectives.bn_stats import paired_forwards, resolve_bn_stats
from aadscale.objectives.classification import ClsLoss
from aadscale.objectives.madry_loss import madry_terms
from aadscale.objectives.trades_loss import trades_terms

BASE_TERMS = {"madry": madry_terms, "alp": alp_terms, "trades": trades_terms}
# default weights, from the demo's lambda sweep (BENCHMARKS.md, Fig. 8, three seeds): level with its
# lambda1 = lambda2 = 0 cell there, AAD's true control (Madry with clean+adversarial BatchNorm
# statistics; no setting beat it), the largest rectification weight that cost nothing measurable;
# lambda1 = 2 cost 6.7-12.3 points of worst-case accuracy
LAMBDA1, LAMBDA2 = 0.5, 0.05


def mask_attention(x: torch.Tensor, cam: torch.Tensor, theta: str | float = "mean") -> torch.Tensor:
    """x* = x * (1 - M(x)): the map resized (bilinear) to the image, thresholded, not differentiated."""
    mask = threshold_mask(resize(cam.detach(), x.shape[-2:]), theta)
    return x * (~mask).unsqueeze(1).to(x.dtype)


def rectification(model: nn.Module, x: torch.Tensor, cam: torch.Tensor, logits: torch.Tensor,
                  theta: str | float = "mean") -> torch.Tensor:
    """-D(p(x), p(x*)) with D the L2 norm, mean over the batch (<= 0: removing the attended area should change the prediction).

    The masked forward never updates BatchNorm's running statistics: the model is never
    tested on masked images.
    """
    p = logits.softmax(1)
    with frozen_running_stats(model):
        p_star = model(mask_attention(x, cam, theta)).softmax(1)
    return -(p - p_star).norm(dim=1).mean()


def preservation(cam_clean: torch.Tensor, cam_adv: torch.Tensor) -> torch.Tensor:
    """||L_c(x) - L_c(x_adv)||_1 per image, mean over the batch (>= 0)."""
    return (cam_clean - cam_adv).abs().flatten(1).sum(1).mean()


def aad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, *,
        base: str = "madry", lambda1: float = LAMBDA1, lambda2: float = LAMBDA2, beta: float = 0.5,
        trades_beta: float = 6.0, cls_loss: str | ClsLoss = "ce", cam_weights: str = "full",
        theta: str | float = "mean", layer: str | None = None, bn_stats: str = "both") -> dict[str, torch.Tensor]:
    """L = base + lambda1 * L_rect + lambda2 * L_pres, maps toward the labels (a soft target: its
    classes weighted, ``forward_with_cam``); base ``madry``, ``alp`` or ``trades``.

    Passes: forward+Grad-CAM on x and on x_adv (create_graph=True, so L_pres trains the
    model by double backward) and one forward on each masked image; each in the model's
    current mode, each its own batch (BatchNorm statistics never mix clean and adversarial);
    the two Grad-CAM forwards draw the same dropout masks, so L_pres(x, x) = 0 in train mode.
    ``bn_stats`` says which forwards update BatchNorm's running statistics: ``"both"``
    (default: what the demo study supports), ``"clean"``, ``"adv"``, or ``"base"`` (those the
    base trains on: Madry adv, ALP both); the masked forwards never do. Every forward still
    normalises with its batch statistics. The base objectives take the same ``bn_stats``: AAD's
    control is its base at the same setting (with lambda1 = lambda2 = 0 the two take the same step).
    """
    if base not in BASE_TERMS:
        raise InputError(f"base={base!r} must be one of {sorted(BASE_TERMS)}")

    def with_cam(images: torch.Tensor):
        return forward_with_cam(model, images, y, layer, create_graph=True, weights=cam_weights)

    clean, adv = paired_forwards(model, x, x_adv, resolve_bn_stats(base, bn_stats), with_cam, with_cam)
    terms = BASE_TERMS[base](clean.logits, adv.logits, y, cls_loss=cls_loss, beta=beta, trades_beta=trades_beta)
    rect = rectification(model, x, clean.cam, clean.logits, theta) + \
        rectification(model, x_adv, adv.cam, adv.logits, theta)
    pres = preservation(clean.cam, adv.cam)
    terms["loss"] = terms["loss"] + lambda1 * rect + lambda2 * pres
    terms.update(rect=rect.detach(), pres=pres.detach(), logits_clean=clean.logits.detach(),
                 logits_adv=adv.logits.detach())
    return terms
