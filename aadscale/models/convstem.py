"""The convolutional stem (ConvStem) of Singh, Croce & Hein 2023, "Revisiting Adversarial Training for
ImageNet" (NeurIPS 2023), in timm's ConvNeXt and ViT, with the parameter names of their checkpoints.

Their code: github.com/nmndeep/revisiting-at ``utils_architecture.py`` (``ConvBlock``, ``ConvBlock1``,
``ConvBlock3``, ``get_new_model``), copied by RobustBench as
``robustbench/model_zoo/architectures/convstem_models.py`` (``get_convstem_models``). They build the
timm model, then set ``model.stem = ConvBlock1/3(...)`` (ConvNeXt) or
``model.patch_embed.proj = ConvBlock(...)`` (ViT); each block keeps its layers in an
``nn.Sequential`` named ``stem``, hence keys such as ``stem.stem.0.weight`` and
``patch_embed.proj.stem.12.weight``. Their channels-first LayerNorm (eps 1e-6) computes what timm's
``LayerNorm2d(eps=1e-6)`` does, with the same ``weight`` and ``bias``.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from aadscale.errors import InputError

STEMS = ("patch", "convstem")  # the model's own stem, or this one
VIT_WIDTHS = (48, 96, 192, 384)  # ConvBlock(48, ...): 48 * 2**i; only the final 1x1 conv follows embed_dim
VIT_STRIDE = 16
CONVNEXT_STRIDE = 4
CONVNEXT_TWO_CONVS = 96  # ConvNeXt-T/S (stage-0 width 96) get ConvBlock1, B/L (128, 192) ConvBlock3


class ConvStem(nn.Module):
    """3x3 convolutions (padding 1), each followed by LayerNorm2d and GELU, then an optional 1x1 convolution."""

    def __init__(self, in_channels: int, widths: Sequence[int], strides: Sequence[int],
                 out_channels: int | None = None) -> None:
        from timm.layers import LayerNorm2d
        super().__init__()
        layers: list[nn.Module] = []
        for width, stride in zip(widths, strides):
            layers += [nn.Conv2d(in_channels, width, kernel_size=3, stride=stride, padding=1),
                       LayerNorm2d(width, eps=1e-6), nn.GELU()]
            in_channels = width
        if out_channels is not None:
            layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=1))
        self.stem = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.stem(x)


def convnext_stem(in_channels: int, width: int) -> ConvStem:
    """Their ConvNeXt stem (stride 4) ending in ``width`` channels: ConvBlock1 (two stride-2 convs, half
    the width then the width) up to width 96, else ConvBlock3 (a third conv of stride 1, widths 1/2, 3/4, 1)."""
    half = width // 2
    if width <= CONVNEXT_TWO_CONVS:
        return ConvStem(in_channels, (half, width), (2, 2))
    return ConvStem(in_channels, (half, half * 3 // 2, width), (2, 2, 1))


def vit_stem(in_channels: int, embed_dim: int) -> ConvStem:
    """Their ViT stem (ConvBlock, stride 16): four stride-2 convs of 48, 96, 192, 384 channels, then a 1x1
    conv to ``embed_dim``."""
    return ConvStem(in_channels, VIT_WIDTHS, (2,) * len(VIT_WIDTHS), embed_dim)


def unsupported(name: str) -> InputError:
    """The error for a model that has no stem this module replaces."""
    return InputError(f"model.stem=convstem is for timm ConvNeXt and ViT models, got {name}")


def _check_stride(name: str, stride: int | tuple[int, ...], needed: int) -> None:
    if stride not in (needed, (needed, needed)):
        raise InputError(f"model.stem=convstem has stride {needed}, {name}'s stem has stride {stride}; "
                         f"set model.kwargs.patch_size={needed}")


def use_convstem(net: nn.Module, in_channels: int, name: str) -> str:
    """Replace the stem of a timm ConvNeXt (``net.stem``) or ViT (``net.patch_embed.proj``) by a new,
    randomly initialised ConvStem of the same stride and width; returns the replaced module's name."""
    from timm.layers import PatchEmbed
    from timm.models.convnext import ConvNeXt
    from timm.models.vision_transformer import VisionTransformer
    if isinstance(net, ConvNeXt):
        _check_stride(name, net.feature_info[0]["reduction"], CONVNEXT_STRIDE)
        net.stem = convnext_stem(in_channels, net.feature_info[0]["num_chs"])
        return "stem"
    if isinstance(net, VisionTransformer) and isinstance(net.patch_embed, PatchEmbed):
        _check_stride(name, tuple(net.patch_embed.patch_size), VIT_STRIDE)
        net.patch_embed.proj = vit_stem(in_channels, net.embed_dim)
        return "patch_embed.proj"
    raise unsupported(name)
