"""build_loader on JPEG folders, both backends: values, labels, shards, resume, bad input."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from aadscale.data import build_loader, resolve_backend
from aadscale.data.photos import write_photo_folder

BACKENDS = ["torch", "dali-cpu"]


def solid(path, value, size=(40, 30)):
    """A JPEG of one colour (an int grey level or an RGB tuple), which JPEG keeps nearly exact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, value if isinstance(value, tuple) else (value,) * 3).save(path, quality=95)


def load(root, split="train", **kw):
    kw.setdefault("cache_dir", root / "cache")
    kw.setdefault("workers", 0 if kw.get("backend", "torch") == "torch" else 1)
    return build_loader(root, split, **{"batch_size": 4, "image_size": 16, **kw})


@pytest.fixture
def greys(tmp_path):
    """24 images, 3 classes; image k is grey level 8 * (k + 1), so the pixel value names the sample."""
    for k in range(24):
        solid(tmp_path / "train" / f"n{k % 3}" / f"img{k:02d}.JPEG", 8 * (k + 1))
    return tmp_path


def sample_ids(images: torch.Tensor) -> list[int]:
    return [round(float(v) * 255 / 8) - 1 for v in images.mean(dim=(1, 2, 3))]


def epoch_ids(loader) -> list[int]:
    return [k for images, _ in loader for k in sample_ids(images)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_batches_are_unit_float_nchw_with_folder_labels(tmp_path, backend, caplog):
    colours = [(220, 20, 20), (20, 220, 20), (20, 20, 220)]
    for c, colour in enumerate(colours):
        for i in range(5):
            solid(tmp_path / "train" / f"n0{c}" / f"{i}.JPEG", colour, size=(50 + 7 * i, 40))
    with caplog.at_level(logging.INFO, logger="aadscale.data"):
        loader = load(tmp_path, backend=backend, augment="inception")
    assert f"data backend {backend}" in caplog.text
    assert (loader.backend, loader.num_classes, loader.num_samples, len(loader)) == (backend, 3, 15, 3)
    seen = 0
    for images, labels in loader:
        assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32
        assert labels.dtype == torch.int64
        assert 0.0 <= images.min() and images.max() <= 1.0
        assert torch.equal(images.mean(dim=(2, 3)).argmax(1), labels)
        seen += len(labels)
    assert seen == 12  # train drops the last partial batch


@pytest.mark.parametrize("backend", BACKENDS)
def test_inception_crops_stay_inside_the_image(tmp_path, backend):
    # any pixel from outside the image (padding) would be black, not the image's grey 200
    for i in range(8):
        solid(tmp_path / "train" / "a" / f"{i}.JPEG", 200, size=(60 + 10 * i, 45))
    loader = load(tmp_path, backend=backend, augment="inception", batch_size=8, image_size=24)
    for epoch in range(3):
        loader.set_epoch(epoch)
        for images, _ in loader:
            assert images.shape == (8, 3, 24, 24)
            assert (images - 200 / 255).abs().max() < 3 / 255


@pytest.mark.parametrize("backend", BACKENDS)
def test_flips_happen_about_half_the_time(tmp_path, backend):
    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))  # dark left, bright right
    for i in range(96):
        path = tmp_path / "train" / "a" / f"{i:02d}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ramp).convert("RGB").save(path, quality=95)
    loader = load(tmp_path, backend=backend, augment="inception", batch_size=32, image_size=16, seed=3)
    flipped = [bool(f) for images, _ in loader
               for f in images[:, 0, :, :4].mean(dim=(1, 2)) > images[:, 0, :, -4:].mean(dim=(1, 2))]
    assert len(flipped) == 96
    assert 0.3 < np.mean(flipped) < 0.7  # binomial(96, 0.5): 0.3..0.7 is about +-4 sd


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_ranks_read_disjoint_shards_covering_the_epoch(greys, backend):
    shards = [epoch_ids(load(greys, backend=backend, augment="none", rank=r, world_size=2, seed=5))
              for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 12
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(24))


@pytest.mark.parametrize("backend", BACKENDS)
def test_epochs_reshuffle_deterministically(greys, backend):
    first = load(greys, backend=backend, augment="none", seed=1)
    again = load(greys, backend=backend, augment="none", seed=1)
    order0, order1 = epoch_ids(first), epoch_ids(first)  # a finished epoch moves on to the next
    assert first.state_dict() == {"epoch": 2, "batch": 0}
    assert order0 != order1 and sorted(order0) == sorted(order1) == list(range(24))
    again.set_epoch(1)
    assert epoch_ids(again) == order1


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_mid_epoch_gives_the_remaining_batches(greys, backend):
    full = load(greys, backend=backend, augment="none", seed=2)
    full.set_epoch(1)
    batches = []
    for images, labels in full:
        batches.append((sample_ids(images), labels.tolist()))
        if len(batches) == 2:
            state = full.state_dict()
    assert state == {"epoch": 1, "batch": 2}
    resumed = load(greys, backend=backend, augment="none", seed=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # the engine may call it again after loading: the position stays
    assert [(sample_ids(x), y.tolist()) for x, y in resumed] == batches[2:]


def test_torch_resume_is_exact_with_augmentation_and_skips_decoding(tmp_path, monkeypatch):
    write_photo_folder(tmp_path, classes=2, per_class=6, sizes=((60, 45), (45, 60)))
    full = load(tmp_path, augment="inception", seed=4)
    batches = list(full)
    opened = []
    original = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(path) or original(path, *a, **k))
    resumed = load(tmp_path, augment="inception", seed=4)
    resumed.load_state_dict({"epoch": 0, "batch": 1})
    rest = list(resumed)
    assert len(opened) == 8  # two batches of four: the first batch is never decoded
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(rest, batches[1:]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_validation_keeps_the_last_partial_batch_and_a_fixed_order(greys, backend):
    (greys / "val").symlink_to(greys / "train")
    loader = load(greys, "val", backend=backend, batch_size=5, rank=1, world_size=2)
    batches = [sample_ids(images) for images, _ in loader]
    assert [len(ids) for ids in batches] == [5, 5, 2] and len(loader) == 3
    assert [sample_ids(images) for images, _ in loader] == batches  # the next epoch: same order
    assert batches[0] != sorted(batches[0])  # mixed, so any prefix is a class-mixed subset


def test_dali_validation_matches_torch(tmp_path):
    write_photo_folder(tmp_path, split="val", classes=2, per_class=4,
                       sizes=((200, 150), (150, 200), (200, 133), (180, 180)))
    kw = dict(batch_size=8, image_size=64)
    x_torch, y_torch = next(iter(load(tmp_path, "val", backend="torch", **kw)))
    x_dali, y_dali = next(iter(load(tmp_path, "val", backend="dali-cpu", **kw)))
    assert x_torch.shape == x_dali.shape == (8, 3, 64, 64)
    assert torch.equal(y_torch, y_dali)
    per_image = (x_torch - x_dali).abs().mean(dim=(1, 2, 3))
    # same sizes and crop offsets; what differs is the JPEG decoder and the resampling kernels
    assert per_image.max() < 0.01  # measured 0.0005..0.004


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_files_are_skipped_or_replaced_and_logged(greys, backend, caplog):
    truncated = greys / "train" / "n0" / "truncated.JPEG"
    truncated.write_bytes((greys / "train" / "n0" / "img00.JPEG").read_bytes()[:200])
    text = greys / "train" / "n1" / "notes.JPEG"
    text.write_text("this is not an image\n")
    with caplog.at_level(logging.INFO, logger="aadscale.data"):
        loader = load(greys, backend=backend, augment="none", batch_size=2)
        ids = epoch_ids(loader)
    assert str(truncated) in caplog.text and str(text) in caplog.text
    assert "(2 so far)" in caplog.text
    if backend == "torch":  # replaced by the next sample: the epoch keeps its length
        assert loader.num_samples == 26 and len(ids) == 26
    else:  # dropped from the file list before the pipeline starts
        assert loader.num_samples == 24 and sorted(ids) == list(range(24))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_folders_fail_early_with_the_path(tmp_path, backend):
    with pytest.raises(ValueError, match="no data root"):
        build_loader("", "train", backend=backend, dataset="imagenet", batch_size=4, image_size=16)
    with pytest.raises(ValueError, match="val_resize=12 is smaller than image_size=16"):
        load(tmp_path, backend=backend, val_resize=12)
    with pytest.raises(ValueError, match="does not exist"):
        load(tmp_path / "nowhere", backend=backend)
    with pytest.raises(ValueError, match=r"split 'train' not found.*train\.txt"):
        load(tmp_path, backend=backend)
    (tmp_path / "train").mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        load(tmp_path, backend=backend)
    solid(tmp_path / "train" / "full" / "a.JPEG", 100)
    (tmp_path / "train" / "empty").mkdir()
    (tmp_path / "train" / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=f"class folder {tmp_path / 'train' / 'empty'} holds no images"):
        load(tmp_path, backend=backend)


def test_file_list_reads_paths_and_labels(tmp_path):
    for k in range(6):
        solid(tmp_path / "images" / f"{k}.JPEG", 8 * (k + 1))
    (tmp_path / "val.txt").write_text("".join(f"images/{k}.JPEG {k % 2}\n" for k in range(6)))
    loader = load(tmp_path, "val", batch_size=6)
    images, labels = next(iter(loader))
    ids = sample_ids(images)
    assert loader.num_classes == 2 and sorted(ids) == list(range(6))
    assert labels.tolist() == [k % 2 for k in ids]
    same = load(tmp_path / "val.txt", "val", batch_size=6)
    assert next(iter(same))[1].tolist() == labels.tolist()
    (tmp_path / "bad.txt").write_text("images/0.JPEG cat\n")
    with pytest.raises(ValueError, match=r"bad\.txt:1"):
        load(tmp_path / "bad.txt", "val")


def test_backend_choice_is_explicit(tmp_path):
    assert resolve_backend("auto", "cifar10") == "torch"
    assert resolve_backend("auto", "imagenet") == ("dali-gpu" if torch.cuda.is_available() else "dali-cpu")
    with pytest.raises(ValueError, match="data.backend=torch"):
        resolve_backend("dali-cpu", "mnist")
    solid(tmp_path / "train" / "a" / "0.JPEG", 100)
    with pytest.raises(ValueError, match="'pad-crop' is not available with DALI"):
        load(tmp_path, backend="dali-cpu", augment="pad-crop")
    with pytest.raises(ValueError, match="not one of"):
        resolve_backend("dali", "imagenet")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs a CUDA GPU"):
            resolve_backend("dali-gpu", "imagenet")


def test_torch_workers_do_not_change_the_batches(tmp_path):
    write_photo_folder(tmp_path, classes=2, per_class=4, sizes=((60, 45), (45, 60)))
    inline = list(load(tmp_path, augment="inception", seed=6))
    parallel = list(load(tmp_path, augment="inception", seed=6, workers=2))
    assert len(inline) == len(parallel) == 2
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(inline, parallel))


@pytest.mark.parametrize("device", ["gpu", "cpu"])
def test_dali_graph_places_outputs_on_the_requested_device(device):
    # traced without running it: a GPU pipeline cannot run on this machine, its graph can be built
    from nvidia.dali import Pipeline

    from aadscale.data.dali import image_pipeline
    with Pipeline(batch_size=2, num_threads=1, device_id=0 if device == "gpu" else None):
        for train in (True, False):
            outputs = image_pipeline.__wrapped__(["a.JPEG"], [0], shard_id=0, num_shards=1,
                                                 device=device, train=train, augment="inception",
                                                 size=8, resize=9)
            assert [node.device for node in outputs] == [device, device]


def test_dali_writes_channels_last_directly_torch_stays_nchw(tmp_path):
    write_photo_folder(tmp_path, split="val", classes=2, per_class=3, sizes=((80, 60), (60, 80)))
    kw = dict(batch_size=6, image_size=32)
    nchw, labels = next(iter(load(tmp_path, "val", backend="dali-cpu", **kw)))
    nhwc, labels_cl = next(iter(load(tmp_path, "val", backend="dali-cpu", memory_format="channels_last", **kw)))
    assert nhwc.shape == nchw.shape == (6, 3, 32, 32) and torch.equal(labels, labels_cl)
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and not nhwc.is_contiguous()
    assert torch.equal(nhwc, nchw)  # the same pixels, only the strides differ
    # the torch backend hands over NCHW; the copy to the device converts (the engine's x.to)
    images, _ = next(iter(load(tmp_path, "val", backend="torch", memory_format="channels_last", **kw)))
    assert images.is_contiguous()
    with pytest.raises(ValueError, match="memory_format='nhwc' must be one of"):
        load(tmp_path, "val", memory_format="nhwc", **kw)


def test_photo_folder_hard_links_beyond_the_distinct_photos(tmp_path):
    write_photo_folder(tmp_path, classes=2, per_class=5, sizes=((60, 45),), distinct=2)
    files = sorted((tmp_path / "train" / "c1").iterdir())
    assert len(files) == 5
    inodes = [f.stat().st_ino for f in files]
    assert inodes[0] != inodes[1] and inodes[2::2] == [inodes[0]] * 2 and inodes[3] == inodes[1]
