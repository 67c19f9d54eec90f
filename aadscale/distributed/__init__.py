"""Rank helpers, the one place for collectives, the one exit path, stop signals, and the DeepSpeed config."""
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
from aadscale.distributed.context import DistContext, init_distributed, is_main, rank_and_world
from aadscale.distributed.deepspeed_config import deepspeed_config, load_user_config, micro_batch_size
from aadscale.distributed.exit_path import exit_process, run_main, shutdown
from aadscale.distributed.signals import RESUME_EXIT_CODE, SavedOnSignal, StopSignals

__all__ = ["DistContext", "init_distributed", "is_main", "rank_and_world", "barrier", "all_reduce_sum",
           "sum_over_ranks", "broadcast_object", "all_gather_object", "group_device", "in_group",
           "CollectiveDeviceError", "exit_process", "run_main", "shutdown", "RESUME_EXIT_CODE", "SavedOnSignal",
           "StopSignals", "deepspeed_config", "load_user_config", "micro_batch_size"]
