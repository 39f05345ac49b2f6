"""The one training job (netstudio/training/job.py): settings, seed before plan, data, run; and data
paths resolved by project loading. tests/ui/test_training_job.py runs it through the CLI, a rank and
the app's worker and compares their first epochs."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import torch

import netstudio.data as data_mod
from netstudio.compiler.build import build_plan
from netstudio.errors import ProjectError, TrainingError
from netstudio.graph.model import Graph
from netstudio.project.io import Project, load_project, save_project
from netstudio.training import job as J
from netstudio.training.config import TrainConfig
from netstudio.training.engine import fit
from netstudio.training.events import EventKind, FitStatus


def iris_graph() -> Graph:
    g = Graph()
    d = g.add_node("data.dataset", {"source": "iris"})
    f1 = g.add_node("layer.linear", {"out_features": 16}, name="fc1")
    r = g.add_node("activation.relu")
    f2 = g.add_node("layer.linear", {"out_features": 3}, name="fc2")
    ce = g.add_node("loss.cross_entropy")
    op = g.add_node("optim.sgd", {"lr": 0.05, "momentum": 0.9})
    for a, ap, b, bp in ((d.id, "features", f1.id, "input"), (f1.id, "output", r.id, "input"),
                         (r.id, "output", f2.id, "input"), (f2.id, "output", ce.id, "prediction"),
                         (d.id, "target", ce.id, "target"), (ce.id, "loss", op.id, "loss")):
        g.connect(a, ap, b, bp)
    return g


CFG = TrainConfig(epochs=1, batch_size=16, seed=5, device="cpu", threads=1, keep_best=False)


def first_loss(result) -> float:
    assert result.status == FitStatus.FINISHED, result.message
    return float(result.history[0]["train_loss"])


def seeded_reference(graph: Graph, config: TrainConfig) -> float:
    """The documented order, by hand: seed, then compile (the initial weights are drawn), then fit."""
    torch.manual_seed(config.seed)
    plan = build_plan(graph, config.batch_size)
    return first_loss(fit(plan, data_mod.load(plan.dataset_params), config))


def test_prepare_seeds_before_the_plan_so_the_weights_follow_the_seed() -> None:
    g = iris_graph()
    torch.manual_seed(1234)  # whatever the caller's generator holds, the job's seed decides
    a = J.prepare(g, CFG)
    torch.manual_seed(999)
    b = J.prepare(g, CFG)
    for (k, x), (_, y) in zip(a.plan.model.state_dict().items(), b.plan.model.state_dict().items()):
        assert torch.equal(x, y), k
    reference = seeded_reference(g, CFG)
    assert first_loss(J.run(a)) == reference
    # the negative control: compiling before seeding draws other weights, and the first epoch shows it,
    # so comparing first-epoch losses catches a path that seeds after building the plan
    torch.manual_seed(CFG.seed + 1)  # (fit itself reseeds at its start: leave the generator elsewhere)
    plan = build_plan(g, CFG.batch_size)
    torch.manual_seed(CFG.seed)
    late = first_loss(fit(plan, data_mod.load(plan.dataset_params), CFG))
    assert late != reference
    other_seed = first_loss(J.run(J.prepare(g, CFG, {"seed": 6})))
    assert other_seed != reference


def test_prepare_applies_overrides_and_checks_before_reading_data(monkeypatch: pytest.MonkeyPatch) -> None:
    job = J.prepare(iris_graph(), CFG, {"epochs": 3, "batch_size": None})
    assert (job.config.epochs, job.config.batch_size, job.device) == (3, 16, "cpu")
    loads: list[object] = []
    monkeypatch.setattr(data_mod, "load", lambda params: loads.append(params))
    with pytest.raises(ProjectError, match="epochs must be between"):
        J.prepare(iris_graph(), CFG, {"epochs": 0})
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="no CUDA GPU"):
            J.prepare(iris_graph(), CFG, {"device": "cuda"})
    with pytest.raises(TrainingError, match="Unknown training setting"):
        J.prepare(iris_graph(), CFG, {"learning_rate": 1.0})
    assert loads == []  # every refusal came before the data was read


def test_prepare_reports_phases_and_data_and_honours_stop() -> None:
    phases: list[str] = []
    seen: list[tuple[object, object]] = []
    job = J.prepare(iris_graph(), CFG, on_phase=phases.append, on_data=lambda p, d: seen.append((p, d)))
    assert phases == ["building model", "loading data"]
    assert seen == [(job.plan, job.data)]
    stop = threading.Event()
    stop.set()
    phases.clear()
    with pytest.raises(J.JobStopped):
        J.prepare(iris_graph(), CFG, stop_event=stop, on_phase=phases.append)
    assert phases == ["building model"]  # stopped before the data was loaded


def test_run_reports_typed_events_and_refuses_weights_of_another_model() -> None:
    job = J.prepare(iris_graph(), CFG)
    events: list[dict] = []
    result = J.run(job, events.append)
    # the per-node statistics sample the first step (stats_every: netstudio.training.nodestats)
    assert [e["kind"] for e in events if e["kind"] != "batch"] == ["start", "stats", "epoch", "end"]
    assert all(type(e["kind"]) is EventKind for e in events)
    end = events[-1]
    assert end["status"] == "finished" and type(end["status"]) is FitStatus and end["status"] is result.status
    # StrEnum members are their text: string comparison, dict keys, formatting and JSON all keep working
    assert {"epoch": 1}[EventKind.EPOCH] == 1 and {EventKind.EPOCH: 2}["epoch"] == 2
    assert f"{FitStatus.EARLY_STOPPED}" == str(FitStatus.EARLY_STOPPED) == "early_stopped"
    assert J.run(job, model=build_plan(iris_graph(), 16).model).status == "finished"  # same architecture
    narrower = iris_graph()
    next(n for n in narrower.nodes.values() if n.name == "fc1").params["out_features"] = 8
    with pytest.raises(TrainingError, match="model changed"):
        J.run(job, model=build_plan(narrower, 16).model)


def _csv_project(folder: Path) -> Path:
    (folder / "data").mkdir(parents=True)
    rows = ["a,b,label"] + [f"{i % 7},{(i * 3) % 5},{i % 2}" for i in range(40)]
    (folder / "data" / "table.csv").write_text("\n".join(rows) + "\n")
    g = Graph()
    g.add_node("data.dataset", {"source": "csv", "path": "data/table.csv", "target_column": "label"})
    return save_project(Project(g, TrainConfig(), name="csv"), folder / "p.nsproj")


def test_loading_resolves_data_paths_relative_to_the_project_file(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    proj = _csv_project(tmp_path / "proj")
    written = proj.read_bytes()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the GUI, a rank or the CLI started from another folder
    project = load_project(proj)
    (node,) = project.graph.nodes.values()
    assert node.params["path"] == str((tmp_path / "proj" / "data" / "table.csv").resolve())
    info = data_mod.describe(node.params)  # found from here
    assert info.n_train + info.n_val == 40
    # saving where it came from writes the path as it was written (the file stays portable) ...
    save_project(project)
    assert proj.read_bytes() == written
    # ... saving into another folder keeps the path that still finds the data
    moved = save_project(project, elsewhere / "copy.nsproj")
    assert load_project(moved).graph.nodes[node.id].params["path"] == node.params["path"]
    # a path that exists from the working directory is left alone, as is an absolute one
    os.makedirs(elsewhere / "data")
    (elsewhere / "data" / "table.csv").write_text("x,label\n1,0\n2,1\n")
    assert load_project(proj).graph.nodes[node.id].params["path"] == "data/table.csv"


def test_training_modules_import_no_cycle_and_nothing_above_them() -> None:
    import subprocess
    import sys

    code = """
import sys
import netstudio.training.engine, netstudio.training.job
assert "netstudio.training.distributed" not in sys.modules, "engine imports distributed"
for m in list(sys.modules):
    assert not m.startswith(("netstudio.cli", "netstudio.ui", "netstudio.project")), m
for m in [m for m in sys.modules if m.startswith("netstudio.training")]:
    del sys.modules[m]
import netstudio.training.distributed
assert "netstudio.training.engine" not in sys.modules, "distributed imports engine"
assert not any(m.startswith(("netstudio.cli", "netstudio.ui", "netstudio.project")) for m in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_strategy_follows_the_world_size() -> None:
    from netstudio.training.distributed import DistContext
    from netstudio.training.strategy import DataParallel, SingleProcess, strategy_for

    one = DistContext(0, 1, 0, torch.device("cpu"), "gloo")
    two = DistContext(1, 2, 1, torch.device("cpu"), "gloo")
    assert type(strategy_for(None)) is SingleProcess and type(strategy_for(one)) is SingleProcess
    ddp = strategy_for(two)
    assert isinstance(ddp, DataParallel) and not ddp.is_main and not ddp.checks_batch_loss
    assert ddp.fast_path_blocker() == "distributed training runs eagerly"
    assert not ddp.adapts_threads(torch.device("cpu")) and SingleProcess().adapts_threads(torch.device("cpu"))
    # this rank's share of each global batch: rank 1 of 2 gets the second half
    items = list(ddp.batches(iter([torch.arange(10)]), type("S", (), {"global_n": 0})(), resident=True))
    assert [t.tolist() for t in items] == [[5, 6, 7, 8, 9]]
