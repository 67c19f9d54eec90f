"""ILSVRC/VOC box XML, box masks and the images-with-boxes dataset."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from aadscale.data.boxes import Box, BoxDataset, box_mask, parse_annotation

XML = """<annotation><folder>val</folder><filename>{stem}</filename>
<size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
OBJ = ("<object><name>{name}</name><bndbox><xmin>{0}</xmin><ymin>{1}</ymin>"
       "<xmax>{2}</xmax><ymax>{3}</ymax></bndbox></object>")


def write_xml(path, w, h, boxes, name="n01"):
    objects = "".join(OBJ.format(*b, name=name) for b in boxes)
    path.write_text(XML.format(stem=path.stem, w=w, h=h, objects=objects))


def test_parse_annotation(tmp_path):
    write_xml(tmp_path / "a.xml", 500, 375, [(10, 20, 109, 119), (0, 0, 4, 4)])
    ann = parse_annotation(tmp_path / "a.xml")
    assert (ann.width, ann.height) == (500, 375)
    assert ann.boxes == (Box("n01", 10, 20, 109, 119), Box("n01", 0, 0, 4, 4))


@pytest.mark.parametrize("text, match", [("<annotation/>", "no <size>"), ("<a", "not a readable"),
                                         (XML.format(stem="x", w="wide", h=3, objects=""), "not a number")])
def test_bad_xml_is_a_clear_error(tmp_path, text, match):
    (tmp_path / "bad.xml").write_text(text)
    with pytest.raises(ValueError, match=match):
        parse_annotation(tmp_path / "bad.xml")


def test_box_mask_stretch_and_centre_crop():
    box = [Box("a", 0, 0, 49, 99)]  # the left half of a 100x100 image
    assert box_mask(box, (100, 100), (10, 10)).sum() == 50
    assert box_mask(box, (100, 100), (10, 10))[:, :5].all()
    # 200x100 image, shorter side -> 10 (scale 0.1), centre crop 10x10 keeps x in [50, 150)
    wide = [Box("a", 0, 0, 99, 99)]  # the left half of the wide image
    m = box_mask(wide, (200, 100), (10, 10), resize_shorter=10)
    assert m.sum() == 50 and m[:, :5].all()
    union = box_mask([Box("a", 0, 0, 9, 9), Box("b", 5, 5, 14, 14)], (20, 20), (20, 20))
    assert union.sum() == 100 + 100 - 25
    with pytest.raises(ValueError, match="larger than the resized image"):
        box_mask(wide, (200, 100), (20, 20), resize_shorter=10)


def make_folder(root, n_per_class=2, xml_for_all=True):
    """images/<class>/<stem>.png (40x20) and boxes/<stem>.xml with the box on the left half."""
    images, boxes = root / "images", root / "boxes"
    boxes.mkdir(parents=True)
    for c, cls in enumerate(["n01", "n02"]):
        (images / cls).mkdir(parents=True)
        for i in range(n_per_class):
            stem = f"img_{c}_{i}"
            Image.fromarray(np.full((20, 40, 3), 60 * c + i, np.uint8)).save(images / cls / f"{stem}.png")
            if xml_for_all or i == 0:
                write_xml(boxes / f"{stem}.xml", 40, 20, [(0, 0, 19, 19)], name=cls)
    return images, boxes


def test_box_dataset_yields_image_label_mask(tmp_path):
    images, boxes = make_folder(tmp_path)
    ds = BoxDataset(images, boxes, image_size=8)
    assert len(ds) == 4 and ds.classes == ["n01", "n02"]
    x, label, mask = ds[2]
    assert x.shape == (3, 8, 8) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert label == 1 and mask.dtype == torch.bool and mask.sum() == 32 and mask[:, :4].all()


def test_box_dataset_errors_report_counts(tmp_path):
    images, boxes = make_folder(tmp_path, xml_for_all=False)
    with pytest.raises(ValueError, match="2 of 4 images have no XML"):
        BoxDataset(images, boxes, image_size=8)
    assert len(BoxDataset(images, boxes, image_size=8, skip_missing=True)) == 2
    with pytest.raises(ValueError, match="does not exist"):
        BoxDataset(tmp_path / "nope", boxes)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no .xml"):
        BoxDataset(images, empty)
