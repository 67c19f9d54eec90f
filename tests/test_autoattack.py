"""AutoAttack by its authors' code: versions, the per-attack cascade against pyautoattack's own, the proxy
column, and the resumable evaluation (its sharded and command-line runs are in test_autoattack_cli.py)."""
from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import TensorDataset

from aadscale.attacks import parse_attack_name, run_column
from aadscale.attacks import autoattack as aa
from aadscale.errors import InputError
from aadscale.evaluate import autoattack as evaluation

# the first 8 test digits under AutoAttack's APGD-CE then APGD-T at its 100 steps: none fooled at eps 0.04, 3 at
# 0.06, all at 0.1 (model seed 0). The tests run 10 steps (the proxy's budget) at 0.07: APGD-CE fools 4, 6, 7, 4
# of the 8 and some survive both, on model seeds 0-3 (seeds 1-3 stand in for another CPU's rounding)
EPS = 0.07
STEPS = 10
PLAN = aa.AutoAttackPlan("custom", ("apgd-ce", "apgd-t"), STEPS)


def test_versions_and_subsets():
    assert aa.parse_autoattack("standard").attacks == ("apgd-ce", "apgd-t", "fab-t", "square")
    assert aa.parse_autoattack(" Plus ").attacks == ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
    assert aa.parse_autoattack("rand").attacks == ("apgd-ce", "apgd-dlr")
    assert aa.parse_autoattack("apgd-ce, apgd-t") == aa.AutoAttackPlan("custom", ("apgd-ce", "apgd-t"))
    for bad in ("strong", "apgd-ce,pgd", "apgd-ce,apgd-ce", ""):
        with pytest.raises(InputError, match="apgd-ce,apgd-t"):
            aa.parse_autoattack(bad)
    assert aa.target_classes(10) == 9 and aa.target_classes(4) == 3


def test_cascade_equals_pyautoattacks_own_run(digits, digits_model):
    """Attack by attack on the images still standing gives pyautoattack's per-image result over the same batch."""
    _, _, x, y = digits
    x, y = x[:8], y[:8]
    plan = PLAN
    rng = torch.get_rng_state()
    x_worst, fates = aa.cascade(digits_model, x, y, plan, eps=EPS, seed=5)
    assert torch.equal(torch.get_rng_state(), rng)  # pyautoattack reseeds the global RNG: restored
    reference = aa.build_reference(digits_model, plan, eps=EPS, seed=5, num_classes=10, device="cpu")
    reference.attacks_to_run = list(plan.attacks)
    _, y_adv = reference.run_standard_evaluation(x, y, batch_size=8)
    assert [f is not None for f in fates.fooled_by] == (y_adv != y).tolist()
    assert fates.done == ["clean", "apgd-ce", "apgd-t"]
    assert {"apgd-ce", None} <= set(fates.fooled_by)  # the test exercises both outcomes
    # the worst-case batch: inside the ball and [0, 1], misclassified exactly where an attack succeeded
    assert (x_worst - x).abs().max() <= EPS + 1e-6 and x_worst.min() >= 0 and x_worst.max() <= 1
    with torch.no_grad():
        wrong = (digits_model(x_worst).argmax(1) != y).tolist()
    assert wrong == [f is not None for f in fates.fooled_by]


def test_proxy_column_is_named_a_proxy_and_no_weaker_than_its_first_attack(digits, digits_model):
    _, _, x, y = digits
    x, y = x[:8], y[:8]
    spec = parse_attack_name("aa_proxy10")
    assert (spec.kind, spec.steps) == ("aa_proxy", 10)
    with pytest.raises(InputError, match="no restarts"):
        run_column(digits_model, x, y, "aa_proxy10x2", eps=EPS)
    g = torch.Generator().manual_seed(0)
    x_adv = run_column(digits_model, x, y, spec, eps=EPS, generator=g)
    seed = int(torch.randint(2 ** 31 - 1, (1,), generator=torch.Generator().manual_seed(0)))
    _, ce = aa.cascade(digits_model, x, y, aa.AutoAttackPlan("custom", ("apgd-ce",), STEPS), eps=EPS, seed=seed)
    with torch.no_grad():
        proxy_right = digits_model(x_adv).argmax(1) == y
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    # APGD-T only ever adds fooled images to APGD-CE's (same seed, same first attack)
    assert proxy_right.sum() <= sum(f is None for f in ce.fooled_by)


class Interrupt(Exception):
    """Stands in for a kill."""


def _spec(ids, **changes):
    base = dict(version="custom", attacks=["apgd-ce", "apgd-t"], eps=EPS, seed=0, chunk_size=4, ids=ids,
                model="digits", weights_sha256=None, preprocessing="digits 16 px", apgd_steps=STEPS)
    return evaluation.AutoAttackSpec(**{**base, **changes})


def test_killed_evaluation_resumes_to_the_uninterrupted_result(digits, digits_model, tmp_path, monkeypatch):
    _, _, x, y = digits
    data = TensorDataset(x[:12], y[:12])
    ids = [str(i) for i in range(12)]
    plan = PLAN
    whole = evaluation.evaluate_autoattack(digits_model, data, tmp_path / "whole", _spec(ids), plan,
                                           indices=range(12), progress=False)
    attacks, kill_at = [], [2]  # the kill: the 2nd APGD-CE (chunk 1's; every chunk has images to attack)
    real = aa.attack_survivors

    def attack_or_die(reference, name, *args, **kwargs):
        attacks.append(name)
        if attacks.count("apgd-ce") in kill_at and name == "apgd-ce":
            raise Interrupt
        return real(reference, name, *args, **kwargs)
    monkeypatch.setattr(aa, "attack_survivors", attack_or_die)
    with pytest.raises(Interrupt):
        evaluation.evaluate_autoattack(digits_model, data, tmp_path / "cut", _spec(ids), plan,
                                       indices=range(12), progress=False)
    saved = json.loads(evaluation.chunk_file(tmp_path / "cut", 1).read_text())
    assert saved["done"] == ["clean"]  # its clean pass was saved, its attacks not
    attacks.clear()
    kill_at.clear()
    resumed = evaluation.evaluate_autoattack(digits_model, data, tmp_path / "cut", _spec(ids), plan,
                                             indices=range(12), progress=False)
    assert attacks[0] == "apgd-ce" and attacks.count("apgd-ce") == 2  # chunks 1 and 2 only: chunk 0 not redone
    assert resumed == whole
    for name in ("per_image.csv", "autoattack.md"):
        assert (tmp_path / "cut" / name).read_text() == (tmp_path / "whole" / name).read_text()
    with pytest.raises(InputError, match="eps differ"):
        evaluation.evaluate_autoattack(digits_model, data, tmp_path / "cut", _spec(ids, eps=0.2), plan,
                                       indices=range(12), progress=False)
    check_report(whole, tmp_path / "whole")


def check_report(report: dict, out) -> None:
    """RobustBench's fields, and the per-image table agreeing with them."""
    assert set(report) >= {"clean_acc", "autoattack_acc", "eps", "norm", "preprocessing", "n_examples",
                           "model", "weights_sha256", "robust_acc_after", "apgd_steps"}
    rows = (out / "per_image.csv").read_text().splitlines()
    assert rows[0] == "id,label,clean,apgd-ce,apgd-t,fooled_by" and len(rows) == 13
    assert {"survived", "fooled"} <= {cell for r in rows[1:] for cell in r.split(",")[2:5]}
    robust = sum(r.endswith(",robust") for r in rows[1:])
    assert report["autoattack_acc"] == f"{100 * robust / 12:.2f}" and report["n_examples"] == 12
    after = report["robust_acc_after"]
    assert float(report["clean_acc"]) >= after["apgd-ce"] >= after["apgd-t"]
    assert f"{after['apgd-t']:.2f}" == report["autoattack_acc"]
    assert json.loads((out / "autoattack.json").read_text()) == report
    assert evaluation.eps_text(4 / 255) == "4/255" and evaluation.eps_text(0.1) == "0.1"
