"""A3Attack against its base as gamma grows: accuracy (lower = stronger) and how far the attention moves.

    .venv/bin/python benchmarks/a3_gamma.py                                   # the digits test model
    .venv/bin/python benchmarks/a3_gamma.py --checkpoint runs/compare/madry-s0/model.pt --limit 256
    .venv/bin/python benchmarks/a3_gamma.py --spread 4,4    # tests/test_attacks.py's margins, digits

Prints a Markdown table: for each eps, A3 form (attention_on "always": eq. 12 as printed,
"fooled": the term only on misclassified iterates) and gamma, accuracy under A3-PGD-k and the
IoU of the top-n Grad-CAM cells of clean and adversarial images (lower = attention moved
further), next to plain PGD-k from the same random start (gamma = 0 is PGD-k exactly).
``--spread M,K`` instead measures, over M digits-model seeds x K attack seeds, what the A3
test compares (eps 0.1, 5 steps, gamma 10, top-10 IoU): base minus A3 accuracy and IoU.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aadscale import attacks  # noqa: E402
from aadscale.attacks.a3 import ATTENTION_ON  # noqa: E402
from aadscale.attention import grad_cam, iou, topk_mask  # noqa: E402
from aadscale.distributed import run_main  # noqa: E402


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


def scores(model, x, y, clean_top: torch.Tensor, x_adv: torch.Tensor) -> tuple[float, float]:
    """Accuracy (%) on x_adv and mean IoU of the clean and adversarial top-n Grad-CAM cells."""
    with torch.no_grad():
        acc = float((model(x_adv).argmax(1) == y).float().mean()) * 100
    n = int(clean_top[0].sum())
    return acc, float(iou(clean_top, topk_mask(grad_cam(model, x_adv, y), n)).mean())


def table(args, model, x, y) -> None:
    """The eps x form x gamma table against PGD-k from the same start."""
    clean_top = topk_mask(grad_cam(model, x, y), args.top_n)
    row = lambda x_adv: "{:.1f} | {:.3f}".format(*scores(model, x, y, clean_top, x_adv))  # noqa: E731
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    print("| eps | attack | attention_on | gamma | accuracy (%) | IoU clean vs adv |\n" + "| --- " * 6 + "|")
    for eps in (float(e) for e in args.eps.split(",")):
        x_pgd = attacks.pgd(model, x, y, eps=eps, steps=args.steps, generator=g())
        print(f"| {eps:g} | PGD-{args.steps} | - | - | {row(x_pgd)} |")
        for form in ATTENTION_ON[::-1]:
            for gamma in (float(v) for v in args.gammas.split(",")):
                x_a3 = attacks.a3(model, x, y, base="pgd", eps=eps, steps=args.steps, gamma=gamma,
                                  attention_on=form, generator=g())
                print(f"| {eps:g} | A3-PGD-{args.steps} | {form} | {gamma:g} | {row(x_a3)} |")


def spread(model_seeds: int, attack_seeds: int) -> None:
    """Base minus A3 accuracy and top-10 IoU over model x attack seeds, the A3 test's setting."""
    from tests.conftest import digits_split, train_digits_model
    xtr, ytr, x, y = digits_split()
    diffs: dict[str, list[tuple[float, float]]] = {"pgd": [], "iter_step_ll": []}
    for ms in range(model_seeds):
        model = train_digits_model(xtr, ytr, seed=ms)
        clean_top = topk_mask(grad_cam(model, x, y), 10)
        for base, plain in (("pgd", attacks.pgd), ("iter_step_ll", attacks.iter_step_ll)):
            for s in range(attack_seeds if base == "pgd" else 1):  # Iter-StepLL has no random start
                g = lambda: torch.Generator().manual_seed(s)  # noqa: E731
                b = scores(model, x, y, clean_top, plain(model, x, y, eps=0.1, steps=5, generator=g()))
                a = scores(model, x, y, clean_top, attacks.a3(model, x, y, base=base, eps=0.1, steps=5,
                                                              gamma=10.0, generator=g()))
                diffs[base].append((b[0] - a[0], b[1] - a[1]))
    print("| base | runs | accuracy base - A3 (points): min / mean / max | top-10 IoU base - A3: min / mean / max |")
    print("| --- | --- | --- | --- |")
    for base, d in diffs.items():
        cols = [" / ".join(f"{f(v):.3g}" for f in (min, lambda v: sum(v) / len(v), max)) for v in zip(*d)]
        print(f"| {base} | {len(d)} | {cols[0]} | {cols[1]} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="an exported model.pt (default: the digits test model)")
    p.add_argument("--limit", type=int, default=297)
    p.add_argument("--eps", default="0.05,0.1", help="comma-separated")
    p.add_argument("--gammas", default="0,0.01,0.1,1,10", help="comma-separated")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--top-n", type=int, default=5)
    p.add_argument("--spread", help="M,K: the test's margins over M model x K attack seeds instead")
    args = p.parse_args()
    torch.set_num_threads(2)
    if args.spread:
        model_seeds, attack_seeds = (int(v) for v in args.spread.split(","))
        print(f"digits lenet_small, 297 images, eps 0.1, 5 steps, gamma 10, torch {torch.__version__}\n")
        return spread(model_seeds, attack_seeds)
    model, x, y, label = load(args)
    print(f"{label}, {len(y)} images, {args.steps} steps, top-{args.top_n} IoU, torch {torch.__version__}\n")
    table(args, model, x, y)


if __name__ == "__main__":
    run_main(main)
