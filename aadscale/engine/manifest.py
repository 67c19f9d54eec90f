"""A checkpoint's record of its files (size and sha256), written before ``latest`` names it; the check of a
checkpoint against it, and the choice of the checkpoint a resume loads."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterable

from aadscale.atomic import atomic_write_text
from aadscale.errors import InputError

MANIFEST = "manifest.json"
ALGORITHM = "sha256"  # 0.7-1.0 GB/s on one CPU core (BENCHMARKS.md, "Checkpoint records")
log = logging.getLogger("aadscale.engine")


def recorded_names(folder: Path) -> list[str]:
    """The files of checkpoint ``folder`` a record covers: every visible file but the record itself."""
    return sorted(p.name for p in folder.iterdir()
                  if p.is_file() and p.name != MANIFEST and not p.name.startswith("."))


def digest(path: Path) -> dict:
    """``{"size": bytes, "sha256": hex digest}`` of the file ``path``."""
    hasher = hashlib.new(ALGORITHM)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        for chunk in iter(lambda: f.read(1 << 20), b""):  # hashlib.file_digest needs Python 3.11
            hasher.update(chunk)
    return {"size": size, ALGORITHM: hasher.hexdigest()}


def record(folder: Path, names: Iterable[str]) -> dict[str, dict]:
    """``digest`` of each of ``names`` in ``folder``."""
    return {name: digest(folder / name) for name in names}


def write_manifest(folder: Path, files: dict[str, dict]) -> Path:
    """``folder/manifest.json`` recording ``files`` (name -> ``digest``), written atomically."""
    return atomic_write_text(folder / MANIFEST, json.dumps({"files": dict(sorted(files.items()))}, indent=1) + "\n")


def damage(folder: Path) -> list[str] | None:
    """What is wrong with checkpoint ``folder`` against its record: [] when whole, None when it has no record."""
    if not folder.is_dir():
        return ["its folder is missing"]
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        files = json.loads(path.read_text())["files"]
    except (ValueError, KeyError, TypeError) as err:
        return [f"{MANIFEST} is unreadable ({err!r})"]
    problems = []
    for name, want in files.items():
        file = folder / name
        if not file.is_file():
            problems.append(f"{name} is missing")
        elif (size := file.stat().st_size) != want["size"]:
            problems.append(f"{name} has {size} bytes where its record says {want['size']}")
        elif digest(file)[ALGORITHM] != want[ALGORITHM]:
            problems.append(f"{name} has other bytes than its record ({ALGORITHM} differs)")
    return problems


def newest_first(directory: Path) -> list[str]:
    """The checkpoint tags under ``directory``, the newest record (a folder without one: the folder) first."""
    def written(folder: Path) -> float:
        return (folder / MANIFEST if (folder / MANIFEST).is_file() else folder).stat().st_mtime
    return [p.name for p in sorted((p for p in directory.iterdir() if p.is_dir()), key=written, reverse=True)]


def _unverified(tag: str) -> str:
    return f"checkpoint {tag} has no {MANIFEST} recording its files: resuming from it unverified"


def choose(directory: Path, latest: str | None, resume: str) -> str | None:
    """The checkpoint tag ``resume`` loads, warning in the log about any it passes over.

    A tag must be whole (InputError naming what is wrong and the whole tags otherwise);
    "auto" takes the one ``latest`` names or, when that is damaged or missing, the newest
    checkpoint whose record verifies; None when ``latest`` names none. A checkpoint without
    a record loads unverified when named (by ``latest`` or the tag), but is no fallback: it
    may be a save cut short.
    """
    if resume != "auto":
        problems = damage(directory / resume)
        if problems:
            whole = [t for t in newest_first(directory) if t != resume and damage(directory / t) == []]
            raise InputError(f"checkpoint {directory / resume} is not whole: {'; '.join(problems)}. Whole checkpoints: "
                             f"{', '.join(whole) or 'none'}; resume one of them with --resume <tag>, or the "
                             "newest with --resume auto")
        if problems is None:
            log.warning(_unverified(resume))
        return resume
    if latest is None:
        return None
    passed: dict[str, list[str]] = {}
    for tag in [latest, *(t for t in newest_first(directory) if t != latest)]:
        problems = damage(directory / tag)
        if problems == [] or (problems is None and tag == latest):
            for old, reasons in passed.items():
                log.warning("checkpoint %s is not whole (%s); resuming from %s, the newest whole checkpoint",
                            old, "; ".join(reasons), tag)
            if problems is None:
                log.warning(_unverified(tag))
            return tag
        passed[tag] = problems or [f"no {MANIFEST}, so it may be a save cut short; --resume {tag} loads it unverified"]
    raise InputError(f"no checkpoint under {directory} is whole: "
                     + "; ".join(f"{tag}: {', '.join(reasons)}" for tag, reasons in passed.items())
                     + ". Restore a checkpoint folder from a copy, or start a new run under another --name")
