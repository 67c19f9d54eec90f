"""Run folder, TensorBoard on rank 0 and the progress bar."""
from aadscale.atomic import atomic_torch_save, atomic_write, atomic_write_text
from aadscale.tracking.progress import Progress, format_metrics
from aadscale.tracking.run_folder import RunFolder, default_run_name
from aadscale.tracking.tensorboard import TBLogger, cam_grid, flatten, read_events

__all__ = ["RunFolder", "atomic_write", "atomic_write_text", "atomic_torch_save", "default_run_name", "TBLogger", "cam_grid", "flatten",
           "read_events", "Progress", "format_metrics"]
