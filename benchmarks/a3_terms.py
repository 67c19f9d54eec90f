"""A3's two terms step by step: does the attention term pull against the base loss, and who sets the sign?

    .venv/bin/python benchmarks/a3_terms.py                  # the digits test model, eps 0.1, 10 steps
    .venv/bin/python benchmarks/a3_terms.py --checkpoint runs/compare/madry-s0/model.pt --limit 256

Follows two paths from the same random start: signed steps on the base loss (cross-entropy,
i.e. PGD) and signed steps on eq. 11's attention term alone, ||M(x) - L_c(x_adv)/max L_c(x)||_1
(A3 "always" at gamma -> infinity). At every iterate it prints, as means over the images:
accuracy, the true-class logit, the map's mass (sum of L_c(x_adv)/max L_c(x)), the term split
over the attended cells (M = 1) and the rest (M = 0), the cosine between the input gradients
of the base loss and of the term (whole, M = 1 part, M = 0 part), their mean absolute sizes,
the share of pixels whose step sign(grad base + gamma * grad term) is the term's sign, and the
share of images whose gamma * term gradient is larger (L1) than the base's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from a3_gamma import load  # noqa: E402
from aadscale.attacks.a3 import map_scale  # noqa: E402
from aadscale.attacks.ascent import default_alpha  # noqa: E402
from aadscale.attacks.losses import ce_loss  # noqa: E402
from aadscale.attacks.threat import LinfStep  # noqa: E402
from aadscale.attention.gradcam import forward_with_cam  # noqa: E402
from aadscale.attention.masks import threshold_mask  # noqa: E402
from aadscale.distributed import run_main  # noqa: E402


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of the cosine between two per-image gradients."""
    return float(F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-20).mean())


def l1(g: torch.Tensor) -> torch.Tensor:
    """Per-image L1 norm of a gradient."""
    return g.abs().flatten(1).sum(1)


def measure(model, x_adv, y, mask, scale, gammas) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """One iterate's numbers, and the input gradients of the base loss and of the attention term."""
    x_adv = x_adv.detach().requires_grad_(True)
    out = forward_with_cam(model, x_adv, y, create_graph=True)
    base = ce_loss(out.logits, y).sum()
    cells = (mask - out.cam / scale).abs()  # eq. 11 before the sum (a3.map_deviation)
    inside, outside = (cells * mask).sum(), (cells * (1 - mask)).sum()
    g_base, g_in, g_out = (torch.autograd.grad(t, x_adv, retain_graph=True)[0] for t in (base, inside, outside))
    g_term = g_in + g_out
    n, logits = len(y), out.logits.detach()
    row = {"acc %": float((logits.argmax(1) == y).float().mean()) * 100,
           "logit y": float(logits.gather(1, y.view(-1, 1)).mean()),
           "mass": float((out.cam.detach() / scale).sum()) / n, "term M=1": float(inside.detach()) / n,
           "term M=0": float(outside.detach()) / n, "cos": cosine(g_base, g_term), "cos M=1": cosine(g_base, g_in),
           "cos M=0": cosine(g_base, g_out), "g base (abs)": float(g_base.abs().mean()),
           "g term (abs)": float(g_term.abs().mean())}
    for gamma in gammas:
        row[f"sign=term g={gamma:g}"] = float(((g_base + gamma * g_term).sign() == g_term.sign()).float().mean())
        row[f"imgs term>base g={gamma:g}"] = float((gamma * l1(g_term) > l1(g_base)).float().mean())
    return row, g_base, g_term


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="an exported model.pt (default: the digits test model)")
    p.add_argument("--limit", type=int, default=297)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--gammas", default="0.01,10", help="comma-separated, for the sign share")
    args = p.parse_args()
    torch.set_num_threads(2)
    model, x, y, label = load(args)
    gammas = [float(g) for g in args.gammas.split(",")]
    clean = forward_with_cam(model, x, y)
    mask, scale = threshold_mask(clean.cam).float(), map_scale(clean.cam)
    threat = LinfStep(x, args.eps, default_alpha(args.eps, args.steps))
    print(f"{label}, {len(y)} images, eps {args.eps:g}, {args.steps} steps, torch {torch.__version__}\n")
    for path in ("base (PGD)", "attention term alone"):
        x_adv = threat.random_perturb(x, torch.Generator().manual_seed(0))
        for step in range(args.steps + 1):
            row, g_base, g_term = measure(model, x_adv, y, mask, scale, gammas)
            if step == 0:
                print(f"path: {path}\n\n| step | " + " | ".join(row) + " |\n|" + " --- |" * (len(row) + 1))
            print(f"| {step} | " + " | ".join(f"{v:.3g}" for v in row.values()) + " |")
            x_adv = threat.step(x_adv, g_base if path.startswith("base") else g_term)
        print()


if __name__ == "__main__":
    run_main(main)
