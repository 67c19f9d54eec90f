"""``aadscale analyze``: the paper's section-3 attention analysis (Tables 1-5) on boxed images."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from aadscale.analysis import LimeOptions, StudyOptions, analyze
from aadscale.attacks.threat import parse_eps
from aadscale.commands.evaluate import add_model_args, model_from_args
from aadscale.data.boxes import BoxDataset
from aadscale.errors import InputError


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise InputError(f"{text!r} must be comma-separated integers, e.g. 5,10,20,30") from None


def run(args: argparse.Namespace) -> int:
    """Build model, boxed images and options from the arguments; write and print the tables."""
    torch.manual_seed(args.seed)  # random starts of PGD-style attacks
    loaded = model_from_args(args)
    cfg = loaded.config
    size = args.image_size or (cfg.data.image_size if cfg else 224)
    dataset = BoxDataset(args.images, args.boxes, image_size=size, resize_shorter=args.resize_shorter,
                         skip_missing=args.skip_missing_boxes)
    options = StudyOptions(attack=args.attack, eps=parse_eps(args.eps), target=args.target,
                           top_ns=_ints(args.top_n), lime=args.lime, lime_features=_ints(args.lime_features),
                           lime_options=LimeOptions(segmentation=args.segmentation,
                                                    num_samples=args.lime_samples, seed=args.seed))
    batches = DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=args.workers)
    meta = {"model": loaded.description, "images": str(args.images), "boxes": str(args.boxes),
            "image_size": size, "resize_shorter": args.resize_shorter,
            "images_without_xml_skipped": dataset.missing}
    analyze(loaded.model, batches, options, out_dir=args.out, limit=args.limit,
            progress=not args.no_progress, meta=meta)
    print(Path(args.out, "tables.md").read_text())
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("analyze", help="attention-vs-box and clean-vs-adversarial map tables",
                              description=__doc__)
    add_model_args(p)
    p.add_argument("--images", required=True, help="validation images in class folders")
    p.add_argument("--boxes", required=True, help="folder of ILSVRC/VOC XML files (matched by file stem)")
    p.add_argument("--skip-missing-boxes", action="store_true", help="leave out images without an XML")
    p.add_argument("--out", required=True, help="output folder: tables.md/.csv/.json, records.jsonl")
    p.add_argument("--attack", default="step_ll", help="any evaluate column name (default: StepLL)")
    p.add_argument("--eps", default="4/255")
    p.add_argument("--target", default="true", choices=("true", "predicted"),
                   help="true: correctly classified images, maps toward the label (the paper); "
                        "predicted: every image, toward its prediction")
    p.add_argument("--limit", type=int, help="read at most N images")
    p.add_argument("--image-size", type=int, help="default: the config's data.image_size, else 224")
    p.add_argument("--resize-shorter", type=int,
                   help="resize the shorter side then centre-crop (default: stretch the whole image)")
    p.add_argument("--top-n", default="5,10,20,30", help="grid cells kept for Table 3")
    p.add_argument("--lime", action="store_true", help="also Tables 4-5 (LIME; slow)")
    p.add_argument("--lime-features", default="8,10")
    p.add_argument("--lime-samples", type=int, default=1000)
    p.add_argument("--segmentation", default="quickshift", choices=("quickshift", "slic"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run)
