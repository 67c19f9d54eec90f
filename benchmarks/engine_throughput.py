"""Images/s of the whole engine (data, attack, objective, DeepSpeed step) on a preset, from its TensorBoard log.

    .venv/bin/python benchmarks/engine_throughput.py --preset imagenet-resnet50 --backend dali-gpu
    .venv/bin/python benchmarks/engine_throughput.py --preset imagenet-resnet50 --data /data/imagenet
    .venv/bin/python benchmarks/engine_throughput.py --preset demo --launcher python --steps 6 \
        --images 256 --backend torch data.batch_size=32 data.image_size=32     # a CPU smoke run

Without ``--data`` the training split is ``--images`` JPEGs of 8 classes at ImageNet sizes: 32
distinct photos per class (``aadscale.data.photos``) hard-linked up to the count, so decoding
costs what real photos cost (``model.num_classes=8``; ``model.pretrained`` is off: no network).
The run logs every ``--log-every`` steps; intervals ending in the first ``--skip`` steps (capture,
cuDNN autotuning, start-up) are left out. Per logged interval the engine reports images/s end to
end (global images over the wall time between two logging steps, which sync with the device:
data, attack, objective, backward, optimiser) and the host's mean wait for a batch per step.
Evaluation is cut to clean accuracy on 256 images, and only at the end.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aadscale.config import load_config  # noqa: E402
from aadscale.data.photos import write_photo_folder  # noqa: E402
from aadscale.tracking import read_events  # noqa: E402
from aadscale.distributed import run_main  # noqa: E402


def synthetic_imagenet(root: Path, images: int, classes: int = 8) -> Path:
    """``root/train``: ``images`` JPEGs (32 distinct per class, hard-linked up to the count); ``root/val``: 256."""
    write_photo_folder(root, split="val", classes=classes, per_class=256 // classes, seed=1)
    write_photo_folder(root, split="train", classes=classes, per_class=images // classes, seed=0, distinct=32)
    return root


def command(args, data: Path, log_dir: Path) -> list[str]:
    """The launcher command: the preset, the benchmark's overrides, then the user's."""
    overrides = [f"data.backend={args.backend}", f"train.max_steps={args.steps}", f"log.dir={log_dir}",
                 "log.name=engine", f"log.scalar_every={args.log_every}", "log.image_every=0",
                 "eval.every_epochs=0", "eval.attacks=clean", "eval.subset=256", "train.checkpoint_every=0"]
    if not args.data:
        overrides += ["data.dataset=imagenet", "model.num_classes=8", "model.pretrained="]
    overrides += args.overrides
    launcher = (["deepspeed", "--num_gpus", "1"] if args.launcher == "deepspeed" else [sys.executable])
    return launcher + [str(ROOT / "launchers" / "train_imagenet.py"), "--preset", args.preset,
                       "--data", str(data), *overrides]


def summarize(log_dir: Path, skip: int, log_every: int) -> dict[str, float]:
    """Median end-to-end images/s and data wait per step over the logged intervals after step ``skip``."""
    scalars = read_events(log_dir / "engine" / "tb")["scalars"]
    rate = [v for s, v in scalars["train/images_per_s"] if s - log_every >= skip]
    wait = [v for s, v in scalars["train/data_wait_s"] if s - log_every >= skip]
    if not rate:
        raise SystemExit(f"no logged interval after step {skip}: raise --steps or lower --skip")
    return {"intervals": len(rate), "end_to_end": statistics.median(rate), "wait": statistics.median(wait)}


def rate(images_per_s: float) -> str:
    """Whole images/s on a GPU, two decimals where there are few (a CPU)."""
    return f"{images_per_s:.0f}" if images_per_s >= 100 else f"{images_per_s:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="imagenet-resnet50")
    parser.add_argument("--data", default="", help="an ImageNet-layout folder; default: synthetic JPEGs")
    parser.add_argument("--backend", default="dali-gpu", help="data.backend")
    parser.add_argument("--images", type=int, default=8192, help="synthetic training JPEGs")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--skip", type=int, default=10, help="steps left out as start-up")
    parser.add_argument("--log-every", type=int, default=2)
    parser.add_argument("--launcher", default="deepspeed", choices=["deepspeed", "python"])
    parser.add_argument("--timeout", type=int, default=300, help="seconds for the training run")
    parser.add_argument("overrides", nargs="*", help="section.field=value, after the benchmark's own")
    args = parser.parse_args()
    batch = load_config(args.preset, args.overrides).data.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else synthetic_imagenet(Path(tmp) / "data", args.images)
        log_dir = Path(tmp) / "runs"
        cmd = command(args, data, log_dir)
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, timeout=args.timeout)
        r = summarize(log_dir, args.skip, args.log_every)
    print(f"| preset | backend | batch | logged intervals | end-to-end images/s | data wait s/step |\n"
          f"| --- | --- | --- | --- | --- | --- |\n"
          f"| {args.preset} | {args.backend} | {batch} | {r['intervals']} | {rate(r['end_to_end'])} "
          f"| {r['wait']:.3f} |")


if __name__ == "__main__":
    run_main(main)
