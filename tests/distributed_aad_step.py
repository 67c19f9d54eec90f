"""Launched script: AAD training steps (PGD + double backward through Grad-CAM) under DeepSpeed ZeRO.

Prints one ``RESULT {json}`` line per rank: the rank helpers' results, the losses, and a
checksum of the full parameters after the steps (gathered under ZeRO-3) that must agree
across ranks.
"""
from __future__ import annotations

import argparse
import json
import os

import deepspeed
import torch

from aadscale import attacks, models, objectives
from aadscale.config import load_config
from aadscale.distributed import (barrier, broadcast_object, deepspeed_config, init_distributed, is_main,
                                  run_main, sum_over_ranks)


def param_checksum(engine, zero_stage: int) -> float:
    """Sum of |p| over the full (gathered) parameters."""
    params = list(engine.module.parameters())
    with deepspeed.zero.GatheredParameters(params, enabled=zero_stage == 3):
        return float(sum(p.detach().abs().sum() for p in params))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--zero", type=int, required=True)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8, help="global batch")
    parser.add_argument("--local_rank", type=int, default=0)  # passed by the DeepSpeed launcher
    args = parser.parse_args()
    torch.set_num_threads(1)
    ctx = init_distributed()
    cfg = load_config(None, [f"train.zero_stage={args.zero}", f"data.batch_size={args.batch}",
                             "model.name=resnet9_small"])
    torch.manual_seed(0)  # same initial weights on every rank
    model = models.build(cfg.model.name, cfg.model.num_classes)
    engine, *_ = deepspeed.initialize(model=model,
                                      optimizer=torch.optim.SGD(model.parameters(), lr=0.05,
                                                                momentum=0.9),
                                      config=deepspeed_config(cfg, ctx.world_size))
    before = param_checksum(engine, args.zero)
    gen = torch.Generator().manual_seed(100 + ctx.rank)  # each rank its own shard of data
    micro = engine.train_micro_batch_size_per_gpu()
    losses = []
    for _ in range(args.steps):
        x = torch.rand(micro, 3, 32, 32, generator=gen)
        y = torch.randint(0, cfg.model.num_classes, (micro,), generator=gen)
        # engine.module, not engine(x): autograd.grad through engine(...) trips ZeRO-1/2 hooks
        x_adv = attacks.pgd(engine.module, x, y, eps=cfg.attack.eps, steps=2, generator=gen)
        terms = objectives.aad(engine.module, x, y, x_adv)
        engine.backward(terms["loss"])
        engine.step()
        losses.append(float(terms["loss"].detach()))
    barrier()
    row = json.dumps({"rank": ctx.rank, "world": ctx.world_size, "zero": args.zero,
                     "is_main": is_main(),
                     "rank_sum": sum_over_ranks(torch.tensor([ctx.rank + 1.0])).item(),
                     "broadcast": broadcast_object({"from": ctx.rank}),
                     "micro": micro, "losses": losses, "checksum_before": before,
                     "checksum": param_checksum(engine, args.zero)})
    # one write per line: the launcher merges every rank's stdout into one pipe
    os.write(1, f"RESULT {row}\n".encode())


if __name__ == "__main__":
    run_main(main)
