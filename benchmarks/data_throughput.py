"""Images/s of the data backends at steady state, and their start-up, on the same JPEGs at ImageNet sizes.

    .venv/bin/python benchmarks/data_throughput.py                        # 1024 JPEGs x 5 epochs per split
    .venv/bin/python benchmarks/data_throughput.py --backends torch dali-gpu --splits train \
        --memory-format channels_last                                     # on a GPU machine

Each loader is built once, as the engine builds it, and read for ``--epochs`` epochs. The
project's loaders start their DataLoader workers or their DALI pipeline at the start of every
epoch (the epoch's sample order is fed then), so each epoch's first batch is start-up. Reported
apart: ``build`` (build_loader: file list, DALI's scan for unreadable files), ``first batch``
(mean time from an epoch's start to its first batch). ``images/s`` counts only the batches after
each epoch's first, over the time after it: the rate at which the loader can feed a step.
dali-gpu runs only where CUDA is available; its batches are on the GPU, so the clock stops after
a synchronize.
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

MIN_TIMED_IMAGES = 4096


def sync(backend: str) -> None:
    if backend == "dali-gpu":
        torch.cuda.synchronize()  # batches are produced asynchronously on the GPU


def measure(root: Path, split: str, backend: str, args) -> dict[str, float]:
    """Build seconds, mean first-batch seconds, and images/s after each epoch's first batch."""
    start = time.perf_counter()
    loader = build_loader(root, split, backend=backend, batch_size=args.batch_size,
                          image_size=args.image_size, workers=args.workers, dataset="imagenet",
                          cache_dir=root / "cache", memory_format=args.memory_format)
    build_s = time.perf_counter() - start
    first_s, images, steady_s = [], 0, 0.0
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        start = time.perf_counter()
        batches = iter(loader)
        next(batches)
        sync(backend)
        first = time.perf_counter()
        first_s.append(first - start)
        for x, _ in batches:
            images += len(x)
        sync(backend)
        steady_s += time.perf_counter() - first
    return {"build_s": build_s, "first_s": statistics.mean(first_s), "rate": images / steady_s,
            "images": images}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024, help="JPEGs per split")
    parser.add_argument("--epochs", type=int, default=5, help="epochs read from one loader")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                        help="DataLoader workers = DALI threads (default: this machine's cores)")
    parser.add_argument("--backends", nargs="+", default=["torch", "dali-cpu", "dali-gpu"])
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val"])
    parser.add_argument("--memory-format", default="contiguous", choices=list(MEMORY_FORMATS),
                        help="DALI writes it directly; the torch backend hands over NCHW either way")
    args = parser.parse_args()
    timed = args.epochs * (args.images // args.batch_size - 1) * args.batch_size
    if timed < MIN_TIMED_IMAGES:
        parser.error(f"{args.epochs} epochs of {args.images} images time {timed} images after start-up; "
                     f"raise --images or --epochs to time at least {MIN_TIMED_IMAGES}")
    backends = [b for b in args.backends if b != "dali-gpu" or torch.cuda.is_available()]
    if len(backends) < len(args.backends):
        print("no CUDA GPU: dali-gpu not measured")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for split in args.splits:
            write_photo_folder(root, split=split, classes=8, per_class=args.images // 8,
                               seed=0 if split == "train" else 1)
        print(f"{args.images} JPEGs per split (500x375, 375x500, 500x333, 500x500, 333x500), "
              f"{args.epochs} epochs from one loader, batch {args.batch_size}, {args.image_size} px, "
              f"{args.memory_format}, {args.workers} workers/threads, {os.cpu_count()} CPUs "
              f"({platform.processor() or platform.machine()}), {device}, torch {torch.__version__}")
        print("| backend | split | build s | first batch s (mean) | images/s after start-up | timed images |")
        print("| --- | --- | --- | --- | --- | --- |")
        for backend in backends:
            for split in args.splits:
                r = measure(root, split, backend, args)
                print(f"| {backend} | {split} | {r['build_s']:.2f} | {r['first_s']:.2f} | {r['rate']:.0f} "
                      f"| {r['images']} |", flush=True)


if __name__ == "__main__":
    main()
