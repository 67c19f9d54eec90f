"""Sample lists read from disk: the ImageNet folder layout and ``path label`` file lists."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from aadscale.data.classes import label_names
from aadscale.errors import InputError

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp")
_LAYOUT = "<root>/<split>/<class>/*.JPEG (or a file list <root>/<split>.txt of 'path label' lines)"


@dataclass(frozen=True)
class FileSamples:
    """Image paths, their integer labels and the class names (label i is ``classes[i]``)."""
    paths: list[str]
    labels: list[int]
    classes: list[str]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.paths)

    def keep(self, indices: list[int]) -> FileSamples:
        """The samples at ``indices`` with the same classes."""
        return FileSamples([self.paths[i] for i in indices], [self.labels[i] for i in indices],
                           self.classes)


def list_images(root: str | os.PathLike, split: str) -> FileSamples:
    """The samples of ``split``: a folder ``root/split``, a list ``root/split.txt`` or ``root`` as a list."""
    root = Path(root)
    if root.suffix == ".txt" and root.is_file():
        return read_file_list(root, base=root.parent)
    if not root.is_dir():
        raise InputError(f"data folder {root} does not exist; point data.root (--data) at a "
                         f"folder laid out as {_LAYOUT}")
    folder, listing = root / split, root / f"{split}.txt"
    if folder.is_dir():
        return read_folder(folder)
    if listing.is_file():
        return read_file_list(listing, base=root)
    raise InputError(f"split {split!r} not found: neither folder {folder} nor file list {listing} "
                     f"exists; lay the data out as {_LAYOUT}")


def read_folder(folder: Path) -> FileSamples:
    """One class per sub-folder (sorted names give labels 0..C-1), images directly inside each."""
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    if not classes:
        raise InputError(f"{folder} has no class folders; expected {folder}/<class>/*.JPEG")
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        files = sorted(entry.path for entry in os.scandir(folder / name)
                       if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise InputError(f"class folder {folder / name} holds no images "
                             f"({', '.join(IMAGE_EXTENSIONS)}); add its images or remove the folder")
        paths += files
        labels += [label] * len(files)
    return FileSamples(paths, labels, classes)


def read_file_list(listing: Path, base: Path) -> FileSamples:
    """``path label`` lines; relative paths are taken from ``base``; labels are 0..C-1."""
    paths: list[str] = []
    labels: list[int] = []
    for number, line in enumerate(listing.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.rstrip().rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].isdigit():
            raise InputError(f"{listing}:{number}: expected 'path label' with an integer label >= 0, "
                             f"got {line!r}")
        paths.append(str(base / parts[0]))
        labels.append(int(parts[1]))
    if not paths:
        raise InputError(f"file list {listing} holds no 'path label' lines; write one image per line")
    return FileSamples(paths, labels, label_names(max(labels) + 1))
