"""Every command on a torchvision ResNet-50 with random weights, 2-3 tiny images, CPU; figures; errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from aadscale import cli, models
from aadscale.analysis.figures import attention_figure, curve_figure

torch.set_num_threads(2)
RESNET = ["--torchvision", "resnet50", "--image-size", "64", "--no-progress"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """root/val/<class>/*.png (3 photos-like images) and root/boxes/*.xml."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    (root / "boxes").mkdir()
    for i, cls in enumerate(["n01440764", "n01443537", "n01484850"]):
        (root / "val" / cls).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (72, 96, 3), dtype=np.uint8)).save(root / "val" / cls / f"im{i}.png")
        (root / "boxes" / f"im{i}.xml").write_text(
            f"<annotation><size><width>96</width><height>72</height></size><object><name>{cls}</name>"
            "<bndbox><xmin>10</xmin><ymin>5</ymin><xmax>60</xmax><ymax>50</ymax></bndbox></object></annotation>")
    return root


def test_analyze_on_random_resnet50(folder, tmp_path):
    out = tmp_path / "analysis"
    rc = cli.main(["analyze", *RESNET, "--images", str(folder / "val"), "--boxes", str(folder / "boxes"),
                   "--out", str(out), "--target", "predicted", "--lime", "--lime-samples", "16",
                   "--segmentation", "slic", "--workers", "0"])
    assert rc == 0
    report = json.loads((out / "tables.json").read_text())
    assert report["analysed"] == 3 and report["map_cells"] == 4  # 64 px -> 2x2 layer4 map
    t1 = report["table1"]
    assert t1["fooled"]["share"] + t1["resisting"]["share"] == pytest.approx(100.0)
    assert "capped at 4" in (out / "tables.md").read_text()
    assert len((out / "records.jsonl").read_text().splitlines()) == 3


def test_evaluate_on_random_resnet50(folder, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["evaluate", *RESNET, "--data", str(folder), "--dataset", "folder", "--limit", "2",
            "--batch-size", "2", "--eps", "4/255", "--attacks", "clean,fgsm,a3pgd1",
            "--strong", "apgd1", "--out", str(out)]
    assert cli.main(args) == 0
    first = json.loads((out / "results.json").read_text())
    assert first["results"]["n"] == 2 and len(first["indices"]) == 2
    assert "| torchvision resnet50 (random weights) |" in capsys.readouterr().out
    assert cli.main(args) == 0  # a rerun resumes everything and gives the same table
    again = json.loads((out / "results.json").read_text())
    assert again["resumed_batches"] == 1 and again["results"] == first["results"]


def test_figures_on_random_resnet50(folder, tmp_path):
    data = ["--data", str(folder), "--dataset", "folder", "--limit", "1"]
    att = tmp_path / "att.png"
    assert cli.main(["figures", "attention", *RESNET[:4], *data[:-1], "2", "--eps", "4/255", "--out", str(att)]) == 0
    ckpt = tmp_path / "bare.pt"
    torch.save(models.build("resnet18", 10).state_dict(), ckpt)  # smaller file than ResNet-50's
    evo = tmp_path / "evo.png"
    assert cli.main(["figures", "evolution", "--model", "resnet18", "--num-classes", "10",
                     "--image-size", "64", *data, "--checkpoints", str(ckpt), str(ckpt), "--out", str(evo)]) == 0
    steps = tmp_path / "steps.png"
    assert cli.main(["figures", "steps", *RESNET[:4], *data, "--attacks", "pgd", "--steps", "1,2",
                     "--out", str(steps)]) == 0
    eps = tmp_path / "eps.png"
    assert cli.main(["figures", "eps", *RESNET[:4], *data, "--attacks", "fgsm",
                     "--eps-values", "1/255,2/255", "--out", str(eps)]) == 0
    sizes = {p.name: Image.open(p).size for p in (att, evo, steps, eps)}
    assert sizes == {"att.png": (800, 400), "evo.png": (600, 200), "steps.png": (500, 350),
                     "eps.png": (500, 350)}
    for p in (att, evo, steps, eps):
        Image.open(p).load()  # decodes completely
    curve = json.loads(steps.with_suffix(".json").read_text())
    assert curve["x"] == [1, 2] and len(curve["accuracy"]["pgd"]) == 2


def test_figure_functions_report_their_pixel_size(tmp_path):
    model = models.build("tinyconv", 3).eval()
    x, y = torch.rand(3, 3, 16, 16), torch.tensor([0, 1, 2])
    model(x)  # materialise the lazy head
    assert attention_figure(model, x, y, tmp_path / "a.png", panel=1.5, dpi=80) == (480, 360)
    assert Image.open(tmp_path / "a.png").size == (480, 360)
    assert curve_figure([1, 2], {"pgd": [50.0, 40.0]}, "steps", tmp_path / "c.png", dpi=50) == (250, 175)
    assert Image.open(tmp_path / "c.png").size == (250, 175)


@pytest.mark.parametrize("argv, message", [
    (["analyze", "--torchvision", "resnet50", "--images", "/nonexistent", "--boxes", "/nonexistent",
      "--out", "x"], "does not exist"),
    (["evaluate", "--torchvision", "resnet99", "--out", "x"], "choose one of"),
    (["evaluate", "--torchvision", "resnet50", "--data", "/nonexistent", "--out", "x"], "does not exist"),
    (["evaluate", "--out", "x"], "exactly one"),
    (["evaluate", "--torchvision", "resnet50", "--eps", "x", "--out", "x"], "not a number"),
])
def test_clear_errors(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
