"""Mean/std normalisation as the first layer, so that models take [0, 1] pixels."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """(x - mean) / std per channel; buffers so that they follow .to(device, dtype)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class PixelModel(nn.Module):
    """A classifier on [0, 1] pixel input: ``Normalize`` then the network.

    ``cam_layer`` is the dotted module name of the attention layer (Grad-CAM's default).
    """

    def __init__(self, net: nn.Module, cam_layer: str, mean: Sequence[float],
                 std: Sequence[float], num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net
        self.cam_layer = f"net.{cam_layer}"
        self.num_classes = num_classes
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))
