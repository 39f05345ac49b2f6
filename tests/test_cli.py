"""The ``netstudio`` command: GUI launch, argument handling, train → export round trip, Ctrl-C, errors."""

from __future__ import annotations

import builtins
import io
import json
import os
import signal
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import ROOT, SAMPLES
from netstudio import cli
from netstudio.cli import main
from netstudio.graph.model import Graph
from netstudio.project.io import Project, load_project, save_project
from netstudio.training.config import TrainConfig


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def wine_project(tmp_path: Path, epochs: int = 2, hidden: int = 8) -> Path:
    g = Graph()
    d = g.add_node("data.dataset", {"source": "wine"}, (0, 0), name="data")
    fc1 = g.add_node("layer.linear", {"out_features": hidden}, (230, 0), name="fc1")
    act = g.add_node("activation.tanh", {}, (460, 0), name="act")
    fc2 = g.add_node("layer.linear", {"out_features": 3}, (690, 0), name="fc2")
    ce = g.add_node("loss.cross_entropy", {}, (920, 150), name="ce")
    opt = g.add_node("optim.adam", {"lr": 0.05}, (1150, 150), name="adam")
    g.connect(d.id, "features", fc1.id, "input")
    g.connect(fc1.id, "output", act.id, "input")
    g.connect(act.id, "output", fc2.id, "input")
    g.connect(fc2.id, "output", ce.id, "prediction")
    g.connect(d.id, "target", ce.id, "target")
    g.connect(ce.id, "loss", opt.id, "loss")
    return save_project(Project(g, TrainConfig(epochs=epochs, batch_size=16), "Wine"), tmp_path / "wine.nsproj")


# ----------------------------------------------------------------------------
# GUI launcher
# ----------------------------------------------------------------------------


@pytest.fixture
def fake_ui(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Replace netstudio.ui.app by a stub so no window opens; records run_app's argument."""
    calls: list[Any] = []
    mod = types.ModuleType("netstudio.ui.app")

    def run_app(path: str | None = None) -> int:
        calls.append(path)
        return 7

    mod.run_app = run_app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "netstudio.ui.app", mod)
    return calls


def test_no_arguments_opens_the_app(fake_ui: list[Any]) -> None:
    assert main([]) == 7  # run_app's exit code is passed through
    assert fake_ui == [None]


def test_a_project_argument_opens_it(fake_ui: list[Any], capsys: pytest.CaptureFixture[str]) -> None:
    sample = str(SAMPLES / "lenet.nsproj")
    assert main([sample]) == 7
    assert fake_ui == [sample]
    rc, _, err = run_cli(capsys, "missing.nsproj")
    assert rc == 1 and err.strip() == "error: No such project file: missing.nsproj"
    assert fake_ui == [sample]


def test_gui_without_pyside6(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real_import = builtins.__import__

    def no_qt(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "PySide6" or name.startswith("PySide6."):
            raise ImportError("No module named 'PySide6'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_qt)
    rc, out, err = run_cli(capsys)
    assert rc == 1
    assert err.startswith("error: the NetStudio window needs PySide6")
    assert "pip install PySide6-Essentials" in err and "netstudio check|train|export" in err


def test_bad_gui_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run_cli(capsys, "--frobnicate")
    assert rc == 2 and "unknown option --frobnicate" in err
    rc, _, err = run_cli(capsys, "a.nsproj", "b.nsproj")
    assert rc == 2 and "at most one project file" in err


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip().startswith("netstudio ")
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("check", "train", "export"))
    with pytest.raises(SystemExit) as info:
        main(["train", "x.nsproj", "--epochs", "0"])
    assert info.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


# ----------------------------------------------------------------------------
# train → export
# ----------------------------------------------------------------------------


def test_train_then_export_every_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = wine_project(tmp_path)
    weights, model_pt = tmp_path / "w.pt", tmp_path / "trained.pt"
    rc, out, err = run_cli(capsys, "train", str(project), "--json", "--device", "cpu", "--seed", "3",
                           "--batch-size", "8", "--out", str(model_pt), "--save-weights", str(weights))
    assert rc == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert out.strip().count("\n") == 0  # with --json, stdout is just the JSON object
    assert result["exported"] == [str(model_pt), str(weights)]
    assert result["epochs"] == 2 and result["status"] == "finished"
    assert "epoch 2/2" in err and f"wrote {model_pt}" in err

    trained = torch.load(model_pt, weights_only=False)
    x = torch.randn(6, 13, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = trained(x)
    stored_project, state = __import__("netstudio.project.export", fromlist=["x"]).load_weights(weights)
    assert stored_project.name == "Wine"
    # the trained model starts with the dataset's preprocessing; the weights file holds the network
    assert all(torch.equal(state[k], v) for k, v in trained.state_dict().items() if not k.startswith("preprocess."))

    for fmt, suffix in (("pt", ".pt"), ("pt2", ".pt2"), ("py", ".py"), ("onnx", ".onnx")):
        dest = tmp_path / f"export_{fmt}{suffix}"
        rc, out, err = run_cli(capsys, "export", str(project), "--weights", str(weights), "--format", fmt,
                               "--out", str(dest))
        assert rc == 0, err
        assert dest.is_file() and f"wrote {dest}" in out and "load it with:" in out
        if fmt == "pt":
            got = torch.load(dest, weights_only=False)(x)
        elif fmt == "pt2":
            got = torch.export.load(dest).module()(x)
        elif fmt == "py":
            assert (tmp_path / "export_py_weights.pt").is_file()
            import runpy

            got = runpy.run_path(str(dest))["load_model"]()(x)
        else:
            continue  # ONNX numerics are covered in test_export.py
        assert torch.allclose(got, ref, atol=1e-6, rtol=0), fmt

    # a NetStudio weights file carries its project: it can be exported on its own
    rc, out, err = run_cli(capsys, "export", str(weights), "--format", "pt", "--out", str(tmp_path / "solo.pt"))
    assert rc == 0, err
    assert torch.allclose(torch.load(tmp_path / "solo.pt", weights_only=False)(x), ref, atol=1e-6, rtol=0)


def test_export_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = wine_project(tmp_path)
    other = wine_project(tmp_path / "other", hidden=5)
    from netstudio.compiler.build import compile_model

    torch.save(compile_model(load_project(other).graph).module.state_dict(), tmp_path / "other_w.pt")
    rc, _, err = run_cli(capsys, "export", str(project), "--weights", str(tmp_path / "other_w.pt"),
                         "--format", "pt", "--out", str(tmp_path / "x.pt"))
    assert rc == 1
    assert err.startswith("error: The weights do not match this model: wrong shape fc1.weight (5, 13) vs (8, 13)")
    assert "→ use weights trained with this project" in err
    assert not (tmp_path / "x.pt").exists()

    rc, _, err = run_cli(capsys, "export", str(project), "--format", "pt")
    assert rc == 1 and "--weights is required" in err
    rc, _, err = run_cli(capsys, "export", str(project), "--weights", str(tmp_path / "nope.pt"), "--format", "pt")
    assert rc == 1 and "No such weights file" in err
    rc, _, err = run_cli(capsys, "export", str(project), "--weights", str(tmp_path / "other_w.pt"),
                         "--format", "pt", "--out", str(tmp_path / "other_w.pt"))
    assert rc == 1 and "refusing to overwrite the input file" in err
    with pytest.raises(SystemExit):
        main(["export", str(project), "--weights", "w.pt", "--format", "tflite"])
    assert "invalid choice: 'tflite'" in capsys.readouterr().err


def test_train_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = load_project(wine_project(tmp_path))
    p.graph.set_param(p.graph.find("data").id, "source", "csv")
    p.graph.set_param(p.graph.find("data").id, "path", str(tmp_path / "nowhere.csv"))
    broken = save_project(p, tmp_path / "broken.nsproj")
    rc, out, err = run_cli(capsys, "train", str(broken))
    assert rc == 1 and out == ""
    assert err.startswith("error: [n1] ") and "nowhere.csv" in err
    assert len(err.strip().splitlines()) == 1

    rc, _, err = run_cli(capsys, "train", str(tmp_path / "absent.nsproj"))
    assert rc == 1 and err.strip() == f"error: No such project file: {tmp_path / 'absent.nsproj'}"

    (tmp_path / "junk.nsproj").write_text("{not json", encoding="utf-8")
    rc, _, err = run_cli(capsys, "check", str(tmp_path / "junk.nsproj"))
    assert rc == 1 and err.startswith("error: Cannot open junk.nsproj: The project file is not valid JSON")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_on_missing_cuda(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(capsys, "train", str(wine_project(tmp_path)), "--device", "cuda")
    assert rc == 1 and out == ""
    assert err.startswith("error: ") and "CUDA" in err and "Traceback" not in err


def test_unexpected_exceptions_become_one_line(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    def boom(args: Any) -> int:
        raise RuntimeError("kaput")

    monkeypatch.setattr(cli, "cmd_check", boom)
    rc, _, err = run_cli(capsys, "check", str(wine_project(tmp_path)))
    assert rc == 1
    assert err.strip() == "error: unexpected RuntimeError: kaput (set NETSTUDIO_DEBUG=1 for details)"
    monkeypatch.setenv("NETSTUDIO_DEBUG", "1")
    with pytest.raises(RuntimeError, match="kaput"):
        main(["check", str(tmp_path / "wine.nsproj")])


def test_progress_bar_and_epoch_lines() -> None:
    lines, bar = io.StringIO(), io.StringIO()
    progress = cli._Progress(lines, bar, epochs=2)
    progress({"kind": "start", "device": "cpu", "epochs": 2})
    progress({"kind": "batch", "epoch": 1, "batch": 5, "n_batches": 10, "loss": 0.5})
    assert bar.getvalue() == "\repoch 1/2 [############............]  50% loss 0.5000   "
    progress({"kind": "batch", "epoch": 1, "batch": 6, "n_batches": 10, "loss": 0.4})  # throttled
    assert bar.getvalue().count("\r") == 1
    progress({"kind": "epoch", "epoch": 1, "train_loss": 0.25, "val_loss": float("nan"), "train_accuracy": 0.5,
              "val_accuracy": None, "lr": 0.001, "seconds": 1.25})
    assert bar.getvalue().endswith("\r" + " " * 70 + "\r")  # the bar is erased before the epoch line
    assert lines.getvalue().splitlines() == [
        "training 2 epochs on cpu",
        "epoch 1/2  train_loss 0.2500  val_loss nan  train_acc 0.5000  lr 0.001  1.2s",
    ]
    assert cli._jsonable({"a": float("nan"), "b": [float("inf"), 1.5], "c": torch.tensor(2.0)}) == \
        {"a": None, "b": [None, 1.5], "c": 2.0}


@pytest.mark.slow  # subprocess, end to end
def test_ctrl_c_stops_and_still_exports(tmp_path: Path) -> None:
    out_pt = tmp_path / "partial.pt"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "netstudio", "train", str(SAMPLES / "mnist_mlp_adam.nsproj"),
                             "--epochs", "200", "--device", "cpu", "--json", "--out", str(out_pt)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # wait for the first finished epoch, then press Ctrl-C
            seen.append(line)
            if line.startswith("epoch 1/200"):
                break
        else:
            pytest.fail("training never reported an epoch: " + "".join(seen))
        proc.send_signal(signal.SIGINT)
        stdout, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = "".join(seen) + rest
    assert proc.returncode == 130, err
    assert "stopping after the current batch" in err and "Traceback" not in err
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["status"] == "stopped" and 1 <= result["epochs"] < 200
    assert result["exported"] == [str(out_pt)]
    model = torch.load(out_pt, weights_only=False)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


# ----------------------------------------------------------------------------
# metrics people expect, and a JSON object whatever happens
# ----------------------------------------------------------------------------


def test_train_json_regression_figures_and_loss_terms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(capsys, "train", str(SAMPLES / "linear_regression.nsproj"), "--json", "--epochs", "3",
                           "--device", "cpu")
    assert rc == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["metrics_split"] == "val"
    assert res["rmse"] > 0 and res["mae"] > 0 and res["mae"] <= res["rmse"] and -1 < res["r2"] < 1
    # MSE on the validation split (standardized targets, one loss, weight 1) is the squared RMSE, which is
    # reported in the target's own units (diabetes progression: mean ~150, std ~78)
    from netstudio.compiler.build import build_plan
    from netstudio.data import load

    data = load(build_plan(load_project(SAMPLES / "linear_regression.nsproj").graph).dataset_params)
    assert data.target_std is not None and data.target_std[0] > 10
    assert res["rmse"] ** 2 == pytest.approx(res["val_loss"] * data.target_std[0] ** 2, rel=1e-4)
    assert res["mae"] > 10  # not standardized units
    assert "regression (validation split): r2" in err and "(in the target's units)" in err and "loss terms" not in err

    rc, out, err = run_cli(capsys, "train", str(SAMPLES / "autoencoder.nsproj"), "--json", "--epochs", "1",
                           "--device", "cpu")
    assert rc == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    terms = res["loss_terms"]
    assert set(terms) == {"reconstruction_loss", "classifier_loss"}
    assert sum(terms.values()) == pytest.approx(res["val_loss"], rel=1e-4)  # the terms sum to the loss
    assert "loss terms (validation split): " in err and "reconstruction_loss" in err and "sum" in err
    assert "r2" not in res  # a classification sample has no regression figures


def test_train_json_on_failure_is_one_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = load_project(wine_project(tmp_path))
    p.graph.set_param(p.graph.find("data").id, "source", "csv")
    p.graph.set_param(p.graph.find("data").id, "path", str(tmp_path / "nowhere.csv"))
    broken = save_project(p, tmp_path / "broken.nsproj")
    rc, out, err = run_cli(capsys, "train", str(broken), "--json")
    assert rc == 1 and out.count("\n") == 1
    res = json.loads(out)
    assert res["status"] == "error" and "nowhere.csv" in res["message"] and res["node"] == "n1"
    assert err.startswith("error: [n1] ")
    # a run that cannot use its device also ends with a JSON object
    if not torch.cuda.is_available():
        rc, out, err = run_cli(capsys, "train", str(wine_project(tmp_path / "gpu")), "--json", "--device", "cuda")
        res = json.loads(out.strip().splitlines()[-1])
        assert rc == 1 and res["status"] == "error" and "CUDA" in res["message"]
    rc, out, err = run_cli(capsys, "train", str(tmp_path / "absent.nsproj"), "--json")
    assert rc == 1 and json.loads(out)["status"] == "error"


def test_export_states_its_input_and_no_preprocess(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = wine_project(tmp_path)
    weights = tmp_path / "w.pt"
    rc, _, err = run_cli(capsys, "train", str(project), "--save-weights", str(weights), "--device", "cpu")
    assert rc == 0, err
    raw = torch.tensor([[13.0, 2.0, 2.4, 19.0, 100.0, 2.3, 2.0, 0.36, 1.6, 5.0, 0.96, 2.6, 750.0]])
    outs = {}
    for flag in ((), ("--no-preprocess",)):
        dest = tmp_path / f"m{len(flag)}.pt"
        rc, out, err = run_cli(capsys, "export", str(project), "--weights", str(weights), "--format", "pt",
                               "--out", str(dest), *flag)
        assert rc == 0, err
        assert "the exported model expects:" in out and "class_0" in out
        model = torch.load(dest, weights_only=False)
        meta = json.loads(model.netstudio_metadata)
        assert meta["preprocess"] is (not flag) and meta["class_names"] == ["class_0", "class_1", "class_2"]
        assert ("preprocess" in dict(model.named_children())) is (not flag)
        outs[flag] = model
        if not flag:
            assert "'alcohol', 'malic_acid'" in out and "raw feature values" in out
        else:
            assert "already preprocessed" in out
    import netstudio.data as D

    data = D.load({"source": "wine"})
    normalized = (raw - torch.tensor(data.mean)) / torch.tensor(data.std)
    with torch.no_grad():
        assert torch.allclose(outs[()](raw), outs[("--no-preprocess",)](normalized.float()), atol=1e-5)


def test_export_regression_in_target_units_or_bare_standardized(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    sample = str(SAMPLES / "linear_regression.nsproj")
    w = tmp_path / "w.pt"
    rc, _, err = run_cli(capsys, "train", sample, "--epochs", "2", "--device", "cpu", "--quiet",
                         "--save-weights", str(w))
    assert rc == 0, err
    rc, out, err = run_cli(capsys, "export", sample, "--weights", str(w), "--format", "pt",
                           "--out", str(tmp_path / "full.pt"))
    assert rc == 0, err
    assert "output: the target in its own units" in out
    rc, out, err = run_cli(capsys, "export", sample, "--weights", str(w), "--format", "pt", "--no-preprocess",
                           "--out", str(tmp_path / "bare.pt"))
    assert rc == 0, err
    assert "output: standardized target (this export has no postprocess)" in out
    full = torch.load(tmp_path / "full.pt", weights_only=False)
    bare = torch.load(tmp_path / "bare.pt", weights_only=False)
    assert [n for n, _ in full.named_children()] == ["preprocess", "linear", "postprocess"]
    assert [n for n, _ in bare.named_children()] == ["linear"]
    meta = json.loads(bare.netstudio_metadata)
    assert meta["preprocess"] is False and "postprocess" not in meta and meta["target_std"][0] > 10
    x = torch.randn(5, 10) * 0.05  # diabetes' raw features are small, centred numbers
    with torch.no_grad():
        want = bare(full.preprocess(x)) * meta["target_std"][0] + meta["target_mean"][0]
        assert torch.allclose(full(x), want, atol=1e-4)
