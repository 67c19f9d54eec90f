"""Resume cannot change a run silently: the saved config and classes against the new run's, the config history."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from aadscale.config import load_run_config
from aadscale.engine import fit
from aadscale.engine.manifest import MANIFEST
from aadscale.errors import InputError
from tests.test_data_loader import solid
from tests.test_engine import demo_root, small_cfg  # noqa: F401 (demo_root is a fixture)

STEP3 = ("train.max_steps=3", "eval.attacks=clean")  # one checkpoint, at step 3; a cheap final evaluation


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_root):  # noqa: F811
    """``<root>/run``: the demo trained to step 3 and exported."""
    root = tmp_path_factory.mktemp("trained")
    fit(small_cfg(root, demo_root, *STEP3))
    return root / "run"


@pytest.fixture
def run(trained, tmp_path):
    """A copy of the trained run under this test's ``log.dir``."""
    return shutil.copytree(trained, tmp_path / "run")


def lambdas(run):
    return [load_run_config(p).objective.lambda1 for p in sorted((run / "configs").iterdir())]


def test_the_run_keeps_its_classes_everywhere(trained, demo_root):  # noqa: F811
    classes = [f"n{d:08d}" for d in range(10)]
    assert json.loads((trained / "classes.json").read_text()) == classes
    assert torch.load(trained / "model.pt", weights_only=True)["classes"] == classes
    assert json.loads((trained / "checkpoints" / "step3" / "client_state.json").read_text())["classes"] == classes
    states = torch.load(trained / "checkpoints" / "step3" / "mp_rank_00_model_states.pt", weights_only=True)
    assert states["classes"] == classes
    assert sorted(p.name for p in (trained / "configs").iterdir()) == ["000-start.yaml"]


def test_a_changed_objective_is_refused_unless_allowed(run, tmp_path, demo_root):  # noqa: F811
    cfg = small_cfg(tmp_path, demo_root, *STEP3, "train.max_steps=4", "objective.lambda1=2")
    with pytest.raises(InputError, match=r"objective\.lambda1: 0\.5 -> 2\.0\. .*--allow-change objective\.lambda1 "):
        fit(cfg, resume="auto")
    assert lambdas(run) == [0.5] and load_run_config(run / "config.yaml").objective.lambda1 == 0.5
    with pytest.raises(InputError, match="'objetive' is not a config field or section"):
        fit(cfg, resume="auto", allow_changes=["objetive"])
    assert fit(cfg, resume="auto", allow_changes=["objective.lambda1"])["step"] == 4
    assert sorted(p.name for p in (run / "configs").iterdir()) == ["000-start.yaml", "001-resume-step3.yaml"]
    assert lambdas(run) == [0.5, 2.0] and load_run_config(run / "config.yaml").objective.lambda1 == 2.0


def test_length_logging_and_evaluation_may_change(run, tmp_path, demo_root):  # noqa: F811
    # log.dir changes too: the copy lives elsewhere
    cfg = small_cfg(tmp_path, demo_root, *STEP3, "train.max_steps=4", "log.scalar_every=2", "eval.subset=32")
    assert fit(cfg, resume="auto")["step"] == 4
    assert [load_run_config(p).train.max_steps for p in sorted((run / "configs").iterdir())] == [3, 4]


def test_a_checkpoint_of_another_architecture_is_refused_naming_both(run, tmp_path, demo_root):  # noqa: F811
    for change, message in [
            ("model.name=lenet_small", "trained with model.name=resnet9_small, model.num_classes=10; "
                                       "this run has model.name=lenet_small, model.num_classes=10"),
            ("model.num_classes=7", "trained with model.name=resnet9_small, model.num_classes=10; "
                                    "this run has model.name=resnet9_small, model.num_classes=7")]:
        with pytest.raises(InputError, match=message):
            fit(small_cfg(tmp_path, demo_root, *STEP3, change), resume="auto", allow_changes=["model"])
    assert lambdas(run) == [0.5]


def test_a_checkpoint_without_its_client_state_is_checked_against_config_yaml(run, tmp_path, demo_root):  # noqa: F811
    for name in ("client_state.json", MANIFEST):  # as written before either file existed
        (run / "checkpoints" / "step3" / name).unlink()
    with pytest.raises(InputError, match=r"attack\.steps: 2 -> 3"):
        fit(small_cfg(tmp_path, demo_root, *STEP3, "attack.steps=3"), resume="auto")


def test_resume_on_data_of_other_classes_is_refused(run, tmp_path, demo_root):  # noqa: F811
    other = shutil.copytree(demo_root, tmp_path / "digits")
    for split in ("train", "val"):
        (other / split / "n00000009").rename(other / split / "nine")
    with pytest.raises(InputError, match="the data lacks class 'n00000009'; the checkpoint lacks class 'nine'"):
        fit(small_cfg(tmp_path, demo_root, *STEP3, f"data.root={other}"), resume="auto")


def test_train_and_val_must_have_the_same_classes(tmp_path):
    for split, classes in (("train", ["a", "b", "c"]), ("val", ["a", "c", "x"])):
        for c, name in enumerate(classes):
            for i in range(8):
                solid(tmp_path / "data" / split / name / f"{i}.JPEG", 30 * c + i)
    cfg = small_cfg(tmp_path, "", "data.dataset=folder", f"data.root={tmp_path / 'data'}", "model.num_classes=3",
                    "data.batch_size=8")
    with pytest.raises(InputError, match="val lacks class 'b'; train lacks class 'x'"):
        fit(cfg)
    assert not (tmp_path / "run" / "config.yaml").exists()
