"""The built-in demo dataset: scikit-learn's real digits as JPEGs in the ImageNet folder layout."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from aadscale.atomic import atomic_write, atomic_write_text

DEFAULT_DEMO_ROOT = "runs/demo-data"
DEMO_SIZE = 32
_MARKER = ".aadscale-demo-v1"


def demo_split(position_in_class: int) -> str:
    """Every fifth image of a class goes to ``val`` (a deterministic 80/20 split)."""
    return "val" if position_in_class % 5 == 4 else "train"


def ensure_demo_data(root: str | os.PathLike = DEFAULT_DEMO_ROOT) -> Path:
    """Write the 1797 digits (upscaled to 32x32 RGB) to ``root/{train,val}/n0000000<d>/*.JPEG`` once."""
    root = Path(root)
    marker = root / _MARKER
    if marker.is_file():
        return root
    from sklearn.datasets import load_digits
    digits = load_digits()
    seen = np.zeros(10, dtype=int)
    counts = {"train": 0, "val": 0}
    for index, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        split = demo_split(seen[label])
        seen[label] += 1
        counts[split] += 1
        folder = root / split / f"n{label:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        gray = Image.fromarray(np.round(pixels * (255 / 16)).astype(np.uint8), mode="L")
        image = gray.resize((DEMO_SIZE, DEMO_SIZE), Image.Resampling.BILINEAR).convert("RGB")
        atomic_write(folder / f"n{label:08d}_{index:04d}.JPEG",
                     lambda f, image=image: image.save(f, format="JPEG", quality=95))
    atomic_write_text(marker, json.dumps(counts))  # last: marks a complete set
    return root
