"""L-inf attacks in pixel space: FGSM, StepLL, Iter-StepLL, PGD, CW and the attention-augmented A3."""
from aadscale.attacks.a3 import a3
from aadscale.attacks.loop import default_alpha, eval_mode, run_attack
from aadscale.attacks.standard import cw, fgsm, iter_step_ll, pgd, step_ll
from aadscale.attacks.threat import LinfStep

__all__ = ["fgsm", "step_ll", "iter_step_ll", "pgd", "cw", "a3", "run_attack", "eval_mode",
           "default_alpha", "LinfStep"]
