"""The fused adversarial step (PGD-k + Grad-CAMs): one function, eager / CUDA-graph / compiled."""
from aadscale.fused.adversarial_step import MODES, AdversarialStep, is_zero3_partitioned, resolve_mode
from aadscale.fused.attack import StepOutput, clean_adv_cams, pgd_last, pgd_with_cams
from aadscale.fused.graph import CapturedCall

__all__ = ["AdversarialStep", "StepOutput", "pgd_with_cams", "pgd_last", "clean_adv_cams",
           "CapturedCall", "resolve_mode", "is_zero3_partitioned", "MODES"]
