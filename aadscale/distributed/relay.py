"""Run a launcher so that stop signals reach its ranks and its exit code is theirs.

    python -m aadscale.distributed.relay [--signals SIGTERM,SIGUSR1] -- deepspeed --num_gpus 8 train.py ...

Neither launcher does both on its own: the ``deepspeed`` command dies on SIGTERM without
passing it on (its ranks never hear of it) and its per-node launcher exits 1 once it has
been signalled; torchrun passes SIGTERM on and waits, but reports 1 for any rank that did
not exit 0, the resume code included. The relay sends each stop signal it receives to the
ranks only (the processes of the launcher's tree that have ``LOCAL_RANK`` in their
environment), waits for the launcher and every rank, even one the launcher left behind,
and exits with the resume code when every rank recorded it, else with the launcher's code.
The ranks record their codes in ``$AADSCALE_EXIT_DIR`` (a temporary folder when unset; a
folder every node sees lets a job script read rank 0's). ``launchers/slurm_train.sh`` runs
one relay per node.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import psutil

from aadscale.distributed.exit_path import EXIT_DIR_ENV, run_main
from aadscale.distributed.signals import RESUME_EXIT_CODE

log = logging.getLogger("aadscale.relay")
POLL_S = 0.2


def ranks_of(root: psutil.Process) -> list[psutil.Process]:
    """The launcher's descendants that are ranks (their data-loader workers too: they ignore stop signals)."""
    found = []
    for proc in root.children(recursive=True):
        try:
            if "LOCAL_RANK" in proc.environ():
                found.append(proc)
        except psutil.Error:  # gone meanwhile, or not ours
            continue
    return found


def running(proc: psutil.Process) -> bool:
    """The process has not ended (a zombie has)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def exit_code(launcher_code: int, recorded: Sequence[int]) -> int:
    """The node's code: the resume code when every rank that recorded one recorded it, else the launcher's."""
    if recorded and all(code == RESUME_EXIT_CODE for code in recorded):
        return RESUME_EXIT_CODE
    return launcher_code


def read_codes(folder: Path) -> list[int]:
    """The exit codes the ranks recorded in ``folder``."""
    return [int(p.read_text()) for p in sorted(folder.glob("rank*")) if p.read_text().strip()]


def relay(command: Sequence[str], signals: Sequence[str]) -> int:
    """Run ``command``, pass each of ``signals`` it receives on to the ranks, wait for all; the node's code."""
    given = os.environ.pop(EXIT_DIR_ENV, None)  # the ranks' records, not the relay's own (exit path)
    folder = Path(given) if given else Path(tempfile.mkdtemp(prefix="aadscale-exit-"))
    folder.mkdir(parents=True, exist_ok=True)
    pending: list[int] = []
    previous = {signal.Signals[name]: signal.signal(signal.Signals[name], lambda n, _: pending.append(n))
                for name in signals}
    try:
        try:
            launcher = subprocess.Popen(list(command), env={**os.environ, EXIT_DIR_ENV: str(folder)})
        except FileNotFoundError:
            print(f"relay: error: command not found: {command[0]}", file=sys.stderr)
            return 127
        root, ranks = psutil.Process(launcher.pid), {}
        while True:
            if launcher.poll() is None:
                ranks.update((p.pid, p) for p in ranks_of(root))
            while pending:
                number = pending.pop(0)
                targets = [p for p in ranks.values() if running(p)]
                log.warning("%s -> the ranks' processes %s", signal.Signals(number).name,
                            " ".join(str(p.pid) for p in targets))
                for proc in targets:
                    try:
                        proc.send_signal(number)
                    except psutil.Error:
                        pass
            if launcher.poll() is not None and not any(map(running, ranks.values())):
                break
            time.sleep(POLL_S)
        return exit_code(launcher.returncode, read_codes(folder))
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if not given:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Parse ``[--signals ...] -- command ...`` and relay."""
    p = argparse.ArgumentParser(prog="python -m aadscale.distributed.relay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--signals", default="SIGTERM,SIGUSR1",
                   help="the stop signals to pass on (the run's train.stop_signals)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the launcher's command line")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the launcher's command after --, e.g. -- deepspeed --num_gpus 8 launchers/train_imagenet.py")
    names = [n if n.startswith("SIG") else f"SIG{n}" for n in (s.strip().upper() for s in args.signals.split(","))
             if n]
    unknown = [n for n in names if n not in signal.Signals.__members__ or n in ("SIGKILL", "SIGSTOP")]
    if unknown:
        p.error(f"--signals {','.join(unknown)}: not signals a process can catch; e.g. --signals SIGTERM,SIGUSR1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    return relay(command, names)


if __name__ == "__main__":
    run_main(main)
