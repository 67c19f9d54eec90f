"""AAD training steps (PGD + Grad-CAM double backward) on 2 CPU ranks under the real launchers."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from dslaunch import run, run_deepspeed, shm_segments

SCRIPT = Path(__file__).with_name("distributed_aad_step.py")


def results(proc: subprocess.CompletedProcess, nprocs: int) -> list[dict]:
    """The RESULT lines of every rank, sorted by rank; fail with the launcher output otherwise."""
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = [json.loads(line.split("RESULT ", 1)[1]) for line in proc.stdout.splitlines()
            if line.startswith("RESULT ")]
    assert len(rows) == nprocs, proc.stdout[-4000:]
    return sorted(rows, key=lambda r: r["rank"])


def check_data_parallel_step(rows: list[dict], zero: int) -> None:
    """Every rank trained its own data, and all ended with the same, changed, weights."""
    world = len(rows)
    assert [r["rank"] for r in rows] == list(range(world))
    assert all(r["world"] == world and r["zero"] == zero and r["micro"] == 8 // world for r in rows)
    assert [r["is_main"] for r in rows] == [True] + [False] * (world - 1)
    assert all(r["rank_sum"] == world * (world + 1) / 2 for r in rows)
    assert all(r["broadcast"] == {"from": 0} for r in rows)
    assert all(math.isfinite(v) for r in rows for v in r["losses"])
    if world > 1:
        assert rows[0]["losses"] != rows[1]["losses"]  # different shards of data
    assert all(r["checksum"] == pytest.approx(rows[0]["checksum"], rel=1e-6) for r in rows)
    assert rows[0]["checksum"] != pytest.approx(rows[0]["checksum_before"], rel=1e-7)


@pytest.mark.slow
def test_deepspeed_launcher_zero3_aad_step():
    # ZeRO-2 and torchrun are exercised with the whole engine in test_engine_launch.py
    before = shm_segments()
    proc = run_deepspeed(SCRIPT, ["--zero", "3"], nprocs=2, timeout=300)
    assert "Setting accelerator to CPU" in proc.stdout + proc.stderr
    check_data_parallel_step(results(proc, 2), 3)
    assert shm_segments() <= before  # 69 MB of RAM per rank would stay behind otherwise


@pytest.mark.slow
def test_plain_single_process_aad_step():
    proc = run([sys.executable, str(SCRIPT), "--zero", "2"], timeout=300)
    check_data_parallel_step(results(proc, 1), 2)
