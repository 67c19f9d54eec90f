"""Ray Tune sweeps over any config field: search spaces, trials on Ray Train, tables, presets, plots."""
from aadscale.tuning.runner import SweepOptions, SweepOutcome, resume_sweep, run_sweep
from aadscale.tuning.space import SweepSpace, check_space, load_space, parse_space

__all__ = ["SweepOptions", "SweepOutcome", "run_sweep", "resume_sweep", "SweepSpace", "load_space",
           "parse_space", "check_space"]
