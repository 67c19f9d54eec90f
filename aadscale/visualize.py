"""Grad-CAM overlays on images, in torch, for figures and TensorBoard image grids."""
from __future__ import annotations

import torch

from aadscale.attention.masks import resize
from aadscale.errors import InputError


def jet(t: torch.Tensor) -> torch.Tensor:
    """The jet colormap of values in [0, 1]: [...] -> [..., 3] RGB in [0, 1]."""
    t = t.clamp(0, 1).unsqueeze(-1)
    centres = torch.tensor([3.0, 2.0, 1.0], device=t.device, dtype=t.dtype)  # R, G, B
    return (1.5 - (4 * t - centres).abs()).clamp(0, 1)


def normalize_maps(cams: torch.Tensor) -> torch.Tensor:
    """Scale each map [N, h, w] to [0, 1] (min to 0, max to 1; a constant map becomes 0)."""
    flat = cams.flatten(1).float()
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(cams)


def overlay(images: torch.Tensor, cams: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Blend jet-coloured maps over images: [N, C, H, W] in [0, 1] and [N, h, w] -> [N, 3, H, W].

    Each map is normalised to [0, 1] per image, then resized bilinearly to the image.
    Grey images (C = 1) are shown in RGB.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise InputError(f"images must be [N, 1 or 3, H, W], got shape {tuple(images.shape)}")
    if cams.dim() != 3 or cams.shape[0] != images.shape[0]:
        raise InputError(f"cams must be [N, h, w] with N={images.shape[0]}, got {tuple(cams.shape)}")
    if not 0 <= alpha <= 1:
        raise InputError(f"alpha={alpha} must be in [0, 1]")
    rgb = images.detach().float().expand(-1, 3, -1, -1).clamp(0, 1)
    maps = resize(normalize_maps(cams.detach()), rgb.shape[-2:])
    heat = jet(maps).permute(0, 3, 1, 2)
    return (1 - alpha) * rgb + alpha * heat
