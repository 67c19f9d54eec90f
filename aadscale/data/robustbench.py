"""RobustBench's ImageNet protocol: the leaderboard's 5,000 validation images, its class map and its two
preprocessings, read from an ImageNet validation folder (the files ship in ``protocols/robustbench``)."""
from __future__ import annotations

import csv
import json
import os
from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from aadscale.data.scan import UNREADABLE
from aadscale.errors import InputError

PROTOCOL_DIR = Path(__file__).parent / "protocols" / "robustbench"
# robustbench/data.py PREPROCESSINGS: the short side to 256, the centre 224 crop, [0, 1] pixels
PREPROCESSINGS = {"Res256Crop224": transforms.InterpolationMode.BILINEAR,
                  "BicubicRes256Crop224": transforms.InterpolationMode.BICUBIC}
LAYOUT = "<folder>/<wnid>/ILSVRC2012_val_XXXXXXXX.JPEG (the validation set in class folders)"
SHOWN = 20  # missing ids named in an error


@lru_cache(maxsize=1)
def protocol_ids() -> tuple[str, ...]:
    """The 5,000 images ``<wnid>/<file>`` in the leaderboard's order (the first n are RobustBench's n_examples)."""
    return tuple(line.strip() for line in (PROTOCOL_DIR / "imagenet_test_image_ids.txt").read_text().splitlines()
                 if line.strip())


@lru_cache(maxsize=1)
def class_map() -> dict[str, int]:
    """ImageNet class folder (wnid) to label, as RobustBench maps them."""
    return json.loads((PROTOCOL_DIR / "imagenet_class_to_id_map.json").read_text())


def leaderboard() -> list[dict[str, str]]:
    """The ImageNet L-inf leaderboard's rows (model_id, architecture, clean_acc, autoattack_acc, ...)."""
    with (PROTOCOL_DIR / "leaderboard-imagenet-linf.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def preprocessing(name: str) -> transforms.Compose:
    """RobustBench's preprocessing ``name`` (``Res256Crop224`` or ``BicubicRes256Crop224``) on PIL images."""
    if name not in PREPROCESSINGS:
        raise InputError(f"preprocessing {name!r} must be one of {', '.join(PREPROCESSINGS)} "
                         "(the model's entry in RobustBench names it)")
    return transforms.Compose([transforms.Resize(256, interpolation=PREPROCESSINGS[name]),
                               transforms.CenterCrop(224), transforms.ToTensor()])


def validation_folder(root: str | os.PathLike) -> Path:
    """``root`` itself, or ``root/val``, whichever holds class folders."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"ImageNet validation folder {root} does not exist; give --data {LAYOUT}")
    val = root / "val"
    return val if val.is_dir() and not (root / "n01440764").is_dir() else root


def selected_ids(limit: int | None) -> list[str]:
    """The first ``limit`` protocol images (all 5,000 when None), as RobustBench's ``n_examples`` takes them."""
    ids = protocol_ids()
    if limit is not None and not 1 <= limit <= len(ids):
        raise InputError(f"--limit {limit}: the RobustBench protocol has {len(ids)} images; give 1..{len(ids)}")
    return list(ids[:limit])


def missing_ids(folder: Path, ids: list[str]) -> list[str]:
    """The ids with no file under ``folder``."""
    return [i for i in ids if not (folder / i).is_file()]


class RobustBenchImageNet(Dataset):
    """The protocol's images as ``(image [0, 1] CHW, label)``; a file that cannot be decoded is an error,
    never replaced (the leaderboard's images are fixed)."""

    def __init__(self, root: str | os.PathLike, *, preprocessing_name: str = "Res256Crop224",
                 limit: int | None = None) -> None:
        self.folder = validation_folder(root)
        self.ids = selected_ids(limit)
        self.preprocessing = preprocessing_name
        self.transform = preprocessing(preprocessing_name)
        missing = missing_ids(self.folder, self.ids)
        if missing:
            more = len(missing) - SHOWN
            shown = ", ".join(missing[:SHOWN]) + (f", ... ({more} more)" if more > 0 else "")
            raise InputError(f"{self.folder} lacks {len(missing)} of the {len(self.ids)} RobustBench images: "
                             f"{shown}. Point --data at the full ImageNet validation set laid out as {LAYOUT}")
        self.labels = [class_map()[i.split("/")[0]] for i in self.ids]

    @property
    def classes(self) -> list[str]:
        """The 1,000 wnids in label order."""
        return sorted(class_map(), key=class_map().get)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path = self.folder / self.ids[i]
        try:
            with Image.open(path) as image:
                picture = image.convert("RGB")
        except UNREADABLE as err:
            raise InputError(f"{path} cannot be decoded ({err}); the protocol's images are fixed: "
                             "replace the file with ImageNet's original") from None
        return self.transform(picture), self.labels[i]
