"""What the recipe of the robust ImageNet records costs per image: each preset's training step with its whole
recipe (ConvStem, RandAugment, erasing, Mixup/CutMix, label smoothing, APGD or the warmed-up PGD, EMA, AdamW's
parameter groups), the same with the model's own patch stem, and the preset with all those pieces off,
through ``engine_throughput.py``.

    .venv/bin/python benchmarks/recipe_cost.py                          # CPU: torch loader, batch 8, 224 px
    .venv/bin/python benchmarks/recipe_cost.py --backend dali-gpu --launcher deepspeed --batch 64 --steps 40

Synthetic ImageNet-sized JPEGs (``engine_throughput.synthetic_imagenet``), 8 classes, the presets' image
size and precision unless overridden; the table gives the median end-to-end images/s over the logged
intervals after ``--skip`` steps per variant (``--variants`` picks some) and the whole recipe's cost as
the ratio of "without" to "recipe".
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

from aadscale.distributed import run_main

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("imagenet-convnext-t", "imagenet-vit-s", "imagenet-ares-swin-b")
# the recipe's pieces set back to aadscale's defaults (the attack: PGD with the preset's eps and steps)
WITHOUT = ["model.stem=patch", "augment.rand_augment=", "augment.color_jitter=0", "augment.erasing=0",
           "augment.mixup=0", "augment.cutmix=0", "objective.label_smoothing=0", "attack.name=pgd",
           "attack.warmup_epochs=0", "train.ema_decay=0", "train.ema_export=false", "optim.no_decay_1d=false",
           "optim.betas=[0.9,0.999]"]
VARIANTS = {"recipe": [], "recipe-patch-stem": ["model.stem=patch"], "without": WITHOUT}


def images_per_s(preset: str, extra: list[str], args) -> float:
    """engine_throughput's median end-to-end images/s for ``preset`` with ``extra`` overrides."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "engine_throughput.py"), "--preset", preset,
           "--backend", args.backend, "--launcher", args.launcher, "--steps", str(args.steps),
           "--skip", str(args.skip), "--log-every", "1", "--images", str(args.images), "--timeout", str(args.timeout),
           f"data.batch_size={args.batch}", "data.workers=1", *args.overrides, *extra]
    print("$", " ".join(cmd), flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    row = out.strip().splitlines()[-1]
    return float(re.split(r"\s*\|\s*", row.strip("| "))[4])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--backend", default="torch")
    p.add_argument("--launcher", default="python", choices=["python", "deepspeed"])
    p.add_argument("--batch", type=int, default=8, help="global batch (even: Mixup pairs images)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--skip", type=int, default=2)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--timeout", type=int, default=1800)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"some of {list(VARIANTS)}, comma-separated")
    p.add_argument("overrides", nargs="*", help="section.field=value for every run (e.g. train.precision=fp32)")
    args = p.parse_args()
    names = [v.strip() for v in args.variants.split(",")]
    if not set(names) <= set(VARIANTS):
        raise SystemExit(f"--variants {args.variants!r}: choose from {list(VARIANTS)}")
    cost = "recipe" in names and "without" in names
    rows = ["| preset | " + " | ".join(f"{v} images/s" for v in names) + (" | recipe cost (x time per image) |"
                                                                         if cost else " |"),
            "|---|" + "---|" * (len(names) + cost)]
    for preset in args.presets.split(","):
        rate = {v: images_per_s(preset, VARIANTS[v], args) for v in names}
        rows.append(f"| {preset} | " + " | ".join(f"{rate[v]:.2f}" for v in names) +
                    (f" | {rate['without'] / rate['recipe']:.2f} |" if cost else " |"))
        print("\n".join(rows), flush=True)


if __name__ == "__main__":
    run_main(main)
