"""An evaluation's output folder: claimed with what it evaluates (``meta.json``), so a resume continues
only the same evaluation."""
from __future__ import annotations

import json
from pathlib import Path

from aadscale.atomic import atomic_write_text
from aadscale.distributed import barrier
from aadscale.errors import InputError


def claim_folder(out: Path, spec: dict, rank: int) -> None:
    """Rank 0 creates ``out`` with ``meta.json`` = ``spec``, or checks an existing one matches; all ranks wait."""
    meta = out / "meta.json"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if meta.exists():
            old = json.loads(meta.read_text())
            diff = [k for k, v in spec.items() if old.get(k) != v]
            if diff:
                raise InputError(f"{out} holds another evaluation ({', '.join(diff)} differ); "
                                 "use a new --out folder or delete this one")
        else:
            atomic_write_text(meta, json.dumps(spec, indent=1))
    barrier()
