"""RandAugment, colour jitter and random erasing in the torch and DALI loaders."""
from __future__ import annotations

import logging
import random
import re

import numpy as np
import pytest
import torch
from PIL import Image

from aadscale.data import build_loader
from aadscale.data.augment import RAND_AUGMENT_EXAMPLE, rand_augment, train_transform
from aadscale.data.photos import load_photo, write_photo_folder
from aadscale.errors import InputError

SIZE = 32


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Eight small JPEG photos, two classes."""
    return write_photo_folder(tmp_path_factory.mktemp("photos"), classes=2, per_class=4,
                              sizes=((56, 48), (48, 56)))


def epoch(root, backend="torch", **policy) -> torch.Tensor:
    """All images of one training epoch (seed 3, Inception crops and flips) under ``policy``."""
    loader = build_loader(root, "train", backend=backend, batch_size=4, image_size=SIZE, seed=3,
                          workers=0 if backend == "torch" else 1, augment="inception",
                          cache_dir=root / "cache", **policy)
    return torch.cat([images for images, _ in loader])


@pytest.mark.parametrize("policy", [dict(rand_augment=RAND_AUGMENT_EXAMPLE), dict(color_jitter=0.4),
                                    dict(erasing=1.0)], ids=["rand_augment", "color_jitter", "erasing"])
def test_torch_policy_changes_images_reproducibly_in_unit_range(photos, policy):
    state = random.getstate(), np.random.get_state()[1].copy()
    plain, first, again = epoch(photos), epoch(photos, **policy), epoch(photos, **policy)
    assert torch.equal(first, again)  # each draw comes from the sample's (seed, epoch, index) generator
    assert random.getstate() == state[0] and np.array_equal(np.random.get_state()[1], state[1])
    assert 0 <= first.min() and first.max() <= 1
    changed = [not torch.equal(a, b) for a, b in zip(first, plain)]
    # RandAugment skips each of its two ops with probability 0.5 and may pick a no-op at these
    # settings, so only most images change; jitter and erasing (p=1) change every one
    assert sum(changed) >= (5 if "rand_augment" in policy else 8)


def test_torch_rand_augment_resumes_mid_epoch(photos):
    full = build_loader(photos, "train", batch_size=4, image_size=SIZE, seed=5, workers=0,
                        rand_augment=RAND_AUGMENT_EXAMPLE)
    resumed = build_loader(photos, "train", batch_size=4, image_size=SIZE, seed=5, workers=0,
                           rand_augment=RAND_AUGMENT_EXAMPLE)
    resumed.load_state_dict({"epoch": 0, "batch": 1})
    assert torch.equal(next(iter(resumed))[0], list(full)[1][0])


def test_torch_erasing_fills_one_box_with_unit_noise():
    grey = torch.full((3, SIZE, SIZE), 100, dtype=torch.uint8)
    for seed in range(10):
        out = train_transform(grey, torch.Generator().manual_seed(seed), augment="none", size=SIZE, erasing=1.0)
        changed = (out != 100 / 255).any(dim=0)
        rows, cols = changed.any(dim=1).nonzero(), changed.any(dim=0).nonzero()
        box = changed[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all()  # the changed pixels form one filled rectangle
        assert 0.015 < box.numel() / SIZE**2 < 0.36  # timm's area 0.02..1/3, sides rounded to pixels
        assert 0 <= out.min() and out.max() <= 1


def test_color_jitter_is_off_beside_rand_augment_as_in_timm(photos, caplog):
    with caplog.at_level(logging.WARNING, logger="aadscale.data"):
        both = epoch(photos, rand_augment=RAND_AUGMENT_EXAMPLE, color_jitter=0.4)
    assert "color_jitter=0.4 is off" in caplog.text
    assert torch.equal(both, epoch(photos, rand_augment=RAND_AUGMENT_EXAMPLE))


@pytest.mark.parametrize("policy", [dict(rand_augment=RAND_AUGMENT_EXAMPLE, erasing=0.5),
                                    dict(rand_augment="rand-m9-n3-p1-mstd101-inc0"),
                                    dict(color_jitter=0.4, erasing=1.0)], ids=["inc1", "inc0", "jitter"])
def test_dali_policy_gives_unit_images_of_the_right_shape(photos, policy):
    plain, first, again = (epoch(photos, "dali-cpu", **kw) for kw in ({}, policy, policy))
    assert first.shape == (8, 3, SIZE, SIZE)
    assert 0 <= first.min() and first.max() <= 1
    assert torch.equal(first, again)  # the pipeline's seed fixes every draw
    assert sum(not torch.equal(a, b) for a, b in zip(first, plain)) >= 5


def test_dali_erasing_fills_one_box_with_unit_noise(tmp_path):
    for i in range(4):
        path = tmp_path / "train" / "a" / f"{i}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (SIZE, SIZE), (100, 100, 100)).save(path, quality=95)
    loader = build_loader(tmp_path, "train", backend="dali-cpu", batch_size=4, image_size=SIZE, workers=1,
                          augment="none", erasing=1.0, cache_dir=tmp_path / "cache")
    for image in next(iter(loader))[0]:
        changed = ((image - 100 / 255).abs() > 3 / 255).any(dim=0)  # JPEG keeps flat grey within 1/255
        rows, cols = changed.any(dim=1).nonzero(), changed.any(dim=0).nonzero()
        box = changed[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.float().mean() > 0.9  # one rectangle (noise may land near the grey by chance)
        assert 0.015 < box.numel() / SIZE**2 < 0.36


# (timm op, DALI's random sign that matches timm's unnegated magnitude, tolerance in 1/255 levels)
SAME_OP = [
    ("SolarizeIncreasing", 0, 0),  # the same threshold, the same bit mask, the same shift: exact
    ("Solarize", 0, 0),
    ("PosterizeIncreasing", 0, 0),
    ("Posterize", 0, 0),
    ("SolarizeAdd", 0, 0),
    ("BrightnessIncreasing", 0, 1),  # the same factor (and luma-weighted mean); PIL and DALI round apart
    ("ContrastIncreasing", 0, 1),
    ("ColorIncreasing", 0, 1),
    # warps, bilinear on both, differ along the image edge (checked below); DALI maps forward, PIL
    # backward, so a positive shear or shift in timm is a negative one in DALI
    ("Rotate", 0, None),
    ("ShearX", 1, None),
    ("TranslateXRel", 1, None),
]


@pytest.mark.parametrize("name,sign,tolerance", SAME_OP, ids=[case[0] for case in SAME_OP])
def test_torch_and_dali_apply_the_same_op_at_the_same_magnitude(monkeypatch, name, sign, tolerance):
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.auto_aug.core import signed_bin
    from timm.data.auto_augment import AugmentOp

    from aadscale.data.dali import BINS_PER_LEVEL, RAND_AUGMENT_OPS, op_arguments

    image = load_photo("astronaut.png").resize((48, 48), Image.Resampling.BILINEAR)
    hparams = rand_augment("rand-m9", 48).ops[0].hparams  # the torch path's fill and interpolation
    monkeypatch.setattr(random, "random", lambda: 0.0)  # timm negates a magnitude when random() > 0.5
    expected = np.asarray(AugmentOp(name, prob=1.0, magnitude=9, hparams=hparams)(image)).astype(int)

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, seed=0)
    def one_op():
        images = fn.external_source(source=lambda: [np.asarray(image)], batch=True, layout="HWC")
        magnitude = signed_bin(9 * BINS_PER_LEVEL, random_sign=fn.random.uniform(values=[sign], dtype=types.INT32))
        return RAND_AUGMENT_OPS[name](images, magnitude_bin=magnitude, **op_arguments(48))

    pipe = one_op()
    pipe.build()
    diff = np.abs(np.asarray(pipe.run()[0][0]).astype(int) - expected)
    if tolerance is not None:
        assert diff.max() <= tolerance
    else:  # measured means 1.0, 0.7, 0.9; the other sign gives >= 59, magnitude 8 >= 14
        assert diff.mean() < 2 and np.mean(diff <= 2) > 0.9


def test_dali_maps_every_op_of_timms_rand_augment_sets():
    from timm.data.auto_augment import rand_augment_choices

    from aadscale.data.dali import RAND_AUGMENT_OPS
    assert set(rand_augment_choices("", increasing=True)) | set(rand_augment_choices("", increasing=False)) \
        == set(RAND_AUGMENT_OPS)


@pytest.mark.parametrize("spec", ["rand-m9-x3", "rnd-m9", "rand-m9.5", "rand-m9-tfoo", "rand-mstd"])
def test_a_bad_rand_augment_spec_is_an_input_error_naming_it(photos, spec):
    with pytest.raises(InputError, match=re.escape(repr(spec)) + ".*" + re.escape(repr(RAND_AUGMENT_EXAMPLE))):
        build_loader(photos, "train", batch_size=4, image_size=SIZE, rand_augment=spec)


@pytest.mark.parametrize("spec,named", [("rand-m9-mmax12", "mmax12"), ("rand-m9-tweights", "weighted"),
                                        ("rand-m9-t3a", "Desaturate, GaussianBlur")])
def test_dali_refuses_what_it_cannot_map(photos, spec, named):
    with pytest.raises(InputError, match=f"{named}.*not available with DALI"):
        build_loader(photos, "train", backend="dali-cpu", batch_size=4, image_size=SIZE, rand_augment=spec,
                     cache_dir=photos / "cache")
