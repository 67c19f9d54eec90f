"""AutoAttack over a fixed list of images: sharded over ranks, resumable between attacks, every image's
fate recorded, the robust accuracy and a RobustBench-style report.

The images are cut into chunks of ``chunk_size`` in list order; chunk c belongs to rank
c % world and runs AutoAttack's cascade (``aadscale.attacks.autoattack.cascade``) with the same
seed whichever rank or run computes it, so a sharded or resumed evaluation gives the same
per-image result as one uninterrupted rank. A chunk's fates are saved (atomically) after the
clean pass and after every attack in ``chunks/<c>.json``; a rerun continues from there.
"""
from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import logging
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from aadscale.atomic import atomic_write_text
from aadscale.attacks.autoattack import AutoAttackPlan, Fates, cascade
from aadscale.distributed import all_gather_object, rank_and_world
from aadscale.errors import InputError
from aadscale.evaluate.folder import claim_folder

log = logging.getLogger("aadscale.evaluate")
ROBUST = "robust"  # the fate of an image no attack fooled


@dataclass
class AutoAttackSpec:
    """What is evaluated (``meta.json``); a resume must match it exactly."""
    version: str
    attacks: list[str]
    eps: float
    seed: int
    chunk_size: int
    ids: list[str]
    model: str
    weights_sha256: str | None
    preprocessing: str
    apgd_steps: int | None = None  # None: AutoAttack's own (100); set only by the proxy's cheaper plans


def chunk_file(out: Path, chunk: int) -> Path:
    """Where chunk ``chunk`` keeps its fates."""
    return out / "chunks" / f"{chunk:06d}.json"


@dataclass
class Chunk:
    """A chunk's labels and its images' fates so far."""
    labels: list[int]
    fates: Fates

    def finished(self, plan: AutoAttackPlan) -> bool:
        """True once the clean pass and every attack of ``plan`` ran."""
        return self.fates.done == ["clean", *plan.attacks]


def read_chunk(out: Path, chunk: int, size: int) -> Chunk | None:
    """A chunk's saved state (None when it has not started, or its file is unreadable)."""
    path = chunk_file(out, chunk)
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
        state = Chunk(saved["labels"], Fates(saved["fooled_by"], saved["done"]))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        log.warning("%s is unreadable (%s): chunk %d starts again", path, err, chunk)
        return None
    return state if len(state.labels) == len(state.fates.fooled_by) == size else None


def write_chunk(out: Path, chunk: int, state: Chunk) -> None:
    """Save a chunk's state atomically (a kill leaves the previous step's file)."""
    atomic_write_text(chunk_file(out, chunk), json.dumps({"labels": state.labels, **asdict(state.fates)}))


def _postfix(states: dict[int, Chunk | None]) -> dict[str, str]:
    """The running accuracies over this rank's images so far: clean, and still standing (robust once done)."""
    fates = [f for s in states.values() if s is not None and s.fates.done for f in s.fates.fooled_by]
    n = max(len(fates), 1)
    return {"clean": f"{100 * sum(f != 'clean' for f in fates) / n:.1f}%",
            "standing": f"{100 * sum(f is None for f in fates) / n:.1f}%"}


def _run_chunks(model: nn.Module, dataset: Dataset, out: Path, spec: AutoAttackSpec, plan: AutoAttackPlan,
                chunks: list[list[int]], mine: list[int], workers: int, progress: bool) -> dict[int, Chunk]:
    """This rank's chunks: finished ones read back, the rest run (or continued) and saved as they go."""
    states = {c: read_chunk(out, c, len(chunks[c])) for c in mine}
    todo = [c for c in mine if states[c] is None or not states[c].finished(plan)]
    device = next(model.parameters()).device
    loader = DataLoader(Subset(dataset, [i for c in todo for i in chunks[c]]), batch_size=spec.chunk_size,
                        shuffle=False, num_workers=workers)
    bar = tqdm(zip(todo, loader), total=len(mine), desc="AutoAttack", disable=not progress,
               initial=len(mine) - len(todo))
    for c, (x, y) in bar:
        states[c] = state = states[c] or Chunk(y.tolist(), Fates())

        def saved(fates: Fates, c: int = c, state: Chunk = state) -> None:
            write_chunk(out, c, state)
            bar.set_postfix({"chunk": c, "done": fates.done[-1], **_postfix(states)})
        cascade(model, x.to(device), y.to(device), plan, eps=spec.eps, seed=spec.seed, fates=state.fates,
                after=saved)
    return states


def evaluate_autoattack(model: nn.Module, dataset: Dataset, out_dir: str | Path, spec: AutoAttackSpec,
                        plan: AutoAttackPlan, *, indices: Sequence[int], workers: int = 0,
                        progress: bool = True, extra: dict | None = None) -> dict:
    """AutoAttack on ``dataset[indices]`` (``spec.ids`` names them): ``per_image.csv``, ``autoattack.json``
    (RobustBench's fields) and ``autoattack.md`` in ``out_dir``; returns the report.

    Under torch.distributed every rank runs its chunks and the fates are gathered to every rank.
    """
    if spec.chunk_size < 1 or len(indices) != len(spec.ids) or not indices:
        raise InputError(f"need images and a chunk size >= 1; got {len(indices)} indices, "
                         f"{len(spec.ids)} ids, chunk size {spec.chunk_size}")
    out = Path(out_dir)
    rank, world = rank_and_world()
    claim_folder(out, asdict(spec), rank)
    chunk_file(out, 0).parent.mkdir(exist_ok=True)
    chunks = [list(indices[i:i + spec.chunk_size]) for i in range(0, len(indices), spec.chunk_size)]
    mine = [c for c in range(len(chunks)) if c % world == rank]
    local = _run_chunks(model, dataset, out, spec, plan, chunks, mine, workers, progress and rank == 0)
    gathered = {c: state for part in all_gather_object(local) for c, state in part.items()}
    fates = [fate for c in range(len(chunks)) for fate in gathered[c].fates.fooled_by]
    labels = [label for c in range(len(chunks)) for label in gathered[c].labels]
    report = summarize(spec, plan, fates, world, extra or {})
    if rank == 0:
        atomic_write_text(out / "per_image.csv", per_image_csv(spec, plan, fates, labels))
        atomic_write_text(out / "autoattack.json", json.dumps(report, indent=1))
        atomic_write_text(out / "autoattack.md", to_markdown(report))
    return report


def summarize(spec: AutoAttackSpec, plan: AutoAttackPlan, fates: list[str | None], world: int,
              extra: dict) -> dict:
    """RobustBench's fields (clean_acc, autoattack_acc as "%.2f" strings, eps, norm, preprocessing, ...) and
    the robust accuracy (%) after each attack of the cascade."""
    n = len(fates)
    standing = n - sum(f == "clean" for f in fates)
    after = {}
    for name in plan.attacks:
        standing -= sum(f == name for f in fates)
        after[name] = 100.0 * standing / n
    clean = 100.0 * sum(f != "clean" for f in fates) / n
    robust = 100.0 * sum(f is None for f in fates) / n
    return {"model": spec.model, "clean_acc": f"{clean:.2f}", "autoattack_acc": f"{robust:.2f}",
            "eps": eps_text(spec.eps), "eps_float": spec.eps, "norm": "Linf", "threat_model": "Linf",
            "preprocessing": spec.preprocessing, "n_examples": n, "autoattack_version": spec.version,
            "attacks": list(plan.attacks), "apgd_steps": spec.apgd_steps or 100, "robust_acc_after": after,
            "seed": spec.seed,
            "weights_sha256": spec.weights_sha256, "world_size": world, **extra}


def package_versions() -> dict[str, str]:
    """The versions a report depends on (Python and the packages that compute it)."""
    found = {"python": platform.python_version()}
    for name in ("aadscale", "pyautoattack", "torch", "torchvision", "timm"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def eps_text(eps: float) -> str:
    """``4/255`` when eps is a whole number of 255ths, else the number."""
    k = round(eps * 255)
    return f"{k}/255" if k and abs(eps * 255 - k) < 1e-6 else f"{eps:.6g}"


def per_image_csv(spec: AutoAttackSpec, plan: AutoAttackPlan, fates: list[str | None], labels: list[int]) -> str:
    """One row per image: its id, label, and per step ``survived``, ``fooled`` or ``-`` (not run: fooled before)."""
    steps = ["clean", *plan.attacks]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "label", *steps, "fooled_by"])
    for image, label, fate in zip(spec.ids, labels, fates):
        end = steps.index(fate) if fate is not None else len(steps)
        cells = ["survived" if s < end else "fooled" if s == end else "-" for s in range(len(steps))]
        writer.writerow([image, label, *cells, fate or ROBUST])
    return buffer.getvalue()


def to_markdown(report: dict) -> str:
    """The cascade as a table: accuracy after the clean pass and after each attack."""
    steps = {"clean": report["clean_acc"], **{a: f"{v:.2f}" for a, v in report["robust_acc_after"].items()}}
    return "\n".join([f"# AutoAttack {report['autoattack_version']}, L-inf eps {report['eps']}, "
                      f"{report['n_examples']} images ({report['preprocessing']})", "",
                      f"Model: {report['model']}", "",
                      "| " + " | ".join(["step", *steps]) + " |", "|" + "---|" * (len(steps) + 1),
                      "| accuracy (%) | " + " | ".join(steps.values()) + " |", "",
                      f"AutoAttack robust accuracy: **{report['autoattack_acc']} %** "
                      f"(clean {report['clean_acc']} %)", ""])
