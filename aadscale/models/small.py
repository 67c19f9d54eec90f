"""The paper's small networks: LeNet (MNIST), ResNet-9 (CIFAR-10), and test-size variants."""
from __future__ import annotations

from torch import nn

from aadscale.models.registry import register_model


def _conv_bn(cin: int, cout: int, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                               nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """x + two conv-bn-relu blocks."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(c, c), _conv_bn(c, c))

    def forward(self, x):
        return x + self.body(x)


class ResNet9(nn.Module):
    """The DAWNBench ResNet-9 (prep, layer1+res, layer2, layer3+res); attention layer ``layer3``."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 64,
                 dropout: float = 0.0) -> None:
        super().__init__()
        w = width
        self.prep = _conv_bn(in_channels, w)
        self.layer1 = nn.Sequential(_conv_bn(w, 2 * w, pool=True), Residual(2 * w))
        self.layer2 = _conv_bn(2 * w, 4 * w, pool=True)
        self.layer3 = nn.Sequential(_conv_bn(4 * w, 8 * w, pool=True), Residual(8 * w))
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(8 * w, num_classes))

    def forward(self, x):
        return self.head(self.layer3(self.layer2(self.layer1(self.prep(x)))))


class LeNet(nn.Module):
    """LeNet-style MNIST net of the paper (two conv layers, dropout); attention layer ``conv2``."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 32,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, width, 5, padding=2), nn.ReLU(inplace=True))
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Sequential(nn.Conv2d(width, 2 * width, 5, padding=2), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(7), nn.Flatten(),
                                  nn.Linear(2 * width * 49, 1024), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout), nn.Linear(1024, num_classes))

    def forward(self, x):
        return self.head(self.conv2(self.pool1(self.conv1(x))))


class TinyConv(nn.Module):
    """Two convs and a linear head: small enough for float64 gradcheck; attention layer ``conv2``."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 4,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.Tanh())
        self.conv2 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, stride=2), nn.Tanh())
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.LazyLinear(num_classes))

    def forward(self, x):
        return self.head(self.conv2(self.conv1(x)))


@register_model
def lenet(num_classes: int, in_channels: int = 1, dropout: float = 0.5):
    """The paper's MNIST network."""
    return LeNet(num_classes, in_channels, dropout=dropout), "conv2"


@register_model
def lenet_small(num_classes: int, in_channels: int = 1, dropout: float = 0.0):
    """LeNet at a quarter width, for tests."""
    return LeNet(num_classes, in_channels, width=8, dropout=dropout), "conv2"


@register_model
def resnet9(num_classes: int, in_channels: int = 3, dropout: float = 0.5):
    """The paper's CIFAR-10 network."""
    return ResNet9(num_classes, in_channels, dropout=dropout), "layer3"


@register_model
def resnet9_small(num_classes: int, in_channels: int = 3, dropout: float = 0.0):
    """ResNet-9 at 1/4 width: the demo and test model."""
    return ResNet9(num_classes, in_channels, width=16, dropout=dropout), "layer3"


@register_model
def tinyconv(num_classes: int, in_channels: int = 3, dropout: float = 0.0):
    """A two-layer conv net for gradient checks."""
    return TinyConv(num_classes, in_channels, dropout=dropout), "conv2"
