"""torchvision ImageNet networks (ResNet-50, InceptionV3, ResNet-18) behind the registry."""
from __future__ import annotations

import torchvision
from torch import nn

from aadscale.models.registry import register_model

TORCHVISION_WEIGHTS = {"resnet50": "IMAGENET1K_V2", "resnet18": "IMAGENET1K_V1",
                       "inception_v3": "IMAGENET1K_V1"}


def _with_dropout(fc: nn.Linear, num_classes: int, dropout: float) -> nn.Module:
    head = nn.Linear(fc.in_features, num_classes)
    return nn.Sequential(nn.Dropout(dropout), head) if dropout > 0 else head


def _resnet(arch: str, num_classes: int, dropout: float, weights: str | None):
    net = getattr(torchvision.models, arch)(weights=weights)
    if num_classes != 1000 or dropout > 0:
        net.fc = _with_dropout(net.fc, num_classes, dropout)
    return net, "layer4"


@register_model
def resnet50(num_classes: int, in_channels: int = 3, dropout: float = 0.0, weights: str | None = None):
    """ResNet-50, attention layer ``layer4`` (the paper's ImageNet model)."""
    return _resnet("resnet50", num_classes, dropout, weights)


@register_model
def resnet18(num_classes: int, in_channels: int = 3, dropout: float = 0.0, weights: str | None = None):
    """ResNet-18, attention layer ``layer4``: a cheaper ImageNet-shaped model for tests."""
    return _resnet("resnet18", num_classes, dropout, weights)


@register_model
def inception_v3(num_classes: int, in_channels: int = 3, dropout: float = 0.5,
                 weights: str | None = None):
    """InceptionV3 (299 px), attention layer ``Mixed_7c``; the auxiliary head is removed."""
    net = torchvision.models.inception_v3(weights=weights, aux_logits=True, init_weights=weights is None,
                                          transform_input=weights is not None, dropout=dropout)
    net.aux_logits, net.AuxLogits = False, None
    if num_classes != 1000:
        net.fc = nn.Linear(net.fc.in_features, num_classes)
    return net, "Mixed_7c"
