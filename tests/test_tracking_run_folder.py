"""The run folder layout, config.yaml with the git commit, atomic JSON results."""
from __future__ import annotations

import os

import pytest
import yaml

from aadscale.config import load_config, load_run_config
from aadscale.tracking import RunFolder, default_run_name


def test_layout_and_config(tmp_path):
    run = RunFolder(tmp_path / "runs", "demo-1")
    assert run.path == tmp_path / "runs" / "demo-1"
    assert run.tb.is_dir() and run.checkpoints.is_dir()
    cfg = load_config(None, ["optim.lr=0.2", "train.zero_stage=2"])
    assert run.record_config(cfg, "start") == run.path / "configs" / "000-start.yaml"
    assert "git_commit" in yaml.safe_load(run.config_path.read_text())
    assert load_run_config(run.config_path) == cfg
    RunFolder(tmp_path / "runs", "demo-1")  # reopening an existing run is fine
    changed = load_config(None, ["optim.lr=0.1", "train.zero_stage=2"])
    assert run.record_config(changed, "resume-../step4") == run.path / "configs" / "001-resume-.._step4.yaml"
    assert load_run_config(run.config_path) == changed  # config.yaml: the current one
    assert [load_run_config(p) for p in sorted(run.configs.iterdir())] == [cfg, changed]


@pytest.mark.parametrize("name", ["", "../up", "a/b", ".hidden"])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="run name"):
        RunFolder(tmp_path, name)


def test_json_is_atomic_and_round_trips(tmp_path, monkeypatch):
    run = RunFolder(tmp_path, "r")
    table = {"clean": 90.5, "pgd10": 41.0, "n": 256}
    assert run.write_json("eval", table) == run.path / "eval.json"
    assert run.read_json("eval.json") == table

    def crash(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        run.write_json("eval", {"clean": 0.0})
    assert run.read_json("eval") == table  # the old file is intact
    assert sorted(p.name for p in run.path.iterdir()) == ["checkpoints", "eval.json", "tb"]
    with pytest.raises(ValueError, match="file name"):
        run.write_json("../escape", {})


def test_default_run_name():
    assert default_run_name("demo", now=0).startswith("demo-19")
    assert len(default_run_name("x")) == len("x-20260101-120000")
