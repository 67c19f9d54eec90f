"""Typed run configuration: defaults < YAML preset < ``a.b=c`` overrides, validated in one place."""
from __future__ import annotations

import dataclasses
import difflib
import signal
import subprocess
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from aadscale.attacks.registry import TRAINING_ATTACKS, parse_attack_name
from aadscale.attacks.threat import check_eps, parse_eps
from aadscale.attention.masks import parse_theta
from aadscale.errors import InputError
from aadscale.memory_format import CHOICES as MEMORY_FORMAT_CHOICES
from aadscale.objectives.aad_loss import LAMBDA1, LAMBDA2
from aadscale.objectives.bn_stats import BN_STATS
from aadscale.objectives.registry import OBJECTIVES, objective_kind
from aadscale.precision import AUTOCAST

PRESET_DIR = Path(__file__).parent / "presets"
FUSED_OPTIMIZERS = ("sgd", "adamw")  # torch has no fused RMSprop
# sizes in pixel space, [0, 1]: presets, overrides and sweep spaces may write them as fractions (8/255)
PIXEL_FIELDS = ("attack.eps", "attack.alpha", "eval.eps")
# what schedulers and launchers send to end a job (SIGXCPU: some schedulers' CPU-time limit)
STOP_SIGNAL_CHOICES = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGHUP", "SIGQUIT", "SIGXCPU")


def _check_mapping(value: Any, path: str) -> dict:
    """A mapping with string keys (YAML or ``a.b.key=value`` overrides), as a plain dict."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise InputError(f"{path}={value!r} must be a mapping of names to values, e.g. "
                         f"{path}.depth=2 or {path}={{depth: 2, img_size: 32}}")
    return dict(value)


def check_betas(value: Any, path: str) -> list[float]:
    """Two numbers in [0, 1): AdamW's betas."""
    if not (isinstance(value, list) and len(value) == 2 and all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in value)):
        raise InputError(f"{path}={value!r} must be two numbers in [0, 1), e.g. {path}=[0.9,0.95]")
    return [float(b) for b in value]


def check_signal_names(names: Any, path: str) -> list[str]:
    """Stop signals (``SIGTERM``, ``USR1``, ...) as ``SIG*`` names: those schedulers and launchers send to end a job."""
    if not isinstance(names, list):
        raise InputError(f"{path}={names!r} must be a list of signal names, e.g. {path}=[SIGTERM,SIGUSR1]")
    out = []
    for name in names:
        text = str(name).upper()
        text = text if text.startswith("SIG") else f"SIG{text}"
        if text not in STOP_SIGNAL_CHOICES or not hasattr(signal, text):
            raise InputError(f"{path}: {name!r} is not a stop signal; choose from {', '.join(STOP_SIGNAL_CHOICES)}")
        out.append(text)
    return out


def _opt(default: Any, *, choices: tuple | None = None, min: float | None = None,
         max: float | None = None, check: Callable[[Any, str], Any] | None = None, doc: str = "") -> Any:
    """A dataclass field carrying its validation rule in metadata (``check(value, path)`` returns
    the value, parsed, or raises InputError)."""
    meta = {"choices": choices, "min": min, "max": max, "check": check, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    """Which network, how many classes, where its weights come from."""
    name: str = _opt("resnet9_small", doc="a name from aadscale.models.list_models(), or timm/<any timm model>")
    num_classes: int = _opt(10, min=2)
    pretrained: str = _opt("", doc="'' (random init), 'torchvision', 'timm' (the hub's weights of a timm "
                                   "model) or a path to a weights file (state_dict; safetensors for timm)")
    in_channels: int = _opt(3, choices=(1, 3))
    dropout: float = _opt(0.0, min=0.0, max=0.99, doc="1 - the paper's keeprate")
    kwargs: dict = _opt({}, check=_check_mapping,
                        doc="timm models: keyword arguments of timm.create_model (depth, embed_dim, "
                            "img_size, patch_size, drop_path_rate, ...)")
    cam_layer: str = _opt("", doc="the network's module whose output is the Grad-CAM layer ('' = the "
                                  "model's own; timm transformers: a module with the blocks' token layout)")
    stem: str = _opt("patch", choices=("patch", "convstem"),
                     doc="timm ConvNeXt and ViT: their patch stem, or the convolutional stem of Singh, Croce "
                         "& Hein 2023 (ConvStem; its parameter names load their released checkpoints)")


@dataclass
class DataConfig:
    """Where images come from and how they are batched (images always float [0, 1])."""
    dataset: str = _opt("demo", choices=("demo", "imagenet", "folder", "cifar10", "mnist"))
    root: str = _opt("", doc="dataset folder; '' uses the built-in demo data under runs/")
    backend: str = _opt("torch", choices=("torch", "dali-cpu", "dali-gpu", "auto"))
    image_size: int = _opt(32, min=8)
    val_resize: int = _opt(0, min=0, doc="shorter side before the centre crop; 0 = image_size*256/224")
    batch_size: int = _opt(64, min=1, doc="global batch over all ranks and accumulation steps")
    workers: int = _opt(2, min=0)
    train_split: str = _opt("train")
    val_split: str = _opt("val")


@dataclass
class AugmentConfig:
    """Training augmentations beyond crop and flip, all off by default: per image in the loader
    (RandAugment, colour jitter, erasing), per batch on the device (Mixup/CutMix, timm's ``Mixup``)."""
    rand_augment: str = _opt("", doc="timm's RandAugment spec, e.g. 'rand-m9-mstd0.5-inc1'; '' = off")
    color_jitter: float = _opt(0.0, min=0.0, doc="brightness, contrast and saturation factor (timm's "
                                                 "--color-jitter); 0 = off")
    erasing: float = _opt(0.0, min=0.0, max=1.0, doc="random erasing probability per image (timm's --reprob); "
                                                    "the erased box is filled with uniform values in [0, 1]")
    mixup: float = _opt(0.0, min=0.0, doc="Mixup's Beta(alpha, alpha); 0 = off")
    cutmix: float = _opt(0.0, min=0.0, doc="CutMix's Beta(alpha, alpha); 0 = off")
    mix_prob: float = _opt(1.0, min=0.0, max=1.0, doc="probability that a batch is mixed at all")
    mix_switch: float = _opt(0.5, min=0.0, max=1.0, doc="probability of CutMix rather than Mixup when both are on")


@dataclass
class AttackConfig:
    """The training attack (L-inf, pixel space)."""
    name: str = _opt("pgd", choices=tuple(TRAINING_ATTACKS))
    eps: float = _opt(8 / 255, check=check_eps)
    alpha: float = _opt(0.0, min=0.0, max=1.0, doc="step size; 0 = 2.5*eps/steps (eps for one step)")
    steps: int = _opt(3, min=1)
    precision: str = _opt("fp32", choices=tuple(AUTOCAST),
                          doc="the training attack's forwards: float32, or under bf16/fp16 autocast; "
                              "evaluation attacks are always float32")
    warmup_epochs: int = _opt(0, min=0, doc="ramp the training attack up linearly over the first epochs "
                                            "(epoch e of n: (e + 1) / n of the full size); 0 = off")
    warmup: str = _opt("eps", choices=("eps", "alpha", "both"), doc="what warmup_epochs ramps: the budget "
                                                                    "eps, the step size alpha, or both")
    model_mode: str = _opt("eval", choices=("eval", "train"),
                           doc="the model's mode during the training attack: eval (the leaderboard recipes) "
                               "or train (batch statistics; the running statistics are left alone)")


@dataclass
class ObjectiveConfig:
    """The defense objective: base (plain, Madry, ALP) and the AAD attention terms."""
    name: str = _opt("madry+aad", choices=tuple(OBJECTIVES))
    lambda1: float = _opt(LAMBDA1, min=0.0, doc="weight of the rectification term (default: level with "
                                                "the base in the demo's lambda sweep, BENCHMARKS.md)")
    lambda2: float = _opt(LAMBDA2, min=0.0, doc="weight of the preservation term (default: as lambda1's)")
    beta: float = _opt(0.5, min=0.0, doc="ALP logit-pairing weight")
    cls_loss: str = _opt("ce", choices=("ce", "soft_margin"))
    cam_weights: str = _opt("full", choices=("full", "detach"))
    theta: str | float = _opt("mean", check=parse_theta, doc="attention threshold: 'mean' or a number")
    bn_stats: str = _opt("both", choices=BN_STATS,
                         doc="the training forwards that update BatchNorm running statistics, in "
                             "madry, alp and their +aad alike (clean, adv, both, or base: those the base "
                             "trains on; AAD's masked forwards never): madry with both/clean adds a clean "
                             "forward for them alone, so madry is AAD's control at the same value; madry "
                             "with adv/base is textbook Madry. 'both' is what the demo study supports "
                             "(BENCHMARKS.md)")
    cam_layer: str = _opt("", doc="Grad-CAM layer of the AAD terms; '' = the model's .cam_layer")
    label_smoothing: float = _opt(0.0, min=0.0, max=0.99, doc="label smoothing of L_cls (the training "
                                                               "attack's loss is not smoothed)")
    trades_beta: float = _opt(6.0, min=0.0, doc="TRADES' weight of KL(f(x) || f(x_adv)) (Zhang et al. 2019: 6)")


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule."""
    name: str = _opt("sgd", choices=("sgd", "adamw", "rmsprop"))
    lr: float = _opt(0.05, min=0.0)
    momentum: float = _opt(0.9, min=0.0, max=1.0)
    weight_decay: float = _opt(5e-4, min=0.0)
    schedule: str = _opt("cosine", choices=("constant", "paper", "step", "cosine"))
    decay_rate: float = _opt(0.94, min=0.0, max=1.0, doc="'paper'/'step': lr *= decay_rate ...")
    decay_epochs: float = _opt(2.0, min=0.0, doc="... every decay_epochs epochs")
    warmup_steps: int = _opt(0, min=0)
    grad_clip: float = _opt(0.0, min=0.0, doc="max gradient norm; 0 = off")
    betas: list = _opt([0.9, 0.999], check=check_betas, doc="AdamW's (beta1, beta2)")
    no_decay_1d: bool = _opt(False, doc="no weight decay on biases, norms and other 1-D parameters, nor on "
                                        "what the model's no_weight_decay() names (timm's parameter groups)")
    layer_decay: float = _opt(0.0, min=0.0, max=1.0, doc="layer-wise lr decay for fine-tuning (timm's "
                                                         "--layer-decay, e.g. 0.65); 0 = off")
    lr_base_size: int = _opt(0, min=0, doc="if > 0, optim.lr is per this many images and scales linearly "
                                           "with data.batch_size (timm's lr_base_size, e.g. 512)")
    implementation: str = _opt("auto", choices=("auto", "foreach", "fused", "loop"),
                               doc="torch's optimiser kernels: auto (torch's choice: foreach on CUDA, "
                                   "a loop over tensors on CPU), foreach, fused (sgd, adamw) or loop")


@dataclass
class TrainConfig:
    """Length, precision, sharding and checkpointing of the run."""
    epochs: int = _opt(1, min=1)
    max_steps: int = _opt(0, min=0, doc="stop after this many optimiser steps; 0 = no limit")
    seed: int = _opt(0, min=0)
    grad_accum: int = _opt(1, min=1)
    precision: str = _opt("fp32", choices=tuple(AUTOCAST))
    zero_stage: int = _opt(0, choices=(0, 1, 2, 3))
    checkpoint_every: int = _opt(0, min=0, doc="steps between checkpoints; 0 = only at epoch ends")
    keep_checkpoints: int = _opt(2, min=1)
    deterministic: bool = _opt(False)
    step_mode: str = _opt("eager", choices=("eager", "graph", "compile", "auto"),
                          doc="training attack: eager, CUDA graph, torch.compile, or auto "
                              "(graph on CUDA, eager elsewhere)")
    ema_decay: float = _opt(0.0, min=0.0, max=0.999999, doc="EMA of the weights (timm's ModelEmaV3), "
                                                             "updated every optimiser step; 0 = off")
    ema_export: bool = _opt(False, doc="model.pt holds the EMA weights (model_raw.pt the trained ones); "
                                       "else model.pt the trained ones and model_ema.pt the EMA")
    save_on_signal: bool = _opt(True, doc="on a stop signal every rank agrees on a step boundary soon after it, "
                                          "saves a checkpoint there and exits with code 75 (saved, resume me)")
    stop_signals: list = _opt(["SIGTERM", "SIGUSR1"], check=check_signal_names,
                              doc="the stop signals: SIGTERM (preemption, the launchers' shutdown), SIGUSR1 "
                                  "(SLURM's warning before the time limit, launchers/slurm_train.sh)")
    memory_format: str = _opt("auto", choices=MEMORY_FORMAT_CHOICES,
                              doc="weights and batches: channels_last (NHWC), contiguous (NCHW), or "
                                  "auto (channels_last on CUDA, contiguous elsewhere)")


@dataclass
class EvalConfig:
    """Robust evaluation on a held-out subset during and after training."""
    every_epochs: int = _opt(1, min=0, doc="0 = only at the end")
    attacks: list = _opt(["clean", "fgsm", "pgd10"], check=lambda names, path: [
        parse_attack_name(str(n)).name for n in names])
    eps: float | None = _opt(None, check=check_eps, doc="None (default): attack.eps, set by validate()")
    subset: int = _opt(256, min=1)
    batch_size: int = _opt(64, min=1)


@dataclass
class LogConfig:
    """Run folder, TensorBoard and console cadence."""
    dir: str = _opt("runs")
    name: str = _opt("", doc="run name; '' = <preset>-<time>")
    scalar_every: int = _opt(10, min=1)
    image_every: int = _opt(200, min=0, doc="steps between image grids; 0 = off")


@dataclass
class Config:
    """The whole run: one object flows from the entry point into the engine."""
    preset: str = "default"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)


def list_presets() -> list[str]:
    """Names of the YAML presets that ship with aadscale."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str) -> dict:
    """Read a preset by name (shipped) or by path to a YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise InputError(f"preset {name_or_path!r} not found; shipped presets: "
                         f"{', '.join(list_presets())}, or give a path to a .yaml file")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise InputError(f"preset {path} must hold a mapping, got {type(data).__name__}")
    data.setdefault("preset", path.stem)
    return data


def parse_overrides(items: list[str]) -> dict:
    """Turn ``["a.b=1", "c.d=x"]`` into a nested dict, values parsed as YAML scalars."""
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InputError(f"override {item!r} must look like section.field=value")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _coerce(value: Any, tp: Any, where: str) -> Any:
    if where in PIXEL_FIELDS:
        return value if value is None else parse_eps(value, where)
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise InputError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or
                                           (isinstance(value, float) and value.is_integer())):
            raise InputError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise InputError(f"{where}: expected a string, got {value!r}")
        return "" if value is None else str(value)
    if tp is list or origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise InputError(f"{where}: expected a list, got {value!r}")
        return list(value)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        return value
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise InputError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(names)}"
            raise InputError(f"unknown config field {path!r}{hint}")
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def _check(obj: Any, where: str = "") -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        path = f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(value):
            _check(value, path)
            continue
        meta = f.metadata
        if meta.get("choices") is not None and value not in meta["choices"]:
            raise InputError(f"{path}={value!r} is not valid; choose one of {list(meta['choices'])}")
        if meta.get("min") is not None and value < meta["min"]:
            raise InputError(f"{path}={value!r} must be >= {meta['min']}")
        if meta.get("max") is not None and value > meta["max"]:
            raise InputError(f"{path}={value!r} must be <= {meta['max']}")
        if meta.get("check") is not None:
            setattr(obj, f.name, meta["check"](value, path))


def check_fused_optimizer(optim: OptimConfig) -> None:
    """Refuse ``optim.implementation=fused`` for an optimiser torch has no fused kernel for."""
    if optim.implementation == "fused" and optim.name not in FUSED_OPTIMIZERS:
        raise InputError(f"optim.implementation=fused is not available for optim.name={optim.name!r} "
                         f"(only {', '.join(FUSED_OPTIMIZERS)}); use foreach or auto")


def validate(cfg: Config) -> Config:
    """Check every field's rule and the cross-field constraints; raise InputError naming the field.

    An unset ``eval.eps`` becomes ``attack.eps``: a run evaluates at the eps it trains at unless told.
    """
    if cfg.eval.eps is None:
        cfg.eval.eps = cfg.attack.eps
    _check(cfg)
    check_fused_optimizer(cfg.optim)
    if cfg.attack.name == "none" and objective_kind(cfg.objective.name).needs_attack:
        raise InputError(f"objective.name={cfg.objective.name!r} needs a training attack; set attack.name "
                         f"to one of {[k for k, v in TRAINING_ATTACKS.items() if v]}, or objective.name=plain")
    _check_recipe(cfg)
    if cfg.train.precision == "fp16" and cfg.train.zero_stage > 0:
        # DeepSpeed scales an autocast fp16 loss at ZeRO-0 only; measured on the demo at ZeRO-2:
        # 6 of the first 8 steps had non-finite gradients and were skipped
        raise InputError(f"train.precision=fp16 with train.zero_stage={cfg.train.zero_stage} trains without "
                         "loss scaling (DeepSpeed scales the fp16 loss at ZeRO-0 only), so fp16 gradients "
                         "overflow and their steps are lost; use train.precision=bf16, or train.zero_stage=0")
    return cfg


def _check_recipe(cfg: Config) -> None:
    """The cross-field rules of the recipe's fields (TRADES' attack, APGD's step, EMA under ZeRO-3)."""
    kind = objective_kind(cfg.objective.name)
    if kind.attack_loss == "kl" and cfg.attack.name != "pgd":
        raise InputError(f"objective.name={cfg.objective.name!r} trains on TRADES' attack, PGD on its KL term: "
                         f"set attack.name=pgd (attack.steps, attack.alpha size it), not {cfg.attack.name!r}")
    if cfg.attack.name == "apgd" and cfg.attack.warmup_epochs and cfg.attack.warmup != "eps":
        raise InputError(f"attack.warmup={cfg.attack.warmup!r} ramps the step size, which APGD sets itself "
                         "(2 eps, halved at its checkpoints); use attack.warmup=eps with attack.name=apgd")
    if cfg.train.ema_decay and cfg.train.zero_stage == 3:
        raise InputError("train.ema_decay needs every rank to hold the whole model, which ZeRO-3 partitions; "
                         "use train.zero_stage <= 2 with the EMA (ZeRO-2 already shards the optimiser state "
                         "and gradients), or train.ema_decay=0")


def to_dict(cfg: Config) -> dict:
    """The config as plain nested dicts (for YAML, TensorBoard hparams, Ray)."""
    return dataclasses.asdict(cfg)


def from_dict(data: dict) -> Config:
    """Build and validate a Config from nested dicts (unknown keys are errors)."""
    return validate(_build(Config, data, ""))


def load_config(preset: str | None = None, overrides: list[str] | None = None,
                extra: dict | None = None) -> Config:
    """Defaults < preset YAML < ``extra`` dict < ``a.b=c`` overrides, validated."""
    data: dict = load_preset(preset) if preset else {}
    if extra:
        data = _merge(data, extra)
    if overrides:
        data = _merge(data, parse_overrides(overrides))
    return from_dict(data)


def field_names(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted field name of the config (for sweeps and error messages)."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        name = f"{prefix}{f.name}"
        out.extend(field_names(tp, name + ".") if dataclasses.is_dataclass(tp) else [name])
    return out


def git_commit() -> str:
    """The source tree's commit (with '+dirty' when modified), or 'unknown' outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def dump_yaml(cfg: Config, path: Path) -> None:
    """Write the resolved config and the git commit next to a run."""
    data = {"git_commit": git_commit(), **to_dict(cfg)}
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def load_run_config(path: Path) -> Config:
    """Read a config.yaml written by ``dump_yaml`` back into a Config."""
    data = yaml.safe_load(Path(path).read_text())
    data.pop("git_commit", None)
    return from_dict(data)
