"""`netstudio train`, a rank of a distributed job and the app's training worker run the same job
(netstudio/training/job.py): for one project and seed their first epochs are the same.

The reference is the documented order done by hand (seed, compile, fit). Each path starts with the
global generator somewhere else, so a path that seeded after building the plan (or not at all)
would train other initial weights and show another first-epoch loss (tests/test_job.py shows that
such a path does differ)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from netstudio.project.io import Project, load_project, save_project
from netstudio.training.config import TrainConfig
from tests.test_distributed import job_env, netstudio_cmd
from tests.test_job import iris_graph, seeded_reference

SEED = 11
CFG = TrainConfig(epochs=1, batch_size=15, seed=SEED, device="cpu", threads=1, keep_best=False)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return save_project(Project(iris_graph(), CFG, name="iris job"), tmp_path / "iris.nsproj")


def _cli_first_loss(project: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    from netstudio.cli import main

    torch.manual_seed(SEED + 1000)  # not the project's seed: the job must set it
    capsys.readouterr()
    assert main(["train", str(project), "--json", "--quiet"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["history"][0]


def _rank_first_epoch(project: Path, nproc: int) -> dict:
    proc = subprocess.run(netstudio_cmd("train", str(project), "--nproc", str(nproc), "--json", "--timeout", "60"),
                          cwd=project.parent, env=job_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == nproc
    return summary["history"][0]


def _worker_first_epoch(qtbot, project: Path) -> dict:
    from netstudio.ui.training.worker import TrainingWorker, TrainJob, WorkerThread

    loaded = load_project(project)
    torch.manual_seed(SEED + 2000)
    worker = TrainingWorker(TrainJob(loaded.graph.to_dict(), replace(loaded.training), run_index=3))
    phases: list[str] = []
    worker.phase.connect(lambda p: phases.append(p["phase"]))
    thread = WorkerThread(worker, "test-training-job")  # on its own QThread, as the app runs it
    with qtbot.waitSignal(worker.done, timeout=120_000) as blocker:
        thread.start()
    assert thread.join(30_000)
    outcome = blocker.args[0]
    assert outcome["status"] == "finished", outcome
    assert phases == ["building model", "loading data", "training"]
    return outcome["history"][0]


@pytest.mark.slow
def test_cli_rank_and_worker_train_the_same_first_epoch(qtbot, project: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    reference = seeded_reference(iris_graph(), CFG)
    cli = _cli_first_loss(project, capsys)
    worker = _worker_first_epoch(qtbot, project)
    rank = _rank_first_epoch(project, 1)
    # one process each, one thread, the same seed, weights and batches: bit-for-bit the same
    assert cli["train_loss"] == worker["train_loss"] == rank["train_loss"] == reference
    assert cli["val_loss"] == worker["val_loss"] == rank["val_loss"]
    # two ranks (DDP over gloo) sum the same losses in another order: equal up to float rounding
    ddp = _rank_first_epoch(project, 2)
    assert ddp["train_loss"] == pytest.approx(reference, rel=1e-5)
    assert ddp["val_loss"] == pytest.approx(cli["val_loss"], rel=1e-5)
