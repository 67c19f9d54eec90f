"""``aadscale evaluate --autoattack``: model-zoo weights, RobustBench's ImageNet protocol, and a run sharded
over two CPU ranks giving the same per-image result as one."""
from __future__ import annotations

import json

import pytest
import safetensors.torch
import timm
import torch
from PIL import Image
from torchvision import transforms

import dslaunch
from aadscale.cli import main
from aadscale.data import ensure_demo_data
from aadscale.data import robustbench as rb
from aadscale.data.photos import PHOTOS, load_photo
from aadscale.errors import InputError
from aadscale.evaluate.loading import load_model
from aadscale.models.zoo import zoo_weights

ARCH = "timm/test_resnet"
ZOO_STATS = ([0.4, 0.45, 0.5], [0.2, 0.25, 0.3])


def zoo_layouts(net: torch.nn.Module) -> dict[str, dict]:
    """The layouts model-zoo files come in, all holding ``net``'s weights."""
    state = net.state_dict()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in ZOO_STATS)
    return {"plain": state, "state_dict": {"state_dict": state, "epoch": 3},
            "module": {f"module.{k}": v for k, v in state.items()},
            "robustbench": {"normalize.mean": mean, "normalize.std": std,
                            **{f"model.{k}": v for k, v in state.items()}},
            "module+robustbench": {"state_dict": {"module.normalize.mean": mean, "module.normalize.std": std,
                                                  **{f"module.model.{k}": v for k, v in state.items()}}}}


def test_model_zoo_layouts_load_with_their_normalisation(tmp_path):
    torch.manual_seed(0)
    net = timm.create_model("test_resnet", num_classes=10).eval()
    x = torch.rand(2, 3, 32, 32)
    for name, obj in zoo_layouts(net).items():
        path = tmp_path / f"{name}.pt"
        torch.save(obj, path)
        model = load_model(path, model_name=ARCH, num_classes=10).model
        zoo = "robustbench" in name
        mean, std = ZOO_STATS if zoo else (net.pretrained_cfg["mean"], net.pretrained_cfg["std"])
        expected = net((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
        with torch.no_grad():
            assert torch.allclose(model(x), expected, atol=1e-5), name
    safetensors.torch.save_file(zoo_layouts(net)["robustbench"], tmp_path / "w.safetensors")
    assert load_model(tmp_path / "w.safetensors", model_name=ARCH, num_classes=10).model.normalize.mean.flatten() \
        .tolist() == pytest.approx(ZOO_STATS[0])
    with pytest.raises(InputError, match="normalize.mean and normalize.std"):
        zoo_weights({"normalize.mean": torch.zeros(3), **net.state_dict()}, "half.pt")
    with pytest.raises(InputError, match="does not fit the model"):
        load_model(tmp_path / "plain.pt", model_name="timm/test_convnext", num_classes=10)


def protocol_folder(root, count: int) -> None:
    """The first ``count`` protocol images as JPEG photos under their ImageNet names."""
    for i, image_id in enumerate(rb.selected_ids(count)):
        path = root / image_id
        path.parent.mkdir(parents=True, exist_ok=True)
        load_photo(PHOTOS[i % len(PHOTOS)]).save(path, "JPEG")


def test_robustbench_protocol_images_labels_and_preprocessing(tmp_path):
    ids = rb.protocol_ids()
    assert len(ids) == 5000 == len(set(ids)) and ids[0] == "n09468604/ILSVRC2012_val_00015253.JPEG"
    protocol_folder(tmp_path / "val", 3)
    data = rb.RobustBenchImageNet(tmp_path, limit=3)  # root/val is found
    x, label = data[1]
    assert label == rb.class_map()[ids[1].split("/")[0]] and x.shape == (3, 224, 224)
    with Image.open(tmp_path / "val" / ids[1]) as image:
        image = image.convert("RGB")
        expected = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
                                       transforms.ToTensor()])(image)
    assert torch.equal(x, expected)
    bicubic = rb.RobustBenchImageNet(tmp_path / "val", preprocessing_name="BicubicRes256Crop224", limit=3)[1][0]
    assert not torch.equal(bicubic, x) and (bicubic - x).abs().mean() < 0.02  # the same image, resized otherwise
    assert data.classes[label] == ids[1].split("/")[0] and len(data.classes) == 1000
    rows = {row["model_id"]: row for row in rb.leaderboard()}  # the README's example entry
    assert (rows["Salman2020Do_R50"]["clean_acc"], rows["Salman2020Do_R50"]["autoattack_acc"]) == ("64.02", "34.96")


@pytest.mark.parametrize("limit, message", [
    (5, "lacks 2 of the 5 RobustBench images: n03983396/ILSVRC2012_val_00004059.JPEG, "
        "n03459775/ILSVRC2012_val_00029201.JPEG. Point --data"),
    (None, "lacks 4997 of the 5000 RobustBench images: .*, \\.\\.\\. \\(4977 more\\)"),
    (5001, "the RobustBench protocol has 5000 images")])
def test_incomplete_folders_are_refused_naming_what_is_missing(tmp_path, limit, message):
    protocol_folder(tmp_path, 3)
    with pytest.raises(InputError, match=message):
        rb.RobustBenchImageNet(tmp_path, limit=limit)


def test_a_corrupt_protocol_image_is_an_error_not_a_replacement(tmp_path):
    protocol_folder(tmp_path, 2)
    (tmp_path / rb.selected_ids(2)[1]).write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(InputError, match="cannot be decoded"):
        rb.RobustBenchImageNet(tmp_path, limit=2)[1]


def test_protocol_run_on_a_zoo_timm_model(tmp_path):
    """`evaluate --protocol robustbench` on 2 images: 224 px, eps 4/255 by default, the report's fields."""
    protocol_folder(tmp_path / "val", 2)
    torch.manual_seed(0)
    torch.save(zoo_layouts(timm.create_model("test_resnet", num_classes=1000))["robustbench"], tmp_path / "w.pt")
    out = tmp_path / "out"
    assert main(["evaluate", "--weights", str(tmp_path / "w.pt"), "--model", ARCH, "--protocol", "robustbench",
                 "--data", str(tmp_path / "val"), "--limit", "2", "--autoattack", "apgd-ce",
                 "--preprocessing", "BicubicRes256Crop224", "--out", str(out), "--no-progress",
                 "--workers", "0", "--device", "cpu"]) == 0
    report = json.loads((out / "autoattack.json").read_text())
    assert (report["eps"], report["norm"], report["n_examples"]) == ("4/255", "Linf", 2)
    assert report["preprocessing"] == "BicubicRes256Crop224" and report["protocol"] == "robustbench"
    assert report["versions"]["pyautoattack"] == "0.2.0" and len(report["weights_sha256"]) == 64
    ids = [line.split(",")[0] for line in (out / "per_image.csv").read_text().splitlines()[1:]]
    assert ids == rb.selected_ids(2)


# APGD-CE alone: the sharding is what is tested (the cascade of several attacks is, in one process, in
# test_autoattack.py; APGD-T's 9 targets cost 9 times as much)
DEMO_ARGS = ["--model", ARCH, "--num-classes", "10", "--dataset", "demo", "--image-size", "32", "--limit", "6",
             "--batch-size", "2", "--autoattack", "apgd-ce", "--eps", "2/255", "--no-progress", "--workers", "0",
             "--device", "cpu"]


@pytest.mark.slow  # two launched ranks
def test_two_ranks_give_the_per_image_result_of_one(tmp_path):
    root = ensure_demo_data(tmp_path / "demo")
    torch.manual_seed(0)
    torch.save(zoo_layouts(timm.create_model("test_resnet", num_classes=10))["module"], tmp_path / "w.pt")
    args = ["--weights", str(tmp_path / "w.pt"), "--data", str(root), *DEMO_ARGS]
    torch.set_num_threads(1)  # as each launched rank: the same float rounding in both runs
    try:
        assert main(["evaluate", *args, "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(2)
    port = dslaunch.free_port()
    result = dslaunch.run(["torchrun", "--nproc_per_node", "2", f"--master_port={port}", "-m", "aadscale.cli",
                           "evaluate", *args, "--out", str(tmp_path / "two")], timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = ((tmp_path / d / "per_image.csv").read_text() for d in ("one", "two"))
    assert one == two and one.count("\n") == 7
    chunks = sorted(p.name for p in (tmp_path / "two" / "chunks").iterdir())
    assert chunks == ["000000.json", "000001.json", "000002.json"]
    report = json.loads((tmp_path / "two" / "autoattack.json").read_text())
    assert report["world_size"] == 2 and report["attacks"] == ["apgd-ce"]
