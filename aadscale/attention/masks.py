"""Attention areas from maps (paper eq. 3, 5, 6): thresholds, top-n cells, area matching, IoU."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from aadscale.errors import InputError


def _check_maps(cam: torch.Tensor) -> torch.Tensor:
    if cam.dim() != 3:
        raise InputError(f"maps must be [N, h, w], got shape {tuple(cam.shape)}")
    return cam


def resize(cam: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of maps [N, h, w] to [N, H, W] (to apply a map to an image)."""
    _check_maps(cam)
    return F.interpolate(cam.unsqueeze(1).float(), size=tuple(hw), mode="bilinear",
                         align_corners=False).squeeze(1)


def parse_theta(theta: str | float, where: str = "theta") -> str | float:
    """The attention threshold: "mean" (per map) or a number (also given as text, e.g. "0.5")."""
    if theta == "mean":
        return theta
    if isinstance(theta, bool):
        raise InputError(f"{where}={theta!r} must be 'mean' or a number")
    try:
        return float(theta)
    except (TypeError, ValueError):
        raise InputError(f"{where}={theta!r} must be 'mean' or a number") from None


def threshold_mask(cam: torch.Tensor, theta: str | float = "mean") -> torch.Tensor:
    """M = 1[L > theta], theta the per-map mean ("mean") or a fixed number; bool [N, h, w]."""
    _check_maps(cam)
    theta = parse_theta(theta)
    # a number stays a Python scalar: no host-to-device copy, which a CUDA-graph capture refuses
    return cam > (cam.mean(dim=(1, 2), keepdim=True) if theta == "mean" else theta)


def _top_counts(cam: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    n, h, w = cam.shape
    flat = cam.reshape(n, -1)
    order = flat.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=cam.device).expand(n, -1))
    return (rank < counts.view(-1, 1)).view(n, h, w)


def topk_mask(cam: torch.Tensor, n: int) -> torch.Tensor:
    """The n highest cells of each map (ties broken by position); bool [N, h, w]."""
    _check_maps(cam)
    cells = cam.shape[1] * cam.shape[2]
    if not 0 < n <= cells:
        raise InputError(f"n={n} must be in 1..{cells} (the map has {cells} cells)")
    return _top_counts(cam, torch.full((cam.shape[0],), n, device=cam.device))


def area_matched_mask(cam: torch.Tensor, area: int | torch.Tensor) -> torch.Tensor:
    """Per-map threshold giving a mask of exactly ``area`` cells (eq. 5: the box's area)."""
    _check_maps(cam)
    counts = torch.as_tensor(area, device=cam.device).reshape(-1).long()
    if counts.numel() == 1:
        counts = counts.expand(cam.shape[0])
    cells = cam.shape[1] * cam.shape[2]
    if counts.numel() != cam.shape[0] or bool((counts < 0).any()) or bool((counts > cells).any()):
        raise InputError(f"area must be one count or one per map, each in 0..{cells}; got {area!r}")
    return _top_counts(cam, counts)


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample |A and B| / |A or B| of boolean masks [N, ...]; 1 where both are empty."""
    if a.shape != b.shape:
        raise InputError(f"masks differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    a, b = a.bool().flatten(1), b.bool().flatten(1)
    inter = (a & b).sum(1).float()
    union = (a | b).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
