"""Objectives: finite terms with the documented signs, gradients everywhere, AAD(0, 0) == its base."""
from __future__ import annotations

import copy

import pytest
import torch

from aadscale import attacks, models, objectives
from aadscale.models.modes import replayable_rng
from aadscale.objectives import build_objective, classification_loss, mask_attention


@pytest.fixture
def batch():
    torch.manual_seed(0)
    model = models.build("resnet9_small", 10).train()
    x = torch.rand(8, 3, 32, 32)
    y = torch.randint(0, 10, (8,))
    x_adv = attacks.pgd(model, x, y, eps=8 / 255, steps=2)
    return model, x, y, x_adv


@pytest.mark.parametrize("name", objectives.OBJECTIVES)
def test_terms_finite_signed_and_gradients_reach_every_parameter(batch, name):
    model, x, y, x_adv = batch
    out = build_objective(name, lambda1=0.5, lambda2=0.5)(model, x, y, x_adv)
    scalars = {k: v for k, v in out.items() if not k.startswith("logits")}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in scalars.values())
    assert out["loss"].requires_grad
    if "rect" in out:
        assert out["rect"] <= 0 and out["pres"] >= 0
    if "alp" in out:
        assert out["alp"] >= 0
    out["loss"].backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
            or p.grad.abs().sum() == 0]
    assert not dead, f"no gradient reached {dead[:5]}"


@pytest.mark.parametrize("base", ["madry", "alp", "trades"])
def test_aad_with_zero_lambdas_equals_its_base(batch, base):
    model, x, y, x_adv = batch
    model.eval()  # dropout/BN noise aside, the values must be identical
    ref = build_objective(base, beta=0.7, trades_beta=3.0)(model, x, y, x_adv)
    out = build_objective(f"{base}+aad", lambda1=0.0, lambda2=0.0, beta=0.7, trades_beta=3.0)(model, x, y, x_adv)
    assert torch.allclose(out["loss"], ref["loss"], rtol=0, atol=1e-6)
    assert out["rect"] != 0 and out["pres"] != 0  # the terms were computed, only weighted by 0


def test_aad_terms_enter_the_total_with_their_weights(batch):
    model, x, y, x_adv = batch
    model.eval()
    out = build_objective("madry+aad", lambda1=0.3, lambda2=2.0)(model, x, y, x_adv)
    expected = out["cls"] + 0.3 * out["rect"] + 2.0 * out["pres"]
    assert torch.allclose(out["loss"].detach(), expected, atol=1e-5)


def test_preservation_is_zero_for_identical_inputs(batch):
    model, x, y, _ = batch
    model.eval()
    out = objectives.aad(model, x, y, x.clone())
    assert out["pres"] == 0


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_preservation_is_zero_for_identical_inputs_in_train_mode_with_dropout(device):
    torch.manual_seed(0)
    model = models.build("resnet9_small", 10, dropout=0.5).to(device).train()
    x, y = torch.rand(8, 3, 32, 32, device=device), torch.randint(0, 10, (8,), device=device)
    assert not torch.equal(model(x), model(x))  # control: each train-mode forward draws its own masks
    out = objectives.aad(model, x, y, x.clone())
    assert out["pres"] == 0
    assert torch.equal(out["logits_clean"], out["logits_adv"])


def test_replayed_passes_draw_alike_and_leave_the_generator_where_one_pass_does():
    torch.manual_seed(1)
    with replayable_rng(torch.device("cpu")) as replay:
        first = torch.rand(4)
        replay()
        second = torch.rand(4)
    after = torch.rand(4)
    torch.manual_seed(1)
    assert torch.equal(first, second) and torch.equal(torch.rand(4), first)
    assert torch.equal(torch.rand(4), after)


def test_mask_attention_removes_the_attended_area():
    x = torch.ones(1, 1, 4, 4)
    cam = torch.zeros(1, 2, 2)
    cam[0, 0, 0] = 1.0
    out = mask_attention(x, cam)
    assert out[0, 0, 0, 0] == 0 and out[0, 0, 3, 3] == 1
    assert 0 < out.sum() < 16


def test_classification_losses():
    logits = torch.tensor([[3.0, -1.0, 0.0]])
    y = torch.tensor([0])
    assert classification_loss(logits, y, "ce") < classification_loss(logits, torch.tensor([1]), "ce")
    sm = classification_loss(logits, y, "soft_margin")
    assert sm < classification_loss(logits, torch.tensor([1]), "soft_margin") and sm > 0
    with pytest.raises(ValueError, match="cls_loss='hinge'"):
        classification_loss(logits, y, "hinge")


def test_unknown_objective():
    with pytest.raises(ValueError, match="mart"):
        build_objective("mart")
    with pytest.raises(ValueError, match="base="):
        objectives.aad(None, None, None, None, base="mart")


def _running_stats(model):
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


@pytest.mark.parametrize("name,bn_stats,forwards", [
    ("madry+aad", "base", ["adv"]), ("alp+aad", "base", ["clean", "adv"]), ("madry+aad", "clean", ["clean"]),
    ("madry+aad", "adv", ["adv"]), ("madry+aad", "both", ["clean", "adv"]),
    ("madry", "base", ["adv"]), ("madry", "adv", ["adv"]), ("madry", "clean", ["clean"]),
    ("madry", "both", ["clean", "adv"]), ("alp", "base", ["clean", "adv"]), ("alp", "clean", ["clean"]),
    ("alp", "adv", ["adv"])])
def test_running_stats_follow_the_chosen_forwards_alone(batch, name, bn_stats, forwards):
    model, x, y, x_adv = batch
    reference = copy.deepcopy(model)
    out = build_objective(name, lambda1=0.5, lambda2=0.5, bn_stats=bn_stats)(model, x, y, x_adv)
    with torch.no_grad():  # the chosen forwards alone, in the objective's order
        for which in forwards:
            reference({"clean": x, "adv": x_adv}[which])
    got, want = _running_stats(model), _running_stats(reference)
    assert got.keys() == want.keys() and len(got) > 0
    assert all(torch.allclose(got[k], want[k], rtol=1e-5, atol=1e-6) for k in got), forwards
    # each training forward still normalised with its own batch statistics
    fresh = copy.deepcopy(reference)
    with torch.no_grad():
        assert torch.allclose(out["logits_adv"], fresh.train()(x_adv), atol=1e-4)
        assert not torch.allclose(out["logits_adv"], fresh.eval()(x_adv), atol=1e-4)


@pytest.mark.parametrize("dropout", [None, 0.5])
@pytest.mark.parametrize("base,bn_stats", [("madry", "both"), ("madry", "clean"), ("madry", "adv"),
                                           ("alp", "both"), ("alp", "clean")])
def test_base_is_aad_with_zero_lambdas_in_train_mode(base, bn_stats, dropout):
    """AAD's control: one train-mode step of each from the same state, the demo's model (and with dropout)."""
    def step(name):
        torch.manual_seed(0)
        model = models.build("resnet9_small", 10, dropout=dropout).train()
        x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
        x_adv = (x + 0.05 * torch.randn_like(x).sign()).clamp(0, 1)
        out = build_objective(name, lambda1=0.0, lambda2=0.0, bn_stats=bn_stats)(model, x, y, x_adv)
        out["loss"].backward()
        return out, {n: p.grad for n, p in model.named_parameters()}, _running_stats(model)

    (aad, aad_grads, aad_stats), (ref, ref_grads, ref_stats) = step(f"{base}+aad"), step(base)
    assert aad["rect"] != 0 and aad["pres"] != 0  # computed, only weighted by 0
    assert torch.equal(aad["loss"], ref["loss"]) and torch.equal(aad["logits_adv"], ref["logits_adv"])
    assert aad_grads.keys() == ref_grads.keys()
    assert all(torch.equal(aad_grads[n], ref_grads[n]) for n in aad_grads)
    assert aad_stats.keys() == ref_stats.keys() and len(aad_stats) > 0
    assert all(torch.equal(aad_stats[k], ref_stats[k]) for k in aad_stats)


def test_scoring_and_masked_forwards_leave_running_stats_alone(batch):
    model, x, y, x_adv = batch
    reference = copy.deepcopy(model)
    build_objective("plain")(model, x, y, x_adv)  # x_adv is only scored
    with torch.no_grad():
        reference(x)
    assert all(torch.equal(a, b) for a, b in zip(_running_stats(model).values(),
                                                  _running_stats(reference).values()))
    objectives.rectification(model, x, torch.rand(8, 4, 4), model(x).detach())  # + a masked forward
    with torch.no_grad():
        reference(x)  # the same plain forward alone
    assert all(torch.equal(a, b) for a, b in zip(_running_stats(model).values(),
                                                  _running_stats(reference).values()))


def test_every_objective_option_is_a_config_field_and_back():
    import dataclasses
    import inspect

    from aadscale.config import ObjectiveConfig
    fields = {f.name for f in dataclasses.fields(ObjectiveConfig)}
    assert fields == set(inspect.signature(build_objective).parameters)
    assert set(dict(ObjectiveConfig.__dataclass_fields__)["name"].metadata["choices"]) == set(objectives.OBJECTIVES)


def test_objective_from_the_config_uses_its_layer_and_threshold(batch):
    import dataclasses

    from aadscale.config import load_config
    model, x, y, x_adv = batch
    model.eval()
    cfg = load_config("demo", ["objective.theta=0.0", "objective.cam_layer=net.layer2"])
    assert cfg.objective.theta == 0.0  # parsed once, a number
    out = build_objective(**dataclasses.asdict(cfg.objective))(model, x, y, x_adv)
    ref = objectives.aad(model, x, y, x_adv, lambda1=0.5, lambda2=0.05, theta=0.0, layer="net.layer2")
    assert torch.equal(out["loss"], ref["loss"])
    default = objectives.aad(model, x, y, x_adv, lambda1=0.5, lambda2=0.05)
    assert not torch.equal(out["loss"], default["loss"])
