"""Demo preset (Madry + AAD) vs an undefended model trained the same steps, both as ``make demo`` trains.

Usage: .venv/bin/python benchmarks/demo_robustness.py [--ranks 2]
Prints a Markdown table of robust accuracy (same held-out images, same eps) for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RUNS = {"undefended (plain)": ["objective.name=plain", "attack.name=none"], "madry+aad (demo)": []}


def main() -> int:
    """Train both with ``aadscale demo`` and tabulate their eval.json."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ranks", type=int, default=2)
    args = p.parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows = []
    for label, overrides in RUNS.items():
        name = f"bench-{label.split()[0]}-{stamp}"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "aadscale.cli", "demo", "--ranks", str(args.ranks),
                        "--name", name, *overrides], check=True)
        result = json.loads((Path("runs") / name / "eval.json").read_text())
        rows.append((label, result, time.perf_counter() - t0))
    cols = [k for k in rows[0][1]["accuracy"] if k != "n"]
    print("| model | " + " | ".join(cols) + " | n | steps | wall s |")
    print("|---" * (len(cols) + 4) + "|")
    for label, result, wall in rows:
        acc = result["accuracy"]
        print(f"| {label} | " + " | ".join(f"{acc[c]:.1f}" for c in cols) +
              f" | {acc['n']} | {result['step']} | {wall:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
