"""Hyperparameter search (netstudio/project/sweep.py, sweep_space.py) and `netstudio sweep`."""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from netstudio.cli import main
from netstudio.errors import SweepError
from netstudio.project import runs as R
from netstudio.project import sweep as S
from netstudio.project.io import Project, load_project, save_project
from netstudio.project.sweep_space import Distribution, apply_values, parse_distribution, parse_param, parse_space, resolve
from netstudio.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT / "sample_projects" / "mnist_mlp_sgd.nsproj"
SPACE = ["optimizer.lr=log(1e-4,1e-1)", "fc1.out_features=int(32,256)"]


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(R.NO_RUNS_ENV, raising=False)


def iris_project(tmp_path: Path) -> Path:
    from tests.test_job import iris_graph

    return save_project(Project(iris_graph(), TrainConfig(epochs=2, batch_size=16, seed=1, device="cpu", threads=1),
                                "Iris"), tmp_path / "iris.nsproj")


# --- the search space ---------------------------------------------------------------------------------------

def test_distributions_parse() -> None:
    assert parse_distribution("log(1e-4, 1e-1)") == Distribution("log", 1e-4, 1e-1)
    assert parse_distribution("float(0,0.5)") == Distribution("float", 0.0, 0.5)
    assert parse_distribution("int(32,256)") == Distribution("int", 32, 256)
    assert parse_distribution("choice(adam, 'two words', 3, 0.5, true)").choices == ("adam", "two words", 3, 0.5,
                                                                                      True)
    sp = parse_param("fc1.out_features=int(32,256)")
    assert (sp.node, sp.param, sp.key) == ("fc1", "out_features", "fc1.out_features")
    assert parse_param("blk/inner.lr = log(1e-3,1)").node == "blk/inner"  # an id inside a block


@pytest.mark.parametrize("text, token", [
    ("fc1.out_features=int(32,abc)", "'abc'"),
    ("fc1.out_features=int(32,64.5)", "'64.5'"),
    ("optimizer.lr=lg(1e-4,1e-1)", "'lg'"),
    ("optimizer.lr=log(0,1)", "'0'"),
    ("optimizer.lr=log(-1,1)", "'-1'"),
    ("optimizer.lr=log(1e-1,1e-4)", "'1e-4'"),
    ("optimizer.lr=float(1,nan)", "'nan'"),
    ("optimizer.lr=float(1,2,3)", "'float(1,2,3)'"),
    ("optimizer.lr=float(1,)", "''"),
    ("optimizer.lr=log(1e-4,1e-1", "'log(1e-4,1e-1'"),
    ("optimizer.lr=choice(0.1)", "'choice(0.1)'"),
    ("optimizer.lr=choice(0.1,0.1)", "'0.1'"),
    ("optimizer.lr=choice(0.1,a+b)", "'a+b'"),
    ("lr=log(1e-4,1e-1)", "'lr'"),
    ("optimizer.lr", "'optimizer.lr'"),
    ("optimizer.=log(1,2)", "'optimizer.'"),
    (".lr=log(1,2)", "'.lr'"),
])
def test_parse_errors_name_the_bad_token(text: str, token: str) -> None:
    with pytest.raises(SweepError) as e:
        parse_param(text)
    assert token in e.value.message and repr(text) in e.value.message
    assert "log(a,b)" in (e.value.hint or "")


def test_the_same_parameter_twice_is_refused() -> None:
    with pytest.raises(SweepError, match="'optimizer.lr' is searched twice"):
        parse_space(["optimizer.lr=log(1e-4,1)", "optimizer.lr=float(0.1,1)"])
    with pytest.raises(SweepError, match="at least one parameter"):
        parse_space([])


@pytest.mark.parametrize("text, message", [
    ("fc9.out_features=int(32,64)", "'fc9' is not the name or id of a node"),
    ("scheduler.gamma=float(0.1,0.9)", "'scheduler' names no node: the graph has no scheduler node"),
    ("fc1.units=int(32,64)", "'units' is not a parameter of Linear 'fc1'"),
    ("fc1.out_features=float(32,64)", "takes whole numbers; use int(a,b) or log(a,b)"),
    ("fc1.out_features=log(1.5,64)", "'1.5' is not a whole number"),
    ("fc1.out_features=int(0,64)", "'0' does not fit fc1.out_features"),
    ("optimizer.lr=choice(0.1,fast)", "'fast' does not fit optimizer.lr"),
    ("data.normalize=choice(standard,sideways)", "'sideways' does not fit data.normalize"),
    ("data.normalize=float(0,1)", "search it with choice(...)"),
])
def test_a_space_that_does_not_fit_the_graph_is_refused(text: str, message: str) -> None:
    g = load_project(MNIST).graph
    with pytest.raises(SweepError) as e:
        resolve(g, parse_space([text]))
    assert message in e.value.message


def test_targets_are_found_by_name_id_or_role_and_values_go_on_a_copy() -> None:
    g = load_project(MNIST).graph
    targets = resolve(g, parse_space(["optimizer.lr=log(1e-4,1e-1)", "n3.out_features=int(32,256)",
                                      "data.normalize=choice(standard,minmax)"]))
    assert [(t.node_id, t.space.param, t.param_kind) for t in targets] == [
        ("n7", "lr", "float"), ("n3", "out_features", "int"), ("n1", "normalize", "choice")]
    copy = apply_values(g, targets, {"optimizer.lr": 0.003, "n3.out_features": 40})
    assert copy.nodes["n7"].params["lr"] == 0.003 and copy.nodes["n3"].params["out_features"] == 40
    assert g.nodes["n7"].params["lr"] == 0.01 and g.nodes["n3"].params["out_features"] == 128  # untouched


# --- Optuna is optional -------------------------------------------------------------------------------------

def test_without_optuna_the_sweep_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    with pytest.raises(SweepError) as e:
        S.require_optuna()
    assert e.value.hint == "pip install netstudio[sweep]"
    path = iris_project(tmp_path)
    spec = S.SweepSpec(str(path), load_project(path).graph.to_dict(), TrainConfig(), ["optimizer.lr=log(1e-3,1)"])
    with pytest.raises(SweepError, match="needs Optuna"):
        S.run_sweep(spec)
    assert main(["sweep", str(path), "--param", "optimizer.lr=log(1e-3,1)"]) == 1
    assert "error: Hyperparameter search needs Optuna, which is not installed → pip install netstudio[sweep]" in \
        capsys.readouterr().err


# --- running ----------------------------------------------------------------------------------------------------

def test_cli_parse_error_names_the_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = iris_project(tmp_path)
    assert main(["sweep", str(path), "--param", "fc1.out_features=int(32,abc)"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Sweep parameter 'fc1.out_features=int(32,abc)': 'abc' is not a whole number")
    assert not (tmp_path / "iris.runs").exists()


def test_mnist_sweep_of_12_trials_prunes_and_records_every_trial(tmp_path: Path, recording: None,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The acceptance test: lr and width of the MNIST MLP, 12 trials of 3 epochs, pruned by the median rule."""
    path = tmp_path / "mnist.nsproj"
    shutil.copy(MNIST, path)
    args = ["sweep", str(path), "--trials", "12", "--epochs", "3", "--device", "cpu", "--batch-size", "128",
            "--sampler-seed", "0", "--threads", "1", "--json", "--apply"]
    for p in SPACE:
        args += ["--param", p]
    assert main(args) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out.strip().splitlines()[-1])
    trials = out["trials"]
    assert [t["number"] for t in trials] == list(range(12))
    states = {t["number"]: t["state"] for t in trials}
    assert out["pruned"] >= 1 and out["complete"] >= 5 and out["failed"] == 0
    assert "trial   0  complete" in captured.err  # the lines go to stderr with --json

    # every trial is a run beside the project, with its sweep id, number, state and values
    runs = R.list_runs(path)
    assert len(runs) == 12
    by_trial = {r.data["sweep"]["trial"]: r for r in runs}
    assert sorted(by_trial) == list(range(12))
    for n, r in by_trial.items():
        sw = r.data["sweep"]
        assert sw["id"] == out["sweep"] and sw["state"] == states[n] and r.data["source"] == "sweep"
        assert r.summary()["trial_state"] == states[n] and r.summary()["sweep"] == out["sweep"]
        lr, width = sw["params"]["optimizer.lr"], sw["params"]["fc1.out_features"]
        assert 1e-4 <= lr <= 1e-1 and 32 <= width <= 256
        assert r.data["nodes"]["sgd"]["lr"] == lr and r.data["nodes"]["fc1"]["out_features"] == width
        assert r.data["config"]["epochs"] == 3
        assert r.data["status"] == ("pruned" if states[n] == "pruned" else "finished")

    # the pruning is the median rule's: a pruned trial stopped early, at an epoch where its validation loss
    # was above the median of the trials that had completed before it
    for n, r in by_trial.items():
        hist = r.history()
        if states[n] != "pruned":
            assert len(hist) == 3
            continue
        assert len(hist) < 3
        epoch, loss = hist[-1]["epoch"], hist[-1]["val_loss"]
        earlier = [by_trial[m].history()[epoch - 1]["val_loss"] for m in range(n) if states[m] == "complete"]
        assert len(earlier) >= 5  # --prune-after 5 (the default)
        assert loss > statistics.median(earlier)
        assert r.data["sweep"]["value"] == pytest.approx(loss)

    # the best trial: the complete one with the lowest kept validation loss, written into the project
    best = out["best"]
    assert best["value"] == min(t["value"] for t in trials if t["state"] == "complete")
    project = load_project(path)
    assert project.graph.find("sgd").params["lr"] == best["params"]["optimizer.lr"]
    assert project.graph.find("fc1").params["out_features"] == best["params"]["fc1.out_features"]
    assert {(a["param"], a["new"]) for a in out["applied"]} == {("lr", best["params"]["optimizer.lr"]),
                                                                ("out_features", best["params"]["fc1.out_features"])}

    assert main(["runs", str(path)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].endswith("sweep") and len(listing) == 13
    assert sum(f"{out['sweep']} #" in line and line.endswith(" pruned") for line in listing) == out["pruned"]


def test_a_stopped_sweep_ends_after_the_running_trial(tmp_path: Path) -> None:
    path = iris_project(tmp_path)
    stop = threading.Event()
    events: list[dict[str, Any]] = []

    def report(ev: dict[str, Any]) -> None:
        events.append(ev)
        if ev["kind"] == S.SweepEvent.TRIAL_END and ev["number"] == 1:
            stop.set()

    spec = S.SweepSpec(str(path), load_project(path).graph.to_dict(), load_project(path).training,
                       ["optimizer.lr=log(1e-3,0.5)"], trials=10)
    result = S.run_sweep(spec, report, stop)
    assert [t.number for t in result.trials] == [0, 1] and result.ended_early == "stopped"
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "sweep_start" and kinds[-1] == "sweep_end"
    assert kinds.count("trial_start") == 2 and kinds.count("trial_epoch") == 4  # 2 epochs each
    assert not (tmp_path / "iris.runs").exists()  # recording is off in the test suite unless turned on


def test_the_timeout_starts_no_trial_after_it(tmp_path: Path) -> None:
    import time

    path = iris_project(tmp_path)

    def slow_report(ev: dict[str, Any]) -> None:
        if ev["kind"] == S.SweepEvent.TRIAL_END:
            time.sleep(1.1)

    spec = S.SweepSpec(str(path), load_project(path).graph.to_dict(), load_project(path).training,
                       ["optimizer.lr=log(1e-3,0.5)"], trials=10, timeout_s=1.0)
    result = S.run_sweep(spec, slow_report)
    assert len(result.trials) == 1 and result.ended_early == "timeout"


def test_a_trial_the_model_cannot_take_fails_and_the_sweep_goes_on(tmp_path: Path, recording: None) -> None:
    path = iris_project(tmp_path)
    # iris has 3 classes: fc2 with 2 outputs cannot be trained with cross-entropy on labels 0..2
    spec = S.SweepSpec(str(path), load_project(path).graph.to_dict(), load_project(path).training,
                       ["fc2.out_features=choice(2,3)"], trials=4, sampler_seed=3)
    result = S.run_sweep(spec)
    states = {t.params["fc2.out_features"]: t.state for t in result.trials}
    assert states.get(3) == S.TrialState.COMPLETE and states.get(2) == S.TrialState.FAILED
    assert result.best is not None and result.best.params == {"fc2.out_features": 3}
    failed = [r for r in R.list_runs(path) if r.data["sweep"]["state"] == "failed"]
    assert failed and all(r.data["status"] == "error" for r in failed)


@pytest.mark.slow
def test_parallel_trials_in_worker_processes(tmp_path: Path, recording: None) -> None:
    path = iris_project(tmp_path)
    spec = S.SweepSpec(str(path), load_project(path).graph.to_dict(), load_project(path).training,
                       ["optimizer.lr=log(1e-3,0.5)", "fc1.out_features=int(4,32)"], trials=4, jobs=2,
                       prune_after=1)
    seen: list[dict[str, Any]] = []
    result = S.run_sweep(spec, seen.append)
    assert sorted(t.number for t in result.trials) == [0, 1, 2, 3]
    assert all(t.state in (S.TrialState.COMPLETE, S.TrialState.PRUNED) for t in result.trials)
    runs = R.list_runs(path)
    assert sorted(r.data["sweep"]["trial"] for r in runs) == [0, 1, 2, 3]
    assert {r.data["sweep"]["id"] for r in runs} == {result.sweep_id}
    # the epochs were reported to the study in this process while the workers trained
    assert sum(e["kind"] == "trial_epoch" for e in seen) == sum(t.epochs_run for t in result.trials)


def test_trials_start_from_the_weights_beside_an_imported_project(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Like `netstudio train`: a project with a weights file beside it fine-tunes from it (--fresh-weights: not)."""
    import torch

    from netstudio.training import fit
    from netstudio.training import job as training_job

    path = iris_project(tmp_path)
    project = load_project(path)
    trained = fit(*_plan_and_data(project, epochs=30), TrainConfig(epochs=30, batch_size=16, seed=1, device="cpu"))
    assert trained.metrics["val_loss"] < 0.3
    torch.save(trained.model.state_dict(), tmp_path / "iris.pt")
    project.weights = "iris.pt"
    save_project(project, path)
    # an lr too small to move the weights: a trial's loss is where its weights started
    cfg = training_job.configure(project.training, {"epochs": 1})

    def sweep_loss(fresh: bool) -> float:
        assert main(["sweep", str(path), "--param", "optimizer.lr=choice(1e-8,2e-8)", "--trials", "1", "--epochs",
                     "1", "--json", *(["--fresh-weights"] if fresh else [])]) == 0
        return float(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["best"]["value"])

    spec = S.SweepSpec(str(path), project.graph.to_dict(), cfg, ["optimizer.lr=choice(1e-8,2e-8)"], trials=1,
                       start_weights=str(tmp_path / "iris.pt"))
    assert S.run_sweep(spec).best.value == pytest.approx(trained.metrics["val_loss"], abs=0.02)
    assert sweep_loss(fresh=False) == pytest.approx(trained.metrics["val_loss"], abs=0.02)
    assert sweep_loss(fresh=True) > 0.8  # an untrained 3-class model: about ln 3


def _plan_and_data(project: Project, epochs: int) -> tuple[Any, Any]:
    import torch

    import netstudio.data as data_mod
    from netstudio.compiler.build import build_plan

    torch.manual_seed(1)
    plan = build_plan(project.graph, 16)
    return plan, data_mod.load(plan.dataset_params)
