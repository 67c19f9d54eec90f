"""``aadscale compare``: every objective x seed trained alike, AAD minus its base paired by seed, reruns reuse runs."""
from __future__ import annotations

import json
import os

import pytest

from aadscale.cli import main
from aadscale.analysis.compare import CompareOptions, compare

TINY = ["train.max_steps=1", "data.batch_size=16", "data.workers=0", "log.image_every=0",
        "eval.subset=16", "eval.batch_size=16", "eval.attacks=clean,fgsm", "attack.steps=1"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    o = CompareOptions(objectives=("madry", "madry+aad"), seeds=(0, 1), out=str(out), overrides=TINY,
                       attacks=("clean", "pgd3"), strong=("pgd3x2", "square10"), limit=16,
                       batch_size=8, progress=False)
    return o, compare(o)


def test_summary_pairs_each_defense_with_its_base_by_seed(study):
    o, summary = study
    runs = summary["runs"]
    assert set(runs) == {"madry-s0", "madry-s1", "madry+aad-s0", "madry+aad-s1"}
    assert summary["columns"] == ["clean", "pgd3", "pgd3x2", "square10", "worst", "iou_top5"]
    for col in summary["columns"]:
        diffs = [runs[f"madry+aad-s{s}"][col] - runs[f"madry-s{s}"][col] for s in (0, 1)]
        mean, std = summary["aad_minus_base"]["madry+aad"][col]
        assert mean == pytest.approx(sum(diffs) / 2) and std == pytest.approx(abs(diffs[0] - diffs[1]) / 2 ** 0.5)
    for row in runs.values():  # exact: worst is the per-image AND of every column
        assert row["worst"] <= min(row[c] for c in ("clean", "pgd3", "pgd3x2", "square10"))
        assert 0.0 <= row["iou_top5"] <= 1.0 and row["n"] == 16


def test_outputs_and_a_rerun_reuses_every_run(study):
    o, summary = study
    out = summary["options"]["out"]
    md = open(f"{out}/compare.md").read()
    assert "| madry+aad - madry |" in md and "| madry |" in md
    assert "BatchNorm statistics of both" in md.splitlines()[0]  # which madry is the control
    assert open(f"{out}/compare.png", "rb").read(4) == b"\x89PNG"
    stamps = {r: (f"{out}/{r}/model.pt", os.stat(f"{out}/{r}/model.pt").st_mtime_ns)
              for r in summary["runs"]}
    again = compare(o)
    assert again["runs"] == summary["runs"]
    assert all(os.stat(p).st_mtime_ns == t for p, t in stamps.values())
    assert json.loads(open(f"{out}/compare.json").read())["runs"] == summary["runs"]


def test_bad_input_is_refused_before_training(tmp_path, capsys):
    assert main(["compare", "--out", str(tmp_path), "--objectives", "madry,mart"]) == 2
    assert "mart" in capsys.readouterr().err
    assert main(["compare", "--out", str(tmp_path), "--seeds", "0,x"]) == 2
    assert main(["compare", "--out", str(tmp_path), "train.epoch=2"]) == 2
    assert not list(tmp_path.iterdir())  # nothing trained, nothing written
