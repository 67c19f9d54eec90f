"""One table per use of the attacks: the evaluation columns (names, grammar, how to run each)
and the training attacks (names, step sizes, which run as the fused step).

A column is ``<kind>[<count>][x<restarts>]``: ``clean``, ``fgsm``, ``pgd40``, ``pgd40x5``,
``cw100``, ``a3iter_step_ll3``, ``apgd100``, ``apgd_dlr50x2``, ``square1000``, ``aa_proxy100``
(the count is the step count, or the query budget for Square). The config's validation, the evaluation,
the analysis, the engine and the tests all read these tables; adding an attack is one
``register_attack`` here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from aadscale.attacks.a3 import BASES as A3_BASES
from aadscale.attacks.a3 import a3
from aadscale.attacks.apgd import apgd
from aadscale.attacks.ascent import default_alpha
from aadscale.attacks.autoattack import proxy
from aadscale.attacks.square import square
from aadscale.attacks.standard import cw, fgsm, iter_step_ll, pgd, step_ll
from aadscale.errors import InputError

# run(model, x, y, *, eps, steps, restarts, gamma, generator) -> the adversarial batch
ColumnRunner = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class AttackKind:
    """One kind of evaluation column."""
    name: str
    run: ColumnRunner
    counted: str | None  # what the count in the name is ("steps", "queries"), None for no count
    summary: str


@dataclass(frozen=True)
class AttackSpec:
    """A parsed column name: ``pgd40`` = PGD with 40 steps, ``pgd40x5`` = with 5 restarts."""
    name: str
    kind: str
    steps: int
    restarts: int


KINDS: dict[str, AttackKind] = {}
_COLUMN = re.compile(r"^([a-z][a-z0-9_]*?)(\d*)(?:x(\d+))?$")


def register_attack(name: str, *, counted: str | None, summary: str) -> Callable[[ColumnRunner], ColumnRunner]:
    """Add a column kind (``counted``: what its count is, None for none); a name registered twice is an error."""
    def add(run: ColumnRunner) -> ColumnRunner:
        if name in KINDS:
            raise InputError(f"attack kind {name!r} is registered twice")
        KINDS[name] = AttackKind(name, run, counted, summary)
        return run
    return add


def grammar() -> str:
    """The column grammar in one line, for help texts and errors."""
    return ", ".join(f"{k}<{kind.counted}>" if kind.counted else k for k, kind in KINDS.items()) + \
        ", each with optional x<restarts> (e.g. pgd40x5)"


def parse_attack_name(name: str) -> AttackSpec:
    """Parse a column name; InputError saying the grammar if it is not one."""
    text = str(name).strip().lower()
    m = _COLUMN.match(text)
    kind = KINDS.get(m.group(1)) if m else None
    if kind is None:
        raise InputError(f"attack {name!r} not understood; use {grammar()}")
    count, restarts = m.group(2), m.group(3)
    if not kind.counted and count:
        raise InputError(f"attack {name!r}: {kind.name} takes no step count")
    if kind.counted and not count:
        word = {"steps": "step", "queries": "query"}.get(kind.counted, kind.counted)
        raise InputError(f"attack {name!r}: give a {word} count, e.g. {kind.name}10 "
                         f"(write {kind.name}<{kind.counted}>[x<restarts>])")
    if (count and int(count) < 1) or (restarts and int(restarts) < 1):
        raise InputError(f"attack {name!r}: counts and restarts must be >= 1")
    return AttackSpec(text, kind.name, int(count or 1), int(restarts or 1))


def run_column(model: nn.Module, x: torch.Tensor, y: torch.Tensor, column: str | AttackSpec, *,
               eps: float, gamma: float = 10.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """The adversarial batch of one column (random starts drawn from ``generator``)."""
    spec = column if isinstance(column, AttackSpec) else parse_attack_name(column)
    return KINDS[spec.kind].run(model, x, y, eps=eps, steps=spec.steps, restarts=spec.restarts,
                                gamma=gamma, generator=generator)


@register_attack("clean", counted=None, summary="no attack: the images as they are")
def _clean(model, x, y, **_):
    return x


def _paper(attack: Callable, counted: str | None) -> ColumnRunner:
    def run(model, x, y, *, eps, steps, restarts, gamma, generator):
        if counted:
            return attack(model, x, y, eps=eps, steps=steps, restarts=restarts, generator=generator)
        return attack(model, x, y, eps=eps, restarts=restarts, generator=generator)
    return run


for _name, _attack, _counted, _summary in (
        ("fgsm", fgsm, None, "FGSM: one step of eps on CE"),
        ("step_ll", step_ll, None, "StepLL (eq. 4): one step of eps toward the least-likely class"),
        ("iter_step_ll", iter_step_ll, "steps", "Iter-StepLL: k StepLL steps of 2.5 eps / k"),
        ("pgd", pgd, "steps", "PGD-k (Madry et al.): random start, k steps of 2.5 eps / k on CE"),
        ("cw", cw, "steps", "CW-k: the PGD loop on the Carlini-Wagner margin")):
    register_attack(_name, counted=_counted, summary=_summary)(_paper(_attack, _counted))


def _a3(base: str, counted: str | None) -> ColumnRunner:
    def run(model, x, y, *, eps, steps, restarts, gamma, generator):
        return a3(model, x, y, base=base, gamma=gamma, eps=eps, steps=steps if counted else None,
                  restarts=restarts, generator=generator)
    return run


for _base, _defaults in A3_BASES.items():
    _counted = "steps" if _defaults["steps"] > 1 else None
    register_attack(f"a3{_base}", counted=_counted,
                    summary=f"A3Attack on {_base}: + gamma * ||M(x) - L_c(x_adv)||_1 (eq. 11-13) once the image is "
                    "fooled")(_a3(_base, _counted))


def _apgd(loss: str) -> ColumnRunner:
    def run(model, x, y, *, eps, steps, restarts, gamma, generator):
        return apgd(model, x, y, eps=eps, steps=steps, restarts=restarts, loss=loss, generator=generator)
    return run


register_attack("apgd", counted="steps", summary="APGD-CE (Croce & Hein 2020)")(_apgd("ce"))
register_attack("apgd_ce", counted="steps", summary="APGD-CE (Croce & Hein 2020)")(_apgd("ce"))
register_attack("apgd_dlr", counted="steps", summary="APGD with the DLR loss")(_apgd("dlr"))


@register_attack("square", counted="queries", summary="Square Attack: gradient-free, the count is queries")
def _square(model, x, y, *, eps, steps, restarts, gamma, generator):
    return square(model, x, y, eps=eps, queries=steps, restarts=restarts, generator=generator)


@register_attack("aa_proxy", counted="steps", summary="a proxy for AutoAttack, not AutoAttack: pyautoattack's "
                 "APGD-CE then APGD-T (9 targets) on the images left, the count their steps (AutoAttack's 100)")
def _aa_proxy(model, x, y, *, eps, steps, restarts, gamma, generator):
    if restarts != 1:
        raise InputError(f"aa_proxy{steps}x{restarts}: the proxy takes no restarts (AutoAttack's APGD has one)")
    seed = 0 if generator is None else \
        int(torch.randint(2 ** 31 - 1, (1,), generator=generator, device=generator.device))
    return proxy(model, x, y, eps=eps, steps=steps, seed=seed)


# ---- training attacks: the config's attack.name ----

@dataclass(frozen=True)
class TrainingAttack:
    """One ``attack.name``: how its steps are sized and whether it runs as the fused PGD step."""
    name: str
    summary: str
    fused: bool  # runs as ``aadscale.fused.AdversarialStep`` (PGD from a random start)
    one_step: bool = False  # ignores attack.steps
    alpha_of_eps: float | None = None  # a fixed step size as a multiple of eps

    def alpha(self, eps: float, steps: int, alpha: float = 0.0) -> float:
        """The step size: ``alpha`` if given (> 0), else this attack's default."""
        if alpha:
            return alpha
        if self.alpha_of_eps is not None:
            return self.alpha_of_eps * eps
        return default_alpha(eps, self.steps(steps))

    def steps(self, steps: int) -> int:
        """The steps it runs: ``steps``, or one for a one-step attack."""
        return 1 if self.one_step else steps


TRAINING_ATTACKS: dict[str, TrainingAttack | None] = {
    "pgd": TrainingAttack("pgd", "PGD-k from a random start (Madry et al.)", fused=True),
    "fgsm_rs": TrainingAttack("fgsm_rs", "FGSM from a random start, one step of 1.25 eps (Wong et al.)",
                              fused=True, one_step=True, alpha_of_eps=1.25),
    "step_ll": TrainingAttack("step_ll", "k StepLL steps toward the least-likely class", fused=False),
    "apgd": TrainingAttack("apgd", "APGD-CE from the clean image, its highest-loss point (Singh et al. 2023: "
                                   "2 steps; the step size is APGD's own, 2 eps halved at checkpoints)",
                           fused=False),
    "none": None,  # plain training: no adversarial twin
}


def training_attack_spec(name: str) -> TrainingAttack | None:
    """The training attack called ``name`` (None for ``none``); InputError for an unknown name."""
    if name not in TRAINING_ATTACKS:
        raise InputError(f"attack.name={name!r} must be one of {list(TRAINING_ATTACKS)}")
    return TRAINING_ATTACKS[name]
