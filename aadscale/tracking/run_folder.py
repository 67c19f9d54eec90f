"""One folder per run: runs/<name>/ with config.yaml, configs/ (its history), tb/, checkpoints/ and JSON results."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from aadscale.atomic import atomic_write_text
from aadscale.config import Config, dump_yaml
from aadscale.errors import InputError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]")


def default_run_name(preset: str, now: float | None = None) -> str:
    """``<preset>-<YYYYmmdd-HHMMSS>`` (broadcast it from rank 0: ranks start at different seconds)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    return f"{preset}-{stamp}"


class RunFolder:
    """``root/name/``: ``config.yaml``, ``configs/``, ``tb/``, ``checkpoints/`` and JSON results (made on init)."""

    def __init__(self, root: str | Path, name: str):
        if not _NAME.match(name):
            raise InputError(f"run name {name!r} must be one path component of letters, digits "
                             "and . _ + = - (e.g. demo-20260101-120000)")
        self.path = Path(root) / name
        self.tb = self.path / "tb"
        self.checkpoints = self.path / "checkpoints"
        for d in (self.tb, self.checkpoints):
            d.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def model_path(self) -> Path:
        """The exported float32 model: ``{"model": state_dict, "config": ...}``."""
        return self.path / "model.pt"

    @property
    def ema_model_path(self) -> Path:
        """The EMA of the weights, exported as model.pt is (``train.ema_decay`` > 0)."""
        return self.path / "model_ema.pt"

    @property
    def raw_model_path(self) -> Path:
        """The trained weights when ``train.ema_export`` makes model.pt the EMA."""
        return self.path / "model_raw.pt"

    @property
    def config_path(self) -> Path:
        """Where the current resolved config (with the git commit) lives."""
        return self.path / "config.yaml"

    @property
    def configs(self) -> Path:
        """Every config the run ran with, in order: ``000-start.yaml``, ``001-resume-step40.yaml``, ..."""
        return self.path / "configs"

    def record_config(self, cfg: Config, event: str) -> Path:
        """Keep ``cfg`` (and the git commit) as the next ``configs/NNN-<event>.yaml`` and as ``config.yaml``."""
        self.configs.mkdir(exist_ok=True)
        path = self.configs / f"{len(list(self.configs.glob('*.yaml'))):03d}-{_UNSAFE.sub('_', event)}.yaml"
        dump_yaml(cfg, path)
        atomic_write_text(self.config_path, path.read_text())
        return path

    def json_path(self, name: str) -> Path:
        """``<run>/<name>.json`` (".json" added if missing); ``name`` must be a bare file name."""
        if not name or Path(name).name != name:
            raise InputError(f"JSON name {name!r} must be a file name inside the run folder, not a path")
        return self.path / (name if name.endswith(".json") else f"{name}.json")

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` to :meth:`json_path` atomically, e.g. ``write_json("eval", table)``."""
        path = self.json_path(name)
        atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
        return path

    def read_json(self, name: str) -> Any:
        """Read back a JSON file written by :meth:`write_json`."""
        return json.loads(self.json_path(name).read_text())
