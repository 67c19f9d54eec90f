"""The evaluation suite: monotone PGD, APGD vs PGD, resume, masking check, checkpoints."""
from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch
from torch.utils.data import TensorDataset

from aadscale import models
from aadscale.attacks import parse_attack_name, parse_eps
from aadscale.attacks.apgd import apgd, checkpoints
from aadscale.config import Config, to_dict
from aadscale.evaluate.loading import load_model
from aadscale.evaluate.suite import evaluate_suite, masking_check, select_subset

EPS = 0.1
PGD = ["pgd5", "pgd10", "pgd20"]
# 256 of the 297 test images in two batches: enough images that attack noise stays small
SUITE = dict(eps=EPS, attacks=["clean", "fgsm"] + PGD, strong=["pgd20x2", "apgd20"], limit=256,
             seed=3, batch_size=128, progress=False, model_label="digits")


@pytest.fixture(scope="module")
def suite_run(digits_model, digits, tmp_path_factory):
    """One evaluation of the trained digits model on a fixed test subset."""
    _, _, xte, yte = digits
    out = tmp_path_factory.mktemp("suite")
    report = evaluate_suite(digits_model, TensorDataset(xte, yte), out, **SUITE)
    return report, out, TensorDataset(xte, yte)


def test_pgd_does_not_weaken_with_steps_and_apgd_is_no_weaker(suite_run):
    res = suite_run[0]["results"]
    assert res["n"] == 256 and res["clean"] > 90
    assert res["pgd20"] < res["clean"] - 10, "the attack should bite at eps=0.1"
    # exact: the clean point is a candidate of every attack, and pgd20x2's first restart is
    # pgd20's run (columns of one attack share their starts) with the worst case kept
    assert all(res["clean"] >= res[c] for c in PGD + ["fgsm", "apgd20"])
    assert res["pgd20"] >= res["pgd20x2"]
    # exact: an image counts in "worst" only if every column got it right
    assert res["worst"] <= min(res[c] for c in ["clean", "fgsm", *PGD, "pgd20x2", "apgd20"])
    # PGD-k steps 2.5 eps / k, so 5 and 20 steps take different paths, and APGD another. Over 8
    # model x 6 subset/start seeds x 2 kernel sets (benchmarks/test_margins.py): pgd5 - pgd20
    # mean 2.5, std 1.05, min 0.4 points; pgd20 - apgd20 mean 2.1, std 1.18, min -0.4. Margin
    # 4 std - mean, rounded up to whole images: 5 and 7 images.
    image = 100 / 256
    assert res["pgd5"] + 5 * image >= res["pgd20"]
    assert res["apgd20"] <= res["pgd20"] + 7 * image


def test_outputs_record_subset_seed_and_check(suite_run):
    report, out, dataset = suite_run
    saved = json.loads((out / "results.json").read_text())
    assert saved["indices"] == select_subset(len(dataset), 256, 3) == report["indices"]
    assert saved["seed"] == 3 and saved["masking_check"]["run"]
    md = (out / "results.md").read_text()
    assert "| digits |" in md and "Strong attacks" in md and "Worst case per image over all 7" in md


def test_resume_skips_finished_batches_and_gives_the_same_table(suite_run, digits_model):
    report, out, dataset = suite_run
    log = out / "batches.rank0.jsonl"
    lines = log.read_text().splitlines()
    assert len(lines) == 2
    log.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # batch 1 torn by a kill
    again = evaluate_suite(digits_model, dataset, out, **SUITE)
    assert again["resumed_batches"] == 1
    assert again["results"] == report["results"]
    with pytest.raises(ValueError, match="eps"):
        evaluate_suite(digits_model, dataset, out, **{**SUITE, "eps": 0.2})


def test_masking_check_warns_on_a_large_gap():
    res = {"clean": 90.0, "pgd10": 40.0, "cw10": 45.0, "apgd100": 20.0}
    check = masking_check(res, ["clean", "pgd10", "cw10"], ["apgd100"], threshold=5)
    assert check["suspected"] and check["message"].startswith("WARNING")
    assert check["gap"] == pytest.approx(20.0) and check["weakest_paper"] == "pgd10"
    assert not masking_check({**res, "apgd100": 38.0}, ["pgd10"], ["apgd100"], 5)["suspected"]
    assert not masking_check(res, ["clean"], ["apgd100"], 5)["run"]


def test_apgd_checkpoints_and_projection(digits_model, digits):
    assert checkpoints(100) == [22, 41, 58, 70, 80, 87, 93, 99]
    _, _, xte, yte = digits
    x, y = xte[:16], yte[:16]
    x_adv = apgd(digits_model, x, y, eps=EPS, steps=10, loss="ce")
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    x_dlr = apgd(digits_model, x, y, eps=EPS, steps=10, loss="dlr", restarts=2)
    assert (x_dlr - x).abs().max() <= EPS + 1e-6
    with pytest.raises(ValueError, match="loss"):
        apgd(digits_model, x, y, eps=EPS, loss="hinge")


def test_column_names():
    assert parse_attack_name("APGD100").name == "apgd100" and parse_attack_name("apgd_dlr50x2").name == "apgd_dlr50x2"
    assert parse_attack_name("a3pgd10").name == "a3pgd10"
    with pytest.raises(ValueError, match="apgd<steps>"):
        parse_attack_name("apgd")
    with pytest.raises(ValueError, match="not understood"):
        parse_attack_name("pgdd10")
    assert parse_attack_name("Square1000").name == "square1000" and parse_attack_name("square100x2").name == "square100x2"
    with pytest.raises(ValueError, match="square<queries>"):
        parse_attack_name("square")


def test_load_model_formats(tmp_path):
    cfg = Config()
    cfg.model.name, cfg.model.num_classes = "lenet_small", 10
    cfg.model.in_channels = 1
    net = models.build("lenet_small", 10, in_channels=1)
    torch.save({"model": net.state_dict(), "config": to_dict(cfg)}, tmp_path / "export.pt")
    loaded = load_model(tmp_path / "export.pt")
    assert loaded.config.model.name == "lenet_small"
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), net.eval()(x))
    torch.save(net.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="--model NAME --num-classes K"):
        load_model(tmp_path / "bare.pt")
    assert load_model(tmp_path / "bare.pt", model_name="lenet_small", num_classes=10,
                      in_channels=1).config is None
    with pytest.raises(ValueError, match="does not fit"):
        load_model(tmp_path / "bare.pt", model_name="lenet_small", num_classes=7, in_channels=1)
    safetensors.torch.save_file(net.state_dict(), tmp_path / "bare.safetensors")  # the hub's format
    again = load_model(tmp_path / "bare.safetensors", model_name="lenet_small", num_classes=10, in_channels=1)
    with torch.no_grad():
        assert torch.equal(again.model(x), loaded.model(x))
    (tmp_path / "torn.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(ValueError, match="cannot be read as a safetensors file"):
        load_model(tmp_path / "torn.safetensors", model_name="lenet_small", num_classes=10, in_channels=1)
    with pytest.raises(ValueError, match="exactly one"):
        load_model(None)
    assert parse_eps("8/255") == pytest.approx(8 / 255)
    with pytest.raises(ValueError, match="not a number"):
        parse_eps("eight")


def _rank_worker(rank: int, port: int, out: str, state: dict) -> None:
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    model = models.build("lenet_small", 10, in_channels=1).eval()
    model.load_state_dict(state)
    x, y = torch.load(f"{out}/data.pt", weights_only=True)
    report = evaluate_suite(model, TensorDataset(x, y), out, eps=EPS, attacks=["clean", "pgd3"],
                            strong=["apgd3"], limit=30, batch_size=8, progress=False)
    torch.save(report["results"], f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes (gloo)
def test_two_ranks_shard_batches_and_sum_counts(digits_model, digits, tmp_path):
    import socket

    import torch.multiprocessing as mp
    _, _, xte, yte = digits
    torch.save((xte[:40], yte[:40]), tmp_path / "data.pt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_worker, args=(port, str(tmp_path), digits_model.state_dict()), nprocs=2)
    single = evaluate_suite(digits_model, TensorDataset(xte[:40], yte[:40]), tmp_path / "single",
                            eps=EPS, attacks=["clean", "pgd3"], strong=["apgd3"], limit=30,
                            batch_size=8, progress=False)["results"]
    assert torch.load(tmp_path / "rank0.pt", weights_only=True) == \
        torch.load(tmp_path / "rank1.pt", weights_only=True) == single
    batches = [sorted(json.loads(line)["batch"] for line in (tmp_path / f"batches.rank{r}.jsonl").open())
               for r in (0, 1)]
    assert batches == [[0, 2], [1, 3]]
