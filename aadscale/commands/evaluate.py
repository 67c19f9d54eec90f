"""``aadscale evaluate``: Table 6 and 7 columns and a gradient-masking check for one model."""
from __future__ import annotations

import argparse
import datetime
import hashlib
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from aadscale.attacks.autoattack import parse_autoattack
from aadscale.attacks.threat import parse_eps
from aadscale.data.robustbench import PREPROCESSINGS, RobustBenchImageNet
from aadscale.distributed import is_main
from aadscale.errors import InputError
from aadscale.evaluate.autoattack import AutoAttackSpec, evaluate_autoattack, package_versions
from aadscale.evaluate.loading import LoadedModel, load_model
from aadscale.evaluate.suite import PAPER, STRONG, evaluate_suite, select_subset

DEFAULT_LIMIT = 1000  # images in evaluate's fixed random subset


def add_model_args(p: argparse.ArgumentParser, positional: bool = False) -> None:
    """Where the model comes from: a checkpoint, a bare state_dict + --model, or --torchvision."""
    if positional:
        p.add_argument("checkpoint", nargs="?", help="the engine's exported file or a bare state_dict")
    else:
        p.add_argument("--checkpoint", help="the engine's exported file or a bare state_dict")
    p.add_argument("--weights", metavar="FILE", help="model-zoo weights (RobustBench's layouts: under "
                   "state_dict, module./model. prefixes, normalize.* statistics), with --model")
    p.add_argument("--model", help="architecture of a bare state_dict or --weights: a registered name "
                   "(aadscale.models.list_models()) or timm/<arch>")
    p.add_argument("--num-classes", type=int, help="class count of a bare state_dict (1000 with "
                   "--protocol robustbench)")
    p.add_argument("--stem", default="patch", choices=("patch", "convstem"),
                   help="with --model timm/<ConvNeXt or ViT>: Singh et al. 2023's ConvStem (model.stem)")
    p.add_argument("--normalization", default="auto", choices=("auto", "none"),
                   help="of --weights: auto (the file's normalize.* statistics, else the model's own) or "
                        "none (the network takes [0, 1] pixels, as Singh et al.'s ConvStem models)")
    p.add_argument("--in-channels", type=int, default=3, choices=(1, 3))
    p.add_argument("--torchvision", metavar="NAME", help="a torchvision network, e.g. resnet50")
    p.add_argument("--pretrained", action="store_true",
                   help="with --torchvision: ImageNet weights (needs the network; default random)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def weights_path(args: argparse.Namespace) -> str | None:
    """The model's file: the checkpoint or --weights (not both)."""
    if args.checkpoint and args.weights:
        raise InputError(f"give the checkpoint {args.checkpoint!r} or --weights {args.weights!r}, not both")
    return args.checkpoint or args.weights


def model_from_args(args: argparse.Namespace, checkpoint: str | None = None) -> LoadedModel:
    """Load the model the arguments name."""
    protocol_classes = 1000 if getattr(args, "protocol", None) == "robustbench" else None
    return load_model(checkpoint if checkpoint is not None else weights_path(args),
                      model_name=args.model, num_classes=args.num_classes or protocol_classes,
                      in_channels=args.in_channels, torchvision=args.torchvision,
                      pretrained=args.pretrained, device=args.device, stem=args.stem,
                      normalization=args.normalization)


def add_data_args(p: argparse.ArgumentParser) -> None:
    """Validation data read through ``aadscale.data.build_dataset``."""
    p.add_argument("--data", help="data root (default: the checkpoint config's data.root)")
    p.add_argument("--dataset", help="demo, folder, imagenet, cifar10, mnist (default: the config's)")
    p.add_argument("--split", default="val")
    p.add_argument("--image-size", type=int, help="default: the config's data.image_size, else 224")
    p.add_argument("--limit", type=int, help="images in the fixed random subset (evaluate: default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset and of the attacks")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)


def dataset_from_args(args: argparse.Namespace, loaded: LoadedModel) -> tuple[Dataset, int]:
    """The validation dataset (map-style, by index; its classes checked against the model's) and the image size."""
    from aadscale.data import build_dataset
    cfg = loaded.config
    dataset = args.dataset or (cfg.data.dataset if cfg else "folder")
    root = args.data or (cfg.data.root if cfg else "")
    if not root and dataset == "demo":
        from aadscale.data import DEFAULT_DEMO_ROOT
        root = DEFAULT_DEMO_ROOT
    if not root:
        raise InputError("no data: give --data DIR (and --dataset) or a checkpoint whose config has data.root")
    size = args.image_size or (cfg.data.image_size if cfg else 224)
    data = build_dataset(root, args.split, image_size=size, dataset=dataset,
                         val_resize=cfg.data.val_resize if cfg and not args.image_size else 0)
    loaded.check_classes(data.classes, f"split {args.split!r} of {root}")
    return data, size


def eps_from_args(args: argparse.Namespace, loaded: LoadedModel) -> float:
    """--eps, else the leaderboard's 4/255 under --protocol robustbench, else the checkpoint config's
    eval.eps, else 4/255 for torchvision ImageNet models."""
    if args.eps is not None:
        return parse_eps(args.eps)
    if getattr(args, "protocol", None) == "robustbench":
        return 4 / 255
    if loaded.config is not None:
        return loaded.config.eval.eps
    if args.torchvision:
        return 4 / 255
    raise InputError("give --eps (e.g. 8/255): a bare state_dict carries no preset")


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _init_distributed(args: argparse.Namespace) -> None:
    """Join a launched job's group; each rank then uses its own GPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from aadscale.distributed.context import init_distributed
        ctx = init_distributed()
        if str(args.device).startswith("cuda"):
            args.device = str(ctx.device)


def file_sha256(path: str | None) -> str | None:
    """The SHA-256 of a weights file (None without one): which weights a report is about."""
    if not path:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def autoattack_images(args: argparse.Namespace, loaded: LoadedModel) -> tuple[Dataset, list[int], list[str], str]:
    """(dataset, indices, their ids, preprocessing) for AutoAttack: the RobustBench protocol's images in
    its order, or a fixed random subset of --data."""
    if args.protocol == "robustbench":
        if not args.data:
            raise InputError("--protocol robustbench needs --data <ImageNet validation folder>")
        data = RobustBenchImageNet(args.data, preprocessing_name=args.preprocessing, limit=args.limit)
        loaded.check_classes(data.classes, f"the RobustBench protocol on {args.data}")
        return data, list(range(len(data))), data.ids, data.preprocessing
    dataset, size = dataset_from_args(args, loaded)
    indices = select_subset(len(dataset), args.limit or DEFAULT_LIMIT, args.seed)
    paths = getattr(getattr(getattr(dataset, "dataset", None), "samples", None), "paths", None)
    ids = ["/".join(Path(paths[i]).parts[-2:]) if paths else str(i) for i in indices]  # <class>/<file>
    return dataset, indices, ids, f"aadscale validation transform, {size} px ({args.split} split)"


def run_autoattack(args: argparse.Namespace, loaded: LoadedModel, eps: float) -> Path:
    """AutoAttack (pyautoattack) on the chosen images; returns the Markdown report's path."""
    plan = parse_autoattack(args.autoattack)
    dataset, indices, ids, preprocessing = autoattack_images(args, loaded)
    spec = AutoAttackSpec(plan.version, list(plan.attacks), eps, args.seed, args.batch_size, ids,
                          loaded.description, file_sha256(weights_path(args)), preprocessing)
    extra = {"protocol": args.protocol, "weights": weights_path(args), "versions": package_versions(),
             "date": datetime.date.today().isoformat()}
    evaluate_autoattack(loaded.model, dataset, args.out, spec, plan, indices=indices, workers=args.workers,
                        progress=not args.no_progress, extra=extra)
    return Path(args.out, "autoattack.md")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the Markdown report; the gradient-masking warning goes to stderr too."""
    _init_distributed(args)
    loaded = model_from_args(args)
    eps = eps_from_args(args, loaded)
    if args.autoattack:
        report = run_autoattack(args, loaded, eps)
    else:
        if args.protocol:
            raise InputError("--protocol robustbench is AutoAttack's protocol: add --autoattack standard")
        dataset, _ = dataset_from_args(args, loaded)
        evaluate_suite(loaded.model, dataset, args.out, eps=eps, attacks=_names(args.attacks),
                       strong=_names(args.strong), limit=args.limit or DEFAULT_LIMIT, seed=args.seed,
                       batch_size=args.batch_size, gamma=args.gamma,
                       masking_threshold=args.masking_threshold, workers=args.workers,
                       model_label=loaded.description, progress=not args.no_progress)
        report = Path(args.out, "results.md")
    if is_main():
        print(report.read_text())
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="robust accuracy: Table 6/7 columns + strong attacks",
                              description=__doc__)
    add_model_args(p, positional=True)
    add_data_args(p)
    p.add_argument("--autoattack", metavar="VERSION", help="AutoAttack by its authors' code (pyautoattack) "
                   "instead of the suite: standard (the leaderboard's), plus, rand, or attacks such as "
                   "apgd-ce,apgd-t (standard's settings); --batch-size images per resumable chunk")
    p.add_argument("--protocol", choices=("robustbench",), help="RobustBench's ImageNet images (the "
                   "first --limit of its 5,000; all by default) from the validation folder --data, eps 4/255")
    p.add_argument("--preprocessing", default="Res256Crop224", choices=tuple(PREPROCESSINGS),
                   help="with --protocol: the model's preprocessing in RobustBench")
    p.add_argument("--eps", help="e.g. 4/255 (default: the checkpoint's eval.eps)")
    p.add_argument("--attacks", default=",".join(PAPER),
                   help="paper columns, comma-separated (default: Table 6 + Table 7)")
    p.add_argument("--strong", default=",".join(STRONG),
                   help="strong columns for the masking check, e.g. pgd40x5,apgd100 ('' = off)")
    p.add_argument("--masking-threshold", type=float, default=5.0,
                   help="warn when the strong attacks are this many points lower")
    p.add_argument("--gamma", type=float, default=10.0, help="A3Attack's attention weight")
    p.add_argument("--out", required=True, help="output folder (results.json, results.md, batch logs)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run)
