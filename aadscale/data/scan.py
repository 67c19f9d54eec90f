"""Find files that do not decode before a DALI pipeline reads them: the job's ranks share the check,
and a cache of each file's size and mtime re-decodes only new or changed files."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import ChainMap
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from aadscale.atomic import atomic_write_text
from aadscale.data.sources import FileSamples
from aadscale.distributed import all_gather_object, broadcast_object, is_main, rank_and_world
from aadscale.errors import InputError

log = logging.getLogger("aadscale.data")
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
NO_STAT = [None, None]  # the signature of a file that cannot be stat'ed: re-checked every time

# A cache entry is [size, mtime_ns, error]: error '' for a file that decodes.
Entries = dict[str, list]


def default_cache_dir() -> Path:
    """``$AADSCALE_CACHE`` or ``~/.cache/aadscale``."""
    return Path(os.environ.get("AADSCALE_CACHE", Path.home() / ".cache" / "aadscale"))


def decode_error(path: str) -> str:
    """Why ``path`` does not decode ('' when it does); JPEGs decode at 1/8 scale, which still reads every byte."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (1, 1))
            image.load()
    except UNREADABLE as err:
        return f"{type(err).__name__}: {err}"
    return ""


def signature(path: str) -> list:
    """``[size, mtime_ns]`` of ``path``: a file whose signature changed since the scan is decoded again."""
    try:
        stat = os.stat(path)
    except OSError:
        return NO_STAT
    return [stat.st_size, stat.st_mtime_ns]


def cache_file(paths: list[str], cache_dir: Path | None) -> Path:
    """The cache of the folder holding ``paths`` (its sha1): the same file when images come and go."""
    folder = os.path.abspath(os.path.dirname(os.path.commonprefix([min(paths), max(paths)])))
    return (cache_dir or default_cache_dir()) / "scans" / f"{hashlib.sha1(folder.encode()).hexdigest()}.json"


def load_entries(cache: Path) -> Entries:
    """The cached ``{path: [size, mtime_ns, error]}`` ({} before the first scan)."""
    return json.loads(cache.read_text()) if cache.is_file() else {}


def decode_errors(paths: list[str], workers: int) -> list[str]:
    """``decode_error`` of each path, in ``workers`` processes for long lists."""
    if workers > 1 and len(paths) > 2000:
        with ProcessPoolExecutor(workers) as pool:  # a worker that dies raises, never hangs
            return list(pool.map(decode_error, paths, chunksize=256))
    return [decode_error(p) for p in paths]


def check_share(paths: list[str], others: list[str], known: Entries,
                workers: int) -> tuple[Entries, list[str]]:
    """One rank's share: fresh entries for its ``paths`` that are new or changed since ``known`` (decoded
    now), and which of its ``others`` (cached but no longer listed) are gone from disk."""
    stats = {p: signature(p) for p in paths}
    todo = [p for p, sig in stats.items() if sig == NO_STAT or known.get(p, NO_STAT)[:2] != sig]
    updates = {p: [*stats[p], error] for p, error in zip(todo, decode_errors(todo, workers))}
    return updates, [p for p in others if not os.path.exists(p)]


def save(cache: Path, entries: Entries) -> None:
    """Write the cache atomically (readers never see half of it)."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache, json.dumps(entries))


def gather_shares(paths: list[str], others: list[str], known: Entries,
                  workers: int) -> tuple[Entries, set[str]]:
    """Every rank's share of the check (rank r takes every world-th file), gathered on every rank:
    the fresh entries and the cached files gone from disk."""
    rank, world = rank_and_world()
    shares = all_gather_object(check_share(paths[rank::world], others[rank::world], known, workers))
    updates = {p: entry for share, _ in shares for p, entry in share.items()}
    return updates, {p for _, gone in shares for p in gone}


def report(total: int, decoded: int, bad: dict[str, str], cache: Path) -> None:
    """Log how many images were decoded against taken from the cache, and each unreadable file."""
    log.info("corrupt-file check of %d images: %d decoded (new or changed), %d from the cache %s",
             total, decoded, total - decoded, cache)
    for count, (path, error) in enumerate(bad.items(), start=1):
        log.warning("unreadable image skipped (%d so far): %s (%s)", count, path, error)


def readable(samples: FileSamples, *, workers: int, cache_dir: Path | None = None) -> FileSamples:
    """``samples`` without the files that do not decode, each reported (by rank 0) with a running count.

    Collective: every rank of the process group calls it with the same listing, in the same order.
    The ranks share the check; only files new or changed (size, mtime) since rank 0's cache are
    decoded; every rank ends with the same list; rank 0 logs and writes the cache.
    """
    if not samples.paths:
        raise InputError("no images to check; the file listing is empty")
    cache = cache_file(samples.paths, cache_dir)
    known = broadcast_object(load_entries(cache) if is_main() else None)  # other nodes' caches may be older
    listed = set(samples.paths)
    others = [p for p in known if p not in listed]  # another listing of the folder, or removed files
    updates, gone = gather_shares(samples.paths, others, known, workers)
    entries = ChainMap(updates, known)
    bad = {p: entries[p][2] for p in samples.paths if entries[p][2]}
    if is_main():
        report(len(samples), len(updates), bad, cache)
        if updates or gone:
            save(cache, {p: entries[p] for p in [*samples.paths, *others] if p not in gone})
    keep = [i for i, p in enumerate(samples.paths) if p not in bad]
    if not keep:
        raise InputError(f"none of the {len(samples)} images decodes (first: {samples.paths[0]}); "
                         "check the data folder")
    return samples.keep(keep)
