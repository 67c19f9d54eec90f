"""Images/s of the data backends on the same JPEGs at ImageNet sizes (made from scikit-image's photos).

    .venv/bin/python benchmarks/data_throughput.py --images 512 --workers 2

Prints one markdown table row per backend and split; dali-gpu runs only where CUDA is available.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from aadscale.data import build_loader
from aadscale.data.photos import write_photo_folder


def images_per_second(root: Path, split: str, backend: str, args) -> float:
    """Images/s over ``args.epochs`` epochs after a warm-up epoch; each epoch starts its workers or pipeline."""
    loader = build_loader(root, split, backend=backend, batch_size=args.batch_size,
                          image_size=args.image_size, workers=args.workers, dataset="imagenet",
                          cache_dir=root / "cache")
    for _ in loader:
        pass
    count, start = 0, time.perf_counter()
    for _ in range(args.epochs):
        for images, _ in loader:
            count += len(images)
    if backend == "dali-gpu":
        torch.cuda.synchronize()  # batches are produced asynchronously on the GPU
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512, help="JPEGs per split")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers = DALI threads")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after a warm-up epoch")
    parser.add_argument("--backends", nargs="+", default=["torch", "dali-cpu", "dali-gpu"])
    args = parser.parse_args()
    backends = [b for b in args.backends if b != "dali-gpu" or torch.cuda.is_available()]
    if len(backends) < len(args.backends):
        print("no CUDA GPU: dali-gpu not measured")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for split in ("train", "val"):
            write_photo_folder(root, split=split, classes=8, per_class=args.images // 8,
                               seed=0 if split == "train" else 1)
        print(f"{args.images} JPEGs per split (500x375, 375x500, 500x333, 500x500, 333x500), "
              f"batch {args.batch_size}, {args.image_size} px, {args.workers} workers/threads, "
              f"{torch.get_num_threads()} torch threads, {platform.processor() or platform.machine()}")
        print("| backend | split | images/s |\n| --- | --- | --- |")
        for backend in backends:
            for split in ("train", "val"):
                rate = images_per_second(root, split, backend, args)
                print(f"| {backend} | {split} | {rate:.0f} |", flush=True)


if __name__ == "__main__":
    main()
