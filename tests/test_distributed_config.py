"""The DeepSpeed JSON generated from the typed config, and user JSON files checked against it."""
from __future__ import annotations

import json

import pytest

from aadscale.config import load_config
from aadscale.distributed import deepspeed_config, load_user_config


def cfg_with(*overrides: str):
    return load_config(None, list(overrides))


def test_batch_sizes_and_stage():
    ds = deepspeed_config(cfg_with("data.batch_size=64", "train.grad_accum=2",
                                   "train.zero_stage=3"), world_size=4)
    assert ds["train_batch_size"] == 64
    assert ds["train_micro_batch_size_per_gpu"] == 8
    assert ds["gradient_accumulation_steps"] == 2
    assert ds["zero_optimization"] == {"stage": 3}
    assert ds["zero_allow_untested_optimizer"] is True
    assert ds["wall_clock_breakdown"] is False
    assert ds["steps_per_print"] >= 10**6


def test_indivisible_batch_names_the_fields():
    with pytest.raises(ValueError, match=r"data.batch_size=10.*world size 4.*train.grad_accum=1"):
        deepspeed_config(cfg_with("data.batch_size=10"), world_size=4)


@pytest.mark.parametrize("precision,dtype", [("fp32", None), ("bf16", "bfloat16"), ("fp16", "float16")])
def test_precision_is_autocast_with_float32_weights(precision, dtype):
    ds = deepspeed_config(cfg_with(f"train.precision={precision}"), world_size=1)
    assert "bf16" not in ds and "fp16" not in ds  # native half modes would cast the weights
    assert ds["torch_autocast"]["enabled"] is (dtype is not None)
    if dtype:
        assert ds["torch_autocast"]["dtype"] == dtype


def test_gradient_clipping_only_when_set():
    assert "gradient_clipping" not in deepspeed_config(cfg_with("optim.grad_clip=0"), 1)
    assert deepspeed_config(cfg_with("optim.grad_clip=1.5"), 1)["gradient_clipping"] == 1.5


def test_generated_config_is_accepted_by_deepspeed():
    from deepspeed.runtime.config import DeepSpeedConfig
    cfg = cfg_with("data.batch_size=16", "train.grad_accum=2", "train.zero_stage=2",
                   "optim.grad_clip=1")
    ds = DeepSpeedConfig(deepspeed_config(cfg, 1))
    assert (ds.train_batch_size, ds.train_micro_batch_size_per_gpu,
            ds.gradient_accumulation_steps) == (16, 8, 2)
    assert ds.zero_optimization_stage == 2 and ds.gradient_clipping == 1.0


def write(tmp_path, obj) -> str:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(obj))
    return str(path)


def test_user_config_fills_and_keeps_user_keys(tmp_path):
    cfg = cfg_with("data.batch_size=32", "train.zero_stage=2")
    user = {"zero_optimization": {"offload_optimizer": {"device": "cpu"}}, "steps_per_print": 5}
    ds = load_user_config(write(tmp_path, user), cfg, world_size=2)
    assert ds["zero_optimization"] == {"stage": 2, "offload_optimizer": {"device": "cpu"}}
    assert ds["steps_per_print"] == 5
    assert ds["train_micro_batch_size_per_gpu"] == 16


@pytest.mark.parametrize("user,field", [
    ({"train_batch_size": 64}, "data.batch_size"),
    ({"gradient_accumulation_steps": 4}, "train.grad_accum"),
    ({"train_micro_batch_size_per_gpu": 4}, "train_micro_batch_size_per_gpu"),
    ({"zero_optimization": {"stage": 3}}, "train.zero_stage"),
    ({"bf16": {"enabled": True}}, "train.precision=bf16"),
    ({"fp16": {"enabled": True}}, "train.precision=fp16"),
])
def test_user_config_inconsistent_with_typed_config(tmp_path, user, field):
    with pytest.raises(ValueError, match=field):
        load_user_config(write(tmp_path, user), cfg_with("data.batch_size=32"), world_size=2)


def test_user_config_missing_or_broken(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_user_config(tmp_path / "nope.json", cfg_with(), 1)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_user_config(bad, cfg_with(), 1)
