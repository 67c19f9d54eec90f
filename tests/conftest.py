"""Shared fixtures: a small model trained on scikit-learn's real digits."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aadscale import models

torch.set_num_threads(2)


def digits_tensors(size: int = 16):
    """scikit-learn's 1797 digits as [N, 1, size, size] pixels in [0, 1] and labels."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x, torch.tensor(d.target, dtype=torch.long)


def digits_split():
    """(x_train, y_train, x_test, y_test): a fixed 1500/297 split."""
    x, y = digits_tensors()
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    tr, te = perm[:1500], perm[1500:]
    return x[tr], y[tr], x[te], y[te]


@pytest.fixture(scope="session")
def digits():
    """The fixed digits split."""
    return digits_split()


def train_digits_model(x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> torch.nn.Module:
    """lenet_small trained for 6 epochs on the digits (about 97 % clean accuracy), eval mode.

    Another CPU rounds differently and ends with a slightly different model; other
    ``seed`` values stand in for those machines when test margins are measured
    (benchmarks/test_margins.py).
    """
    torch.manual_seed(seed)
    model = models.build("lenet_small", 10, in_channels=1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed + 1)
    model.train()
    for _ in range(6):
        for idx in torch.randperm(len(y), generator=g).split(50):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def digits_model(digits):
    """The digits model of seed 0."""
    xtr, ytr, _, _ = digits
    return train_digits_model(xtr, ytr)


def accuracy(model, x, y) -> float:
    """Top-1 accuracy in [0, 1] without gradients."""
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.fixture
def rng_seed():
    torch.manual_seed(0)
    np.random.seed(0)


# timm models at test size (32 px images, a 4x4 Grad-CAM grid): model name -> model.kwargs
TINY_TIMM = {
    "timm/convnext_tiny": {"depths": [1, 1, 1, 1], "dims": [8, 8, 16, 16], "patch_size": 1},
    "timm/vit_small_patch16_224": {"depth": 2, "embed_dim": 32, "num_heads": 2, "img_size": 32, "patch_size": 8},
    "timm/swin_tiny_patch4_window7_224": {"depths": [1, 1], "num_heads": [1, 2], "embed_dim": 16, "img_size": 32,
                                          "patch_size": 4, "window_size": 4},
}
