"""``aadscale demo``: the demo preset with Madry + AAD on CPU ranks under the DeepSpeed launcher."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import aadscale
from aadscale.evaluate import format_table
from aadscale.logging.run_folder import default_run_name

LAUNCHER = Path(aadscale.__file__).resolve().parent.parent / "launchers" / "train_imagenet.py"


def deepspeed_command(ranks: int, script: Path, script_args: list[str]) -> list[str]:
    """The DeepSpeed launcher call for ``ranks`` local ranks (CPU ranks where there is no GPU)."""
    exe = shutil.which("deepspeed") or str(Path(sys.executable).parent / "deepspeed")
    return [exe, "--num_gpus", str(ranks), str(script), *script_args]


def run(args: argparse.Namespace) -> int:
    """Train, then print the robust-accuracy table and where the logs are."""
    if not LAUNCHER.is_file():
        raise ValueError(f"{LAUNCHER} not found: run the demo from a source checkout of aadscale")
    name = args.name or default_run_name("demo")
    cmd = deepspeed_command(args.ranks, LAUNCHER, ["--preset", "demo", "--name", name, *args.overrides])
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print("$ " + " ".join(cmd), flush=True)
    code = subprocess.call(cmd, env=env)
    if code:
        print(f"aadscale demo: the training job failed (exit code {code})", file=sys.stderr)
        return code
    run_dir = Path("runs") / name
    result = json.loads((run_dir / "eval.json").read_text())
    print(f"\nRobust accuracy (%) on {result['accuracy']['n']} held-out demo images, "
          f"eps={result['eps']:.4f}, after {result['step']} steps:\n")
    print(format_table(result["accuracy"], "madry+aad"))
    print(f"\nrun folder:   {run_dir}/ (config.yaml, eval.json, model.pt)\n"
          f"checkpoints:  {run_dir}/checkpoints/ (resume: add --resume auto)\n"
          f"TensorBoard:  .venv/bin/tensorboard --logdir {run_dir}/tb\n"
          f"evaluate:     .venv/bin/aadscale evaluate {run_dir}/model.pt --out {run_dir}/eval")
    return 0


def register(sub) -> None:
    """Add the ``demo`` sub-command."""
    p = sub.add_parser("demo", help="train the demo preset (Madry + AAD) on CPU ranks, ~2 minutes")
    p.add_argument("--ranks", type=int, default=2, help="number of local DeepSpeed ranks")
    p.add_argument("--name", default=None, help="run name (default demo-<time>)")
    p.add_argument("overrides", nargs="*", help="section.field=value overrides of the demo preset")
    p.set_defaults(run=run)
