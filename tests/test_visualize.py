"""Grad-CAM overlays: colours, per-image normalisation, shapes."""
from __future__ import annotations

import pytest
import torch

from aadscale.visualize import jet, normalize_maps, overlay


def test_jet_endpoints_and_range():
    c = jet(torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(c[0], torch.tensor([0.0, 0.0, 0.5]))  # dark blue
    assert torch.allclose(c[1], torch.tensor([0.5, 1.0, 0.5]))  # green-ish middle
    assert torch.allclose(c[2], torch.tensor([0.5, 0.0, 0.0]))  # dark red


def test_overlay_shape_range_and_per_image_normalisation():
    images = torch.rand(2, 3, 12, 10)
    cams = torch.rand(2, 3, 3)
    out = overlay(images, cams)
    assert out.shape == (2, 3, 12, 10) and out.min() >= 0 and out.max() <= 1
    scaled = overlay(images, cams * torch.tensor([5.0, 0.01]).view(2, 1, 1))
    assert torch.allclose(out, scaled, atol=1e-5)  # each map is normalised on its own
    assert torch.allclose(overlay(images, cams, alpha=0.0), images)
    grey = overlay(images[:, :1], cams)
    assert grey.shape == (2, 3, 12, 10)
    assert normalize_maps(torch.ones(1, 2, 2)).abs().max() == 0  # a flat map stays flat


def test_hot_cell_is_red_where_the_map_peaks():
    cams = torch.zeros(1, 4, 4)
    cams[0, 0, 0] = 1.0
    heat = overlay(torch.zeros(1, 3, 8, 8), cams, alpha=1.0)[0]
    assert heat[0, 0, 0] > heat[2, 0, 0] and heat[2, 7, 7] > heat[0, 7, 7]


@pytest.mark.parametrize("images, cams", [(torch.rand(2, 2, 8, 8), torch.rand(2, 4, 4)),
                                          (torch.rand(2, 3, 8, 8), torch.rand(3, 4, 4))])
def test_bad_shapes(images, cams):
    with pytest.raises(ValueError):
        overlay(images, cams)
