"""Run folder, TensorBoard on rank 0 and the progress bar."""
from aadscale.logging.progress import Progress, format_metrics
from aadscale.logging.run_folder import RunFolder, atomic_write_text, default_run_name
from aadscale.logging.tensorboard import TBLogger, cam_grid, flatten, read_events

__all__ = ["RunFolder", "atomic_write_text", "default_run_name", "TBLogger", "cam_grid", "flatten",
           "read_events", "Progress", "format_metrics"]
