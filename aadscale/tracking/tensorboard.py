"""TensorBoard on rank 0: scalars, image grids (clean/adversarial with Grad-CAM overlays), hparams."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import torch

from aadscale.errors import InputError
from aadscale.visualize import overlay

HPARAM_TYPES = (bool, int, float, str)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``; lists and other values become strings."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value if isinstance(value, HPARAM_TYPES) else str(value)
    return out


def _to_float(value: Any) -> float:
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def _rgb(images: torch.Tensor) -> torch.Tensor:
    return images.detach().float().cpu().expand(-1, 3, -1, -1).clamp(0, 1)


def cam_grid(x: torch.Tensor, x_adv: torch.Tensor, cam_clean: torch.Tensor, cam_adv: torch.Tensor,
             n: int = 8) -> torch.Tensor:
    """A [3, H, W] grid of the first ``n`` images, rows: clean | adversarial | clean + map | adversarial + map."""
    from torchvision.utils import make_grid  # late: only image logging needs torchvision here
    if x.shape != x_adv.shape or x.dim() != 4:
        raise InputError(f"x and x_adv must be [N, C, H, W] of one shape, got {tuple(x.shape)} "
                         f"and {tuple(x_adv.shape)}")
    n = min(n, x.shape[0])
    if n < 1:
        raise InputError(f"n={n} must be >= 1 and the batch non-empty")
    rows = [_rgb(x[:n]), _rgb(x_adv[:n]), overlay(x[:n], cam_clean[:n]).cpu(),
            overlay(x_adv[:n], cam_adv[:n]).cpu()]
    return make_grid(torch.cat(rows), nrow=n, padding=2, pad_value=1.0)


class TBLogger:
    """A SummaryWriter on the main rank, a silent stand-in elsewhere (``enabled=False``); a context manager."""

    def __init__(self, log_dir: str | Path, enabled: bool):
        self.log_dir = Path(log_dir)
        self._writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter  # late: heavy, and rank 0 only
            self._writer = SummaryWriter(log_dir=str(self.log_dir))

    @property
    def enabled(self) -> bool:
        """True where this logger writes event files."""
        return self._writer is not None

    def scalars(self, values: Mapping[str, Any], step: int, prefix: str = "") -> None:
        """One scalar per entry, tagged ``prefix/name`` (tensors are read with ``.item()``)."""
        if self._writer is None:
            return
        for name, value in values.items():
            tag = f"{prefix}/{name}" if prefix else name
            self._writer.add_scalar(tag, _to_float(value), step)

    def image_grid(self, tag: str, images: torch.Tensor, step: int, nrow: int = 8) -> None:
        """Images [N, 3, H, W] in [0, 1] tiled ``nrow`` per row, or a ready grid [3, H, W]."""
        if images.dim() not in (3, 4) or images.shape[-3] not in (1, 3):
            raise InputError(f"images must be [N, 1|3, H, W] or a grid [1|3, H, W], got "
                             f"{tuple(images.shape)}")
        if self._writer is None:
            return
        if images.dim() == 4:
            from torchvision.utils import make_grid
            images = make_grid(_rgb(images), nrow=nrow, padding=2, pad_value=1.0)
        self._writer.add_image(tag, images.detach().float().cpu().clamp(0, 1), step)

    def hparams(self, flat_config: Mapping[str, Any], metrics: Mapping[str, Any], step: int = 0) -> None:
        """Record the run's hyper-parameters with its final metrics (the HPARAMS tab), in this run's folder."""
        if self._writer is None:
            return
        from torch.utils.tensorboard.summary import hparams
        hp = {k: v if isinstance(v, HPARAM_TYPES) else str(v) for k, v in flat_config.items()}
        values = {k: _to_float(v) for k, v in metrics.items()}
        values = {k: v for k, v in values.items() if math.isfinite(v)}
        writer = self._writer._get_file_writer()
        for summary in hparams(hp, values):  # experiment, session start, session end
            writer.add_summary(summary, step)
        self.scalars(values, step)

    def flush(self) -> None:
        """Push pending events to disk."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file (further calls are no-ops)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "TBLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_events(log_dir: str | Path) -> dict:
    """Read event files back: ``{"scalars": {tag: [(step, value)]}, "images": {tag: count}, "hparams": bool}``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    if not Path(log_dir).is_dir():
        raise InputError(f"TensorBoard folder {log_dir} does not exist")
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    return {
        "scalars": {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags["scalars"]},
        "images": {t: len(acc.Images(t)) for t in tags["images"]},
        "hparams": _has_plugin(acc, "hparams"),
    }


def _has_plugin(acc: Any, plugin: str) -> bool:
    try:
        return bool(acc.PluginTagToContent(plugin))
    except KeyError:  # the accumulator's way of saying "no summary of this plugin"
        return False
