"""What a resume may change: the saved config, classes and world size against the new run's, before DeepSpeed loads."""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from aadscale.config import Config, field_names, from_dict, load_run_config, to_dict
from aadscale.data.classes import class_difference
from aadscale.data.loader import Loader
from aadscale.data.sampler import num_batches
from aadscale.engine.checkpoint import Checkpointer
from aadscale.errors import InputError

# Fields (or whole sections) a resumed run may change: how long it runs, how often it saves,
# logs and evaluates, where the same data lives and how it is read, which kernels compute
# the same maths. Anything else changes what the weights are trained on or with.
ALLOWED_ON_RESUME = (
    "preset", "log", "eval",
    "train.epochs", "train.max_steps", "train.checkpoint_every", "train.keep_checkpoints",
    "train.deterministic", "train.step_mode", "train.memory_format", "train.save_on_signal", "train.stop_signals",
    "optim.implementation",
    "data.root", "data.workers", "data.backend", "data.val_split", "data.val_resize",
    "model.pretrained",  # the starting weights, which the checkpoint's replace
)
# Fields that shape the weights' tensors: no override loads a checkpoint into another of them.
ARCHITECTURE = ("model.name", "model.num_classes", "model.in_channels", "model.kwargs")


@dataclass
class SavedRun:
    """What a checkpoint was trained with: its config, its classes (None if not recorded), where it is and
    how many ranks wrote it."""
    config: Config
    classes: list[str] | None
    where: Path
    world_size: int


def read_saved_run(checkpointer: Checkpointer, tag: str, run_config: Path) -> SavedRun:
    """The checkpoint's config and classes; a checkpoint older than its ``client_state.json``
    falls back to the run folder's ``config.yaml`` and no classes."""
    where = checkpointer.folder(tag)
    client = checkpointer.client_state(tag)
    world_size = checkpointer.saved_world_size(tag)
    try:
        if client is None:
            return SavedRun(load_run_config(run_config), None, where, world_size)
        return SavedRun(from_dict(client["config"]), client.get("classes"), where, world_size)
    except InputError as err:
        raise InputError(f"checkpoint {where} holds a config this version cannot read ({err}); resume "
                         "it with the aadscale version that wrote it") from None


def _value(tree: dict, name: str) -> Any:
    for part in name.split("."):
        tree = tree[part]
    return tree


def _covered(name: str, patterns: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in patterns)


def _same(old: Any, new: Any) -> bool:
    # numbers equal to 6 digits are the same setting (presets once wrote 4/255 as 0.0156863)
    if isinstance(old, float) and isinstance(new, float):
        return math.isclose(old, new, rel_tol=1e-5)
    return old == new


def config_changes(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """``{field: (old value, new value)}`` for every config field that differs."""
    a, b = to_dict(old), to_dict(new)
    return {n: (_value(a, n), _value(b, n)) for n in field_names() if not _same(_value(a, n), _value(b, n))}


def check_allow_names(names: Sequence[str]) -> None:
    """Refuse an ``allow_changes`` entry that is neither a config field nor a section."""
    fields = field_names()
    for name in names:
        if not any(_covered(f, [name]) for f in fields):
            close = difflib.get_close_matches(name, fields, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "e.g. objective.lambda1 or objective"
            raise InputError(f"--allow-change {name!r} is not a config field or section; {hint}")


def describe_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    """``field: old -> new, ...`` (for errors and the log)."""
    return ", ".join(f"{n}: {old!r} -> {new!r}" for n, (old, new) in changes.items())


def check_resume_config(saved: SavedRun, cfg: Config,
                        allow_changes: Sequence[str] = ()) -> dict[str, tuple[Any, Any]]:
    """Refuse another architecture, or a change outside ``ALLOWED_ON_RESUME`` and ``allow_changes``;
    return the changes that pass (for the log)."""
    check_allow_names(allow_changes)
    changes = config_changes(saved.config, cfg)
    if any(n in ARCHITECTURE for n in changes):
        shown = [n for n in ARCHITECTURE if n in ("model.name", "model.num_classes") or n in changes]
        old, new = (", ".join(f"{n}={_value(to_dict(c), n)}" for n in shown) for c in (saved.config, cfg))
        raise InputError(f"checkpoint {saved.where} was trained with {old}; this run has {new}. Resume "
                         "with the checkpoint's model settings, or start a new run under another --name")
    refused = {n: v for n, v in changes.items() if not _covered(n, ALLOWED_ON_RESUME + tuple(allow_changes))}
    if refused:
        raise InputError(
            f"resuming checkpoint {saved.where} would change how the run trains: {describe_changes(refused)}. "
            "Drop these overrides to continue the run as it was, or start a new run under another --name; "
            f"to change them on purpose pass --allow-change {','.join(refused)} "
            f"(fit(..., allow_changes=[...])). A resume may change {', '.join(ALLOWED_ON_RESUME)}")
    return changes


def check_resume_classes(saved: SavedRun, classes: Sequence[str]) -> None:
    """Refuse data whose classes (names and order give the labels) are not the checkpoint's."""
    if saved.classes is None:
        return
    difference = class_difference(saved.classes, classes, ("the checkpoint", "the data"))
    if difference:
        raise InputError(f"checkpoint {saved.where} was trained on other classes than this data has: "
                         f"{difference}. Point --data at the run's data (its classes.json lists them)")


def epoch_micro_batches(size: int, batch_size: int, grad_accum: int, world_size: int) -> int | None:
    """Micro-batches per rank in an epoch of ``size`` samples (the train loader's length); None when the
    global batch does not split over ``world_size`` x ``grad_accum``."""
    if batch_size % (world_size * grad_accum):
        return None
    return num_batches(math.ceil(size / world_size), batch_size // (world_size * grad_accum), drop_last=True)


def _world_sizes(saved: SavedRun, world_size: int, works: Callable[[int], bool]) -> str:
    """The world sizes up to twice the larger of the two for which ``works``, as text for an error."""
    return ", ".join(str(w) for w in range(1, 2 * max(world_size, saved.world_size) + 1) if works(w))


def check_resume_world_size(saved: SavedRun, cfg: Config, world_size: int) -> bool:
    """Refuse another world size that cannot split the global batch, or ZeRO 1-3 state DeepSpeed's universal
    checkpoint cannot re-partition (optimisers other than AdamW); True when the ZeRO state needs that conversion."""
    if saved.world_size == world_size:
        return False
    batch, accum = cfg.data.batch_size, cfg.train.grad_accum
    if batch % (world_size * accum):
        raise InputError(f"checkpoint {saved.where} was saved by {saved.world_size} rank(s); data.batch_size={batch} "
                         f"(the global batch) does not split over {world_size} rank(s) x train.grad_accum={accum}. "
                         f"Resume on {_world_sizes(saved, world_size, lambda w: batch % (w * accum) == 0)} "
                         "rank(s) to continue the run as it was")
    stage, optimiser = saved.config.train.zero_stage, saved.config.optim.name
    if stage > 0 and optimiser != "adamw":
        raise InputError(f"checkpoint {saved.where} holds ZeRO stage {stage} optimiser state partitioned over "
                         f"{saved.world_size} rank(s); only DeepSpeed's universal checkpoint re-partitions it for "
                         f"{world_size}, and its converter knows Adam's state only (optim.name={optimiser}). Resume "
                         f"on {saved.world_size} rank(s)")
    return stage > 0


def check_resume_epoch(saved: SavedRun, loader: Loader) -> None:
    """Refuse another world size under which an epoch has another number of micro-batches (``epoch_order`` pads
    to a multiple of the world size), so other steps, epoch boundaries and learning rates than the saved run's."""
    if saved.world_size == loader.world_size:
        return
    old, size = saved.config, loader.size
    length = epoch_micro_batches(size, old.data.batch_size, old.train.grad_accum, saved.world_size)
    if len(loader) == length:
        return
    same = _world_sizes(saved, loader.world_size,
                        lambda w: epoch_micro_batches(size, old.data.batch_size, old.train.grad_accum, w) == length)
    raise InputError(f"checkpoint {saved.where} was saved by {saved.world_size} rank(s), where an epoch of the {size} "
                     f"training samples has {length} micro-batches per rank; on {loader.world_size} rank(s) it has "
                     f"{len(loader)} (the sample order is padded to a multiple of the ranks), so the run would take "
                     f"other steps. Resume on {same} rank(s) to continue the run as it was")
