"""JPEGs at ImageNet-like sizes made from the real photos scikit-image ships (for tests and benchmarks)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "hubble_deep_field.jpg",
          "retina.jpg", "ihc.png", "motorcycle_left.png")
IMAGENET_SIZES = ((500, 375), (375, 500), (500, 333), (500, 500), (333, 500))


def load_photo(name: str) -> Image.Image:
    """One of scikit-image's bundled sample photos as RGB (read from the package, never downloaded)."""
    return Image.open(Path(skimage.data.__file__).parent / name).convert("RGB")


def write_photo_folder(root: str | os.PathLike, *, split: str = "train", classes: int = 2,
                       per_class: int = 4, sizes=IMAGENET_SIZES, seed: int = 0, distinct: int = 0) -> Path:
    """``root/split/c<k>/*.JPEG``: random crops of the sample photos resized to ``sizes`` (w, h) in turn.

    ``distinct > 0``: only that many JPEGs per class are encoded; the rest are hard links to
    them in turn (as costly to decode, much faster to make: for benchmarks that need thousands).
    """
    rng = np.random.default_rng(seed)
    photos = [load_photo(name) for name in PHOTOS]
    for c in range(classes):
        folder = Path(root) / split / f"c{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            if distinct and i >= distinct:
                os.link(folder / f"c{c}_{i % distinct:05d}.JPEG", folder / f"c{c}_{i:05d}.JPEG")
                continue
            photo = photos[(c * per_class + i) % len(photos)]
            width, height = photo.size
            w, h = int(width * rng.uniform(0.6, 1)), int(height * rng.uniform(0.6, 1))
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            image = photo.crop((left, top, left + w, top + h)).resize(
                sizes[(c * per_class + i) % len(sizes)], Image.Resampling.BICUBIC)
            image.save(folder / f"c{c}_{i:05d}.JPEG", quality=90)
    return Path(root)
