"""Rank helpers and the DeepSpeed config generated from the typed config."""
from aadscale.distributed.context import (
                                          DistContext,
                                          all_reduce_sum,
                                          barrier,
                                          broadcast_object,
                                          exit_process,
                                          init_distributed,
                                          is_main,
                                          rank_and_world,
                                          shutdown,
)
from aadscale.distributed.deepspeed_config import deepspeed_config, load_user_config, micro_batch_size

__all__ = ["DistContext", "init_distributed", "is_main", "rank_and_world", "barrier", "all_reduce_sum",
           "broadcast_object", "exit_process", "shutdown", "deepspeed_config", "load_user_config", "micro_batch_size"]
