"""Images/s of the plain, Madry (PGD-k) and AAD training steps and of the fused adversarial step, per mode.

    .venv/bin/python benchmarks/step_throughput.py --model resnet9_small --image-size 32 --batch 32
    .venv/bin/python benchmarks/step_throughput.py --model resnet50 --image-size 224 \
        --batch 32 64 128 --precision bf16            # on a GPU: eager, compile, graph
    .venv/bin/python benchmarks/step_throughput.py --model resnet50 --image-size 224 --batch 128 \
        --precision bf16 --memory-formats contiguous channels_last --attack-precisions fp32 bf16
    .venv/bin/python benchmarks/step_throughput.py --model resnet50 --image-size 224 --batch 32 128 \
        --precision bf16 --modes eager graph graph-step   # on a GPU: capturing the whole step

Each step is compared with its floor: model FLOPs per image (FlopCounterMode) x passes per
step / the device's measured matmul rate in that pass's precision. Passes are counted in
forward costs: an attack step (forward + input gradient) is 2, a training forward + backward
is 3, a Grad-CAM (forward + gradient to the layer) is 2. The attack runs in each of
``--attack-precisions`` (the engine's ``attack.precision``, float32 by default), the training
part in ``--precision``; weights and batch in each of ``--memory-formats``
(``train.memory_format``). The optimiser is plain SGD (no DeepSpeed).

Modes: ``eager``, ``compile`` and ``graph`` run the attack as ``train.step_mode`` does (the
training part eager); ``graph-step`` (CUDA only, not in the engine) records the whole step
(attack, training forwards, double backward, SGD update) as one CUDA graph, to measure what
capturing the training part too would pay before the engine tries it under DeepSpeed. It is
possible because the step issues no host sync after its first call (``tests/test_step_syncs.py``).
"""
from __future__ import annotations

import argparse
import platform
import time
from typing import Callable, NamedTuple

import torch
from torch.utils.flop_counter import FlopCounterMode

from aadscale import models
from aadscale.engine.step import compute_loss
from aadscale.fused import AdversarialStep
from aadscale.fused.graph import CapturedCall
from aadscale.memory_format import MEMORY_FORMATS
from aadscale.objectives import build_objective
from aadscale.precision import AUTOCAST
from aadscale.distributed import run_main

EPS = 8 / 255
# step kind -> (objective, attack forward-costs per PGD step, fixed attack costs, training costs)
KINDS = {
    "plain": ("plain", 0, 0, 3),
    "madry": ("madry", 2, 0, 3),
    "madry+aad": ("madry+aad", 2, 0, 12),  # clean, adv and two masked forwards, each + backward
    "attack+cams": (None, 2, 4, 0),  # the fused step alone: PGD-k and two Grad-CAMs
    "alp": ("alp", 2, 0, 6),  # clean and adv forwards, each + backward
    "alp+aad": ("alp+aad", 2, 0, 12),
}
DEFAULT_KINDS = ["plain", "madry", "madry+aad", "attack+cams"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """Measured FLOP/s of an n x n x n matmul (best of ``repeats``)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def flops_per_image(model: torch.nn.Module, size: int, device: torch.device) -> float:
    """Forward FLOPs of one image (counted on a batch of 2, halved)."""
    x = torch.rand(2, model.in_channels, size, size, device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 2


def passes(kind: str, steps: int) -> tuple[int, int]:
    """(float32 attack forward-costs, training forward-costs) of one step."""
    _, per_step, fixed, train = KINDS[kind]
    return per_step * steps + fixed if per_step else 0, train


class StepLoss(NamedTuple):
    """What a training step returns (a NamedTuple, as ``CapturedCall`` copies its outputs out)."""
    loss: torch.Tensor


def make_step(kind: str, model, attack: AdversarialStep | None, precision: str, lr: float = 0.01
              ) -> Callable[[torch.Tensor, torch.Tensor, torch.Generator], NamedTuple]:
    """One step of ``kind`` as a closure (attack, loss, backward, SGD update)."""
    if kind == "attack+cams":
        return lambda x, y, g: attack(x, y, g)
    objective = build_objective(KINDS[kind][0])
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)

    def step(x, y, g):
        model.train()
        x_adv = attack(x, y, g).x_adv if attack is not None else None
        out = compute_loss(model, objective, x, y, x_adv, precision)
        opt.zero_grad(set_to_none=True)  # the gradients are then allocated inside a capture
        out["loss"].backward()
        opt.step()
        return StepLoss(out["loss"].detach())
    return step


def graph_whole_step(step, x: torch.Tensor, y: torch.Tensor, g: torch.Generator):
    """``step`` recorded once as one CUDA graph (warm-up updates included), replayed per call."""
    captured = CapturedCall(step, x, y, g)
    return lambda x, y, g: captured(x, y)


def seconds_per_step(step, x, y, g, warmup: int, iters: int, device: torch.device) -> float:
    """Best wall time of one step over ``iters`` after ``warmup`` untimed ones.

    The minimum, not the median: on a shared machine other jobs only ever add time.
    """
    for _ in range(warmup):
        step(x, y, g)
    times = []
    for _ in range(iters):
        sync(device)
        start = time.perf_counter()
        step(x, y, g)
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def kind_modes(kind: str, modes: list[str]) -> list[str]:
    """The modes a kind runs in: plain has no attack ("-", and graph-step if asked); the fused
    step alone has no training part to capture (no graph-step)."""
    if kind == "plain":
        return ["-"] + [m for m in modes if m == "graph-step"]
    return [m for m in modes if not (kind == "attack+cams" and m == "graph-step")]


def variant_rows(args, model, x0: torch.Tensor, y: torch.Tensor, fmt: str, attack_precision: str,
                 modes: list[str], rates: dict[str, float], flops: float, plain_s: dict) -> None:
    """Time every kind and mode for one (memory format, attack precision) and print a row each."""
    device, batch = x0.device, x0.shape[0]
    model.to(memory_format=MEMORY_FORMATS[fmt])
    x = x0.contiguous(memory_format=MEMORY_FORMATS[fmt])
    eager_s: dict[str, float] = {}
    for kind in args.kinds:
        if kind == "plain" and fmt in plain_s:
            continue  # plain has no attack: once per memory format
        attack_passes, train_passes = passes(kind, args.steps)
        floor_s = batch * flops * (attack_passes / rates[attack_precision]
                                   + train_passes / rates[args.precision])
        for mode in kind_modes(kind, modes):
            attack = None if kind == "plain" else AdversarialStep(
                model, eps=EPS, steps=args.steps, mode="eager" if mode == "graph-step" else mode,
                cams=kind == "attack+cams", precision=attack_precision)
            g = torch.Generator(device=device).manual_seed(0)
            step = make_step(kind, model, attack, args.precision)
            if mode == "graph-step":
                step = graph_whole_step(step, x, y, g)
            s = seconds_per_step(step, x, y, g, args.warmup, args.iters, device)
            if kind == "plain":
                plain_s.setdefault(fmt, s)  # the eager plain step: what every ratio divides by
            eager_s.setdefault(kind, s)
            ratio = (f"{s / plain_s[fmt]:.2f} ({(attack_passes + train_passes) / 3:.2f})"
                     if fmt in plain_s else "-")
            print(f"| {batch} | {fmt} | {'-' if kind == 'plain' else attack_precision} | {kind} | {mode} "
                  f"| {attack_passes} + {train_passes} | {1000 * s:.1f} | {batch / s:.1f} "
                  f"| {batch / floor_s:.1f} | {100 * floor_s / s:.0f} % | {ratio} | {eager_s[kind] / s:.2f}x |",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet9_small")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch", type=int, nargs="+", default=[32])
    parser.add_argument("--steps", type=int, default=3, help="PGD steps k")
    parser.add_argument("--precision", default="fp32", choices=list(AUTOCAST), help="training forwards")
    parser.add_argument("--attack-precisions", nargs="+", default=["fp32"], choices=list(AUTOCAST),
                        help="the attack's forwards (attack.precision); each one is a variant")
    parser.add_argument("--memory-formats", nargs="+", default=["contiguous"], choices=list(MEMORY_FORMATS),
                        help="weights and batch (train.memory_format); each one is a variant")
    parser.add_argument("--modes", nargs="+", default=None, choices=["eager", "compile", "graph", "graph-step"],
                        help="default: eager compile, plus graph and graph-step on CUDA")
    parser.add_argument("--kinds", nargs="+", default=DEFAULT_KINDS, choices=list(KINDS))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--matmul-size", type=int, default=0, help="default 2048 on CPU, 8192 on CUDA")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = leave as is")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    modes = args.modes or (["eager", "compile", "graph", "graph-step"] if device.type == "cuda"
                           else ["eager", "compile"])
    if device.type != "cuda" and {"graph", "graph-step"} & set(modes):
        parser.error(f"--modes {' '.join(modes)}: graph and graph-step record CUDA graphs; no CUDA device here")
    torch.manual_seed(0)
    model = models.build(args.model, 10).to(device)
    flops = flops_per_image(model, args.image_size, device)
    n = args.matmul_size or (8192 if device.type == "cuda" else 2048)
    rates = {p: matmul_rate(device, AUTOCAST[p] or torch.float32, n)
             for p in {"fp32", args.precision, *args.attack_precisions}}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} torch threads"
    print(f"{args.model} {args.image_size} px, PGD-{args.steps}, training in {args.precision}, "
          f"{name}, torch {torch.__version__}")
    print(f"forward {flops / 1e9:.3f} GFLOP/image; matmul {n}^3 TFLOP/s: "
          + ", ".join(f"{p} {r / 1e12:.3f}" for p, r in sorted(rates.items())))
    print("| batch | format | attack | step | mode | passes (attack + train) | ms/step | images/s "
          "| floor images/s | % of floor | cost / plain (predicted) | vs eager |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for batch in args.batch:
        x = torch.rand(batch, model.in_channels, args.image_size, args.image_size, device=device)
        y = torch.randint(0, 10, (batch,), device=device)
        plain_s: dict[str, float] = {}
        for fmt in args.memory_formats:
            for attack_precision in args.attack_precisions:
                variant_rows(args, model, x, y, fmt, attack_precision, modes, rates, flops, plain_s)


if __name__ == "__main__":
    run_main(main)
