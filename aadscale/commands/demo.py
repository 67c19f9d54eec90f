"""``aadscale demo``: the demo preset, Madry + AAD and its base Madry, on CPU ranks under the DeepSpeed launcher."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import aadscale
from aadscale.config import load_config
from aadscale.errors import InputError
from aadscale.evaluate import format_rows
from aadscale.tracking.run_folder import default_run_name

LAUNCHER = Path(aadscale.__file__).resolve().parent.parent / "launchers" / "train_imagenet.py"


def deepspeed_command(ranks: int, script: Path, script_args: list[str]) -> list[str]:
    """The DeepSpeed launcher call for ``ranks`` local ranks (CPU ranks where there is no GPU)."""
    exe = shutil.which("deepspeed") or str(Path(sys.executable).parent / "deepspeed")
    return [exe, "--num_gpus", str(ranks), str(script), *script_args]


BASE = "madry"  # the demo's defense is madry+aad; its base, trained the same way, is shown beside it


def run(args: argparse.Namespace) -> int:
    """Train the base and the defense, then print both robust-accuracy rows and where the logs are."""
    if not LAUNCHER.is_file():
        raise InputError(f"{LAUNCHER} not found: run the demo from a source checkout of aadscale")
    name = args.name or default_run_name("demo")
    runs = {BASE: (f"{name}-{BASE}", [f"objective.name={BASE}"]), "madry+aad": (name, [])}
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    results = {}
    for label, (run_name, extra) in runs.items():
        cmd = deepspeed_command(args.ranks, LAUNCHER, ["--preset", "demo", "--name", run_name,
                                                       *args.overrides, *extra])
        print("$ " + " ".join(cmd), flush=True)
        code = subprocess.call(cmd, env=env)
        if code:
            print(f"aadscale demo: the training job failed (exit code {code})", file=sys.stderr)
            return code
        results[label] = json.loads((Path("runs") / run_name / "eval.json").read_text())
    first = next(iter(results.values()))
    print(f"\nRobust accuracy (%) on {first['accuracy']['n']} held-out demo images, "
          f"eps={first['eps']:.4f}, after {first['step']} steps each (base and defense, same seed):\n")
    columns = load_config("demo", list(args.overrides)).eval.attacks + ["worst"]  # attack order, not eval.json's
    print(format_rows({label: r["accuracy"] for label, r in results.items()}, columns))
    run_dir = Path("runs") / name
    print(f"\nrun folders:  {run_dir}/ and {run_dir}-{BASE}/ (config.yaml, eval.json, model.pt)\n"
          f"checkpoints:  {run_dir}/checkpoints/ (resume: add --resume auto)\n"
          f"TensorBoard:  .venv/bin/tensorboard --logdir runs/\n"
          f"evaluate:     .venv/bin/aadscale evaluate {run_dir}/model.pt --out {run_dir}/eval\n"
          f"compare:      .venv/bin/aadscale compare   (every objective x 3 seeds, strong and "
          f"gradient-free attacks)")
    return 0


def register(sub) -> None:
    """Add the ``demo`` sub-command."""
    p = sub.add_parser("demo", help="train the demo preset (Madry + AAD) and its base on CPU ranks, a few minutes")
    p.add_argument("--ranks", type=int, default=2, help="number of local DeepSpeed ranks")
    p.add_argument("--name", default=None, help="run name (default demo-<time>)")
    p.add_argument("overrides", nargs="*", help="section.field=value overrides of the demo preset")
    p.set_defaults(run=run)
