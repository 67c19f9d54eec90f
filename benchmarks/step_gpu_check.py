"""GPU check of the fused adversarial step: graph mode gives eager mode's images, maps and RNG state.

    .venv/bin/python benchmarks/step_gpu_check.py            # exits 1 on any failure, 2 without CUDA
    .venv/bin/python benchmarks/step_gpu_check.py --models timm/convnext_tiny timm/vit_small_patch16_224

Per model, in NCHW with a float32 attack and in channels_last with a bf16 attack (the
ImageNet presets' choice on CUDA): a full batch twice, an SGD update of the weights in place,
the full batch again and a smaller last batch, in eager and in graph mode from generators
with the same seed; the eager step must equal the eager attack loop (``run_attack``) bitwise.
Tolerance: adversarial pixels equal to 1e-6 except at most 0.1 % of them (a sign flip of a
near-zero input gradient moves a pixel by 2 alpha), maps to rtol 1e-4 / atol 1e-5 of
their maximum on the images whose adversarial twins agree, generator states equal.
"""
from __future__ import annotations

import argparse
import sys

import torch

from aadscale import models
from aadscale.attacks.ascent import run_attack
from aadscale.attacks.standard import ce_objective
from aadscale.fused import AdversarialStep
from aadscale.memory_format import MEMORY_FORMATS
from aadscale.precision import autocast_dtype
from aadscale.distributed import run_main

EPS = 8 / 255
# model -> (image size, batch, smaller last batch); timm models at their ImageNet size, random init
MODELS = {"resnet9_small": (32, 32, 20), "resnet50": (224, 16, 5),
          "timm/convnext_tiny": (224, 16, 5), "timm/vit_small_patch16_224": (224, 16, 5)}


def compare(name: str, eager, graph) -> list[str]:
    """Failure messages (empty when graph agrees with eager within the stated tolerance)."""
    moved = (eager.x_adv - graph.x_adv).abs() > 1e-6
    agree = ~moved.flatten(1).any(1)
    print(f"  {name}: x_adv exact {torch.equal(eager.x_adv, graph.x_adv)}, "
          f"{moved.float().mean().item() * 100:.4f} % pixels differ, "
          f"cam_clean max diff {(eager.cam_clean - graph.cam_clean).abs().max().item():.2e}")
    errors = []
    if moved.float().mean() > 1e-3:
        errors.append(f"{name}: {moved.float().mean().item() * 100:.3f} % adversarial pixels differ")
    for key in ("cam_clean", "cam_adv"):
        a, b = getattr(eager, key), getattr(graph, key)
        rows = slice(None) if key == "cam_clean" else agree
        scale = a.abs().max().clamp_min(1e-12)
        if not torch.allclose(a[rows] / scale, b[rows] / scale, rtol=1e-4, atol=1e-5):
            errors.append(f"{name}: {key} differs by {(a[rows] - b[rows]).abs().max().item():.3e}")
    return errors


def check(model_name: str, size: int, batch: int, last: int, steps: int, memory_format: str,
          precision: str) -> list[str]:
    torch.manual_seed(0)
    device = torch.device("cuda")
    layout = MEMORY_FORMATS[memory_format]
    model = models.build(model_name, 10).to(device, memory_format=layout)
    x = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (batch,), device=device)
    eager = AdversarialStep(model, eps=EPS, steps=steps, mode="eager", precision=precision)
    graph = AdversarialStep(model, eps=EPS, steps=steps, mode="auto", precision=precision)
    model_name = f"{model_name} {memory_format} attack {precision}"
    errors = [] if graph.mode == "graph" else [f"{model_name}: auto picked {graph.mode}, not graph"]
    g_e = torch.Generator(device=device).manual_seed(1)
    g_g = torch.Generator(device=device).manual_seed(1)
    ref = run_attack(model, x, y, ce_objective(model, y), eps=EPS, alpha=None, steps=steps, random_start=True,
                     restarts=1, keep_best=False, generator=torch.Generator(device=device).manual_seed(1),
                     dtype=autocast_dtype(precision))
    first_e = eager(x, y, g_e)
    if not torch.equal(ref, first_e.x_adv):
        errors.append(f"{model_name}: eager step differs from the eager attack loop on CUDA")
    errors += compare(f"{model_name} call 1", first_e, graph(x, y, g_g))
    errors += compare(f"{model_name} call 2", eager(x, y, g_e), graph(x, y, g_g))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)  # in-place update: the graph must see it
    model.train()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    errors += compare(f"{model_name} after SGD", eager(x, y, g_e), graph(x, y, g_g))
    errors += compare(f"{model_name} last batch {last}", eager(x[:last], y[:last], g_e),
                      graph(x[:last], y[:last], g_g))
    if not torch.equal(g_e.get_state(), g_g.get_state()):
        errors.append(f"{model_name}: generator states differ after the same calls")
    print(f"  {model_name}: {len(graph._graphs)} graphs captured, generator states equal "
          f"{torch.equal(g_e.get_state(), g_g.get_state())}")
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["resnet9_small", "resnet50"], choices=list(MODELS))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing checked")
        sys.exit(2)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    errors = []
    for memory_format, precision in (("contiguous", "fp32"), ("channels_last", "bf16")):
        for model_name in args.models:
            errors += check(model_name, *MODELS[model_name], args.steps, memory_format, precision)
    print("\n".join(["FAIL " + e for e in errors] or ["PASS: graph mode matches eager"]))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    run_main(main)
