"""Checkpoints: DeepSpeed's sharded state + per-rank RNG and buffers + loop position, atomic, loaded weights_only."""
from __future__ import annotations

import argparse
import json
import logging
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

from aadscale.atomic import atomic_torch_save, atomic_write_text
from aadscale.data.sampler import mix_seed
from aadscale.distributed import DistContext, all_gather_object, barrier, broadcast_object
from aadscale.engine.manifest import choose, record, recorded_names, write_manifest
from aadscale.errors import InputError

LATEST = "latest"
CLIENT_JSON = "client_state.json"  # the client state again, readable before DeepSpeed loads anything
EMA_FILE = "ema.pt"  # the EMA of the weights (train.ema_decay), written by rank 0
_RANK_FILE = re.compile(r"(?:zero_pp_rank_|rng_rank)(\d+)")  # DeepSpeed's ZeRO shards, our RNG files
UNIVERSAL = "universal"  # inside a ZeRO 1-3 checkpoint: DeepSpeed's universal form of it, which loads on any world size
log = logging.getLogger("aadscale.engine")


def files_of_rank(names: Sequence[str], rank: int) -> list[str]:
    """The files of a checkpoint folder that ``rank`` wrote (its ZeRO shards and RNG; rank 0 the rest)."""
    out = []
    for name in names:
        m = _RANK_FILE.search(name)
        if (int(m.group(1)) if m else 0) == rank:
            out.append(name)
    return sorted(out)


def zero_state_classes() -> list[type]:
    """The plain-data classes DeepSpeed pickles into ZeRO 1-3 optimiser state (found with
    ``torch.serialization.get_unsafe_globals_in_checkpoint`` on ZeRO 1, 2, 3 checkpoints, SGD and AdamW)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address
    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def check_pickled_classes(folder: Path) -> None:
    """Refuse checkpoint files that pickle classes beyond ``zero_state_classes`` (found without unpickling)."""
    allowed = {f"{c.__module__}.{c.__qualname__}" for c in zero_state_classes()}
    for path in sorted(folder.glob("*.pt")):
        unexpected = sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path))) - allowed)
        if unexpected:
            raise InputError(f"{path} pickles {', '.join(unexpected)}, which aadscale checkpoints never hold; "
                             f"DeepSpeed's universal converter would unpickle it. Resume {folder} on the world "
                             "size that saved it, or restore the checkpoint from a trusted copy")


class SafeCheckpointEngine(TorchCheckpointEngine):
    """DeepSpeed's torch checkpoint engine, but every file is read with ``weights_only=True``
    (DeepSpeed's own plain-data classes of ZeRO state allowed, nothing else)."""

    def load(self, path: str, map_location=None):
        with torch.serialization.safe_globals(zero_state_classes()):
            return torch.load(path, map_location=map_location, weights_only=True)


def rng_state(generator: torch.Generator) -> dict:
    """Every random state a step touches: python, numpy, torch, CUDA, the attack generator."""
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
             "attack": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def rank_buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """This rank's persistent buffers (BatchNorm's running statistics): each rank updates its own
    from its shard, and DeepSpeed's checkpoint holds rank 0's only."""
    return {f"{prefix}.{name}" if prefix else name: buf.detach().cpu().clone()
            for prefix, mod in module.named_modules() for name, buf in mod.named_buffers(recurse=False)
            if buf is not None and name not in mod._non_persistent_buffers_set}


def load_rank_buffers(module: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """Inverse of ``rank_buffers``, in place (a captured graph keeps its buffer addresses)."""
    own = dict(module.named_buffers())
    with torch.no_grad():
        for name, value in saved.items():
            own[name].copy_(value)


def seed_rank_streams(seed: int, rank: int, step: int, generator: torch.Generator) -> None:
    """Seed every stream ``rng_state`` covers from (seed, rank, step): for a rank the checkpoint holds no RNG of."""
    value = mix_seed(seed, rank, step)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)  # CUDA's generators too
    generator.manual_seed(value)


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    """Inverse of ``rng_state``."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    generator.set_state(state["attack"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """Saves and restores training state under ``directory/<tag>/``; ``directory/latest`` names the newest.

    A checkpoint counts only once ``latest`` points to it, and ``latest`` is replaced
    atomically after every rank has written its part and ``manifest.json`` records every
    file's size and sha256: a run killed while saving resumes from the previous checkpoint,
    and a resume passes over a checkpoint damaged since (``manifest.choose``).
    """

    def __init__(self, directory: Path, keep: int, ctx: DistContext) -> None:
        self.directory, self.keep, self.ctx = Path(directory), keep, ctx
        self.directory.mkdir(parents=True, exist_ok=True)

    def latest(self) -> str | None:
        """Tag of the newest checkpoint saved whole (its folder may have been damaged or removed since), or None."""
        path = self.directory / LATEST
        return path.read_text().strip() if path.is_file() else None

    def resume_tag(self, resume: str) -> str | None:
        """The tag ``resume`` ("auto" or a tag) loads, chosen on rank 0 (``manifest.choose``) for every rank."""
        decision: tuple[str | None, str | None] = (None, None)
        if self.ctx.is_main:
            try:
                decision = (choose(self.directory, self.latest(), resume), None)
            except InputError as err:
                decision = (None, str(err))
        tag, error = broadcast_object(decision)
        if error is not None:
            raise InputError(error)
        return tag

    def save(self, engine, tag: str, client_state: dict, generator: torch.Generator,
             ema: torch.nn.Module | None = None) -> Path:
        """Write this rank's RNG and buffers, the client state as JSON and the EMA of the weights
        (rank 0: every rank holds the same), then DeepSpeed's state (collective), then the record of
        every rank's files, then point ``latest`` at it."""
        folder = self.directory / tag
        folder.mkdir(parents=True, exist_ok=True)
        own = {**rng_state(generator), "buffers": rank_buffers(engine.module)}
        atomic_torch_save(own, folder / f"rng_rank{self.ctx.rank}.pt")
        if self.ctx.is_main:
            atomic_write_text(folder / CLIENT_JSON, json.dumps(client_state, indent=1) + "\n")
            if ema is not None:
                atomic_torch_save(ema.state_dict(), folder / EMA_FILE)
        engine.save_checkpoint(str(self.directory), tag=tag, client_state=client_state, save_latest=False)
        parts = all_gather_object(record(folder, files_of_rank(recorded_names(folder), self.ctx.rank)))
        if self.ctx.is_main:
            write_manifest(folder, {name: entry for part in parts for name, entry in part.items()})
        barrier()
        if self.ctx.is_main:
            atomic_write_text(self.directory / LATEST, tag)
            self._prune(tag)
        barrier()
        return folder

    def folder(self, tag: str) -> Path:
        """The folder of checkpoint ``tag``, which must exist."""
        folder = self.directory / tag
        if not folder.is_dir():
            raise InputError(f"checkpoint {folder} does not exist; use --resume auto or a tag from "
                             f"{sorted(p.name for p in self.directory.iterdir() if p.is_dir())}")
        return folder

    def client_state(self, tag: str) -> dict | None:
        """The client state ``save`` was given, read without DeepSpeed; None for a checkpoint
        written before ``client_state.json`` existed."""
        path = self.folder(tag) / CLIENT_JSON
        return json.loads(path.read_text()) if path.is_file() else None

    def saved_world_size(self, tag: str) -> int:
        """How many ranks wrote checkpoint ``tag``: its client state says; older ones hold an RNG file per rank."""
        client = self.client_state(tag)
        if client is not None and "world_size" in client:
            return int(client["world_size"])
        return len(list(self.folder(tag).glob("rng_rank*.pt")))

    def universal(self, tag: str) -> Path:
        """DeepSpeed's universal form of ZeRO 1-3 checkpoint ``tag``, made once by rank 0 into ``<tag>/universal/``
        (``deepspeed.checkpoint.ds_to_universal``, which converts Adam's optimiser state only)."""
        folder = self.folder(tag)
        target = folder / UNIVERSAL
        if not target.is_dir():
            check_pickled_classes(folder)  # every rank, so that all of them stop on a refusal
            if self.ctx.is_main:
                from deepspeed.checkpoint import ds_to_universal
                log.info("converting checkpoint %s to DeepSpeed's universal checkpoint in %s", folder, target)
                # the converter also writes latest_universal beside its output: both go into a scratch folder
                with tempfile.TemporaryDirectory(prefix=".universal-", dir=folder) as scratch:
                    out = Path(scratch) / UNIVERSAL
                    ds_to_universal.main(argparse.Namespace(
                        input_folder=str(folder), output_folder=str(out), num_extract_workers=1,
                        num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=True))
                    out.rename(target)
        barrier()
        return target

    def load(self, engine, tag: str, generator: torch.Generator, ema: torch.nn.Module | None = None, *,
             seed: int, universal: bool = False) -> dict:
        """Restore model, optimiser, scheduler, this rank's RNG and buffers, the EMA if given; return the
        loop's client state. ``universal``: the ZeRO state through DeepSpeed's universal form (another world
        size). A rank the checkpoint has no RNG of draws from (``seed``, rank, step) and takes rank 0's buffers."""
        folder = self.folder(tag)
        engine.checkpoint_engine = SafeCheckpointEngine(engine._config)
        if universal:
            engine._config.load_universal_checkpoint = True  # deepspeed 0.19.8 reads it in load_checkpoint only
            path, client = engine.load_checkpoint(str(folder), tag=self.universal(tag).name)
        else:
            path, client = engine.load_checkpoint(str(self.directory), tag=tag)
        if path is None:
            raise InputError(f"DeepSpeed could not load checkpoint {folder}; is it complete?")
        saved_ranks = self.saved_world_size(tag)
        if self.ctx.rank < saved_ranks:
            rng_file = folder / f"rng_rank{self.ctx.rank}.pt"
            if not rng_file.is_file():
                raise InputError(f"{rng_file} is missing from checkpoint {folder}, which {saved_ranks} ranks "
                                 "wrote; restore the file or resume from another checkpoint")
            own = torch.load(rng_file, weights_only=True)
            set_rng_state(own, generator)
        else:
            seed_rank_streams(seed, self.ctx.rank, engine.global_steps, generator)
            own = torch.load(folder / "rng_rank0.pt", weights_only=True)
        load_rank_buffers(engine.module, own.get("buffers", {}))  # checkpoints before 2026-11-30 have none
        if ema is not None:
            if not (folder / EMA_FILE).is_file():
                raise InputError(f"{folder} holds no EMA of the weights ({EMA_FILE}): it was trained without "
                                 "train.ema_decay; resume with train.ema_decay=0, or start a new run")
            ema.load_state_dict(torch.load(folder / EMA_FILE, weights_only=True))
        return client

    def _prune(self, newest: str) -> None:
        tags = sorted((p for p in self.directory.iterdir() if p.is_dir() and p.name != newest),
                      key=lambda p: p.stat().st_mtime)
        for old in tags[:max(0, len(tags) - (self.keep - 1))]:
            shutil.rmtree(old, ignore_errors=True)
