"""Sweep logic without Ray trials: space YAML -> Tune space, checks, table, best preset, plots, bad input."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from aadscale.config import load_config
from aadscale.engine.checkpoint import files_of_rank
from aadscale.engine.manifest import MANIFEST, damage, record, write_manifest
from aadscale.tuning import SweepOptions, run_sweep
from aadscale.tuning.plots import (
    grid_cells,
    grid_plots,
    sensitivity_plots,
    sensitivity_series,
)
from aadscale.tuning.results import (
    best_row,
    make_row,
    markdown_table,
    rows_from_trials,
    trial_status,
    write_best_preset,
    write_table,
)
from aadscale.tuning.space import (
    check_space,
    load_space,
    objective_metrics,
    parse_space,
    pbt_mutations,
    tune_space,
    with_choices,
    with_params,
)
from aadscale.tuning.storage import checkpoint_uri
from aadscale.tuning.worker import restore_tag, stage_checkpoint

ROOT = Path(__file__).resolve().parent.parent
DEMO_SPACE = ROOT / "aadscale/presets/sweeps/demo-lambdas.yaml"


def space(params: dict, **extra):
    return parse_space({"params": params, **extra})


def test_shipped_spaces_parse_and_check():
    demo = load_space(DEMO_SPACE)
    check_space(demo, load_config("demo"))
    assert demo.search == "grid" and demo.metric == "eval/worst"
    grid = tune_space(demo)
    assert grid["objective.lambda1"] == {"grid_search": [0.0, 0.1, 0.5, 2.0]}
    imagenet = load_space(ROOT / "aadscale/presets/sweeps/imagenet-lambdas-eps.yaml")
    check_space(imagenet, load_config("imagenet-resnet50"))
    assert imagenet.metric == "score" and imagenet.weights == {"clean": 0.3, "pgd10": 0.7}


def test_random_space_samples_inside_the_ranges():
    from ray.tune.search.sample import Categorical, Float, Integer
    s = space({"objective.lambda1": {"loguniform": [0.01, 1.0]}, "attack.steps": {"randint": [1, 3]},
               "objective.lambda2": {"values": [0.1, 0.2]}}, search="random")
    check_space(s, load_config("demo"))
    domains = tune_space(s)
    assert isinstance(domains["objective.lambda1"], Float)
    assert isinstance(domains["objective.lambda2"], Categorical)
    steps = domains["attack.steps"]
    assert isinstance(steps, Integer)
    assert {steps.sample() for _ in range(200)} == {1, 2, 3}  # bounds are inclusive
    assert all(0.01 <= domains["objective.lambda1"].sample() <= 1.0 for _ in range(50))
    mutations = pbt_mutations(s)
    assert mutations["objective.lambda2"] == [0.1, 0.2]


def test_with_params_sets_dotted_fields_and_validates():
    cfg = with_params(load_config("demo"), {"objective.lambda1": 0.25, "attack.eps": 0.01})
    assert cfg.objective.lambda1 == 0.25 and cfg.attack.eps == 0.01
    with pytest.raises(ValueError, match="objective.lambda1"):
        with_params(load_config("demo"), {"objective.lambda1": -1.0})


@pytest.mark.parametrize("params, extra, message", [
    ({"objective.lamda1": {"values": [1.0]}}, {}, "unknown config field 'objective.lamda1'.*objective.lambda1"),
    ({"objective.lambda1": {"values": []}}, {}, "values is empty"),
    ({"objective.lambda1": {"uniform": [0.1, 1.0]}}, {}, "search=grid needs a finite list"),
    ({"objective.lambda1": {"uniform": [1.0, 0.1]}}, {"search": "random"}, "lo < hi"),
    ({"objective.lambda1": {"normal": [0, 1]}}, {}, "unknown kind 'normal'"),
    ({"objective.lambda1": {"values": [-2.0]}}, {}, "must be >= 0"),
    ({"log.name": {"values": ["a"]}}, {}, "cannot be swept"),
    ({"objective.lambda1": {"values": [1.0]}}, {"metric": "eval/pgd40"}, "is not reported"),
    ({"objective.lambda1": {"values": [1.0]}}, {"weights": {"cw10": 1.0}}, "does not evaluate"),
    ({"objective.lambda1": {"values": [1.0]}}, {"search": "bayes"}, "search='bayes' is not valid"),
])
def test_bad_spaces_are_clear_errors(params, extra, message):
    with pytest.raises(ValueError, match=message):
        check_space(parse_space({"params": params, **extra}), load_config("demo"))


def test_empty_params_and_unknown_keys():
    with pytest.raises(ValueError, match="at least one dotted config field"):
        parse_space({"params": {}})
    with pytest.raises(ValueError, match="unknown keys"):
        parse_space({"params": {"objective.lambda1": {"values": [1]}}, "metrc": "x"})


def test_command_line_choices_override_the_file():
    s = with_choices(load_space(DEMO_SPACE), search="random", weights={"clean": 0.5, "fgsm": 0.5})
    assert (s.search, s.metric, s.weights) == ("random", "score", {"clean": 0.5, "fgsm": 0.5})
    assert objective_metrics({"clean": 80.0, "fgsm": 40.0, "n": 16}, s.weights) == {
        "eval/clean": 80.0, "eval/fgsm": 40.0, "score": 60.0}


def _rows():
    rows = []
    for i, (l1, l2, acc, status) in enumerate([(0.1, 0.05, 20.0, "TERMINATED"), (1.0, 0.05, 35.0, "TERMINATED"),
                                               (0.1, 0.5, 30.0, "TERMINATED"), (1.0, 0.5, 99.0, "ERROR"),
                                               (1.0, 0.5, 50.0, "PENDING")]):
        trial = SimpleNamespace(trial_id=f"t{i}", status=status,
                                config={"objective.lambda1": l1, "objective.lambda2": l2},
                                last_result={"final": 1, "epoch": 2, "step": 10, "eval/clean": 70.0 + i,
                                             "eval/pgd10": acc, "eval/n": 16})
        rows.append(trial)
    return rows_from_trials(rows, ["objective.lambda1", "objective.lambda2"])


def test_table_best_and_status(tmp_path):
    rows = _rows()
    assert [r["status"] for r in rows] == ["done", "done", "done", "error", "unfinished"]
    assert trial_status("TERMINATED", {"final": 0}) == "stopped"
    assert list(rows[0])[:4] == ["trial", "objective.lambda1", "objective.lambda2", "status"]
    assert "eval/n" not in rows[0]
    best = best_row(rows, "eval/pgd10", "max")
    assert best["trial"] == "t1"  # the errored 99 and the unfinished 50 do not count
    assert best_row(rows, "eval/pgd10", "min")["trial"] == "t0"
    md, table = write_table(rows, tmp_path)
    assert md.read_text().splitlines()[2].startswith("| t0 | 0.1 | 0.05 | done | 2 | 10 | 70 | 20 |")
    with table.open() as f:
        loaded = list(csv.DictReader(f))
    assert len(loaded) == 5 and loaded[1]["eval/pgd10"] == "35.0"
    assert markdown_table([make_row("x", {}, {}, "done", [])]).count("\n") == 3


def test_best_preset_loads_in_the_launcher(tmp_path):
    base = load_config("demo", ["train.max_steps=2"])
    path = tmp_path / "best.yaml"
    cfg = write_best_preset(base, {"objective.lambda1": 0.3, "objective.lambda2": 0.07}, path, "a\nb")
    assert path.read_text().startswith("# a\n# b\n")
    assert (cfg.objective.lambda1, cfg.objective.lambda2, cfg.train.max_steps) == (0.3, 0.07, 2)
    assert cfg.preset == "best" and cfg.log.name == ""
    sys.path.insert(0, str(ROOT / "launchers"))
    try:
        import train_imagenet
        args = train_imagenet.parse_args(["--preset", str(path)])
    finally:
        sys.path.remove(str(ROOT / "launchers"))
    assert load_config(args.preset) == cfg


def test_sensitivity_series_and_plots(tmp_path):
    rows = _rows()
    series = sensitivity_series(rows, "objective.lambda1")
    assert series == {"eval/pgd10": [(0.1, 25.0), (1.0, 35.0)]}  # mean over the lambda2 values
    paths = sensitivity_plots(rows, ["objective.lambda1", "objective.lambda2"], tmp_path)
    assert [p.name for p in paths] == ["sensitivity-objective.lambda1.png", "sensitivity-objective.lambda2.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_grid_of_the_metric_over_two_swept_numbers(tmp_path):
    rows = _rows()
    # the failed and the pending trial (both at lambda1 = 1, lambda2 = 0.5) leave their cell empty
    assert grid_cells(rows, ("objective.lambda1", "objective.lambda2"), "eval/pgd10") == {
        (0.1, 0.05): 20.0, (0.1, 0.5): 30.0, (1.0, 0.05): 35.0}
    paths = grid_plots(rows, ["objective.lambda1", "objective.lambda2"], "eval/pgd10", tmp_path)
    assert [p.name for p in paths] == ["grid-objective.lambda1-objective.lambda2.png"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG"


def test_checkpoint_uris_open_where_the_storage_is(tmp_path):
    import pyarrow.fs
    assert checkpoint_uri("/runs/x/checkpoint_1", "/runs") == "/runs/x/checkpoint_1"  # a plain shared path
    assert checkpoint_uri("bucket/sweeps/x", "s3://bucket/sweeps") == "s3://bucket/sweeps/x"
    folder = tmp_path / "storage" / "checkpoint_1"
    folder.mkdir(parents=True)
    uri = checkpoint_uri(str(folder), f"file://{tmp_path}/storage")
    fs, path = pyarrow.fs.FileSystem.from_uri(uri)  # what ray.train.Checkpoint(uri) does
    assert uri == f"file://{folder}" and path == str(folder) and fs.get_file_info(path).type.name == "Directory"


def test_the_table_says_where_each_trial_ran():
    row = make_row("t0", {}, {"final": 1, "step": 4, "nodes": "10.0.0.5/3fa2c1d0,10.0.0.6/77b0e2aa"}, "done", [])
    assert row["nodes"] == "10.0.0.5/3fa2c1d0,10.0.0.6/77b0e2aa"
    assert "| nodes |" in markdown_table([row]) and "nodes" not in make_row("t1", {}, {}, "done", [])


def test_rank_files_staged_and_restored(tmp_path):
    names = ["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
             "zero_pp_rank_1_mp_rank_00_optim_states.pt", "rng_rank0.pt", "rng_rank1.pt"]
    assert files_of_rank(names, 1) == ["rng_rank1.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    assert files_of_rank(names, 0) == ["mp_rank_00_model_states.pt", "rng_rank0.pt",
                                       "zero_pp_rank_0_mp_rank_00_optim_states.pt"]
    run = tmp_path / "runs" / "trial-a"
    folder = run / "checkpoints" / "epoch1"
    folder.mkdir(parents=True)
    for n in names:
        (folder / n).write_text(n)
    write_manifest(folder, record(folder, names))
    meta = {"tag": "epoch1", "run_dir": str(run), "step": 5}
    merged = tmp_path / "merged"  # what Ray Train makes of both ranks' reports
    merged.mkdir()
    for rank in (0, 1):
        for f in stage_checkpoint(folder, rank, meta).iterdir():
            f.rename(merged / f.name)
    assert sorted(p.name for p in merged.iterdir()) == sorted(names + ["aadscale_checkpoint.json", MANIFEST])
    for checkpoints in (run / "checkpoints", tmp_path / "runs" / "trial-b" / "checkpoints"):  # own, PBT's donor
        tag = restore_tag(merged, checkpoints, "k")  # always from storage, never the run folder's own copy
        assert tag.startswith("ray-")
        assert sorted(p.name for p in (checkpoints / tag).iterdir()) == sorted(names + [MANIFEST])
        assert (checkpoints / tag / "rng_rank1.pt").read_text() == "rng_rank1.pt"
        assert damage(checkpoints / tag) == []  # the record came along and the copy matches it


def _sweep(tmp_path, space_file: Path, **kw) -> SweepOptions:
    return SweepOptions(preset="demo", space=str(space_file), overrides=[f"log.dir={tmp_path}"], **kw)


def test_bad_input_fails_before_any_trial(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"params": {"objective.lambda3": {"values": [1.0]}}}))
    with pytest.raises(ValueError, match="unknown config field 'objective.lambda3'"):
        run_sweep(_sweep(tmp_path, bad))
    empty = tmp_path / "empty.yaml"
    empty.write_text(yaml.safe_dump({"params": {"objective.lambda1": {"values": []}}}))
    with pytest.raises(ValueError, match="values is empty"):
        run_sweep(_sweep(tmp_path, empty))
    with pytest.raises(ValueError, match="no Ray cluster answers"):
        run_sweep(_sweep(tmp_path, DEMO_SPACE, address="127.0.0.1:9"))
    with pytest.raises(ValueError, match="local Ray has 2 CPUs.*--cpus-per-worker"):
        run_sweep(_sweep(tmp_path, DEMO_SPACE, num_cpus=2, workers_per_trial=2))
    with pytest.raises(ValueError, match="--placement 'strict_spread' is not valid.*'strict-spread'"):
        run_sweep(_sweep(tmp_path, DEMO_SPACE, placement="strict_spread"))
    assert not (tmp_path / "ray_results").exists() or not any((tmp_path / "ray_results").iterdir())


def test_cli_without_a_cluster_says_so(tmp_path):
    # an address nothing answers: "auto" would join any Ray running on the machine (Ray's process scan)
    env = {k: v for k, v in __import__("os").environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, str(ROOT / "tuning/sweep.py"), "--space", str(DEMO_SPACE),
                           "--address", "127.0.0.1:9", f"log.dir={tmp_path}"], capture_output=True, text=True,
                          env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no Ray cluster answers" in proc.stderr and "ray start --head" in proc.stderr



def test_cli_refuses_a_bad_weights_item(capsys):
    import runpy
    sweep = runpy.run_path(str(ROOT / "tuning/sweep.py"))  # not as __main__: only its functions
    with pytest.raises(SystemExit) as exit_:
        sweep["parse_args"](["--space", str(DEMO_SPACE), "--weights", "clean=x"])
    assert exit_.value.code == 2 and "must look like attack=number" in capsys.readouterr().err


def test_plan_builds_schedulers_and_searchers(tmp_path):
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining
    from ray.tune.search.optuna import OptunaSearch

    from aadscale.tuning.runner import _scheduler, _searcher, plan_sweep
    plan = plan_sweep(_sweep(tmp_path, DEMO_SPACE, scheduler="pbt", search="random", name="p"))
    assert isinstance(_scheduler(plan), PopulationBasedTraining) and _searcher(plan) is None
    assert plan.experiment_path == f"{tmp_path}/ray_results/p" and plan.runs_dir == f"{tmp_path}/p"
    assert plan.base.data.root == f"{tmp_path}/demo-data"  # one copy of the demo data for all trials
    plan = plan_sweep(_sweep(tmp_path, DEMO_SPACE, scheduler="asha", search="optuna"))
    assert isinstance(_scheduler(plan), ASHAScheduler) and isinstance(_searcher(plan), OptunaSearch)
    with pytest.raises(ValueError, match="pbt chooses the configs itself"):
        plan_sweep(_sweep(tmp_path, DEMO_SPACE, scheduler="pbt", search="optuna"))
    with pytest.raises(ValueError, match="--workers-per-trial 0 must be >= 1"):
        plan_sweep(_sweep(tmp_path, DEMO_SPACE, workers_per_trial=0))
