"""Rank helpers, the one place for collectives, and the DeepSpeed config generated from the typed config."""
from aadscale.distributed.collectives import (
                                              CollectiveDeviceError,
                                              all_gather_object,
                                              all_reduce_sum,
                                              barrier,
                                              broadcast_object,
                                              group_device,
                                              in_group,
                                              sum_over_ranks,
)
from aadscale.distributed.context import (
                                          DistContext,
                                          exit_process,
                                          init_distributed,
                                          is_main,
                                          rank_and_world,
                                          shutdown,
)
from aadscale.distributed.deepspeed_config import deepspeed_config, load_user_config, micro_batch_size

__all__ = ["DistContext", "init_distributed", "is_main", "rank_and_world", "barrier", "all_reduce_sum",
           "sum_over_ranks", "broadcast_object", "all_gather_object", "group_device", "in_group",
           "CollectiveDeviceError", "exit_process", "shutdown", "deepspeed_config", "load_user_config",
           "micro_batch_size"]
