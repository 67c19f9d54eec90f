"""The one way out of every process of the project: wait for the others, leave the groups, flush, exit.

Every ``__main__`` and console script ends with ``run_main(main)`` (a test scans the
sources for it). Interpreter teardown is never run: ZeRO keeps gloo groups referenced past
``destroy_process_group`` (their threads stay up), and torn down with the interpreter they
can abort a rank whose command has finished (SIGABRT, "terminate called without an active
exception"), which makes the launcher fail the whole job.
"""
from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Callable, NoReturn

import torch.distributed as dist

from aadscale.distributed.collectives import barrier, in_group
from aadscale.distributed.signals import RESUME_EXIT_CODE, SavedOnSignal

EXIT_DIR_ENV = "AADSCALE_EXIT_DIR"  # where each rank writes its exit code (launchers report their own)
AGREED_CODES = (0, RESUME_EXIT_CODE)  # codes every rank reaches together: only these wait at a barrier


def shutdown() -> None:
    """Leave the job: wait for every rank, then destroy the groups and DeepSpeed's references to them."""
    if in_group():
        barrier()
        import deepspeed.comm
        if deepspeed.comm.is_initialized():
            deepspeed.comm.destroy_process_group()
        else:
            dist.destroy_process_group()


def exit_process(code: int) -> NoReturn:
    """End this process with ``code`` once its output is flushed, skipping interpreter teardown."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def exit_code(main: Callable[[], int | None]) -> int:
    """Run ``main`` and turn its outcome into an exit code: its return value, a ``SystemExit``'s code,
    ``RESUME_EXIT_CODE`` for a run saved on a signal, 130 for Ctrl-C, 1 (traceback printed) for any error."""
    try:
        code = main()
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return int(stop.code or 0)
        print(stop.code, file=sys.stderr)
        return 1
    except SavedOnSignal:
        return RESUME_EXIT_CODE  # the loop has logged where the checkpoint is
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BaseException:  # noqa: BLE001 (printed as the interpreter would, then the one way out)
        traceback.print_exc()
        return 1
    return int(code or 0)


def record_exit(code: int) -> None:
    """Write ``code`` to ``$AADSCALE_EXIT_DIR/rank<RANK>`` when that is set: the DeepSpeed launcher and
    torchrun may report another code than their ranks' (``aadscale.distributed.relay`` reads these)."""
    folder = os.environ.get(EXIT_DIR_ENV)
    if not folder:
        return
    rank = dist.get_rank() if in_group() else int(os.environ.get("RANK", "0") or 0)
    path = Path(folder, f"rank{rank}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(f"{code}\n")
    os.replace(tmp, path)


def run_main(main: Callable[[], int | None]) -> NoReturn:
    """End the process through the one exit path with ``main``'s exit code.

    The code is recorded first; then, when every rank got here together (0, or the resume code
    of a run saved on a signal), the rank waits for the others and leaves the groups. After an
    error it leaves at once: a failed rank must not wait at a barrier the others never reach.
    """
    code = exit_code(main)
    record_exit(code)
    if code in AGREED_CODES:
        try:
            shutdown()
        except Exception:  # noqa: BLE001 (a peer that died at the barrier: report it, still leave)
            traceback.print_exc()
            code = code or 1
    exit_process(code)
