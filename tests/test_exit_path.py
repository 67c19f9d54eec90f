"""The one exit path: every ``__main__`` and console script ends through ``run_main``, which keeps the
command's exit code, flushes, skips interpreter teardown and never leaves a failed rank at a barrier."""
from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from dslaunch import ROOT, run_torchrun

from aadscale.distributed import RESUME_EXIT_CODE, SavedOnSignal
from aadscale.distributed.exit_path import exit_code

SOURCES = ("aadscale", "launchers", "tuning", "benchmarks", "tests")


def is_main_guard(node: ast.AST) -> bool:
    """``if __name__ == "__main__":``."""
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators))


def only_run_main(body: list[ast.stmt]) -> bool:
    """The block is one statement (a docstring aside): ``run_main(<callable>)``."""
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return (len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Call)
            and isinstance(body[0].value.func, ast.Name) and body[0].value.func.id == "run_main")


def test_every_main_block_and_console_script_ends_through_run_main():
    mains, bypass = [], []
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if is_main_guard(node):
                    mains.append(path)
                    if not only_run_main(node.body):
                        bypass.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    entries = {ROOT / p for p in ("aadscale/cli.py", "launchers/train_imagenet.py", "tuning/sweep.py",
                                   "benchmarks/engine_syncs.py", "tests/nonfinite_rank.py")}
    assert entries <= set(mains)  # the scan sees the entries that join process groups
    assert bypass == [], f"end these with `run_main(main)` (aadscale.distributed): {bypass}"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts
    for name, target in scripts.items():
        module, func = target.split(":")
        tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
        defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == func]
        assert defs and only_run_main(defs[0].body), f"console script {name} = {target} must only call run_main"
        assert callable(getattr(importlib.import_module(module), func))


def raises(error: BaseException):
    def main():
        raise error
    return main


@pytest.mark.parametrize("main, code, stderr", [
    (lambda: 3, 3, ""), (lambda: None, 0, ""),
    (raises(RuntimeError("boom")), 1, "RuntimeError: boom"),
    (raises(SystemExit("bad input")), 1, "bad input"), (raises(SystemExit(2)), 2, ""),
    (raises(KeyboardInterrupt()), 130, "interrupted"),
    (raises(SavedOnSignal("SIGTERM", 5, Path("ck"))), RESUME_EXIT_CODE, ""),
])
def test_exit_code_of_each_outcome(capsys, main, code, stderr):
    assert exit_code(main) == code
    assert stderr in capsys.readouterr().err


def test_run_main_records_flushes_and_skips_teardown(tmp_path):
    # os._exit drops what sits in Python's buffers (a pipe makes stdout block-buffered) and runs no atexit
    code = ("import atexit, logging, sys\nfrom aadscale.distributed import run_main\n"
            "atexit.register(lambda: print('TEARDOWN', file=sys.stderr))\n"
            "logging.basicConfig(stream=sys.stderr)\n"
            "def main():\n    print('printed', end='')\n    logging.warning('logged')\n    return 3\n"
            "run_main(main)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "AADSCALE_EXIT_DIR": str(tmp_path)})
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "printed" and "logged" in proc.stderr
    assert "TEARDOWN" not in proc.stderr  # interpreter teardown, where the gloo abort happens, never ran
    assert (tmp_path / "rank0").read_text() == "3\n"


@pytest.mark.slow
def test_a_failing_rank_ends_the_job_without_waiting_at_a_barrier(tmp_path):
    # rank 1 fails after joining; rank 0 finishes and waits at the exit barrier, which fails when rank 1
    # leaves (or torchrun ends it): the job ends well inside the timeout, with rank 1's code recorded
    script = tmp_path / "fail_one.py"
    script.write_text("import time\nfrom aadscale.distributed import init_distributed, run_main\n"
                      "def main():\n    ctx = init_distributed()\n    if ctx.rank == 1:\n"
                      "        raise RuntimeError('rank 1 fails')\n    return 0\nrun_main(main)\n")
    proc = run_torchrun(script, [], nprocs=2, timeout=120, env={"AADSCALE_EXIT_DIR": str(tmp_path / "codes")})
    assert proc.returncode != 0
    assert "rank 1 fails" in proc.stderr
    assert (tmp_path / "codes" / "rank1").read_text() == "1\n"
