"""The training engine: ``fit(cfg, callbacks)``, its step, schedules and checkpoints."""
from aadscale.engine.callbacks import Callback, StepInfo
from aadscale.engine.trainer import NonFiniteLossError, fit

__all__ = ["fit", "Callback", "StepInfo", "NonFiniteLossError"]
