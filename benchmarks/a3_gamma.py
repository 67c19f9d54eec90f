"""A3Attack against its base as gamma grows: accuracy (lower = stronger) and how far the attention moves.

    .venv/bin/python benchmarks/a3_gamma.py                                   # the digits test model
    .venv/bin/python benchmarks/a3_gamma.py --checkpoint runs/compare/madry-s0/model.pt --limit 256

Prints a Markdown table: for each eps and gamma, accuracy under A3-PGD-k and the IoU of the
top-n Grad-CAM cells of clean and adversarial images (lower = attention moved further),
next to plain PGD-k from the same random start (gamma = 0 is PGD-k exactly).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aadscale import attacks  # noqa: E402
from aadscale.attention import grad_cam, iou, topk_mask  # noqa: E402


def load(args) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, str]:
    """The model and images: a trained checkpoint on its validation split, or the digits test model."""
    if args.checkpoint:
        from aadscale.data import build_dataset
        from aadscale.evaluate import load_model
        loaded = load_model(args.checkpoint)
        c = loaded.config
        data = build_dataset(c.data.root, c.data.val_split, image_size=c.data.image_size,
                             dataset=c.data.dataset, val_resize=c.data.val_resize)
        items = [data[i] for i in range(min(args.limit, len(data)))]
        x = torch.stack([it[0] for it in items]).float()
        return loaded.model, x, torch.tensor([int(it[1]) for it in items]), loaded.description
    from tests.conftest import digits_split, train_digits_model
    xtr, ytr, x, y = digits_split()
    return train_digits_model(xtr, ytr), x[:args.limit], y[:args.limit], "digits lenet_small (tests/conftest.py)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="an exported model.pt (default: the digits test model)")
    p.add_argument("--limit", type=int, default=297)
    p.add_argument("--eps", default="0.05,0.1", help="comma-separated")
    p.add_argument("--gammas", default="0,0.01,0.1,1,10", help="comma-separated")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--top-n", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(2)
    model, x, y, label = load(args)
    clean_top = topk_mask(grad_cam(model, x, y), args.top_n)

    def row(x_adv) -> str:
        with torch.no_grad():
            acc = float((model(x_adv).argmax(1) == y).float().mean()) * 100
        moved = float(iou(clean_top, topk_mask(grad_cam(model, x_adv, y), args.top_n)).mean())
        return f"{acc:.1f} | {moved:.3f}"

    print(f"{label}, {len(y)} images, {args.steps} steps, top-{args.top_n} IoU, torch {torch.__version__}\n")
    print("| eps | attack | gamma | accuracy (%) | IoU clean vs adv |\n| --- | --- | --- | --- | --- |")
    for eps in (float(e) for e in args.eps.split(",")):
        g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
        print(f"| {eps:g} | PGD-{args.steps} | - | {row(attacks.pgd(model, x, y, eps=eps, steps=args.steps, generator=g()))} |")
        for gamma in (float(v) for v in args.gammas.split(",")):
            x_a3 = attacks.a3(model, x, y, base="pgd", eps=eps, steps=args.steps, gamma=gamma, generator=g())
            print(f"| {eps:g} | A3-PGD-{args.steps} | {gamma:g} | {row(x_a3)} |")


if __name__ == "__main__":
    main()
