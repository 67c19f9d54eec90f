"""L-inf attacks in pixel space: FGSM, StepLL, Iter-StepLL, PGD, CW, the attention-augmented A3,
APGD and Square, and the registry that names them (evaluation columns, training attacks)."""
from aadscale.attacks.a3 import a3
from aadscale.attacks.apgd import apgd
from aadscale.attacks.ascent import default_alpha, run_attack
from aadscale.attacks.registry import (
                                       KINDS,
                                       TRAINING_ATTACKS,
                                       AttackSpec,
                                       parse_attack_name,
                                       register_attack,
                                       run_column,
)
from aadscale.attacks.square import square
from aadscale.attacks.standard import cw, fgsm, iter_step_ll, pgd, step_ll
from aadscale.attacks.threat import LinfStep, check_eps, parse_eps

__all__ = ["fgsm", "step_ll", "iter_step_ll", "pgd", "cw", "a3", "apgd", "square", "run_attack",
           "default_alpha", "LinfStep", "check_eps", "parse_eps", "KINDS", "TRAINING_ATTACKS", "AttackSpec",
           "parse_attack_name", "register_attack", "run_column"]
