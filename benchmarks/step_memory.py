"""Activation memory per image of each training step: what sets the largest batch that fits a GPU.

    .venv/bin/python benchmarks/step_memory.py                      # ResNet-50, 224 px, bf16 training
    .venv/bin/python benchmarks/step_memory.py --model resnet9_small --image-size 32 --precision fp32

"saved" counts the bytes autograd keeps for the training loss's backward when the forwards
end (every saved tensor's storage once): the step's activation peak, on any device. It is
measured at two batch sizes and differenced, so the weights, their autocast copies and
anything else per batch cancel out. The attack's graphs are freed before the training
forwards and do not count. On CUDA the allocator's peak over the whole step (attack, forwards,
backward, SGD update) is differenced the same way.
"""
from __future__ import annotations

import argparse

import torch

# this folder (on sys.path when run as a script): the step the throughput benchmark times
from step_throughput import EPS, make_step

from aadscale import models
from aadscale.engine.step import compute_loss
from aadscale.fused import AdversarialStep
from aadscale.objectives import build_objective
from aadscale.precision import AUTOCAST
from aadscale.distributed import run_main

KINDS = ("plain", "madry", "alp", "madry+aad", "alp+aad")
GIB = 2 ** 30


def saved_bytes(model, kind: str, x: torch.Tensor, y: torch.Tensor, precision: str) -> int:
    """Bytes of the distinct storages autograd saves for the training loss of one step of ``kind``."""
    attack = None if kind == "plain" else AdversarialStep(model, eps=EPS, steps=1, cams=False)
    x_adv = attack(x, y, torch.Generator(device=x.device).manual_seed(0)).x_adv if attack else None
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = compute_loss(model, build_objective(kind), x, y, x_adv, precision)["loss"]
    del loss
    return sum(storages.values())


def peak_bytes(model, kind: str, x: torch.Tensor, y: torch.Tensor, precision: str) -> int:
    """The CUDA allocator's peak over one whole step of ``kind`` (PGD-3 attack, loss, backward, SGD update)."""
    attack = None if kind == "plain" else AdversarialStep(model, eps=EPS, steps=3, cams=False,
                                                           precision=precision)
    step = make_step(kind, model, attack, precision)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step(x, y, torch.Generator(device=x.device).manual_seed(0))
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def per_image(measure, model, kind: str, batches: tuple[int, int], size: int, precision: str,
              device: torch.device) -> float:
    """(measure at the larger batch - at the smaller) / the batch difference, in bytes per image.

    The smaller batch runs twice and counts the second time: one-time allocations (cuBLAS and
    cuDNN handles and workspaces) land in the first run, not in the difference.
    """
    values = []
    for batch in (batches[0], *batches):
        torch.manual_seed(0)
        x = torch.rand(batch, model.in_channels, size, size, device=device)
        y = torch.randint(0, 10, (batch,), device=device)
        values.append(measure(model, kind, x, y, precision))
    return (values[2] - values[1]) / (batches[1] - batches[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--precision", default="bf16", choices=list(AUTOCAST), help="training forwards")
    parser.add_argument("--batches", type=int, nargs=2, default=[2, 4], help="the two batch sizes differenced")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--gpu-gib", type=float, nargs="+", default=[80.0, 141.0],
                        help="GPU memories to size the micro-batch for (H100 80 GB, H200 141 GB)")
    parser.add_argument("--reserve-gib", type=float, default=8.0,
                        help="kept for weights, optimiser state, cuDNN workspaces and fragmentation")
    args = parser.parse_args()
    if args.batches[1] <= args.batches[0] or args.batches[0] < 1:
        parser.error(f"--batches {args.batches}: two sizes, the second larger")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = models.build(args.model, 10).to(device)
    print(f"{args.model} {args.image_size} px, training forwards in {args.precision}, on {device}, "
          f"torch {torch.__version__}; batches {args.batches[0]} and {args.batches[1]} differenced")
    gpus = " | ".join(f"micro-batch in {m:g} GiB" for m in args.gpu_gib)
    cuda = device.type == "cuda"
    print(f"| objective | saved MiB/image |{' CUDA peak MiB/image |' if cuda else ''} {gpus} |")
    print("| --- | --- |" + (" --- |" if cuda else "") + " --- |" * len(args.gpu_gib))
    for kind in args.kinds:
        saved = per_image(saved_bytes, model, kind, args.batches, args.image_size, args.precision, device)
        cells = [f"{saved / 2 ** 20:.1f}"]
        worst = saved
        if cuda:
            peak = per_image(peak_bytes, model, kind, args.batches, args.image_size, args.precision, device)
            cells.append(f"{peak / 2 ** 20:.1f}")
            worst = max(saved, peak)
        cells += [f"{int((m - args.reserve_gib) * GIB // worst)}" for m in args.gpu_gib]
        print(f"| {kind} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    run_main(main)
