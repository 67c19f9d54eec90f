"""The SLURM script, the hostfile example and the Ray cluster YAML are valid and complete."""
from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SLURM = ROOT / "launchers" / "slurm_train.sh"
RAY_CLUSTER = ROOT / "tuning" / "ray_cluster.yaml"


def sbatch_options(path: Path) -> dict[str, str]:
    """``#SBATCH --key=value`` lines before the first command, as {key: value}."""
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("#SBATCH"):
            key, _, value = line.split(None, 1)[1].lstrip("-").partition("=")
            out[key] = value
        elif line.strip() and not line.startswith("#"):
            break  # sbatch stops reading options at the first command
    return out


def test_slurm_script_parses_with_bash_n(tmp_path):
    assert subprocess.run(["bash", "-n", str(SLURM)], capture_output=True, timeout=30).returncode == 0
    broken = tmp_path / "broken.sh"
    broken.write_text(SLURM.read_text().replace("esac", ""))
    assert subprocess.run(["bash", "-n", str(broken)], capture_output=True, timeout=30).returncode != 0


def test_slurm_script_requests_one_launcher_per_node_with_gpus():
    opts = sbatch_options(SLURM)
    assert int(opts["nodes"]) >= 2
    assert opts["ntasks-per-node"] == "1"  # one launcher per node, it starts the per-GPU ranks
    assert int(opts["gpus-per-node"]) >= 1
    assert re.fullmatch(r"\d+:\d\d:\d\d", opts["time"])
    assert {"job-name", "output", "cpus-per-task"} <= set(opts)


def test_slurm_script_launchers_and_nccl_environment():
    text = SLURM.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert SLURM.stat().st_mode & 0o111
    for var in ("MASTER_ADDR", "MASTER_PORT", "NCCL_DEBUG", "NCCL_SOCKET_IFNAME", "NCCL_IB_DISABLE",
                "TORCH_NCCL_ASYNC_ERROR_HANDLING"):
        assert re.search(rf"^export {var}=|^export .*\b{var}\b", text, re.M), var
    assert re.search(r"srun .*deepspeed --hostfile .*--no_ssh", text, re.S)
    assert re.search(r"srun .*torchrun --nnodes", text, re.S)
    assert "launchers/train_imagenet.py" in text


def test_hostfile_example_is_in_deepspeed_format():
    from deepspeed.launcher.runner import fetch_hostfile
    pool = fetch_hostfile(str(ROOT / "launchers" / "hostfile.example"))
    assert len(pool) >= 2 and all(slots >= 1 for slots in pool.values())


def ray_config() -> dict:
    return yaml.safe_load(RAY_CLUSTER.read_text())


def test_ray_cluster_yaml_required_fields():
    cfg = ray_config()
    assert cfg["cluster_name"] and cfg["provider"]["type"]
    assert cfg["docker"]["image"].startswith("aadscale")
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    workers = [t for name, t in types.items() if name != cfg["head_node_type"]]
    assert workers and all(t["max_workers"] <= cfg["max_workers"] for t in workers)
    assert "--gpus all" in cfg["docker"]["worker_run_options"]
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])


def test_ray_cluster_yaml_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config
    validate_config(prepare_config(ray_config()))


def test_rays_validation_rejects_a_broken_cluster_yaml():
    from ray.autoscaler._private.util import prepare_config, validate_config
    bad = copy.deepcopy(ray_config())
    bad["head_node_type"] = "no_such_type"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(bad))
