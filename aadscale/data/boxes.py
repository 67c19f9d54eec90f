"""ILSVRC / PASCAL VOC bounding-box XML: parsing, box masks, and an images-with-boxes dataset."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from aadscale.data.sources import IMAGE_EXTENSIONS
from aadscale.errors import InputError


@dataclass(frozen=True)
class Box:
    """One object box in the original image's pixel coordinates (xmax, ymax inclusive)."""
    name: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float


@dataclass(frozen=True)
class Annotation:
    """An image's size (width, height) and its object boxes."""
    width: int
    height: int
    boxes: tuple[Box, ...]


def _number(node: ET.Element, tag: str, where: str) -> float:
    child = node.find(tag)
    if child is None or child.text is None:
        raise InputError(f"{where}: missing <{tag}>")
    try:
        return float(child.text.strip())
    except ValueError:
        raise InputError(f"{where}: <{tag}> is {child.text!r}, not a number") from None


def parse_annotation(path: str | Path) -> Annotation:
    """Read ``<annotation><size><width/><height/></size><object><name/><bndbox>...`` from a file."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise InputError(f"{path}: not a readable XML annotation ({err})") from None
    size = root.find("size")
    if size is None:
        raise InputError(f"{path}: no <size> element; expected ILSVRC/PASCAL VOC annotation XML")
    width, height = int(_number(size, "width", str(path))), int(_number(size, "height", str(path)))
    if width <= 0 or height <= 0:
        raise InputError(f"{path}: image size {width}x{height} must be positive")
    boxes = []
    for obj in root.iter("object"):
        bnd = obj.find("bndbox")
        if bnd is None:
            raise InputError(f"{path}: an <object> has no <bndbox>")
        name = (obj.findtext("name") or "").strip()
        coords = [_number(bnd, t, str(path)) for t in ("xmin", "ymin", "xmax", "ymax")]
        if coords[2] < coords[0] or coords[3] < coords[1]:
            raise InputError(f"{path}: box {coords} has xmax < xmin or ymax < ymin")
        boxes.append(Box(name, *coords))
    return Annotation(width, height, tuple(boxes))


def box_mask(boxes: tuple[Box, ...] | list[Box], size: tuple[int, int], out_hw: tuple[int, int],
             resize_shorter: int | None = None) -> torch.Tensor:
    """Union of the boxes as a bool mask [H, W] of the transformed image.

    ``size`` is the original (width, height). Without ``resize_shorter`` the image is
    stretched to ``out_hw``; with it, the shorter side is resized to ``resize_shorter``
    and the centre ``out_hw`` is cropped (the usual validation transform). Box pixels
    are inclusive, so a box covers [xmin, xmax + 1) in continuous coordinates; a pixel
    of the output belongs to the mask when its centre falls inside.
    """
    width, height = size
    out_h, out_w = out_hw
    if resize_shorter is None:
        sx, sy, ox, oy = out_w / width, out_h / height, 0.0, 0.0
    else:
        scale = resize_shorter / min(width, height)
        sx = sy = scale
        ox, oy = (width * scale - out_w) / 2, (height * scale - out_h) / 2
        if ox < -1e-6 or oy < -1e-6:
            raise InputError(f"crop {out_hw} is larger than the resized image "
                             f"({height * scale:.0f}x{width * scale:.0f}); raise resize_shorter")
    cy = torch.arange(out_h, dtype=torch.float64) + 0.5
    cx = torch.arange(out_w, dtype=torch.float64) + 0.5
    mask = torch.zeros(out_h, out_w, dtype=torch.bool)
    for b in boxes:
        x0, x1 = b.xmin * sx - ox, (b.xmax + 1) * sx - ox
        y0, y1 = b.ymin * sy - oy, (b.ymax + 1) * sy - oy
        rows = (cy >= y0) & (cy < y1)
        cols = (cx >= x0) & (cx < x1)
        mask |= rows[:, None] & cols[None, :]
    return mask


def _load_image(path: Path, out_hw: tuple[int, int], resize_shorter: int | None) -> torch.Tensor:
    """RGB image as float [3, H, W] in [0, 1], resized the way ``box_mask`` assumes."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        out_h, out_w = out_hw
        if resize_shorter is None:
            img = img.resize((out_w, out_h), Image.BILINEAR)
        else:
            scale = resize_shorter / min(img.size)
            w, h = round(img.size[0] * scale), round(img.size[1] * scale)
            img = img.resize((w, h), Image.BILINEAR)
            left, top = round((w - out_w) / 2), round((h - out_h) / 2)
            img = img.crop((left, top, left + out_w, top + out_h))
        arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _own_boxes(ann: Annotation, cls: str) -> Annotation:
    """Keep the boxes named like the image's class folder (ILSVRC wnids) when there are any."""
    own = tuple(b for b in ann.boxes if b.name == cls)
    return Annotation(ann.width, ann.height, own) if own else ann


class BoxDataset(torch.utils.data.Dataset):
    """Validation images in class folders with box XML files matched by file stem.

    Yields ``(image [3, H, W] in [0, 1], label, box mask bool [H, W])``; labels are the
    sorted class-folder indices (the ImageNet convention when all class folders exist).
    XML files may lie anywhere under ``boxes_dir``; the boxes whose ``<name>`` is the
    class folder's name are used when there are any, all boxes otherwise. Images without an XML are an error
    unless ``skip_missing``; images whose XML has no box are always left out.
    """

    def __init__(self, images_dir: str | Path, boxes_dir: str | Path, image_size: int = 224,
                 resize_shorter: int | None = None, skip_missing: bool = False) -> None:
        images_dir, boxes_dir = Path(images_dir), Path(boxes_dir)
        for what, d in (("images", images_dir), ("boxes", boxes_dir)):
            if not d.is_dir():
                raise InputError(f"{what} folder {str(d)!r} does not exist")
        self.classes = sorted(p.name for p in images_dir.iterdir() if p.is_dir())
        if not self.classes:
            raise InputError(f"{images_dir} has no class folders; expected <dir>/<class>/<image>")
        xmls = {p.stem: p for p in boxes_dir.rglob("*.xml")}
        if not xmls:
            raise InputError(f"no .xml annotation files under {boxes_dir}")
        self.items: list[tuple[Path, int, Annotation]] = []
        missing: list[Path] = []
        seen = 0
        for label, cls in enumerate(self.classes):
            for img in sorted((images_dir / cls).iterdir()):
                if img.suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                seen += 1
                if img.stem not in xmls:
                    missing.append(img)
                    continue
                ann = _own_boxes(parse_annotation(xmls[img.stem]), cls)
                if ann.boxes:
                    self.items.append((img, label, ann))
        if seen == 0:
            raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders of {images_dir}")
        if missing and not skip_missing:
            raise InputError(f"{len(missing)} of {seen} images have no XML under {boxes_dir} "
                             f"(e.g. {missing[0].name}); match them by file stem or skip them "
                             "(skip_missing / --skip-missing-boxes)")
        if not self.items:
            raise InputError(f"none of the {seen} images has an annotated box under {boxes_dir}")
        self.missing = len(missing)
        self.image_size = image_size
        self.resize_shorter = resize_shorter

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        path, label, ann = self.items[i]
        hw = (self.image_size, self.image_size)
        image = _load_image(path, hw, self.resize_shorter)
        return image, label, box_mask(ann.boxes, (ann.width, ann.height), hw, self.resize_shorter)
