"""Config layering (defaults < preset < overrides), validation naming the field, round trips."""
from __future__ import annotations

import pytest

from aadscale import config as C
from aadscale.tuning.space import load_space, parse_space


@pytest.mark.parametrize("name", C.list_presets())
def test_every_preset_loads_and_validates(name):
    cfg = C.load_config(name)
    assert cfg.preset == name
    assert C.from_dict(C.to_dict(cfg)) == cfg


def test_layers_override_in_order():
    cfg = C.load_config("demo", ["train.epochs=7", "objective.lambda1=0.25", "eval.attacks=clean,pgd20"])
    assert cfg.train.epochs == 7 and cfg.objective.lambda1 == 0.25
    assert cfg.eval.attacks == ["clean", "pgd20"]
    assert cfg.model.name == "resnet9_small"  # from the preset
    assert cfg.optim.momentum == 0.9 and C.Config().train.epochs == 1  # defaults untouched


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "unknown config field 'train.epoch'; did you mean epochs"),
    ("objective.name=mart", "objective.name='mart' is not valid"),
    ("attack.eps=-1", "attack.eps=-1.0 must be >= 0"),
    ("train.epochs=two", "train.epochs: expected an integer"),
    ("train.deterministic=maybe", "train.deterministic: expected true/false"),
    ("objective.theta=high", "objective.theta='high' must be 'mean' or a number"),
    ("eval.attacks=clean,pgd", "give a step count"),
    ("noequals", "must look like section.field=value"),
    ("train.zero_stage=4", "train.zero_stage=4 is not valid"),
    ("train.memory_format=nhwc", "train.memory_format='nhwc' is not valid; choose one of"),
    ("attack.precision=fp8", "attack.precision='fp8' is not valid; choose one of"),
    ("optim.implementation=fast", "optim.implementation='fast' is not valid"),
    ("attack.eps=8/0", "attack.eps='8/0' is not a number; write e.g. 4/255"),
    ("attack.eps=abc", "attack.eps='abc' is not a number; write e.g. 4/255"),
    ("eval.eps=300/255", "eval.eps=1.1764705882352942 must be <= 1"),
    ("attack.alpha=-2/255", "attack.alpha=-0.00784313725490196 must be >= 0"),
])
def test_invalid_values_name_the_field(override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        C.load_config("demo", [override])


def test_cross_field_check_and_missing_preset():
    with pytest.raises(ValueError, match="needs a training attack"):
        C.load_config("demo", ["attack.name=none"])
    C.load_config("demo", ["attack.name=none", "objective.name=plain"])
    with pytest.raises(ValueError, match="fp16 with train.zero_stage=2 trains without loss scaling.*bf16"):
        C.load_config("demo", ["train.precision=fp16", "train.zero_stage=2"])
    C.load_config("demo", ["train.precision=fp16", "train.zero_stage=0"])  # torch's GradScaler there
    C.load_config("demo", ["train.precision=bf16", "train.zero_stage=2"])
    with pytest.raises(ValueError, match="preset 'imagenet-resnet51' not found.*imagenet-resnet50"):
        C.load_config("imagenet-resnet51")


def test_yaml_round_trip_with_commit(tmp_path):
    cfg = C.load_config("cifar10-resnet9", ["train.seed=3"])
    C.dump_yaml(cfg, tmp_path / "config.yaml")
    assert "git_commit" in (tmp_path / "config.yaml").read_text()
    assert C.load_run_config(tmp_path / "config.yaml") == cfg


def test_field_names_cover_sections():
    names = C.field_names()
    assert "objective.lambda1" in names and "attack.eps" in names and "model.name" in names


def test_model_kwargs_from_overrides_merge_and_round_trip(tmp_path):
    cfg = C.load_config("imagenet-vit-s", ["model.kwargs={depth: 2, img_size: 32}", "model.kwargs.patch_size=8",
                                           "model.cam_layer=blocks.0.norm1"])
    assert cfg.model.kwargs == {"depth": 2, "img_size": 32, "patch_size": 8}
    assert cfg.model.cam_layer == "blocks.0.norm1"
    C.dump_yaml(cfg, tmp_path / "config.yaml")
    assert C.load_run_config(tmp_path / "config.yaml") == cfg
    with pytest.raises(ValueError, match="model.kwargs=3 must be a mapping"):
        C.load_config("demo", ["model.kwargs=3"])


def test_pixel_sizes_take_fractions_in_overrides_presets_and_sweeps(tmp_path):
    cfg = C.load_config("demo", ["attack.eps=8/255", "attack.alpha=2/255", "eval.eps=4/255"])
    assert (cfg.attack.eps, cfg.attack.alpha, cfg.eval.eps) == (8 / 255, 2 / 255, 4 / 255)
    assert C.load_config("cifar10-resnet9").attack.eps == 8 / 255  # the shipped preset writes 8/255
    preset = tmp_path / "mine.yaml"
    preset.write_text("attack: {eps: 2/255, alpha: 0.5/255}\neval: {eps: 1/255}\n")
    cfg = C.load_config(str(preset))
    assert (cfg.attack.eps, cfg.attack.alpha, cfg.eval.eps) == (2 / 255, 0.5 / 255, 1 / 255)
    space = parse_space({"params": {"attack.eps": {"values": ["2/255", 0.01]},
                                    "eval.eps": {"uniform": ["1/255", "8/255"]}}})
    assert space.params["attack.eps"].args == (2 / 255, 0.01)
    assert space.params["eval.eps"].args == (1 / 255, 8 / 255)
    shipped = load_space(C.PRESET_DIR / "sweeps" / "imagenet-lambdas-eps.yaml")
    assert shipped.params["attack.eps"].args == (2 / 255, 4 / 255, 8 / 255)
    with pytest.raises(ValueError, match="attack.eps='8/0' is not a number"):
        parse_space({"params": {"attack.eps": {"values": ["8/0"]}}})


def test_eval_eps_follows_attack_eps_unless_set(tmp_path):
    cfg = C.load_config("cifar10-resnet9", ["attack.eps=4/255"])
    assert cfg.eval.eps == cfg.attack.eps == 4 / 255
    assert C.load_config("demo").eval.eps == 0.0627  # the preset sets attack.eps only
    assert C.load_config("demo", ["attack.eps=4/255", "eval.eps=8/255"]).eval.eps == 8 / 255
    preset = tmp_path / "mine.yaml"
    preset.write_text("attack: {eps: 2/255}\neval: {eps: 0.03}\n")
    assert C.load_config(str(preset), ["attack.eps=4/255"]).eval.eps == 0.03
    C.dump_yaml(cfg, tmp_path / "config.yaml")  # the resolved float is what the run records
    assert C.to_dict(cfg)["eval"]["eps"] == 4 / 255
    assert C.load_run_config(tmp_path / "config.yaml") == cfg
