"""PNG figures: Grad-CAM overlays clean vs adversarial (Fig. 1/7/9), map evolution over
checkpoints (Fig. 6), robust accuracy vs attack steps and vs eps."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from aadscale.attacks.registry import parse_attack_name, run_column
from aadscale.attention import forward_with_cam
from aadscale.errors import InputError
from aadscale.evaluate.robust import robust_accuracy
from aadscale.models.modes import eval_mode
from aadscale.visualize import overlay


def _save(fig: Figure, path: str | Path, dpi: int) -> tuple[int, int]:
    """Write the figure (Agg, no pyplot state) and return its size in pixels."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi, format="png")
    w, h = fig.get_size_inches()
    return round(w * dpi), round(h * dpi)


def _grid(rows: int, cols: int, panel: float, dpi: int) -> tuple[Figure, list]:
    fig = Figure(figsize=(cols * panel, rows * panel), dpi=dpi)
    axes = [[fig.add_subplot(rows, cols, r * cols + c + 1) for c in range(cols)] for r in range(rows)]
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.92, wspace=0.05, hspace=0.25)
    for ax in (a for row in axes for a in row):
        ax.set_axis_off()
    return fig, axes


def _show(ax, image: torch.Tensor, title: str) -> None:
    img = image.detach().float().cpu().clamp(0, 1)
    ax.imshow(img.expand(3, -1, -1).permute(1, 2, 0).numpy())
    ax.set_title(title, fontsize=7)


def attention_figure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, path: str | Path, *,
                     attack: str = "step_ll", eps: float = 4 / 255, panel: float = 2.0,
                     dpi: int = 100) -> tuple[int, int]:
    """One row per image: clean, clean + Grad-CAM, adversarial, adversarial + Grad-CAM.

    Maps are toward the true label; titles give predictions and confidences. Returns the
    PNG size (width, height) = (4 * panel * dpi, rows * panel * dpi).
    """
    device = next(model.parameters()).device
    x, y = x.to(device).float(), y.to(device)
    with eval_mode(model):
        clean = forward_with_cam(model, x, y)
        x_adv = run_column(model, x, y, attack, eps=eps)
        adv = forward_with_cam(model, x_adv, y)
    fig, axes = _grid(len(y), 4, panel, dpi)
    fig.suptitle(f"{attack}, eps={eps:.4g}: Grad-CAM toward the true label", fontsize=8)
    for i, row in enumerate(axes):
        pc, pa = torch.softmax(clean.logits[i], 0), torch.softmax(adv.logits[i], 0)
        _show(row[0], x[i], f"clean: label {int(y[i])}")
        _show(row[1], overlay(x[i:i + 1], clean.cam[i:i + 1])[0],
              f"pred {int(pc.argmax())} ({float(pc.max()):.2f})")
        _show(row[2], x_adv[i], "adversarial")
        _show(row[3], overlay(x_adv[i:i + 1], adv.cam[i:i + 1])[0],
              f"pred {int(pa.argmax())} ({float(pa.max()):.2f})")
    return _save(fig, path, dpi)


def evolution_figure(models: Sequence[tuple[str, nn.Module]], x: torch.Tensor, y: torch.Tensor,
                     path: str | Path, *, panel: float = 2.0, dpi: int = 100) -> tuple[int, int]:
    """One row per image: the image, then its Grad-CAM overlay under each (label, model) in order."""
    if not models:
        raise InputError("give at least one checkpoint")
    fig, axes = _grid(len(y), 1 + len(models), panel, dpi)
    fig.suptitle("Grad-CAM over training (toward the true label)", fontsize=8)
    for i in range(len(y)):
        _show(axes[i][0], x[i], f"label {int(y[i])}")
    for col, (label, model) in enumerate(models, start=1):
        device = next(model.parameters()).device
        with eval_mode(model):
            out = forward_with_cam(model, x.to(device).float(), y.to(device))
        views = overlay(x.to(device).float(), out.cam)
        for i in range(len(y)):
            _show(axes[i][col], views[i], f"{label}: pred {int(out.logits[i].argmax())}")
    return _save(fig, path, dpi)


def curve_figure(xs: Sequence[float], series: dict[str, Sequence[float]], xlabel: str,
                 path: str | Path, *, title: str = "", size: tuple[float, float] = (5.0, 3.5),
                 dpi: int = 100) -> tuple[int, int]:
    """Accuracy (%) curves against ``xs``, one line per series."""
    fig = Figure(figsize=size, dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    for label, ys in series.items():
        ax.plot(list(xs), list(ys), marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path, dpi)


def accuracy_vs_steps(model: nn.Module, batches: Sequence, kinds: Sequence[str], steps: Sequence[int],
                      eps: float, progress: bool = False) -> dict[str, list[float]]:
    """Accuracy of each iterative attack kind (``pgd``, ``cw``, ...) at each step count."""
    out = {}
    for kind in kinds:
        names = [f"{kind}{k}" for k in steps]
        res = robust_accuracy(model, batches, names, eps=eps, progress=progress)
        out[kind] = [res[parse_attack_name(n).name] for n in names]
    return out


def accuracy_vs_eps(model: nn.Module, batches: Sequence, attacks: Sequence[str], eps_values: Sequence[float],
                    progress: bool = False) -> dict[str, list[float]]:
    """Accuracy under each attack at each eps."""
    names = [parse_attack_name(a).name for a in attacks]
    table = [robust_accuracy(model, batches, names, eps=e, progress=progress) for e in eps_values]
    return {n: [row[n] for row in table] for n in names}
