"""Measure the spread behind the margins of the statistical tests (attack strengths, accuracies).

Each quantity a test compares is recomputed over several seeds of its random parts: the
seed that trains the model (a stand-in for another CPU, which rounds differently and so
ends with a slightly different model) crossed with the seed of the attack's random
start. The table gives mean, standard deviation and extremes of each quantity; a test's
margin must cover the extreme in the direction the assertion forbids.

    .venv/bin/python benchmarks/test_margins.py --model-seeds 5 --attack-seeds 5
    ATEN_CPU_CAPABILITY=avx2 .venv/bin/python benchmarks/test_margins.py   # another kernel set
    .venv/bin/python benchmarks/test_margins.py --checks precision         # only some checks
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aadscale import attacks  # noqa: E402
from aadscale.attention import grad_cam, iou, topk_mask  # noqa: E402
from aadscale.config import AttackConfig  # noqa: E402
from aadscale.engine.step import build_training_attack  # noqa: E402
from aadscale.evaluate import TABLE6, robust_accuracy  # noqa: E402
from aadscale.evaluate.suite import evaluate_suite  # noqa: E402
from aadscale.distributed import run_main  # noqa: E402
from tests.conftest import accuracy, digits_split, train_digits_model  # noqa: E402

EPS = 0.1


def table6(model, x, y, seed: int) -> dict[str, float]:
    """tests/test_evaluate.py: Table 6 on the first 100 test images."""
    r = robust_accuracy(model, [(x[:100], y[:100])], TABLE6, eps=EPS, progress=False, seed=seed)
    return {"t6 clean-fgsm": r["clean"] - r["fgsm"], "t6 fgsm-pgd10": r["fgsm"] - r["pgd10"],
            "t6 pgd10-pgd40": r["pgd10"] - r["pgd40"], "t6 pgd20-pgd100": r["pgd20"] - r["pgd100"],
            "t6 cw10-cw100": r["cw10"] - r["cw100"], "t6 clean-pgd100": r["clean"] - r["pgd100"]}


def strength(model, x, y, seed: int) -> dict[str, float]:
    """tests/test_attacks.py: FGSM vs PGD on all 297 test images, CW and StepLL damage."""
    g = lambda: torch.Generator().manual_seed(seed)  # noqa: E731
    clean = accuracy(model, x, y)
    fgsm = accuracy(model, attacks.fgsm(model, x, y, eps=EPS), y)
    pgd10 = accuracy(model, attacks.pgd(model, x, y, eps=EPS, steps=10, generator=g()), y)
    cw10 = accuracy(model, attacks.cw(model, x, y, eps=EPS, steps=10, generator=g()), y)
    ill = accuracy(model, attacks.iter_step_ll(model, x, y, eps=EPS, steps=10), y)
    sll = accuracy(model, attacks.step_ll(model, x, y, eps=EPS), y)
    return {"atk clean": clean, "atk fgsm-pgd10": fgsm - pgd10, "atk clean-pgd10": clean - pgd10,
            "atk clean-cw10": clean - cw10, "atk clean-iter_step_ll10": clean - ill,
            "atk clean-step_ll": clean - sll}


def a3_gap(model, x, y, seed: int) -> dict[str, float]:
    """tests/test_attacks.py: top-10 IoU of clean vs adversarial maps on all test images, base minus A3."""
    clean_top = topk_mask(grad_cam(model, x, y), 10)
    top_iou = lambda a: float(iou(clean_top, topk_mask(grad_cam(model, a, y), 10)).mean())  # noqa: E731
    out = {}
    for base, plain in (("pgd", attacks.pgd), ("iter_step_ll", attacks.iter_step_ll)):
        b = plain(model, x, y, eps=EPS, steps=5, generator=torch.Generator().manual_seed(seed))
        a = attacks.a3(model, x, y, base=base, eps=EPS, steps=5, gamma=10.0,
                       generator=torch.Generator().manual_seed(seed))
        out[f"a3 iou {base}-a3"] = top_iou(b) - top_iou(a)
    return out


def precision(model, x, y, seed: int) -> dict[str, float]:
    """tests/test_attacks.py: the training PGD-10 under bf16 autocast vs float32, same start, all images."""
    def acc(prec: str, start: int) -> float:
        cfg = AttackConfig(name="pgd", eps=EPS, steps=10, precision=prec)
        return accuracy(model, build_training_attack(model, cfg)(x, y, torch.Generator().manual_seed(start)).x_adv, y)
    fp32 = acc("fp32", seed)
    return {"prec pgd10 bf16-fp32": acc("bf16", seed) - fp32,
            "prec pgd10 fp32 other start-fp32": acc("fp32", seed + 1000) - fp32}


def suite(model, x, y, seed: int) -> dict[str, float]:
    """tests/test_evaluate_suite.py: PGD-5/10/20 and APGD-20 on a 256-image subset."""
    import tempfile

    from torch.utils.data import TensorDataset
    with tempfile.TemporaryDirectory() as out:
        r = evaluate_suite(model, TensorDataset(x, y), out, eps=EPS,
                           attacks=["clean", "pgd5", "pgd10", "pgd20"], strong=["apgd20"],
                           limit=256, seed=seed, batch_size=128, progress=False)["results"]
    return {"suite clean": r["clean"], "suite clean-pgd20": r["clean"] - r["pgd20"],
            "suite pgd5-pgd10": r["pgd5"] - r["pgd10"], "suite pgd10-pgd20": r["pgd10"] - r["pgd20"],
            "suite pgd5-pgd20": r["pgd5"] - r["pgd20"], "suite pgd20-apgd20": r["pgd20"] - r["apgd20"]}


def analysis(model_seed: int) -> dict[str, float]:
    """tests/test_analysis_study.py: the pasted-object net, trained with ``model_seed``."""
    from aadscale.analysis import StudyOptions, study_batch
    from tests.test_analysis_study import pasted, train_gap_net
    model = train_gap_net(model_seed)
    x, y, box = pasted(64, seed=2)
    rec = study_batch(model, x, y, box, StudyOptions(eps=8 / 255))
    trained = statistics.mean(r["box_iou"] for r in rec)
    shuffled = study_batch(model, x, y, box.roll(1, 0), StudyOptions(eps=8 / 255))
    x4, y4, box4 = pasted(64, seed=4)
    rec4 = study_batch(model, x4, y4, box4, StudyOptions(eps=0.3, attack="pgd10", top_ns=(5, 10, 300)))
    return {"ana correct of 64": len(rec), "ana box iou": trained,
            "ana iou trained-shuffled boxes": trained - statistics.mean(r["box_iou"] for r in shuffled),
            "ana fooled of 64, pgd10 eps .3": sum(r["fooled"] for r in rec4)}


CHECKS = {"table6": table6, "strength": strength, "a3": a3_gap, "suite": suite, "precision": precision}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-seeds", type=int, default=5)
    ap.add_argument("--attack-seeds", type=int, default=5)
    ap.add_argument("--checks", nargs="+", default=list(CHECKS) + ["analysis"],
                    choices=list(CHECKS) + ["analysis"])
    args = ap.parse_args()
    torch.set_num_threads(2)
    xtr, ytr, xte, yte = digits_split()
    values: dict[str, list[float]] = defaultdict(list)
    checks: list[Callable] = [CHECKS[name] for name in args.checks if name in CHECKS]
    t0 = time.time()
    for ms in range(args.model_seeds):
        model = train_digits_model(xtr, ytr, seed=ms)
        for s in range(args.attack_seeds):
            for check in checks:
                for k, v in check(model, xte, yte, s).items():
                    values[k].append(v)
        for k, v in (analysis(ms) if "analysis" in args.checks else {}).items():
            values[k].append(v)
        print(f"model seed {ms} done ({time.time() - t0:.0f} s)", file=sys.stderr)
    print(f"{args.model_seeds} model seeds x {args.attack_seeds} attack seeds; "
          f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("| quantity | n | mean | std | min | max |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k, v in values.items():
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"| {k} | {len(v)} | {statistics.mean(v):.3f} | {sd:.3f} | {min(v):.3f} | {max(v):.3f} |")


if __name__ == "__main__":
    run_main(main)
