"""The run evaluates at attack.eps unless eval.eps is set, and its log says at which eps."""
from __future__ import annotations

import json
import logging

from aadscale import config as C
from aadscale.data import ensure_demo_data
from aadscale.engine import fit


def test_run_evaluates_at_the_overridden_attack_eps_and_logs_it(tmp_path, caplog):
    root = ensure_demo_data(tmp_path / "demo")
    cfg = C.load_config("demo", [
        f"data.root={root}", f"log.dir={tmp_path}", "log.name=run", "data.batch_size=16", "data.workers=0",
        "attack.steps=1", "attack.eps=4/255", "train.max_steps=1", "eval.every_epochs=0",
        "eval.attacks=clean", "eval.subset=16", "log.image_every=0"])
    with caplog.at_level(logging.INFO, logger="aadscale.engine"):
        fit(cfg)
    assert "evaluates at eps 0.01569 (= attack.eps)" in caplog.text
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["eps"] == 4 / 255
