"""CIFAR-10 and MNIST readers on tiny self-written standard files; sampler and crop maths."""
from __future__ import annotations

import gzip
import logging
import pickle

import numpy as np
import pytest
import torch

from aadscale.data import build_loader
from aadscale.data.augment import inception_box, train_transform
from aadscale.data.sampler import epoch_order, num_batches


def write_cifar10(folder, per_batch=3, test=4):
    """The python-pickle layout of cifar-10-batches-py with tiny random batches."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f)
        batches[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    return batches


def write_idx(path, array, gz):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    (gzip.open if gz else open)(path, "wb").write(header + array.astype(np.uint8).tobytes())


def test_cifar10_reads_the_pickle_batches(tmp_path):
    batches = write_cifar10(tmp_path / "cifar-10-batches-py")
    val = build_loader(tmp_path, "test", dataset="cifar10", batch_size=4, image_size=32, workers=0)
    images, labels = next(iter(val))
    data, expected = batches["test_batch"]
    order = epoch_order(4, world_size=1, epoch=0, seed=0)  # validation's fixed permutation
    assert val.num_classes == 10 and val.backend == "torch"
    assert torch.equal(images, torch.from_numpy(data[order]).view(-1, 3, 32, 32).float() / 255)
    assert labels.tolist() == [expected[i] for i in order]
    train = build_loader(tmp_path, "train", dataset="cifar10", batch_size=5, image_size=32, workers=0)
    assert train.num_samples == 15 and len(train) == 3
    assert all(x.shape == (5, 3, 32, 32) for x, _ in train)


def test_cifar10_missing_file_names_it(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ValueError, match="data_batch_3 is missing"):
        build_loader(tmp_path, "train", dataset="cifar10", batch_size=4, image_size=32)
    with pytest.raises(ValueError, match="data.backend=torch"):
        build_loader(tmp_path, "test", dataset="cifar10", backend="dali-cpu", batch_size=4, image_size=32)


def test_mnist_reads_idx_files_as_one_channel(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (6, 28, 28))
    labels = np.array([3, 1, 4, 1, 5, 9])
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, gz=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels, gz=False)
    loader = build_loader(tmp_path, "val", dataset="mnist", batch_size=6, image_size=28, workers=0)
    x, y = next(iter(loader))
    order = epoch_order(6, world_size=1, epoch=0, seed=0)
    assert x.shape == (6, 1, 28, 28)
    assert torch.equal(x, torch.from_numpy(images[order]).float().unsqueeze(1) / 255)
    assert y.tolist() == labels[order].tolist()
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        build_loader(tmp_path, "train", dataset="mnist", batch_size=6, image_size=28)


def test_mnist_training_does_not_flip_digits(tmp_path):
    images = np.zeros((4, 28, 28))
    images[:, :, :5] = 255  # a bar on the left
    write_idx(tmp_path / "train-images-idx3-ubyte", images, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(4), gz=False)
    loader = build_loader(tmp_path, "train", dataset="mnist", batch_size=4, image_size=28, workers=0)
    for epoch in range(5):
        loader.set_epoch(epoch)
        x, _ = next(iter(loader))
        assert (x[..., :5] == 1).all() and (x[..., 5:] == 0).all()


def test_shards_pad_like_distributed_sampler():
    order = epoch_order(23, world_size=2, epoch=3, seed=0)
    shards = [order[r::2] for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 12
    assert set(shards[0]) | set(shards[1]) == set(range(23))
    assert len(set(shards[0]) & set(shards[1])) == 1  # one sample read twice to even out
    assert order == epoch_order(23, world_size=2, epoch=3, seed=0)
    assert order != epoch_order(23, world_size=2, epoch=4, seed=0)
    assert sorted(epoch_order(2, world_size=4, epoch=0, seed=0)) == [0, 0, 1, 1]
    assert (num_batches(12, 5, drop_last=True), num_batches(12, 5, drop_last=False)) == (2, 3)


def test_inception_boxes_lie_inside_with_imagenet_ranges():
    gen = torch.Generator().manual_seed(0)
    areas, aspects = [], []
    for height, width in [(375, 500), (500, 333), (64, 64), (20, 300)]:
        for _ in range(200):
            top, left, h, w = inception_box(height, width, gen)
            assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h > 0 and w > 0
            if (height, width) == (375, 500):
                areas.append(h * w / (height * width))
                aspects.append(w / h)
    assert 0.07 < min(areas) < 0.2 and max(areas) > 0.9
    assert 0.7 < min(aspects) < 0.8 and 1.25 < max(aspects) < 1.4


def test_pad_crop_shifts_by_at_most_four_and_flips():
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (1, 32, 32), dtype=torch.uint8, generator=gen).expand(3, 32, 32)
    flips = 0
    for _ in range(100):
        out = train_transform(image, gen, augment="pad-crop", size=32)
        assert out.shape == (3, 32, 32)
        centre = (out[0, 4:28, 4:28] * 255).round().to(torch.uint8)
        shifts = [(dy, dx, f) for dy in range(-4, 5) for dx in range(-4, 5) for f in (0, 1)
                  if torch.equal(centre, (image[0].flip(-1) if f else image[0])[4 + dy:28 + dy, 4 + dx:28 + dx])]
        assert len(shifts) == 1
        flips += shifts[0][2]
    assert 30 < flips < 70


def test_parallel_decode_check_drops_bad_files_and_caches(tmp_path, caplog):
    from PIL import Image

    from aadscale.data.scan import readable
    from aadscale.data.sources import read_folder
    folder = tmp_path / "train" / "a"
    folder.mkdir(parents=True)
    for i in range(2001):  # above the size where the check runs in worker processes
        Image.new("RGB", (8, 8), (i % 256, 0, 0)).save(folder / f"{i:04d}.JPEG")
    (folder / "zz.JPEG").write_bytes(b"<html>not found</html>")
    samples = read_folder(tmp_path / "train")
    kept = readable(samples, workers=2, cache_dir=tmp_path / "cache")
    assert len(kept) == 2001 and str(folder / "zz.JPEG") not in kept.paths
    assert len(list((tmp_path / "cache" / "scans").glob("*.json"))) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aadscale.data"):
        assert readable(samples, workers=2, cache_dir=tmp_path / "cache").paths == kept.paths
    assert "zz.JPEG" in caplog.text  # reported again from the cache
