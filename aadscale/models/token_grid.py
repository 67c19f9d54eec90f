"""``TokenGrid``: a transformer layer's patch tokens seen as an [N, C, h, w] map, the Grad-CAM layer of ViTs and Swin."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from aadscale.errors import InputError

LAYOUTS = ("tokens", "nhwc")


class TokenGrid(nn.Module):
    """Its forward turns a layer's output into a grid [N, C, h, w]; ``attach`` puts it in the network.

    ``layout="tokens"``: [N, prefix + h*w, C], the ``prefix`` class / register / distillation
    tokens first, then the patches row by row (timm's ViTs); the prefix tokens are dropped
    from the grid. ``grid_size`` (h, w) is the patch grid; None (inputs of any size) takes a
    square one. ``layout="nhwc"``: [N, h, w, C] (timm's Swin stages), permuted to NCHW.

    Attached to a module, it routes that module's output through itself and back into the
    same layout, so a Grad-CAM hook on this module sees the grid while the rest of the network
    gets the same values as before, through differentiable views and a concatenation (the AAD
    preservation term differentiates through it twice). It has no parameters: the network's
    state_dict keys stay as they were.
    """

    def __init__(self, layout: str, prefix: int = 0, grid_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise InputError(f"layout={layout!r} must be one of {list(LAYOUTS)}")
        self.layout, self.prefix, self.grid_size = layout, prefix, grid_size

    def extra_repr(self) -> str:
        return f"layout={self.layout}, prefix={self.prefix}, grid_size={self.grid_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The grid [N, C, h, w] of a [N, prefix + h*w, C] token tensor or a [N, h, w, C] map."""
        if self.layout == "nhwc":
            if x.dim() != 4:
                raise InputError(f"TokenGrid(nhwc) expects an [N, h, w, C] map, got shape {tuple(x.shape)}")
            return x.permute(0, 3, 1, 2)
        if x.dim() != 3:
            raise InputError(f"TokenGrid(tokens) expects [N, tokens, C], got shape {tuple(x.shape)}")
        h, w = self._grid(x.shape[1])
        return x[:, self.prefix:].transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)

    def _grid(self, tokens: int) -> tuple[int, int]:
        patches = tokens - self.prefix
        if self.grid_size is not None:
            h, w = self.grid_size
            if h * w == patches:
                return h, w
            raise InputError(f"{tokens} tokens are not {self.prefix} prefix tokens + the {h}x{w} patch grid; "
                             "give the model the image size it was built for (model.kwargs.img_size, "
                             "data.image_size)")
        side = math.isqrt(max(patches, 0))
        if side * side != patches:
            raise InputError(f"{patches} patch tokens (of {tokens}, {self.prefix} prefix) do not form a "
                             "square grid; build the model for a fixed image size (model.kwargs.img_size) "
                             "or pass model.cam_layer=<a module with a square patch grid>")
        return side, side

    def _back(self, grid: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if self.layout == "nhwc":
            return grid.permute(0, 2, 3, 1)
        return torch.cat([like[:, :self.prefix], grid.flatten(2).transpose(1, 2)], dim=1)

    def _route(self, _module: nn.Module, _inputs, output: torch.Tensor) -> torch.Tensor:
        return self._back(self(output), output)

    def attach(self, module: nn.Module) -> RemovableHandle:
        """Route ``module``'s output through this grid from now on (the handle undoes it)."""
        return module.register_forward_hook(self._route)
