"""TensorBoard event files written on the main rank and read back; the Grad-CAM image grid."""
from __future__ import annotations

import pytest
import torch

from aadscale.config import Config, to_dict
from aadscale.tracking import TBLogger, cam_grid, flatten, read_events


def batch(n=4, size=16, channels=3):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, channels, size, size, generator=g)
    return x, (x + 0.03 * torch.randn(x.shape, generator=g)).clamp(0, 1), \
        torch.rand(n, 4, 4, generator=g), torch.rand(n, 4, 4, generator=g)


def test_scalars_images_and_hparams_read_back(tmp_path):
    x, x_adv, cam, cam_adv = batch()
    with TBLogger(tmp_path / "tb", enabled=True) as tb:
        for step in range(3):
            tb.scalars({"loss": 1.0 / (step + 1), "rect": torch.tensor(-0.5)}, step, prefix="train")
        tb.scalars({"pgd10": 41.5}, 2, prefix="eval")
        tb.image_grid("train/cam", cam_grid(x, x_adv, cam, cam_adv), step=2)
        tb.image_grid("train/clean", x, step=2)
        tb.hparams(flatten(to_dict(Config())), {"final/pgd10": 41.5, "final/clean": float("nan")})
    ev = read_events(tmp_path / "tb")
    assert ev["scalars"]["train/loss"] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    assert ev["scalars"]["train/rect"][-1] == (2, -0.5)
    assert ev["scalars"]["eval/pgd10"] == [(2, 41.5)]
    assert ev["scalars"]["final/pgd10"] == [(0, 41.5)]
    assert "final/clean" not in ev["scalars"]  # non-finite metrics are not recorded
    assert ev["images"] == {"train/cam": 1, "train/clean": 1}
    assert ev["hparams"] is True


def test_disabled_logger_writes_nothing(tmp_path):
    x, *_ = batch()
    tb = TBLogger(tmp_path / "tb", enabled=False)
    tb.scalars({"loss": 1.0}, 0)
    tb.image_grid("img", x, 0)
    tb.hparams({"a": 1}, {"m": 1.0})
    tb.close()
    assert not tb.enabled and not (tmp_path / "tb").exists()


def test_without_hparams_reads_false(tmp_path):
    with TBLogger(tmp_path, enabled=True) as tb:
        tb.scalars({"loss": 2.0}, 5)
    ev = read_events(tmp_path)
    assert ev == {"scalars": {"loss": [(5, 2.0)]}, "images": {}, "hparams": False}


def test_cam_grid_layout_rows_and_overlays():
    x, x_adv, cam, cam_adv = batch(n=6, size=16, channels=1)
    grid = cam_grid(x, x_adv, cam, cam_adv, n=3)
    pad = 2
    assert grid.shape == (3, 4 * (16 + pad) + pad, 3 * (16 + pad) + pad)
    assert grid.min() >= 0 and grid.max() <= 1

    def tile(row, col):
        top, left = pad + row * (16 + pad), pad + col * (16 + pad)
        return grid[:, top:top + 16, left:left + 16]
    assert torch.allclose(tile(0, 1), x[1].expand(3, -1, -1))
    assert torch.allclose(tile(1, 2), x_adv[2].expand(3, -1, -1))
    assert not torch.allclose(tile(2, 0), tile(0, 0))  # the map is blended in
    assert not torch.allclose(tile(3, 0), tile(2, 0))  # the adversarial row has its own map


def test_bad_shapes_are_refused(tmp_path):
    x, x_adv, cam, cam_adv = batch()
    with pytest.raises(ValueError, match="same|one shape"):
        cam_grid(x, x_adv[:, :, :8], cam, cam_adv)
    with pytest.raises(ValueError, match=r"\[N, 1\|3, H, W\]"):
        TBLogger(tmp_path, enabled=False).image_grid("bad", torch.rand(2, 5, 8, 8), 0)
    with pytest.raises(ValueError, match="does not exist"):
        read_events(tmp_path / "missing")


def test_flatten_nested_config():
    flat = flatten({"optim": {"lr": 0.1, "name": "sgd"}, "eval": {"attacks": ["clean", "pgd10"]}})
    assert flat == {"optim.lr": 0.1, "optim.name": "sgd", "eval.attacks": "['clean', 'pgd10']"}
