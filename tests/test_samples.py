"""Acceptance tests: the sample projects check, train to their accuracy bars, and mistakes are reported.

Training runs through the real CLI (in-process ``main()`` for speed, a subprocess
where the console behaviour itself matters) on the CPU with few epochs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import ROOT, SAMPLES
from netstudio.cli import main
from netstudio.graph.model import Graph
from netstudio.project.io import Project, load_project, save_project
from netstudio.training.config import TrainConfig

SAMPLE_FILES = sorted(SAMPLES.glob("*.nsproj"))


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def last_json(out: str) -> dict[str, Any]:
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines, "no output"
    return json.loads(lines[-1])


def subprocess_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "netstudio", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=240)


# ----------------------------------------------------------------------------
# every sample is valid
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.stem)
def test_sample_passes_check(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(capsys, "check", str(path))
    assert rc == 0, err
    assert err == ""
    assert "ok: the project is valid" in out
    project = load_project(path)
    for nid, node in project.graph.nodes.items():
        assert any(line.split()[:2] == [nid, node.name] for line in out.splitlines()), f"{node.name} missing"
    total = int(out.split("total parameters:")[1].split()[0].replace(",", ""))
    from netstudio.compiler.build import compile_model

    model = compile_model(project.graph).module
    assert total == sum(p.numel() for p in model.parameters()) > 0
    # nodes are laid out left to right: the dataset is the leftmost node
    xs = {n.type_id: n.pos[0] for n in project.graph.nodes.values()}
    assert xs["data.dataset"] == min(n.pos[0] for n in project.graph.nodes.values())
    assert len({n.pos for n in project.graph.nodes.values()}) == len(project.graph.nodes)  # no overlaps


def test_lenet_check_shows_shapes_and_counts(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(capsys, "check", str(SAMPLES / "lenet.nsproj"))
    assert rc == 0
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("  n")}
    assert "32×6×24×24" in rows["conv1"] and rows["conv1"].split()[-1] == "156"
    assert "32×16×4×4" in rows["pool2"]
    assert "32×256" in rows["flatten"]
    assert rows["fc1"].split()[-1] == "30,840"  # 256·120 + 120
    assert "total parameters: 44,426" in out


# ----------------------------------------------------------------------------
# training reaches the bars
# ----------------------------------------------------------------------------


@pytest.mark.slow  # subprocess, end to end
def test_mnist_mlp_sgd_reaches_90_percent_via_console(tmp_path: Path) -> None:
    out_pt = tmp_path / "mlp.pt"
    proc = subprocess_cli("train", str(SAMPLES / "mnist_mlp_sgd.nsproj"), "--epochs", "3", "--json",
                          "--device", "cpu", "--out", str(out_pt))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    result = last_json(proc.stdout)
    assert result["status"] == "finished"
    assert result["epochs"] == 3 and len(result["history"]) == 3
    assert result["device"] == "cpu"
    assert result["seconds"] > 0
    assert result["val_accuracy"] >= 0.90, result
    assert {"train_loss", "val_loss", "val_accuracy"} <= result.keys()
    assert "epoch 3/3" in proc.stderr  # per-epoch lines go to stderr when stdout carries JSON

    # the exported module is the trained one: it reproduces the reported validation accuracy
    from netstudio.compiler.build import build_plan

    model = torch.load(out_pt, weights_only=False)
    plan = build_plan(load_project(SAMPLES / "mnist_mlp_sgd.nsproj").graph)
    # it starts with the dataset's preprocessing, so it is fed MNIST's raw 0-255 pixels
    from netstudio.data.builtin import _raw_mnist_5k
    from netstudio.data.core import normalize_params, split_indices

    p = normalize_params(plan.dataset_params)
    _, va = split_indices(5000, p["val_fraction"], p["seed"])
    images, labels = _raw_mnist_5k()
    with torch.no_grad():
        pred = model(torch.from_numpy(images[va]).unsqueeze(1).float()).argmax(1)
    raw_acc = (pred == torch.from_numpy(labels[va])).double().mean().item()
    assert raw_acc == pytest.approx(result["val_accuracy"], abs=2e-3)


def test_logistic_regression_reaches_95_percent(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(capsys, "train", str(SAMPLES / "logistic_regression.nsproj"), "--json",
                           "--device", "cpu")
    assert rc == 0, err
    result = last_json(out)
    assert result["val_accuracy"] >= 0.95, result


def test_lenet_on_digits_reaches_95_percent(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(capsys, "train", str(SAMPLES / "lenet.nsproj"), "--epochs", "4", "--json",
                           "--device", "cpu")
    assert rc == 0, err
    result = last_json(out)
    assert result["val_accuracy"] >= 0.95, result


def test_linear_regression_val_loss_halves(capsys: pytest.CaptureFixture[str]) -> None:
    import netstudio.data as data_mod
    from netstudio.compiler.build import build_plan
    from netstudio.training.engine import evaluate

    project = load_project(SAMPLES / "linear_regression.nsproj")
    # the CLI draws the initial weights from the project's seed: rebuild them for the 0-epoch baseline
    torch.manual_seed(project.training.seed)
    plan = build_plan(project.graph, project.training.batch_size)
    baseline = evaluate(plan.model, plan, data_mod.load(plan.dataset_params))["val_loss"]

    rc, out, err = run_cli(capsys, "train", str(SAMPLES / "linear_regression.nsproj"), "--json",
                           "--device", "cpu")
    assert rc == 0, err
    result = last_json(out)
    assert result["val_accuracy"] is None  # regression: no accuracy
    history = [h["val_loss"] for h in result["history"]]
    assert len(history) == project.training.epochs
    assert min(history) < history[0]
    assert result["val_loss"] <= 0.5 * baseline, (baseline, result["val_loss"])


def _residual_concat_project() -> Project:
    g = Graph()
    d = g.add_node("data.dataset", {"source": "wine"}, (0, 0), name="data")
    fc1 = g.add_node("layer.linear", {"out_features": 16}, (230, 0), name="fc1")
    act = g.add_node("activation.relu", {}, (460, 0), name="act")
    fc2 = g.add_node("layer.linear", {"out_features": 16}, (690, 0), name="fc2")
    add = g.add_node("merge.add", {}, (920, 0), name="res")
    cat = g.add_node("merge.concat", {"dim": 1}, (1150, 0), name="cat")
    head = g.add_node("layer.linear", {"out_features": 3}, (1380, 0), name="head")
    loss = g.add_node("loss.cross_entropy", {}, (1610, 150), name="ce")
    opt = g.add_node("optim.adam", {"lr": 0.01}, (1840, 150), name="adam")
    for a, ap, b, bp in [(d, "features", fc1, "input"), (fc1, "output", act, "input"), (act, "output", fc2, "input"),
                         (fc2, "output", add, "a"), (fc1, "output", add, "b"), (add, "output", cat, "inputs"),
                         (d, "features", cat, "inputs"), (cat, "output", head, "input"),
                         (head, "output", loss, "prediction"), (d, "target", loss, "target"),
                         (loss, "loss", opt, "loss")]:
        g.connect(a.id, ap, b.id, bp)
    return Project(g, TrainConfig(epochs=6, batch_size=16), "Residual + Concat")


def test_residual_add_and_concat_compile_and_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = save_project(_residual_concat_project(), tmp_path / "rc.nsproj")
    rc, out, err = run_cli(capsys, "check", str(path))
    assert rc == 0, err
    assert "cat" in out and "16×29" in out  # concat of 16 + 13 wine features
    rc, out, err = run_cli(capsys, "train", str(path), "--json", "--device", "cpu")
    assert rc == 0, err
    result = last_json(out)
    losses = [h["train_loss"] for h in result["history"]]
    assert len(losses) == 6
    assert losses[-1] < 0.5 * losses[0], losses
    assert result["val_accuracy"] >= 0.85


# ----------------------------------------------------------------------------
# mistakes are reported with the node id and a fix
# ----------------------------------------------------------------------------


def _edited_lenet(tmp_path: Path, edit: Any) -> Path:
    data = json.loads((SAMPLES / "lenet.nsproj").read_text(encoding="utf-8"))
    edit(data)
    p = tmp_path / "edited.nsproj"
    p.write_text(json.dumps(data), encoding="utf-8")
    return p


def _node_id(data: dict[str, Any], name: str) -> str:
    return next(n["id"] for n in data["graph"]["nodes"] if n["name"] == name)


def test_check_reports_a_cycle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def cycle(data: dict[str, Any]) -> None:
        conv2, relu2 = _node_id(data, "conv2"), _node_id(data, "relu2")
        data["graph"]["edges"] = [e for e in data["graph"]["edges"] if e[2] != conv2]
        data["graph"]["edges"].append([relu2, "output", conv2, "input"])

    path = _edited_lenet(tmp_path, cycle)
    rc, out, err = run_cli(capsys, "check", str(path))
    assert rc == 1
    assert err.startswith("error: [n5] ")
    assert "would create a cycle" in err
    assert "→ networks must be acyclic" in err
    assert "Traceback" not in err


def test_check_reports_a_shape_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def mismatch(data: dict[str, Any]) -> None:
        fc1 = next(n for n in data["graph"]["nodes"] if n["name"] == "fc1")
        fc1["params"]["in_features"] = 300

    rc, out, err = run_cli(capsys, "check", str(_edited_lenet(tmp_path, mismatch)))
    assert rc == 1
    assert ("error: [n9] Linear 'fc1' expects 300 input features but receives 256 (16×4×4 flattened) "
            "→ set in_features to 256 or 'auto'") in err
    assert "✗" in next(line for line in out.splitlines() if " fc1 " in line)
    assert "total parameters: unknown" in out


def test_check_reports_a_missing_loss_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def unplug(data: dict[str, Any]) -> None:
        data["graph"]["edges"] = [e for e in data["graph"]["edges"] if e[3] != "target"]

    rc, out, err = run_cli(capsys, "check", str(_edited_lenet(tmp_path, unplug)))
    assert rc == 1
    assert "error: [n14] CrossEntropy 'cross_entropy' has no input connected to 'target' → connect the dataset's" \
        in err
    # the model itself is fine: shapes and parameter counts are still shown
    assert "total parameters: 44,426" in out


@pytest.mark.slow  # subprocess, end to end
def test_huge_learning_rate_stops_with_a_nan_message(tmp_path: Path) -> None:
    project = load_project(SAMPLES / "linear_regression.nsproj")
    project.graph.set_param(project.graph.find("sgd").id, "lr", 1e6)
    path = save_project(project, tmp_path / "diverge.nsproj")
    out_pt = tmp_path / "never.pt"
    proc = subprocess_cli("train", str(path), "--epochs", "3", "--json", "--device", "cpu", "--out", str(out_pt))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert "diverged" in errors[0] and ("NaN" in errors[0] or "infinite" in errors[0])
    assert "Lower the learning rate" in errors[0]
    result = last_json(proc.stdout)
    assert result["status"] == "error"
    assert not out_pt.exists()  # a diverged model is not exported
