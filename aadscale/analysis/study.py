"""The paper's section-3 data analysis per image: attention vs box, clean vs adversarial maps."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from aadscale.analysis.lime import LimeOptions, lime_weights, segment, top_features_mask
from aadscale.attacks.registry import parse_attack_name, run_column
from aadscale.attention import area_matched_mask, forward_with_cam, iou, resize, topk_mask
from aadscale.errors import InputError
from aadscale.models.modes import eval_mode


@dataclass(frozen=True)
class StudyOptions:
    """Attack and map settings of the analysis (paper: StepLL, area-matched boxes, n = 5..30)."""
    attack: str = "step_ll"
    eps: float = 4 / 255
    target: str = "true"
    top_ns: tuple[int, ...] = (5, 10, 20, 30)
    iou_threshold: float = 0.5
    gamma: float = 10.0
    lime: bool = False
    lime_features: tuple[int, ...] = (8, 10)
    lime_options: LimeOptions = field(default_factory=LimeOptions)

    def __post_init__(self) -> None:
        parse_attack_name(self.attack)
        if self.target not in ("true", "predicted"):
            raise InputError(f"target={self.target!r} must be 'true' (correctly classified images, "
                             "maps toward the label) or 'predicted' (every image, toward its prediction)")
        if not self.top_ns or min(self.top_ns) < 1 or (self.lime and min(self.lime_features, default=0) < 1):
            raise InputError(f"top_ns={self.top_ns} and lime_features={self.lime_features} must be >= 1")


def study_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, box: torch.Tensor,
                options: StudyOptions, first_index: int = 0) -> list[dict]:
    """Records for the images of one batch that enter the analysis (see ``StudyOptions.target``).

    Each record: ``index``, ``label``, ``fooled`` (the attack changes the prediction),
    ``confidence`` (clean softmax of the label), ``box_iou`` (area-matched attention vs
    box mask; None when the box lies outside the crop), ``top<n>_iou`` (top-n cells of
    the raw clean vs adversarial maps, n capped at the map size) and with LIME
    ``lime<k>_box_iou`` / ``lime<k>_adv_iou``.
    """
    if box.shape[0] != x.shape[0] or box.shape[-2:] != x.shape[-2:]:
        raise InputError(f"box masks {tuple(box.shape)} must be [N, H, W] of images {tuple(x.shape)}")
    device = next(model.parameters()).device
    x, y, box = x.to(device).float(), y.to(device), box.to(device).bool()
    with eval_mode(model):
        clean = forward_with_cam(model, x, y if options.target == "true" else None)
        pred = clean.logits.argmax(1)
        keep = (pred == y) if options.target == "true" else torch.ones_like(y, dtype=torch.bool)
        if not bool(keep.any()):
            return []
        idx = keep.nonzero().squeeze(1)
        x, label, box, cam = x[idx], pred[idx], box[idx], clean.cam[idx]
        conf = torch.softmax(clean.logits[idx], 1).gather(1, label.view(-1, 1)).squeeze(1)
        x_adv = run_column(model, x, label, options.attack, eps=options.eps, gamma=options.gamma)
        adv = forward_with_cam(model, x_adv, label)
    fooled = adv.logits.argmax(1) != label
    area = box.flatten(1).sum(1)
    attention = area_matched_mask(resize(cam, x.shape[-2:]), area)
    box_iou = iou(attention, box)
    cells = cam.shape[1] * cam.shape[2]
    tops = {n: iou(topk_mask(cam, min(n, cells)), topk_mask(adv.cam, min(n, cells))) for n in options.top_ns}
    records = []
    for j in range(len(idx)):
        rec = {"index": first_index + int(idx[j]), "label": int(label[j]), "fooled": bool(fooled[j]),
               "adv_pred": int(adv.logits[j].argmax()), "confidence": float(conf[j]),
               "box_area": int(area[j]), "box_iou": float(box_iou[j]) if area[j] > 0 else None,
               "cells": cells, **{f"top{n}_iou": float(t[j]) for n, t in tops.items()}}
        if options.lime:
            rec.update(_lime_record(model, x[j], x_adv[j], int(label[j]), box[j], options))
        records.append(rec)
    return records


def _lime_record(model: nn.Module, image: torch.Tensor, image_adv: torch.Tensor, label: int,
                 box: torch.Tensor, options: StudyOptions) -> dict:
    """LIME top-k superpixel areas vs the box and vs the adversarial image's (same superpixels)."""
    opts = options.lime_options
    seg = segment(image, opts.segmentation, opts.n_segments)
    with eval_mode(model):
        w_clean = lime_weights(model, image, label, seg, opts)
        w_adv = lime_weights(model, image_adv, label, seg, opts)
    out: dict = {"segments": int(seg.max()) + 1}
    box_cpu = box.cpu().unsqueeze(0)
    for k in options.lime_features:
        m_clean = top_features_mask(seg, w_clean, k).unsqueeze(0)
        m_adv = top_features_mask(seg, w_adv, k).unsqueeze(0)
        out[f"lime{k}_box_iou"] = float(iou(m_clean, box_cpu)[0]) if box_cpu.any() else None
        out[f"lime{k}_adv_iou"] = float(iou(m_clean, m_adv)[0])
    return out
