"""Export from the Training dock: the file works without NetStudio and matches the app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pytestqt")

import torch  # noqa: E402

from netstudio.errors import ExportError  # noqa: E402
from netstudio.project import export as ex  # noqa: E402
from netstudio.project.io import Project  # noqa: E402
from netstudio.ui.training import ExportDialog, export_dialog  # noqa: E402
from tests.ui.test_training_dock import TRAIN_TIMEOUT_MS, digits_graph, make_dock  # noqa: E402

# Runs the dialog's own load snippet in a fresh interpreter where importing
# netstudio fails, so the exported file must load with nothing but PyTorch.
RUNNER = textwrap.dedent("""
    import sys
    sys.modules["netstudio"] = None  # any import of netstudio now raises ImportError
    import torch
    torch.set_num_threads(int(sys.argv[3]))
    exec(open(sys.argv[4], encoding="utf-8").read())  # the snippet: defines `model`
    x = torch.load(sys.argv[1], weights_only=True)
    with torch.no_grad():
        torch.save(model(x), sys.argv[2])
    print(type(model).__module__, isinstance(model, torch.nn.Module))
""")


def run_snippet(snippet: str, x: torch.Tensor, tmp_path: Path) -> tuple[str, torch.Tensor]:
    """(stdout, outputs) of the load snippet + ``model(x)`` in an isolated interpreter."""
    (tmp_path / "snippet.py").write_text(snippet, encoding="utf-8")
    torch.save(x, tmp_path / "x.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-I", "-c", RUNNER, str(tmp_path / "x.pt"), str(tmp_path / "out.pt"),
                           str(torch.get_num_threads()), str(tmp_path / "snippet.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip(), torch.load(tmp_path / "out.pt", weights_only=True)


def raw_digits(dock: Any, n: int) -> torch.Tensor:
    """The first ``n`` validation digits as sklearn delivers them: N×1×8×8, values 0–16."""
    from netstudio.data.builtin import _raw_sklearn
    from netstudio.data.core import normalize_params, split_indices

    p = normalize_params(dock.trained.plan.dataset_params)
    images = _raw_sklearn("digits")[0]
    _, va = split_indices(len(images), p["val_fraction"], p["seed"])
    return torch.tensor(images[va[:n]], dtype=torch.float32).unsqueeze(1)


@pytest.fixture
def trained(qtbot: Any) -> Any:
    win, dock = make_dock(qtbot, epochs=3)
    with qtbot.waitSignal(dock.training_finished, timeout=TRAIN_TIMEOUT_MS):
        dock.start_training()
    assert dock.outcome["status"] == "finished"
    yield win, dock
    assert dock.shutdown(5000)


@pytest.mark.slow  # subprocess, end to end
def test_exported_pt_loads_without_netstudio_and_reproduces_predictions(qtbot, trained, tmp_path) -> None:
    win, dock = trained
    dialog = dock.make_export_dialog()
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.selected_format() == "pt"

    path = dialog.export_to("pt", tmp_path / "digits_mlp.pt")
    assert path == tmp_path / "digits_mlp.pt" and path.is_file()
    assert dialog.snippet.toPlainText() == ex.load_snippet("pt", path)
    assert "torch.load" in dialog.snippet.toPlainText() and dialog.copy_button.isEnabled()
    assert str(path) in dialog.status.text()

    # by default the export carries the dataset's preprocessing: it takes raw digits (pixel values 0-16)
    assert dialog.preprocess_check.isChecked() and "0–16" in dialog.input_note.text()
    assert "classes (output index → label): 0='0'" in dialog.input_note.text()
    x = dock.trained.data.val_x[:64].clone()
    in_app = dock.predict(x)
    assert in_app.shape == (64, 10)
    stdout, outside = run_snippet(dialog.snippet_text, raw_digits(dock, 64), tmp_path)
    assert stdout == "torch.fx.graph_module True"
    assert torch.equal(outside, in_app)
    # and the predictions are the trained model's, not noise
    acc = (in_app.argmax(1) == dock.trained.data.val_y[:64]).float().mean().item()
    assert acc > 0.8


def test_weights_export_carries_the_trained_snapshot(qtbot, trained, tmp_path) -> None:
    win, dock = trained
    # an edit after training must not leak into the exported project
    graph = win.document.project.graph
    graph.set_param(graph.find("fc1").id, "out_features", 99)
    dialog = dock.make_export_dialog()
    qtbot.addWidget(dialog)
    dialog.select_format("weights")
    assert dialog.path_edit.text().endswith(".pt")
    path = dialog.export_to("weights", tmp_path / "w.pt")
    project, state = ex.load_weights(path)
    assert project.graph.find("fc1").params["out_features"] == 32
    assert project.training.epochs == 3
    own = dock.trained.model.state_dict()
    assert set(state) == set(own) and all(torch.equal(state[k], own[k]) for k in own)
    assert dialog.snippet.toPlainText() == ex.load_snippet("weights", path)


@pytest.mark.slow  # subprocess, end to end
def test_python_source_export_reproduces_predictions_without_netstudio(qtbot, trained, tmp_path) -> None:
    win, dock = trained
    dialog = dock.make_export_dialog()
    qtbot.addWidget(dialog)
    dialog.preprocess_check.setChecked(False)  # the bare network: it takes NetStudio's normalized features
    assert "already preprocessed" in dialog.input_note.text()
    path = dialog.export_to("py", tmp_path / "model.py")
    text = path.read_text(encoding="utf-8")
    assert "class Model(nn.Module)" in text and "PROJECT = 'digits_mlp'" in text and "Preprocess" not in text
    assert dialog.snippet.toPlainText() == ex.load_snippet("py", path)
    x = dock.trained.data.val_x[:32].clone()
    stdout, outside = run_snippet(dialog.snippet_text, x, tmp_path)
    assert stdout.endswith(" True") and "netstudio" not in stdout
    # same layers, same trained weights: the same numbers as in the app
    assert torch.equal(outside, dock.predict(x))


def test_export_errors_are_shown_in_the_dialog(qtbot, trained, tmp_path) -> None:
    win, dock = trained
    dialog = dock.make_export_dialog()
    qtbot.addWidget(dialog)
    folder = tmp_path / "a_folder.pt"
    folder.mkdir()
    with pytest.raises(ExportError):
        dialog.export_to("pt", folder)
    assert "is a folder" in dialog.status.text()
    assert dialog.snippet.toPlainText() == ""
    # the Export button path reports instead of raising
    dialog.path_edit.setText(str(folder))
    dialog.export_button.click()
    assert "is a folder" in dialog.status.text()


def test_onnx_is_disabled_with_an_explanation_when_unavailable(qtbot, monkeypatch) -> None:
    monkeypatch.setattr(export_dialog, "onnx_available",
                        lambda: "ONNX export needs the onnx package (pip install netstudio[onnx])")
    model = torch.nn.Linear(2, 2)
    dialog = ExportDialog(None, model, Project(digits_graph()), example_input=torch.zeros(1, 2))
    qtbot.addWidget(dialog)
    button = dialog.format_buttons["onnx"]
    assert not button.isEnabled()
    assert "unavailable" in button.text() and "pip install" in button.toolTip()
    with pytest.raises(ExportError, match="needs the onnx package"):
        dialog.export_to("onnx", "model.onnx")
    assert dialog.format_buttons["pt"].isEnabled()


def test_export_button_state_follows_the_trained_model(qtbot, trained) -> None:
    win, dock = trained
    assert dock.export_button.isEnabled() and dock.export_action.isEnabled()
    dock.open_export_dialog()
    dlg = dock._export_dialog
    assert isinstance(dlg, ExportDialog) and dlg.isVisible() and not dlg.isModal()
    dlg.close()
    dock.reset_weights()
    assert not dock.export_button.isEnabled() and not dock.export_action.isEnabled()
    json.dumps(dock.outcome)  # the outcome is plain data (it crossed threads)


def test_export_dialog_proposes_a_clean_file_next_to_the_project(qtbot, tmp_path) -> None:
    import types

    from netstudio.ui.training.export_dialog import ExportDialog, file_stem

    assert file_stem("MNIST MLP (SGD)") == "mnist_mlp_sgd" and file_stem("  ") == "model"
    project = types.SimpleNamespace(name="MNIST MLP (SGD)")
    dialog = ExportDialog(None, None, project, default_dir=tmp_path)
    qtbot.addWidget(dialog)
    dialog.select_format("pt")
    assert dialog.path_edit.text() == str(tmp_path / "mnist_mlp_sgd.pt")
    dialog.select_format("onnx")
    assert dialog.path_edit.text() == str(tmp_path / "mnist_mlp_sgd.onnx")
    # the project file's own name wins; a folder that cannot be written falls back to home
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        other = ExportDialog(None, None, project, default_dir=locked, default_name="lenet")
        qtbot.addWidget(other)
        other.select_format("pt")
        want = locked if os.access(locked, os.W_OK) else Path.home()  # root may write anywhere
        assert other.path_edit.text() == str(want / "lenet.pt")
    finally:
        locked.chmod(0o700)


def test_results_table_lists_regression_figures_and_each_loss_term(qtbot) -> None:
    from netstudio.ui.training.results import ResultsView

    view = ResultsView()
    qtbot.addWidget(view)
    view.show_metrics({"val_loss": 0.75, "r2": 0.5, "mae": 0.25, "rmse": 0.5, "metrics_split": "val",
                       "loss_terms": {"reconstruction_loss": 0.5, "classifier_loss": 0.25}})
    labels = [view.metrics_table.item(r, 0).text() for r in range(view.metrics_table.rowCount())]
    assert labels == ["Validation loss", "R²", "MAE (mean absolute error)", "RMSE (root mean squared error)",
                      "Loss term reconstruction_loss", "Loss term classifier_loss"]
    assert view.metric_text("loss_terms.classifier_loss") == view.metric_text("mae")


@pytest.mark.slow  # subprocess, end to end
def test_quantize_option_writes_an_int8_model_and_shows_both_accuracies(qtbot, trained, tmp_path) -> None:
    win, dock = trained
    dialog = dock.make_export_dialog()
    qtbot.addWidget(dialog)
    dialog.show()
    # .pt only: the other formats cannot hold dynamically quantized layers
    dialog.select_format("pt2")
    assert not dialog.quantize_check.isEnabled()
    dialog.select_format("pt")
    assert dialog.quantize_check.isEnabled() and not dialog.quantize_check.isChecked()
    dialog.quantize_check.setChecked(True)
    dialog.path_edit.setText(str(tmp_path / "digits_int8.pt"))
    dialog.export_button.click()
    path = tmp_path / "digits_int8.pt"
    assert path.is_file() and dialog.last_path == path

    res = dialog.quantize_result
    float_acc = ex.compare_quantized(dock.trained.model, dock.trained.plan, dock.trained.data)["float_accuracy"]
    assert res["float_accuracy"] == float_acc > 0.8
    assert abs(res["quantized_accuracy"] - res["float_accuracy"]) <= 0.05
    assert res["quantized_bytes"] < res["float_bytes"]
    status = dialog.status.text()
    assert f"validation accuracy: quantized {res['quantized_accuracy']:.4f} vs float {float_acc:.4f}" in status
    assert "quantized (dynamic-int8):" in status and "KiB vs float" in status

    # the written file holds int8 layers, starts with the preprocessing and loads with plain PyTorch
    stdout, outside = run_snippet(dialog.snippet_text, raw_digits(dock, 64), tmp_path)
    assert stdout == "torch.fx.graph_module True"
    loaded = torch.load(path, weights_only=False)
    assert next(iter(loaded.named_children()))[0] == "preprocess"
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized.dynamic") for m in loaded.modules())
    labels = dock.trained.data.val_y[:64]
    q_acc = (outside.argmax(1) == labels).float().mean().item()
    f_acc = (dock.predict(dock.trained.data.val_x[:64].clone()).argmax(1) == labels).float().mean().item()
    assert abs(q_acc - f_acc) <= 0.05
    assert not torch.equal(outside, dock.predict(dock.trained.data.val_x[:64].clone()))  # really quantized

    # unticked, the same dialog writes the float model again and the result text goes away
    dialog.quantize_check.setChecked(False)
    dialog.export_to("pt", tmp_path / "digits_float.pt")
    assert dialog.quantize_result is None and "validation accuracy" not in dialog.status.text()
