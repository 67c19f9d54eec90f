"""Find files that do not decode, once per file listing (cached), before a DALI pipeline reads them."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from aadscale.atomic import atomic_write_text
from aadscale.data.sources import FileSamples
from aadscale.errors import InputError

log = logging.getLogger("aadscale.data")
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


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


def readable(samples: FileSamples, *, workers: int, cache_dir: Path | None = None) -> FileSamples:
    """``samples`` without the files that do not decode, each reported with a running count."""
    cache = (cache_dir or default_cache_dir()) / "scans" / (
        hashlib.sha1("\n".join(samples.paths).encode()).hexdigest() + ".json")
    if cache.is_file():
        bad = json.loads(cache.read_text())
    else:
        log.info("checking %d images for corrupt files (once; cached in %s)", len(samples), cache)
        if workers > 1 and len(samples) > 2000:
            with ProcessPoolExecutor(workers) as pool:  # a worker that dies raises, never hangs
                errors = list(pool.map(decode_error, samples.paths, chunksize=256))
        else:
            errors = [decode_error(p) for p in samples.paths]
        bad = {p: e for p, e in zip(samples.paths, errors) if e}
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache, json.dumps(bad))
    for count, (path, error) in enumerate(bad.items(), start=1):
        log.warning("unreadable image skipped (%d so far): %s (%s)", count, path, error)
    keep = [i for i, p in enumerate(samples.paths) if p not in bad]
    if not keep:
        raise InputError(f"none of the {len(samples)} images decodes (first: {samples.paths[0]}); "
                         "check the data folder")
    return samples.keep(keep)
