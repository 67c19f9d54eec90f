"""The cost of a checkpoint's record of its files: hashing at save, verifying at resume, for ResNet-50.

    .venv/bin/python benchmarks/checkpoint_manifest.py
    .venv/bin/python benchmarks/checkpoint_manifest.py --repeats 9 --dir /scratch

The checkpoint is written the way DeepSpeed writes one at ZeRO-0 with one rank: torchvision's
ResNet-50 weights and buffers with SGD's momentum state in ``mp_rank_00_model_states.pt``,
beside the engine's ``rng_rank0.pt`` and ``client_state.json``. "record" is what every save
adds before ``latest`` moves (``manifest.record`` + ``write_manifest``), "verify" what a resume
adds before loading (``manifest.damage``); the save, a plain read, the cheapest checksum (CRC-32)
and the load put them in scale. The files sit in the page cache, as they do right after a save.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable

import torch
import torchvision

from aadscale.distributed import run_main
from aadscale.engine.manifest import ALGORITHM, damage, record, recorded_names, write_manifest

MODEL_STATES = "mp_rank_00_model_states.pt"
CHUNK = 1 << 20


def model_states() -> dict:
    """ResNet-50 after one SGD step with momentum, as DeepSpeed's ZeRO-0 model states hold it."""
    model = torchvision.models.resnet50()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model(torch.rand(2, 3, 64, 64)).sum().backward()
    optimizer.step()
    return {"module": model.state_dict(), "optimizer": optimizer.state_dict(), "lr_scheduler": None,
            "global_steps": 1, "global_samples": 2, "dp_world_size": 1, "mp_world_size": 1, "step": 1, "epoch": 0}


def write_checkpoint(folder: Path, states: dict) -> None:
    """The checkpoint's three files: the model states, this rank's RNG, the client state."""
    torch.save(states, folder / MODEL_STATES)
    torch.save({"torch": torch.get_rng_state()}, folder / "rng_rank0.pt")
    (folder / "client_state.json").write_text(json.dumps({"step": states["step"], "epoch": states["epoch"]}))


def fold(path: Path, update: Callable[[bytes, int], int]) -> int:
    """``update(chunk, value)`` over the file ``path`` in 1 MiB chunks, from 0 (``zlib.crc32``, or nothing)."""
    value = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            value = update(chunk, value)
    return value


def median_seconds(work: Callable[[], object], repeats: int) -> float:
    """The median wall time of ``work()`` over ``repeats`` calls, after one call that warms the page cache."""
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each operation (the median is shown)")
    parser.add_argument("--dir", default=None, help="where the checkpoint is written (default: a temporary folder)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: at least 1")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        states = model_states()
        save = median_seconds(lambda: write_checkpoint(folder, states), args.repeats)
        names = recorded_names(folder)
        size = sum((folder / n).stat().st_size for n in names)
        rows = {
            "save (torch.save of the three files)": save,
            "read every byte in 1 MiB chunks (the floor of any checksum)": median_seconds(
                lambda: [fold(folder / n, lambda chunk, value: value) for n in names], args.repeats),
            "zlib.crc32 of every file (the cheapest checksum, no manifest)": median_seconds(
                lambda: [fold(folder / n, zlib.crc32) for n in names], args.repeats),
            f"record: {ALGORITHM} of every file, then manifest.json": median_seconds(
                lambda: write_manifest(folder, record(folder, names)), args.repeats),
            "verify: manifest.damage (sizes, then every file's hash)": median_seconds(
                lambda: damage(folder), args.repeats),
            "load (torch.load of the model states, weights_only)": median_seconds(
                lambda: torch.load(folder / MODEL_STATES, weights_only=True), args.repeats),
        }
        assert damage(folder) == []
    print(f"ResNet-50 + SGD momentum, {len(names)} files, {size / 2 ** 20:.1f} MiB; torch {torch.__version__}, "
          f"median of {args.repeats}")
    print("| operation | seconds | MiB/s |")
    print("| --- | --- | --- |")
    for what, seconds in rows.items():
        print(f"| {what} | {seconds:.3f} | {size / 2 ** 20 / seconds:.0f} |")


if __name__ == "__main__":
    run_main(main)
