"""LIME image attributions (Ribeiro et al., 2016): superpixels + a weighted local ridge model."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from aadscale.errors import InputError


@dataclass(frozen=True)
class LimeOptions:
    """Segmentation and sampling settings (the defaults follow the ``lime`` package)."""
    segmentation: str = "quickshift"
    num_samples: int = 1000
    kernel_width: float = 0.25
    n_segments: int = 50
    batch_size: int = 64
    seed: int = 0


def segment(image: torch.Tensor, method: str = "quickshift", n_segments: int = 50) -> np.ndarray:
    """Superpixels of one image [C, H, W] in [0, 1]: int labels [H, W] numbered 0..d-1.

    ``quickshift`` uses lime's settings (kernel_size 4, max_dist 200, ratio 0.2);
    ``slic`` asks for about ``n_segments`` compact regions.
    """
    from skimage.segmentation import quickshift, slic
    rgb = image.detach().float().cpu().expand(3, -1, -1).permute(1, 2, 0).numpy().astype(np.float64)
    if method == "quickshift":
        labels = quickshift(rgb, kernel_size=4, max_dist=200, ratio=0.2, rng=0)
    elif method == "slic":
        labels = slic(rgb, n_segments=n_segments, compactness=10, start_label=0)
    else:
        raise InputError(f"segmentation={method!r} must be 'quickshift' or 'slic'")
    _, dense = np.unique(labels, return_inverse=True)
    return dense.reshape(labels.shape)


def kernel_weights(z: np.ndarray, width: float) -> np.ndarray:
    """LIME's exponential kernel on the cosine distance of each sample to the whole image."""
    norms = np.linalg.norm(z, axis=1) * np.sqrt(z.shape[1])
    cos = np.divide(z.sum(1), norms, out=np.zeros(len(z)), where=norms > 0)
    return np.sqrt(np.exp(-((1 - cos) ** 2) / width ** 2))


def lime_weights(model: nn.Module, image: torch.Tensor, target: int, segments: np.ndarray,
                 options: LimeOptions = LimeOptions()) -> np.ndarray:
    """Per-superpixel weights [d] of a ridge model of p_target on which superpixels are kept.

    Samples switch superpixels off at random (the first sample keeps all); a switched-off
    superpixel is filled with its mean colour. The same ``options.seed`` gives the same
    samples, so a clean image and its adversarial twin are explained on equal terms.
    """
    from sklearn.linear_model import Ridge
    if options.num_samples < 2:
        raise InputError(f"num_samples={options.num_samples} must be >= 2")
    device = image.device
    seg = torch.as_tensor(segments, device=device).long()
    d = int(seg.max()) + 1
    rng = np.random.default_rng(options.seed)
    z = rng.integers(0, 2, size=(options.num_samples, d)).astype(np.float64)
    z[0] = 1
    x = image.detach().float()
    one_hot = torch.nn.functional.one_hot(seg, d).float()  # [H, W, d]
    means = torch.einsum("chw,hwd->cd", x, one_hot) / one_hot.sum((0, 1)).clamp_min(1)
    fill = means[:, seg]  # [C, H, W]: each pixel's superpixel mean
    probs = []
    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        for chunk in torch.as_tensor(z, dtype=torch.float32, device=device).split(options.batch_size):
            keep = (chunk @ one_hot.view(-1, d).T).view(-1, 1, *seg.shape)  # [B, 1, H, W]
            batch = keep * x + (1 - keep) * fill
            probs.append(torch.softmax(model(batch), 1)[:, target].cpu())
    p = torch.cat(probs).double().numpy()
    ridge = Ridge(alpha=1.0, fit_intercept=True)
    ridge.fit(z, p, sample_weight=kernel_weights(z, options.kernel_width))
    return ridge.coef_


def top_features_mask(segments: np.ndarray, weights: np.ndarray, k: int) -> torch.Tensor:
    """Bool [H, W] of the ``k`` superpixels with the largest weights (k capped at their number)."""
    order = np.argsort(-weights, kind="stable")[:min(k, len(weights))]
    return torch.from_numpy(np.isin(segments, order))
