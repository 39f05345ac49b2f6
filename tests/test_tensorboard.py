"""Optional TensorBoard logging (netstudio/training/tensorboard.py) and `netstudio train --tensorboard DIR`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from netstudio.cli import main
from netstudio.errors import TrainingError
from netstudio.project.io import Project, save_project
from netstudio.training import tensorboard as TB
from netstudio.training.config import TrainConfig


def iris_project(tmp_path: Path) -> Path:
    from tests.test_job import iris_graph

    return save_project(Project(iris_graph(), TrainConfig(epochs=3, batch_size=16, seed=1, device="cpu", threads=1),
                                "Iris"), tmp_path / "iris.nsproj")


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_train_writes_the_epoch_scalars_for_tensorboard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = iris_project(tmp_path)
    logs = tmp_path / "tb"
    assert main(["train", str(path), "--quiet", "--json", "--tensorboard", str(logs)]) == 0
    captured = capsys.readouterr()
    history = json.loads(captured.out.strip().splitlines()[-1])["history"]
    runs = [p for p in logs.iterdir() if p.is_dir()]
    assert len(runs) == 1 and runs[0].name.startswith("iris-")
    assert f"TensorBoard: logging to {runs[0]}" in captured.err
    assert list(runs[0].glob("events.out.tfevents.*"))  # the event log file
    scalars = read_scalars(runs[0])
    assert set(scalars) == {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr", "samples_per_s"}
    for key, tag in (("train_loss", "loss/train"), ("val_loss", "loss/val"), ("val_accuracy", "accuracy/val"),
                     ("train_accuracy", "accuracy/train"), ("lr", "lr")):
        assert [s for s, _ in scalars[tag]] == [1, 2, 3]
        assert [v for _, v in scalars[tag]] == pytest.approx([e[key] for e in history], rel=1e-6)

    # a second run goes into a folder of its own beside the first
    assert main(["train", str(path), "--quiet", "--epochs", "1", "--tensorboard", str(logs)]) == 0
    runs = sorted(p for p in logs.iterdir() if p.is_dir())
    assert len(runs) == 2
    assert [len(v) for v in read_scalars(runs[1]).values()] == [1] * 6


def test_the_logger_skips_what_a_run_does_not_have(tmp_path: Path) -> None:
    log = TB.TensorBoardLogger(tmp_path, "x/y z")  # a safe folder name
    assert log.log_dir.parent == tmp_path and log.log_dir.name.startswith("x_y_z-")
    log({"kind": "start", "device": "cpu", "epochs": 2})
    log({"kind": "epoch", "epoch": 1, "train_loss": 0.5, "val_loss": None, "train_accuracy": None,
         "val_accuracy": None, "lr": 0.1, "samples_per_s": float("nan")})
    log({"kind": "epoch", "epoch": 2, "train_loss": 0.25, "lr": 0.05})
    log({"kind": "end", "status": "finished", "message": "ok"})
    log.close()
    assert read_scalars(log.log_dir) == {"loss/train": [(1, 0.5), (2, 0.25)],
                                         "lr": [(1, pytest.approx(0.1)), (2, pytest.approx(0.05))]}


def test_a_multi_phase_run_logs_each_phases_lr(tmp_path: Path) -> None:
    log = TB.TensorBoardLogger(tmp_path, "gan")
    for epoch, lr_g in ((1, 0.01), (2, 0.005)):
        log({"kind": "epoch", "epoch": epoch, "train_loss": 1.0, "lr": 0.02})
        log({"kind": "phases", "scope": "batch", "epoch": epoch, "global_step": 3, "losses": {"opt_d": 0.5},
             "lrs": {"opt_d": 0.5, "opt_g": 0.5}})  # batch reports are not logged
        log({"kind": "phases", "scope": "epoch", "epoch": epoch, "global_step": 4, "losses": {"opt_d": 0.5},
             "lrs": {"opt_d": 0.02, "opt_g": lr_g}})
    log.close()
    scalars = read_scalars(log.log_dir)
    assert scalars["lr/opt_d"] == [(1, pytest.approx(0.02)), (2, pytest.approx(0.02))]
    assert scalars["lr/opt_g"] == [(1, pytest.approx(0.01)), (2, pytest.approx(0.005))]
    assert scalars["lr"] == [(1, pytest.approx(0.02)), (2, pytest.approx(0.02))]


def test_without_tensorboard_train_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` raises ImportError
    with pytest.raises(TrainingError) as e:
        TB.require_tensorboard()
    assert e.value.hint == "pip install netstudio[tensorboard]"
    assert not TB.tensorboard_available()
    path = iris_project(tmp_path)
    assert main(["train", str(path), "--quiet", "--tensorboard", str(tmp_path / "tb")]) == 1
    assert ("error: TensorBoard logging needs the tensorboard package, which is not installed → "
            "pip install netstudio[tensorboard]") in capsys.readouterr().err
    assert not (tmp_path / "tb").exists()
    # without --tensorboard nothing needs it
    assert main(["train", str(path), "--quiet", "--epochs", "1"]) == 0


@pytest.mark.slow  # subprocess, end to end
def test_a_distributed_job_logs_once_from_rank_0(tmp_path: Path) -> None:
    import subprocess

    from tests.test_distributed import job_env, mlp_project, netstudio_cmd

    proj = mlp_project(tmp_path / "iris.nsproj", "iris", 3, epochs=2, batch_size=15)
    logs = tmp_path / "tb"
    proc = subprocess.run(netstudio_cmd("train", str(proj), "--nproc", "2", "--json", "--timeout", "60",
                                        "--no-record", "--tensorboard", str(logs)),
                          cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    history = json.loads(proc.stdout.strip().splitlines()[-1])["history"]
    (run,) = [p for p in logs.iterdir() if p.is_dir()]  # one folder: only rank 0 writes
    scalars = read_scalars(run)
    assert [s for s, _ in scalars["loss/val"]] == [1, 2]
    assert [v for _, v in scalars["loss/val"]] == pytest.approx([e["val_loss"] for e in history], rel=1e-6)
