"""Defects a new user hits in the first hour (issue #11, items 1, 2, 6-10).

Each test drives the real widgets offscreen and failed before its fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import shiboken6
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest

from netstudio.graph.model import Graph
from netstudio.project.io import Project, save_project
from netstudio.training.config import TrainConfig
from tests.ui.helpers import add
from tests.ui.test_training_dock import digits_graph


def _quick_add(window: Any, qtbot: Any, text: str, *, tab: bool) -> None:
    window.view.setFocus()
    if tab:
        QTest.keyClick(window.view, Qt.Key.Key_Tab)
    else:
        QTest.mouseDClick(window.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                          QPoint(150, 150))
    popup = window.view.quick_add_popup
    assert popup is not None and popup.isVisible()
    QTest.keyClicks(popup.search, text)
    QTest.keyClick(popup.search, Qt.Key.Key_Return)
    # the popup deletes itself on close: let the event loop do that, as it would for a user
    qtbot.waitUntil(lambda: not shiboken6.isValid(popup), timeout=2000)
    # the view must not keep a dead popup around (closing it again crashed or raised)
    assert window.view.quick_add_popup is None or shiboken6.isValid(window.view.quick_add_popup)


# --- 1. search-to-add works every time ---------------------------------------------------------
def test_search_to_add_works_again_and_again(window: Any, qtbot: Any, dialogs: Any) -> None:
    _quick_add(window, qtbot, "relu", tab=True)
    _quick_add(window, qtbot, "linear", tab=True)
    _quick_add(window, qtbot, "dropout", tab=False)
    # Escape closes it without adding; the next search still works
    QTest.keyClick(window.view, Qt.Key.Key_Tab)
    popup = window.view.quick_add_popup
    QTest.keyClick(popup.search, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not shiboken6.isValid(popup), timeout=2000)
    _quick_add(window, qtbot, "tanh", tab=True)
    types = sorted(n.type_id for n in window.document.graph.nodes.values())
    assert types == ["activation.relu", "activation.tanh", "layer.dropout", "layer.linear"]
    assert dialogs.errors == []


# --- shared: small real projects and a window with the Training dock -----------------------------
TRAIN_TIMEOUT_MS = 60_000


def no_layer_graph() -> Graph:
    """Dataset → MSE(features, features) → SGD: nothing to train."""
    g = Graph()
    d = g.add_node("data.dataset", {"source": "digits"}, name="data")
    mse = g.add_node("loss.mse", name="mse")
    sgd = g.add_node("optim.sgd", name="sgd")
    g.connect(d.id, "features", mse.id, "prediction")
    g.connect(d.id, "features", mse.id, "target")
    g.connect(mse.id, "loss", sgd.id, "loss")
    return g


def save(tmp_path: Path, name: str, graph: Graph, **training: Any) -> Path:
    path = tmp_path / f"{name}.nsproj"
    save_project(Project(graph, TrainConfig(**{"epochs": 2, "device": "cpu", **training}), name=name), path)
    return path


@pytest.fixture
def train_window(make_window: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from PySide6.QtWidgets import QMessageBox

    # pytest-qt closes the windows before fixtures end: a test that fails mid-run must not
    # leave the "training is running, stop it?" box waiting for an answer
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    made: list[Any] = []

    def make(project: Project | None = None) -> Any:
        w = make_window(project or Project(digits_graph(), TrainConfig(epochs=2, device="cpu")), training=True)
        made.append(w)
        return w

    yield make
    for w in made:
        assert w.training_dock.shutdown(5000)


def train(qtbot: Any, dock: Any) -> dict[str, Any]:
    with qtbot.waitSignal(dock.training_finished, timeout=TRAIN_TIMEOUT_MS) as blocker:
        dock.train_button.click()
    return blocker.args[0]


# --- 2. runs, plots, results and counters belong to the open project -------------------------------
def test_training_state_belongs_to_the_open_project(train_window: Any, qtbot: Any, tmp_path: Path) -> None:
    window = train_window()
    dock = window.training_dock
    with qtbot.waitSignal(dock.evaluation_finished, timeout=TRAIN_TIMEOUT_MS):
        assert train(qtbot, dock)["status"] == "finished"
    assert dock.status_label.text().startswith("Run 1 finished")
    assert [r.name for r in dock.plots.runs] == ["run 1"]
    assert dock.results.metrics and dock.results.confusion_box.isVisibleTo(dock.results)

    # another project: nothing of the old one's runs is shown
    assert window.open_file(save(tmp_path, "other", digits_graph(optimizer="optim.sgd", momentum=0.9)))
    assert dock.plots.runs == []
    assert dock.results.metrics == {} and not dock.results.confusion_box.isVisibleTo(dock.results)
    assert dock.status_label.text() == "Ready" and dock.progress_bar.value() == 0
    assert "Epoch" not in dock.progress_bar.format()
    assert dock.trained is None and not dock.export_button.isEnabled()

    # a Train click that is refused does not count as a run ...
    assert window.open_file(save(tmp_path, "broken", no_layer_graph()))
    assert dock.plots.runs == []
    outcome = train(qtbot, dock)
    assert outcome["status"] == "error" and dock.run_count == 0
    assert dock.status_label.text().startswith("Not started")
    assert dock.plots.runs == [] and dock.results.metrics == {}

    # ... so the first real run of this project is run 1, alone in the plots
    assert window.open_file(save(tmp_path, "third", digits_graph()))
    with qtbot.waitSignal(dock.evaluation_finished, timeout=TRAIN_TIMEOUT_MS):
        assert train(qtbot, dock)["status"] == "finished"
    assert dock.status_label.text().startswith("Run 1 finished")
    assert [r.name for r in dock.plots.runs] == ["run 1"]

    # New project: the same
    window.new_project()
    assert dock.plots.runs == [] and dock.run_count == 0 and dock.results.metrics == {}


def test_results_never_mix_runs(train_window: Any, qtbot: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from netstudio.training import engine

    window = train_window()
    dock = window.training_dock
    with qtbot.waitSignal(dock.evaluation_finished, timeout=TRAIN_TIMEOUT_MS):
        assert train(qtbot, dock)["status"] == "finished"
    assert dock.results.summary.text().startswith("Run 1")
    assert dock.results.confusion_box.isVisibleTo(dock.results)

    # run 2 fails inside the loop: Results speaks of run 2 only, not of run 1's figures and matrix
    def broken_fit(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected failure")

    with monkeypatch.context() as patched:  # (undo() would also drop the fixtures' dialog stand-ins)
        patched.setattr(engine, "fit", broken_fit)
        assert train(qtbot, dock)["status"] == "error"
    assert dock.status_label.text() == "Run 2 failed"
    assert dock.results.summary.text().startswith("Run 2"), dock.results.summary.text()
    assert dock.results.metrics == {} and not dock.results.confusion_box.isVisibleTo(dock.results)

    # run 3 is stopped at its first batch: its own figures, then its own evaluation
    with qtbot.waitSignal(dock.training_finished, timeout=TRAIN_TIMEOUT_MS):
        dock.train_button.click()
        qtbot.waitUntil(lambda: dock.batch_events >= 1, timeout=TRAIN_TIMEOUT_MS)
        dock.stop()
    assert dock.results.summary.text().startswith("Run 3")
    if dock._eval is not None:
        with qtbot.waitSignal(dock.evaluation_finished, timeout=TRAIN_TIMEOUT_MS):
            pass
    assert dock.results.summary.text().startswith("Run 3")
    assert dock.results.metrics["epochs_run"] == dock.outcome["metrics"]["epochs_run"]


# --- 6. Problems lists whatever Train refuses, with its fix; the CLI agrees ------------------------
def test_problems_lists_what_train_refuses(train_window: Any, qtbot: Any, tmp_path: Path, capsys: Any) -> None:
    window = train_window(Project(no_layer_graph(), TrainConfig(epochs=1, device="cpu")))
    texts = window.problems.texts()
    assert any(t.startswith("The graph has no layers to compile — add at least one layer") for t in texts), texts
    assert any("'mse' is wired straight to the dataset: there is no layer between them" in t for t in texts), texts
    assert not any("does not match" in t or "differ" in t for t in texts), texts  # no shape talk
    assert window.problems.summary.text() != "No problems: the model is ready to train."
    no_layers = next(p for p in window.problems.problems if p.message.startswith("The graph has no layers"))
    assert no_layers.node_id == window.document.graph.find("data").id and no_layers.hint

    dock = window.training_dock
    outcome = train(qtbot, dock)
    assert outcome["status"] == "error"
    listed = [p.message for p in window.problems.problems]
    assert outcome["message"] in listed, (outcome["message"], listed)

    # a loss straight on the dataset beside a real model: the same finding, on the loss node
    g = digits_graph()
    mse = g.add_node("loss.mse", name="recon")
    data = g.find("data")
    g.connect(data.id, "features", mse.id, "prediction")
    g.connect(data.id, "features", mse.id, "target")
    g.connect(mse.id, "loss", g.find("opt").id, "loss")
    window.document.replace_project(Project(g, TrainConfig(epochs=1, device="cpu")))
    found = [p for p in window.problems.problems if p.node_id == mse.id]
    assert len(found) == 1 and "no layer between them" in found[0].message and found[0].hint

    # the command line says the same
    from netstudio.cli import main

    path = save(tmp_path, "nolayers", no_layer_graph())
    assert main(["check", str(path)]) != 0
    err = capsys.readouterr().err
    assert "The graph has no layers to compile" in err and "no layer between them" in err


# --- 7. out-of-range edits are refused with the reason, the last valid value stays -------------------
def _type_into(spin: Any, text: str) -> None:
    spin.setFocus()
    spin.selectAll()
    QTest.keyClicks(spin, text)
    QTest.keyClick(spin, Qt.Key.Key_Return)


def test_out_of_range_edits_say_why_and_keep_the_last_value(window: Any, qtbot: Any) -> None:
    lin = add(window, "layer.linear", (0, 0), out_features=120)
    drop = add(window, "layer.dropout", (300, 0), p=0.5)
    g = window.document.graph
    window.select_node(lin)
    steps = window.document.undo_stack.count()
    spin = window.inspector.editor("out_features").widget
    _type_into(spin, "0")
    err = window.inspector.error_text("out_features")
    assert "0 is below the minimum 1" in err and "kept 120" in err, err
    assert window.inspector.errors["out_features"].isVisibleTo(window.inspector)
    assert g.nodes[lin].params["out_features"] == 120 and spin.value() == 120 and spin.text() == "120"
    assert window.document.undo_stack.count() == steps
    # a valid value clears the message
    _type_into(spin, "84")
    assert g.nodes[lin].params["out_features"] == 84 and window.inspector.error_text("out_features") == ""
    # the arrows stay within the valid range: no error from stepping
    _type_into(spin, "1")
    spin.stepBy(-1)
    assert spin.value() == 1 and window.inspector.error_text("out_features") == ""

    window.select_node(drop)
    p = window.inspector.editor("p").widget
    _type_into(p, "-0.5")
    err = window.inspector.error_text("p")
    assert "below the minimum 0" in err and "kept 0.5" in err, err
    assert g.nodes[drop].params["p"] == 0.5 and p.value() == 0.5
    _type_into(p, "1.5")
    err = window.inspector.error_text("p")
    assert "above the maximum 1" in err and "kept 0.5" in err, err
    assert g.nodes[drop].params["p"] == 0.5 and p.text() == "0.5"
    _type_into(p, "0.25")
    assert g.nodes[drop].params["p"] == 0.25 and window.inspector.error_text("p") == ""


# --- 8. SGD defaults that train; Problems warns when the loss has not moved -------------------------
def test_fresh_sgd_has_momentum_and_a_flat_loss_is_a_problem(train_window: Any, qtbot: Any) -> None:
    window = train_window(Project(digits_graph(optimizer="optim.sgd", lr=1e-6),
                                  TrainConfig(epochs=1, device="cpu")))
    fresh = add(window, "optim.sgd", (0, 600))
    assert window.document.graph.nodes[fresh].params["momentum"] == 0.9
    window.select_node(fresh)
    assert window.inspector.editor("momentum").widget.value() == 0.9
    window.document.undo()

    dock = window.training_dock
    assert train(qtbot, dock)["status"] == "finished"
    flat = [p for p in window.problems.problems if p.message.startswith("The loss is flat")]
    assert len(flat) == 1, window.problems.texts()
    assert flat[0].severity == "warning" and flat[0].hint == "raise the learning rate or use Adam"
    assert flat[0].node_id == window.document.graph.find("opt").id
    assert "after epoch 1" in flat[0].message
    listed = [window.problems.tree.topLevelItem(i).text(0) for i in range(window.problems.tree.topLevelItemCount())]
    assert flat[0].message in listed

    # a run that learns: no warning
    window.document.replace_project(Project(digits_graph(), TrainConfig(epochs=1, device="cpu")))
    assert not any(t.startswith("The loss is flat") for t in window.problems.texts())
    assert train(qtbot, dock)["status"] == "finished"
    assert not any(t.startswith("The loss is flat") for t in window.problems.texts())


# --- 9. smaller defects ------------------------------------------------------------------------------
def test_clicking_a_layer_row_selects_its_node(window: Any, qtbot: Any) -> None:
    from tests.ui.helpers import build_mlp

    ids = build_mlp(window)
    window.summary_dock.show()
    window.summary.tabs.setCurrentIndex(0)
    window.summary.refresh()
    table = window.summary.table
    names = [table.item(r, 0).text() for r in range(table.rowCount())]
    fc1 = window.document.graph.nodes[ids["fc1"]].name
    row = names.index(fc1)
    rect = table.visualItemRect(table.item(row, 1))
    QTest.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, rect.center())
    assert window.scene.selected_node_ids() == [ids["fc1"]]
    assert window.inspector.node_id == ids["fc1"]


def test_quitting_warns_about_weights_never_exported(train_window: Any, qtbot: Any, dialogs: Any,
                                                      tmp_path: Path) -> None:
    window = train_window()
    window.close()  # nothing trained: nothing to warn about
    assert dialogs.weight_warnings == []
    window.show()
    dock = window.training_dock
    assert train(qtbot, dock)["status"] == "finished"
    window.document.set_modified(False)
    dialogs.discard_weights_answer = False
    assert not window.close() and window.isVisible()
    assert len(dialogs.weight_warnings) == 1
    assert "run 1 after epoch 2 were never exported and will be lost" in dialogs.weight_warnings[0]
    # once exported, quitting is quiet
    dlg = dock.make_export_dialog()
    dlg.export_to("pt", tmp_path / "model.pt")
    assert window.close()
    assert len(dialogs.weight_warnings) == 1


def test_export_after_a_diverged_run_says_it_exports_the_last_good_weights(train_window: Any, qtbot: Any) -> None:
    from netstudio.graph.commands import SetParam

    window = train_window(Project(digits_graph(optimizer="optim.sgd", lr=0.1, momentum=0.0),
                                  TrainConfig(epochs=2, device="cpu")))
    dock = window.training_dock
    assert train(qtbot, dock)["status"] == "finished"
    assert dock.export_button.text() == "Export…"
    opt = window.document.graph.find("opt").id
    window.document.push(SetParam(opt, "lr", 1e6))
    with qtbot.waitSignal(dock.training_finished, timeout=TRAIN_TIMEOUT_MS) as blocker:
        dock.continue_button.click()
    assert blocker.args[0]["message"].startswith("Training diverged")
    assert dock.export_button.isEnabled() and dock.export_button.text() == "Export last good…"
    note = dock.weights_note()
    assert note == "Weights of run 1 after epoch 2: the last good ones, from before run 2 failed"
    assert note in dock.export_button.toolTip()
    dlg = dock.make_export_dialog()
    assert dlg.weights_label.text() == note and not dlg.weights_label.isHidden()
    dlg.deleteLater()

    # a fresh run that diverges in its first epoch has nothing of its own to export
    window.document.replace_project(Project(digits_graph(optimizer="optim.sgd", lr=1e6, momentum=0.0),
                                            TrainConfig(epochs=1, device="cpu")))
    assert train(qtbot, dock)["status"] == "error"
    assert dock.trained is None and not dock.export_button.isEnabled()


def _fully_shown(label: Any) -> bool:
    """Every character of the label is on screen: wrapped into its height, or fitting its width."""
    if not label.isVisible() or not label.text():
        return False
    if label.wordWrap():
        return label.heightForWidth(label.contentsRect().width()) <= label.contentsRect().height()
    return label.fontMetrics().horizontalAdvance(label.text()) <= label.contentsRect().width()


def test_pause_message_agrees_with_the_bar_and_long_messages_are_not_clipped(train_window: Any,
                                                                                qtbot: Any) -> None:
    import re

    window = train_window(Project(digits_graph(), TrainConfig(epochs=500, batch_size=4, device="cpu")))
    window.resize(1300, 850)
    dock = window.training_dock
    dock.raise_()
    dock.start_training()
    qtbot.waitUntil(lambda: dock.batch_events >= 3, timeout=TRAIN_TIMEOUT_MS)
    dock.pause()
    qtbot.waitUntil(dock.is_paused, timeout=5000)
    said = re.search(r"after batch (\d+)/(\d+)", dock.status_label.text())
    shown = re.search(r"batch (\d+)/(\d+)", dock.progress_bar.format())
    assert said and shown, (dock.status_label.text(), dock.progress_bar.format())
    assert said.groups() == shown.groups(), (dock.status_label.text(), dock.progress_bar.format())

    with qtbot.waitSignal(dock.training_finished, timeout=TRAIN_TIMEOUT_MS):
        dock.stop()
    text = dock.status_label.text()
    assert text.startswith("Run 1 stopped: Stopped by the user after"), text
    qtbot.waitUntil(lambda: _fully_shown(dock.status_label), timeout=2000)


# --- 10. every training setting in the UI -------------------------------------------------------------
def test_every_training_setting_is_in_the_dock(train_window: Any, qtbot: Any, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    import netstudio.training as training

    path = save(tmp_path, "settings", digits_graph(), early_stopping_patience=3, keep_best=False, shuffle=False,
                fast_path="off", threads=2)
    window = train_window()
    assert window.open_file(path)
    dock = window.training_dock
    dock.raise_()
    assert not dock.more_settings.isVisible()
    dock.more_button.click()  # the less common settings fold out
    assert dock.more_settings.isVisible() and dock.threads_spin.isVisible()
    qtbot.waitUntil(lambda: dock.patience_spin.value() == 3, timeout=3000)
    # the widgets show the project's values ...
    assert dock.patience_spin.value() == 3 and not dock.keep_best_check.isChecked()
    assert not dock.shuffle_check.isChecked() and not dock.fast_path_check.isChecked()
    assert dock.threads_spin.value() == 2 and dock.val_spin.value() == pytest.approx(0.2)
    assert dock.val_spin.isEnabled()
    # ... and edit them
    cfg = window.project.training
    dock.patience_spin.setValue(0)
    assert dock.patience_spin.text() == "off" and cfg.early_stopping_patience == 0
    dock.keep_best_check.click()
    dock.shuffle_check.click()
    dock.fast_path_check.click()
    dock.threads_spin.setValue(0)
    assert dock.threads_spin.text() == "auto"
    assert (cfg.keep_best, cfg.shuffle, cfg.fast_path, cfg.threads) == (True, True, "auto", 0)
    assert window.document.modified

    # the validation share is the Dataset node's param: one undoable edit, shown in the inspector too
    data = window.document.graph.find("data")
    _type_into(dock.val_spin, "0.3")
    assert data.params["val_fraction"] == pytest.approx(0.3)
    window.document.undo()
    assert data.params["val_fraction"] == pytest.approx(0.2)
    qtbot.waitUntil(lambda: dock.val_spin.value() == pytest.approx(0.2), timeout=3000)
    # a dataset with its own split: nothing to set
    from netstudio.graph.commands import SetParam

    window.document.push(SetParam(data.id, "source", "mnist"))
    qtbot.waitUntil(lambda: not dock.val_spin.isEnabled(), timeout=3000)
    window.document.undo()
    qtbot.waitUntil(dock.val_spin.isEnabled, timeout=3000)

    # the thread count in force, as the training start event reports it
    real_fit = training.fit

    def fit_reporting_threads(plan: Any, data: Any, config: Any, report: Any, *a: Any, **k: Any) -> Any:
        def rep(ev: dict[str, Any]) -> None:
            report({**ev, "threads": 4} if ev.get("kind") == "start" else ev)
        return real_fit(plan, data, config, rep, *a, **k)

    monkeypatch.setattr(training, "fit", fit_reporting_threads)
    dock.epochs_spin.setValue(300)
    dock.start_training()
    assert not dock.patience_spin.isEnabled() and not dock.val_spin.isEnabled()
    qtbot.waitUntil(lambda: "4 threads (auto)" in dock.status_label.text(), timeout=TRAIN_TIMEOUT_MS)
    with qtbot.waitSignal(dock.training_finished, timeout=TRAIN_TIMEOUT_MS):
        dock.stop()
    assert dock.patience_spin.isEnabled() and dock.val_spin.isEnabled()
