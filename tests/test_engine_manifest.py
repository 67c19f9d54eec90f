"""Checkpoints prove they are whole: the record of their files, auto's fallback, the refusal of a damaged tag."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from aadscale.engine import fit
from aadscale.engine.manifest import MANIFEST, damage, recorded_names
from aadscale.errors import InputError
from tests.test_engine import demo_root, small_cfg  # noqa: F401 (demo_root is a fixture)

# checkpoints at steps 2 and 4 of a model and objective cheap enough for a few seconds a run
STEPS = ("train.max_steps=4", "train.checkpoint_every=2", "eval.attacks=clean", "model.name=lenet_small",
         "objective.name=madry", "attack.steps=1", "log.image_every=0")
MODEL = "mp_rank_00_model_states.pt"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_root):  # noqa: F811
    """``<root>/run/checkpoints``: the demo trained to step 4, checkpoints at steps 2 and 4."""
    root = tmp_path_factory.mktemp("trained")
    fit(small_cfg(root, demo_root, *STEPS))
    return root / "run" / "checkpoints"


@pytest.fixture
def checkpoints(trained, tmp_path):
    """A copy of the trained run's checkpoints under this test's ``log.dir``."""
    return shutil.copytree(trained.parent, tmp_path / "run") / "checkpoints"


def cut(folder: Path) -> str:
    """Cut the model states to half their size (what a full disk or a killed copy leaves)."""
    path = folder / MODEL
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return f"{MODEL} has {len(data) // 2} bytes where its record says {len(data)}"


def delete(folder: Path) -> str:
    """Delete the RNG file."""
    (folder / "rng_rank0.pt").unlink()
    return "rng_rank0.pt is missing"


def alter(folder: Path) -> str:
    """Change bytes in the middle of the model states, keeping the size."""
    path = folder / MODEL
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 8] = bytes(255 - b for b in data[middle:middle + 8])
    path.write_bytes(data)
    return f"{MODEL} has other bytes than its record (sha256 differs)"


def remove(folder: Path) -> str:
    """Remove the whole folder, leaving ``latest`` naming it."""
    shutil.rmtree(folder)
    return "its folder is missing"


def test_every_file_is_recorded_before_latest_names_it(trained):
    assert (trained / "latest").read_text() == "step4"
    for tag in ("step2", "step4"):
        files = json.loads((trained / tag / MANIFEST).read_text())["files"]
        assert sorted(files) == recorded_names(trained / tag)
        assert {"client_state.json", MODEL, "rng_rank0.pt"} <= files.keys()
        assert all(files[n]["size"] == (trained / tag / n).stat().st_size for n in files)
        assert damage(trained / tag) == []


@pytest.mark.parametrize("harm", [cut, delete, alter, remove])
def test_auto_passes_over_a_damaged_newest_checkpoint(checkpoints, tmp_path, demo_root, caplog, harm):  # noqa: F811
    caplog.set_level("INFO", logger="aadscale.engine")
    reason = harm(checkpoints / "step4")
    assert fit(small_cfg(tmp_path, demo_root, *STEPS), resume="auto")["step"] == 4
    assert (f"checkpoint step4 is not whole ({reason}); resuming from step2, the newest whole checkpoint"
            in caplog.text)
    assert "resumed from step2 at step 2" in caplog.text
    assert damage(checkpoints / "step4") == []  # trained again and saved whole


def test_a_damaged_tag_is_refused_naming_the_file_and_the_whole_tags(checkpoints, tmp_path, demo_root):  # noqa: F811
    reason = cut(checkpoints / "step4")
    with pytest.raises(InputError, match=re.escape(f"step4 is not whole: {reason}. Whole checkpoints: step2; ")):
        fit(small_cfg(tmp_path, demo_root, *STEPS), resume="step4")


def test_no_whole_checkpoint_is_refused_saying_what_is_wrong_with_each(checkpoints, tmp_path, demo_root):  # noqa: F811
    reasons = delete(checkpoints / "step4"), alter(checkpoints / "step2")
    with pytest.raises(InputError, match=re.escape(f"is whole: step4: {reasons[0]}; step2: {reasons[1]}. Restore")):
        fit(small_cfg(tmp_path, demo_root, *STEPS), resume="auto")


def test_a_checkpoint_without_a_record_resumes_unverified_but_is_no_fallback(checkpoints, tmp_path, caplog,
                                                                            demo_root):  # noqa: F811
    for tag in ("step2", "step4"):
        (checkpoints / tag / MANIFEST).unlink()
    cfg = small_cfg(tmp_path, demo_root, *STEPS)
    assert fit(cfg, resume="auto")["step"] == 4
    assert f"checkpoint step4 has no {MANIFEST} recording its files: resuming from it unverified" in caplog.text
    remove(checkpoints / "step4")  # step2 may be a save cut short: only a tag loads it
    with pytest.raises(InputError, match=re.escape(f"step4: its folder is missing; step2: no {MANIFEST}, so it may "
                                                   "be a save cut short; --resume step2 loads it unverified")):
        fit(cfg, resume="auto")
