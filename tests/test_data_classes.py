"""Class lists: named splits must agree, numbered ones fit by count; loaders and evaluate enforce it."""
from __future__ import annotations

import torch

from aadscale import cli, models
from aadscale.config import Config, to_dict
from aadscale.data import build_dataset, build_loader
from aadscale.data.classes import class_difference, label_names
from tests.test_data_loader import solid

NAMES = ("train", "val")


def folder(root, split, classes, per_class=2):
    """``root/split/<class>/*.JPEG``, a few grey images per class."""
    for c, name in enumerate(classes):
        for i in range(per_class):
            solid(root / split / name / f"{i}.JPEG", 20 * c + i)


def test_named_classes_must_match_in_names_and_order():
    assert class_difference(["a", "b", "c"], ["a", "b", "c"], NAMES) is None
    assert class_difference(["a", "b", "c"], ["a", "c", "x"], NAMES) == "val lacks class 'b'; train lacks class 'x'"
    many = [f"n{i}" for i in range(8)]
    assert class_difference(many, many[:1], NAMES) == \
        "val lacks classes 'n1', 'n2', 'n3', 'n4', 'n5' and 2 more"
    assert "another order: label 0 is 'a' in train but 'b' in val" in class_difference(["a", "b"], ["b", "a"], NAMES)


def test_numbered_classes_only_need_to_fit():
    # a 'path label' list names no classes: its labels must only stay below the other's count
    assert class_difference(["a", "b", "c"], label_names(3), NAMES) is None
    assert class_difference(label_names(3), ["a", "b"], NAMES) is None
    assert class_difference(["a", "b"], label_names(3), NAMES) == "val has 3 classes, more than the 2 of train"


def test_loaders_and_datasets_expose_their_class_names(tmp_path):
    folder(tmp_path, "train", ["cat", "dog"])
    (tmp_path / "val.txt").write_text("train/cat/0.JPEG 0\ntrain/dog/0.JPEG 1\n")
    train = build_loader(tmp_path, "train", batch_size=2, image_size=16, workers=0)
    assert train.classes == ["cat", "dog"] and train.num_classes == 2
    assert build_loader(tmp_path, "val", batch_size=2, image_size=16, workers=0).classes == ["0", "1"]
    assert build_dataset(tmp_path, "train", image_size=16).classes == ["cat", "dog"]


def test_evaluate_refuses_data_of_other_classes(tmp_path, capsys):
    folder(tmp_path / "data", "val", ["cat", "dog", "emu"])
    cfg = Config()
    cfg.model.name, cfg.model.num_classes, cfg.data.image_size = "lenet_small", 3, 16
    net = models.build("lenet_small", 3)
    torch.save({"model": net.state_dict(), "config": to_dict(cfg), "classes": ["cat", "cow", "dog"]},
               tmp_path / "model.pt")
    base = ["--data", str(tmp_path / "data"), "--dataset", "folder", "--limit", "2", "--eps", "1/255",
            "--attacks", "clean", "--strong", "", "--no-progress", "--workers", "0"]
    assert cli.main(["evaluate", str(tmp_path / "model.pt"), *base, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "does not have the classes model.pt" in err
    assert "the data lacks class 'cow'; the model lacks class 'emu'" in err
    # a bare state_dict names no classes: only more classes than the model's outputs are refused
    torch.save(models.build("lenet_small", 2).state_dict(), tmp_path / "bare.pt")
    bare = ["evaluate", str(tmp_path / "bare.pt"), "--model", "lenet_small", "--image-size", "16", *base]
    assert cli.main([*bare, "--num-classes", "2", "--out", str(tmp_path / "b")]) == 2
    assert "the data has 3 classes, more than the 2 of the model" in capsys.readouterr().err
    torch.save(models.build("lenet_small", 4).state_dict(), tmp_path / "bare.pt")
    assert cli.main([*bare, "--num-classes", "4", "--out", str(tmp_path / "c")]) == 0
