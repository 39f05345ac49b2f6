"""Run history (netstudio/project/runs.py) and `netstudio runs`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from netstudio.cli import main
from netstudio.errors import ProjectError
from netstudio.project import runs as R
from netstudio.project.io import Project, load_project, save_project
from netstudio.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(R.NO_RUNS_ENV, raising=False)


def iris_project(tmp_path: Path, lr: float = 0.05) -> Path:
    from tests.test_job import iris_graph

    g = iris_graph()
    next(n for n in g.nodes.values() if n.type_id == "optim.sgd").params["lr"] = lr
    return save_project(Project(g, TrainConfig(epochs=3, batch_size=16, seed=1, device="cpu", threads=1), "Iris"),
                        tmp_path / "iris.nsproj")


def test_cli_runs_are_kept_beside_the_project_and_listed(tmp_path: Path, recording: None,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = iris_project(tmp_path)
    assert main(["train", str(path), "--quiet", "--json"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the same project, another learning rate
    project = load_project(path)
    next(n for n in project.graph.nodes.values() if n.type_id == "optim.sgd").params["lr"] = 0.2
    save_project(project, path)
    assert main(["train", str(path), "--quiet", "--json", "--epochs", "2"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["run_folder"] and second["run_folder"]
    assert Path(first["run_folder"]).parent == tmp_path / "iris.runs"

    runs = R.list_runs(path)
    assert [r.folder for r in runs] == [Path(first["run_folder"]), Path(second["run_folder"])]
    a, b = runs
    assert a.data["status"] == "finished" and len(a.history()) == 3 and len(b.history()) == 2
    assert a.summary()["val_accuracy"] == pytest.approx(first["val_accuracy"])
    assert a.data["metrics"]["epochs_run"] == 3 and a.data["device"] == "cpu" and a.data["seconds"] > 0
    assert a.data["graph_hash"] != b.data["graph_hash"]  # the lr is part of the graph
    diff = {k: (x, y) for k, x, y in R.param_diff(a, b)}
    lr_key = next(k for k in diff if k.endswith(".lr"))
    assert diff[lr_key] == (0.05, 0.2)
    assert diff["training.epochs"] == (3, 2)
    assert "training.batch_size" not in diff
    # the weights come back with weights_only and equal the trained model's
    state = R.load_run_weights(b)
    from netstudio.compiler.build import build_plan

    assert set(state) == set(build_plan(load_project(path).graph, 16).model.state_dict())
    assert all(isinstance(v, torch.Tensor) for v in state.values())

    capsys.readouterr()
    assert main(["runs", str(path)]) == 0
    out = capsys.readouterr().out
    assert a.id in out and b.id in out and "0.05" in out and "0.2" in out
    assert main(["runs", str(path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in listed] == [a.id, b.id] and [r["lr"] for r in listed] == [0.05, 0.2]

    R.delete_run(a)
    assert [r.id for r in R.list_runs(path)] == [b.id]
    R.delete_run(b)
    assert R.list_runs(path) == [] and not (tmp_path / "iris.runs").exists()


def test_no_record_and_the_switch_keep_nothing(tmp_path: Path, recording: None,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = iris_project(tmp_path)
    assert main(["train", str(path), "--quiet", "--no-record", "--epochs", "1"]) == 0
    monkeypatch.setenv(R.NO_RUNS_ENV, "1")
    assert main(["train", str(path), "--quiet", "--epochs", "1"]) == 0
    assert not (tmp_path / "iris.runs").exists()
    assert main(["runs", str(path)]) == 0


def test_unreadable_runs_are_skipped_and_weights_are_never_unpickled(tmp_path: Path) -> None:
    base = R.runs_dir(tmp_path / "p.nsproj")
    (base / "half-written").mkdir(parents=True)
    (base / "half-written" / "run.json").write_text("{not json")
    (base / "future").mkdir()
    (base / "future" / "run.json").write_text(json.dumps({"format": 99}))
    assert R.list_runs(tmp_path / "p.nsproj") == []
    (base / "evil").mkdir()
    (base / "evil" / "run.json").write_text(json.dumps({"format": 1, "id": "evil", "weights": "w.pt"}))

    class Boom:
        def __reduce__(self) -> Any:
            return (print, ("pwned",))

    import pickle

    (base / "evil" / "w.pt").write_bytes(pickle.dumps({"w": Boom()}))
    run = R.list_runs(tmp_path / "p.nsproj")[0]
    with pytest.raises(ProjectError, match="Cannot read the weights"):
        R.load_run_weights(run)
