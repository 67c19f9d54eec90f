"""The relay passes stop signals to a launcher's ranks only, waits for them, and exits with their resume code
where the launcher loses it (torchrun reports 1 for any rank that did not exit 0)."""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from aadscale.distributed import RESUME_EXIT_CODE
from aadscale.distributed.relay import exit_code, main

RANK = """
import sys, time
from aadscale.distributed import SavedOnSignal, StopSignals, run_main
def main():
    with StopSignals(["SIGUSR1"]) as signals:
        print("READY", flush=True)
        while signals.received is None:
            time.sleep(0.01)
    raise SavedOnSignal(signals.received.name, 7, "ck")
run_main(main)
"""


def test_the_node_code_is_the_resume_code_only_when_every_rank_recorded_it():
    assert exit_code(1, [RESUME_EXIT_CODE, RESUME_EXIT_CODE]) == RESUME_EXIT_CODE
    assert exit_code(1, [RESUME_EXIT_CODE, 1]) == 1
    assert exit_code(0, [0, 0]) == 0 and exit_code(-15, []) == -15


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--signals", "SIGKILL", "--", "true"])
    assert "SIGKILL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([])
    assert "give the launcher's command after --" in capsys.readouterr().err
    assert main(["--", "no-such-launcher"]) == 127


def test_a_signal_reaches_the_rank_and_its_code_comes_back(tmp_path):
    # a "launcher" that ignores the signal and reports 1 whatever its rank did, as torchrun does
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    launcher = f"trap '' USR1; LOCAL_RANK=0 RANK=0 {sys.executable} {script} & wait $!; exit 1"
    relay = subprocess.Popen([sys.executable, "-m", "aadscale.distributed.relay", "--signals", "USR1", "--",
                              "bash", "-c", launcher], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert relay.stdout.readline() == "READY\n"  # the rank exists: the relay's next look finds it, then forwards
    relay.send_signal(signal.SIGUSR1)
    out, err = relay.communicate(timeout=60)
    assert relay.returncode == RESUME_EXIT_CODE, err
    assert "SIGUSR1 -> the ranks' processes" in err
