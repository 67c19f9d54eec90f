"""A stop signal in one process: the run stops at the next step that reads the device, with a complete
checkpoint there, and the resumed run ends with the unbroken run's weights, bit for bit."""
from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from aadscale.data import build_loader
from aadscale.distributed import SavedOnSignal
from aadscale.engine import Callback, fit
from aadscale.engine import trainer as loop
from aadscale.tracking import read_events
from tests.test_engine import demo_root, small_cfg  # noqa: F401 (demo_root is a fixture)

# a cheap deterministic model and attack; the guard (and so the stop) is read every 4th step and at epoch ends
COMMON = ["model.name=lenet_small", "model.in_channels=3", "attack.name=step_ll", "attack.steps=1",
          "objective.name=madry", "log.scalar_every=4", "train.checkpoint_every=0", "log.image_every=0",
          "eval.attacks=clean", "eval.every_epochs=1", "train.epochs=2", "train.max_steps=0",
          "data.batch_size=128", "data.image_size=16", "eval.subset=16", "eval.batch_size=16"]


class SignalAt(Callback):
    """Sends this process ``sig`` at the end of optimiser step ``step``, as a scheduler would."""

    def __init__(self, step: int, sig: signal.Signals = signal.SIGUSR1) -> None:
        self.step, self.sig = step, sig

    def on_step_end(self, info) -> None:
        if info.step == self.step:
            os.kill(os.getpid(), self.sig)


@pytest.fixture(scope="module")
def per_epoch(demo_root):  # noqa: F811
    return len(build_loader(demo_root, "train", batch_size=128, image_size=16, dataset="demo", workers=0))


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory, demo_root):  # noqa: F811
    """The run never signalled: its step count and exported weights."""
    root = tmp_path_factory.mktemp("unbroken")
    result = fit(small_cfg(root, demo_root, *COMMON))
    return result["step"], torch.load(root / "run" / "model.pt", weights_only=True)["model"]


def same_weights(run, unbroken) -> bool:
    a, b = unbroken[1], torch.load(run / "model.pt", weights_only=True)["model"]
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_signal_mid_epoch_stops_at_the_next_read_and_the_resume_is_exact(tmp_path, demo_root, per_epoch,
                                                                          unbroken, caplog):  # noqa: F811
    assert per_epoch > 6  # the stop below falls inside the first epoch
    cfg = small_cfg(tmp_path, demo_root, *COMMON)
    before = signal.getsignal(signal.SIGUSR1)
    with pytest.raises(SavedOnSignal) as stopped:
        fit(cfg, [SignalAt(2)])  # noted in step 3, summed over ranks there, read at step 4
    assert signal.getsignal(signal.SIGUSR1) is before  # the run put the handlers back
    assert stopped.value.step == 4 and stopped.value.signal_name == "SIGUSR1"
    ckpt = tmp_path / "run" / "checkpoints"
    assert (ckpt / "latest").read_text() == "step4"
    assert json.loads((ckpt / "step4" / "client_state.json").read_text())["loader"] == {"epoch": 0, "batch": 4}
    assert "SIGUSR1 reached rank(s) 0 during step 3; every rank stopped at step 4 (epoch 0)" in caplog.text
    assert "--resume auto" in str(stopped.value)
    assert fit(cfg, resume="auto")["step"] == unbroken[0] == 2 * per_epoch
    assert same_weights(tmp_path / "run", unbroken)
    steps = [s for s, _ in read_events(tmp_path / "run" / "tb")["scalars"]["train/loss"]]
    assert steps == sorted(set(steps)) and 4 in steps  # no step logged twice, none lost


@pytest.mark.parametrize("when", ["evaluation", "last step"])
def test_a_signal_at_the_epoch_end_leaves_its_evaluation_due(tmp_path, demo_root, per_epoch, unbroken,
                                                            monkeypatch, when):  # noqa: F811
    # during the epoch-end evaluation, or in the epoch's last step (read at the epoch end, no logging step)
    assert per_epoch % 4 != 0
    real, calls = loop.robust_accuracy, {"n": 0}

    def signalled(*args, **kwargs):  # the signal lands while the first evaluation runs
        calls["n"] += 1
        if calls["n"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    if when == "evaluation":
        monkeypatch.setattr(loop, "robust_accuracy", signalled)
    cfg = small_cfg(tmp_path, demo_root, *COMMON)
    callbacks = [SignalAt(per_epoch - 1, signal.SIGTERM)] if when == "last step" else []
    with pytest.raises(SavedOnSignal, match=f"SIGTERM received: stopped at step {per_epoch} "):
        fit(cfg, callbacks)
    ckpt = tmp_path / "run" / "checkpoints"
    tag = (ckpt / "latest").read_text()
    position = json.loads((ckpt / tag / "client_state.json").read_text())["position"]
    assert position == {"step": per_epoch, "epoch": 1, "eval_due": True}
    monkeypatch.undo()
    assert fit(cfg, resume="auto")["step"] == unbroken[0]
    assert same_weights(tmp_path / "run", unbroken)
    evals = read_events(tmp_path / "run" / "tb")["scalars"]["eval/clean"]
    assert [s for s, _ in evals] == [per_epoch, 2 * per_epoch]  # the due evaluation ran once, on resume
