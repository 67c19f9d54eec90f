"""Images/s of the data backends at steady state, and their start-up, on the same JPEGs at ImageNet sizes.

    .venv/bin/python benchmarks/data_throughput.py                        # 2048 JPEGs x 3 epochs per split
    .venv/bin/python benchmarks/data_throughput.py --backends torch dali-gpu --splits train \
        --images 8192 --epochs 2 --batch-size 128 --memory-format channels_last   # a GPU machine

Each loader is built once, as the engine builds it, and read for ``--epochs`` epochs. The
project's loaders start their DataLoader workers or their DALI pipeline at the start of every
epoch (the epoch's sample order is fed then), so the first batches of each epoch are start-up:
for DALI the first batch, for the torch backend the first wave of one batch per worker (the
workers build whole batches in parallel, so they arrive together). Reported apart: ``build``
(build_loader: file list, DALI's scan for unreadable files) and ``start-up`` (mean time from an
epoch's start to the end of that first wave). ``images/s`` counts only the batches after it,
over the time after it: the rate at which the loader can feed a step. The JPEGs are 64 distinct
photo crops per class, hard-linked up to ``--images``. dali-gpu runs only where CUDA is
available; its batches are on the GPU, so the clock stops after a synchronize.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from aadscale.data import build_loader
from aadscale.data.photos import write_photo_folder
from aadscale.memory_format import MEMORY_FORMATS
from aadscale.distributed import run_main

MIN_TIMED_IMAGES = 4096
MIN_WAVES = 4  # batches per epoch >= MIN_WAVES x the start-up wave, so the wave is a small part


def sync(backend: str) -> None:
    if backend == "dali-gpu":
        torch.cuda.synchronize()  # batches are produced asynchronously on the GPU


def start_up_batches(backend: str, workers: int) -> int:
    """Batches of an epoch's start-up wave: one per DataLoader worker for torch, one for DALI."""
    return max(1, workers) if backend == "torch" else 1


def measure(root: Path, split: str, backend: str, args) -> dict[str, float]:
    """Build seconds, mean start-up seconds, and images/s after each epoch's start-up wave."""
    start = time.perf_counter()
    loader = build_loader(root, split, backend=backend, batch_size=args.batch_size,
                          image_size=args.image_size, workers=args.workers, dataset="imagenet",
                          cache_dir=root / "cache", memory_format=args.memory_format)
    build_s = time.perf_counter() - start
    startup_s, images, steady_s = [], 0, 0.0
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        start = time.perf_counter()
        batches = iter(loader)
        for _ in range(start_up_batches(backend, args.workers)):
            next(batches)
        sync(backend)
        first = time.perf_counter()
        startup_s.append(first - start)
        for x, _ in batches:
            images += len(x)
        sync(backend)
        steady_s += time.perf_counter() - first
    return {"build_s": build_s, "startup_s": statistics.mean(startup_s), "rate": images / steady_s,
            "images": images}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048, help="JPEGs per split")
    parser.add_argument("--epochs", type=int, default=3, help="epochs read from one loader")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                        help="DataLoader workers = DALI threads (default: this machine's cores)")
    parser.add_argument("--backends", nargs="+", default=["torch", "dali-cpu", "dali-gpu"])
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val"])
    parser.add_argument("--memory-format", default="contiguous", choices=list(MEMORY_FORMATS),
                        help="DALI writes it directly; the torch backend hands over NCHW either way")
    args = parser.parse_args()
    backends = [b for b in args.backends if b != "dali-gpu" or torch.cuda.is_available()]
    per_epoch = args.images // args.batch_size
    wave = max(start_up_batches(b, args.workers) for b in backends)
    timed = args.epochs * (per_epoch - wave) * args.batch_size
    if timed < MIN_TIMED_IMAGES or per_epoch < MIN_WAVES * wave:
        parser.error(f"{per_epoch} batches per epoch with a start-up wave of {wave} time {timed} images "
                     f"over {args.epochs} epochs; need {MIN_WAVES} x the wave per epoch and at least "
                     f"{MIN_TIMED_IMAGES} images: raise --images or --epochs, or lower --batch-size")
    if len(backends) < len(args.backends):
        print("no CUDA GPU: dali-gpu not measured")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for split in args.splits:
            write_photo_folder(root, split=split, classes=8, per_class=args.images // 8,
                               seed=0 if split == "train" else 1, distinct=64)
        print(f"{args.images} JPEGs per split (500x375, 375x500, 500x333, 500x500, 333x500), "
              f"{args.epochs} epochs from one loader, batch {args.batch_size}, {args.image_size} px, "
              f"{args.memory_format}, {args.workers} workers/threads, {os.cpu_count()} CPUs "
              f"({platform.processor() or platform.machine()}), {device}, torch {torch.__version__}")
        print("| backend | split | build s | start-up s (mean) | images/s after start-up | timed images |")
        print("| --- | --- | --- | --- | --- | --- |")
        for backend in backends:
            for split in args.splits:
                r = measure(root, split, backend, args)
                print(f"| {backend} | {split} | {r['build_s']:.2f} | {r['startup_s']:.2f} | {r['rate']:.0f} "
                      f"| {r['images']} |", flush=True)


if __name__ == "__main__":
    run_main(main)
