"""A real sweep on a local Ray with 2 CPUs: 4 trials of the demo, two at a time, one DeepSpeed
worker each (two workers per trial: tests/test_tuning_faults.py)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from aadscale.config import load_config, load_run_config
from aadscale.tuning import SweepOptions, run_sweep

pytestmark = pytest.mark.slow
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(tempfile.gettempdir()) / "aadscale-torch-extensions"))
TINY = ["train.max_steps=2", "data.batch_size=16", "eval.subset=16", "eval.batch_size=16",
        "eval.attacks=clean,fgsm", "attack.steps=1", "data.workers=0", "log.image_every=0"]


def test_four_trial_sweep_writes_table_best_preset_and_plots(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("search: grid\nmetric: eval/fgsm\nparams:\n"
                     "  objective.lambda1: {values: [0.1, 1.0]}\n  objective.lambda2: {values: [0.05, 0.5]}\n")
    outcome = run_sweep(SweepOptions(
        preset="demo", space=str(space), name="demo4",
        num_cpus=2, workers_per_trial=1, cpus_per_worker=0.99, metric="eval/fgsm",
        overrides=[f"log.dir={tmp_path}", *TINY]))
    rows = outcome.rows
    assert len(rows) == 4 and all(r["status"] == "done" and r["step"] == 2 for r in rows)
    assert {(r["objective.lambda1"], r["objective.lambda2"]) for r in rows} == {
        (0.1, 0.05), (0.1, 0.5), (1.0, 0.05), (1.0, 0.5)}
    assert all(0 <= r["eval/clean"] <= 100 and 0 <= r["eval/fgsm"] <= 100 for r in rows)
    for r in rows:  # each trial trained in its own run folder, with TensorBoard events
        run = outcome.out_dir / f"trial-{r['trial']}"
        assert (run / "eval.json").is_file() and list((run / "tb").iterdir())
        assert load_run_config(run / "config.yaml").objective.lambda1 == r["objective.lambda1"]
    md, csv_path = outcome.tables
    assert md.read_text().count("| done |") == 4 and len(csv_path.read_text().splitlines()) == 5
    best = max(rows, key=lambda r: r["eval/fgsm"])
    assert outcome.best["eval/fgsm"] == best["eval/fgsm"]
    cfg = load_config(str(outcome.best_preset))
    assert (cfg.objective.lambda1, cfg.objective.lambda2) == (outcome.best["objective.lambda1"],
                                                              outcome.best["objective.lambda2"])
    assert {p.name for p in outcome.plots} == {"sensitivity-objective.lambda1.png",
                                               "sensitivity-objective.lambda2.png",
                                               "grid-objective.lambda1-objective.lambda2.png"}
