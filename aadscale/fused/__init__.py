"""The fused adversarial step (PGD-k + Grad-CAMs): one function, eager / CUDA-graph / compiled."""
from aadscale.fused.attack import StepOutput, clean_adv_cams, pgd_last, pgd_with_cams
from aadscale.fused.config import FUSED_ATTACKS, from_attack_config
from aadscale.fused.graph import CapturedCall
from aadscale.fused.step import MODES, AdversarialStep, is_zero3_partitioned, resolve_mode

__all__ = ["AdversarialStep", "StepOutput", "pgd_with_cams", "pgd_last", "clean_adv_cams",
           "CapturedCall", "resolve_mode", "is_zero3_partitioned", "from_attack_config", "FUSED_ATTACKS", "MODES"]
