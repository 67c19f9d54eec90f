"""The built-in demo dataset: real digits as JPEGs in the ImageNet folder layout."""
from __future__ import annotations

import os

import torch
from PIL import Image

from aadscale.data import DEFAULT_DEMO_ROOT, build_dataset, build_loader, ensure_demo_data


def test_demo_data_layout_is_imagenet_like_and_idempotent(tmp_path):
    root = ensure_demo_data(tmp_path / "demo")
    classes = [f"n{d:08d}" for d in range(10)]
    counts = {}
    for split in ("train", "val"):
        assert sorted(os.listdir(root / split)) == classes
        counts[split] = sum(len(os.listdir(root / split / c)) for c in classes)
    assert counts["train"] + counts["val"] == 1797
    assert 0.18 < counts["val"] / 1797 < 0.22
    sample = next((root / "val" / "n00000007").iterdir())
    assert sample.suffix == ".JPEG"
    with Image.open(sample) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (32, 32))
    stamp = sample.stat().st_mtime_ns
    sample.unlink()  # a second call trusts the marker and writes nothing
    assert ensure_demo_data(tmp_path / "demo") == root and not sample.exists()
    assert DEFAULT_DEMO_ROOT == "runs/demo-data" and stamp > 0


def test_demo_loader_reads_it_with_the_folder_reader(tmp_path):
    loader = build_loader(tmp_path / "demo", "val", dataset="demo", batch_size=64, image_size=32,
                          workers=0)
    batches = list(loader)
    images, labels = batches[0]
    assert loader.num_classes == 10 and images.shape == (64, 3, 32, 32)
    counts = torch.cat([y for _, y in batches]).bincount(minlength=10).tolist()
    assert counts == [len(os.listdir(tmp_path / "demo" / "val" / f"n{d:08d}")) for d in range(10)]
    # an 8x8 digit scaled up keeps a dark background around a bright stroke
    assert images.mean() < 0.5 and images.amax(dim=(1, 2, 3)).min() > 0.7


def test_build_dataset_reads_what_the_validation_loader_reads(tmp_path):
    loader = build_loader(tmp_path / "demo", "val", dataset="demo", batch_size=8, image_size=32,
                          workers=0)
    order = loader.remaining()[0][:8]  # rank 0 of 1
    images, labels = next(iter(loader))
    dataset = build_dataset(tmp_path / "demo", "val", dataset="demo", image_size=32)
    assert len(dataset) == loader.size
    assert torch.equal(torch.stack([dataset[i][0] for i in order]), images)
    assert [dataset[i][1] for i in order] == labels.tolist()
