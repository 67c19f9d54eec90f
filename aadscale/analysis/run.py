"""Run the section-3 analysis over batches and write tables (Markdown, CSV, JSON) and records."""
from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

from torch import nn
from tqdm.auto import tqdm

from aadscale.analysis.study import StudyOptions, study_batch
from aadscale.analysis.tables import summarize, to_markdown, to_rows
from aadscale.errors import InputError


def analyze(model: nn.Module, batches: Iterable, options: StudyOptions = StudyOptions(), *,
            out_dir: str | Path | None = None, limit: int | None = None, progress: bool = True,
            meta: dict | None = None) -> dict:
    """Tables 1-3 (4-5 with ``options.lime``) over ``(x, y, box_mask)`` batches.

    Reads at most ``limit`` images. With ``out_dir``, writes ``tables.md``, ``tables.csv``,
    ``tables.json`` (tables, options, counts, ``meta``) and ``records.jsonl`` (one line
    per analysed image, for plots). Returns the JSON content.
    """
    if limit is not None and limit < 1:
        raise InputError(f"limit={limit} must be >= 1")
    records: list[dict] = []
    seen = 0
    total = len(batches) if hasattr(batches, "__len__") else None
    for x, y, box in tqdm(batches, total=total, desc="analyze", disable=not progress, leave=False):
        if limit is not None:
            x, y, box = x[:limit - seen], y[:limit - seen], box[:limit - seen]
        records += study_batch(model, x, y, box, options, first_index=seen)
        seen += len(y)
        if limit is not None and seen >= limit:
            break
    if not records:
        hint = " (use target='predicted' / --target predicted to analyse every image)" \
            if options.target == "true" else ""
        raise InputError(f"none of the {seen} images entered the analysis: the model classified "
                         f"none correctly{hint}")
    summary = summarize(records, options.top_ns, options.lime_features if options.lime else (),
                        options.iou_threshold)
    report = {"images_read": seen, "analysed": len(records), "options": asdict(options),
              "meta": meta or {}, **summary}
    if out_dir is not None:
        write_outputs(Path(out_dir), report, records)
    return report


def write_outputs(out: Path, report: dict, records: list[dict]) -> None:
    """tables.md / tables.csv / tables.json / records.jsonl in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    header = (f"# Attention analysis: attack {report['options']['attack']}, "
              f"eps {report['options']['eps']:.5g}, {report['analysed']} of {report['images_read']} images\n\n")
    (out / "tables.md").write_text(header + to_markdown(report))
    with (out / "tables.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["table", "row", "split", "metric", "value"])
        writer.writeheader()
        writer.writerows({**r, "value": "" if r["value"] is None else r["value"]} for r in to_rows(report))
    (out / "tables.json").write_text(json.dumps(report, indent=1))
    (out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
