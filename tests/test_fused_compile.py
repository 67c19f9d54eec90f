"""Compile mode on CPU: torch.compile of the PGD loop gives the eager step's adversarial images and maps
(a CNN, and a ViT whose Grad-CAM layer is a TokenGrid)."""
from __future__ import annotations

import pytest
import torch

from aadscale import models
from aadscale.fused import AdversarialStep
from tests.conftest import TINY_TIMM

EPS = 8 / 255


@pytest.mark.parametrize("name, size", [("tinyconv", 16), ("timm/vit_small_patch16_224", 32)])
def test_compile_mode_matches_eager(tmp_path, monkeypatch, name, size):
    # a private inductor cache: kernels cached by another process (another ISA setting, e.g.
    # ATEN_CPU_CAPABILITY=avx2) were seen to be reused here and give wrong images
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = models.build(name, 10, model_kwargs=TINY_TIMM.get(name))  # the ViT: its TokenGrid hook traced too
    x, y = torch.rand(4, 3, size, size), torch.randint(0, 10, (4,))
    eager = AdversarialStep(model, eps=EPS, steps=2, mode="eager")
    compiled = AdversarialStep(model, eps=EPS, steps=2, mode="compile")
    assert compiled.mode == "compile"
    g_eager, g_compiled = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    for _ in range(2):  # the second call reuses the compiled code
        ref, out = eager(x, y, g_eager), compiled(x, y, g_compiled)
        # inductor may reorder float sums; a sign flip moves a pixel by 2 alpha, so count them
        moved = (out.x_adv - ref.x_adv).abs() > 1e-6
        assert moved.float().mean() < 0.01
        if not moved.any():
            torch.testing.assert_close(out.cam_adv, ref.cam_adv, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.cam_clean, ref.cam_clean, rtol=1e-4, atol=1e-5)
    assert torch.equal(g_eager.get_state(), g_compiled.get_state())
