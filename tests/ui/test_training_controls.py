"""The dock's step controls (clipping, warm-up, precision), the learning-rate finder and the Runs panel."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("pytestqt")

from tests.ui.test_training_dock import make_dock, stop_all, train  # noqa: E402,F401


def test_step_controls_are_project_settings_in_the_dock(qtbot: Any, stop_all: Any) -> None:  # noqa: F811
    win, dock = make_dock(qtbot, epochs=1, clip_norm=2.0, warmup_epochs=1, precision="bf16")
    stop_all(dock)
    dock.more_button.click()
    assert dock.clip_norm_spin.isVisible() and dock.precision_combo.isVisible()
    # the widgets show the project's values ...
    assert dock.clip_norm_spin.value() == 2.0 and dock.clip_value_spin.text() == "off"
    assert dock.warmup_spin.value() == 1 and dock.precision_combo.currentData() == "bf16"
    # ... and edit them
    cfg = win.document.project.training
    dock.clip_value_spin.setValue(0.5)
    dock.clip_norm_spin.setValue(0.0)
    dock.warmup_spin.setValue(0)
    assert (cfg.clip_norm, cfg.clip_value, cfg.warmup_epochs) == (0.0, 0.5, 0)
    assert win.document.modified
    dock.precision_combo.setCurrentIndex(dock.precision_combo.findData("off"))
    assert cfg.precision == "off"
    dock.precision_combo.setCurrentIndex(dock.precision_combo.findData("bf16"))
    statuses: list[str] = []
    dock.session.report.connect(lambda ev: statuses.append(dock.status_label.text()))
    outcome = train(qtbot, dock)
    assert outcome["status"] == "finished", outcome
    assert any("bf16" in s for s in statuses), statuses


def test_lr_finder_plots_live_and_applies_the_suggestion_as_one_undoable_edit(qtbot: Any,
                                                                              stop_all: Any) -> None:  # noqa: F811
    win, dock = make_dock(qtbot, epochs=1)
    stop_all(dock)
    opt = win.document.graph.find("opt")
    before = opt.params["lr"]
    points: list[Any] = []
    dialog = dock.open_lr_finder()
    assert dialog.is_running()
    dialog.test_thread.worker.point.connect(points.append)
    with qtbot.waitSignal(dialog.finished_test, timeout=60_000) as blocker:
        pass
    outcome = blocker.args[0]
    assert outcome["status"] == "finished", outcome
    assert len(dialog.lrs) == len(outcome["lrs"]) > 10
    assert points  # the curve grew while the test ran
    xs, _ = dialog.smooth_curve.getData()
    assert len(xs) > 10
    sug = dialog.suggestion
    assert sug is not None and dialog.marker.isVisible() and dialog.apply_button.isEnabled()
    assert dialog.plot.getPlotItem().ctrl.logXCheck.isChecked()  # log x
    assert "Suggested learning rate" in dialog.result_label.text()
    assert opt.params["lr"] == before  # nothing changed by running it
    # a block open in the editor does not redirect the edit into it (the optimizer is top-level)
    from netstudio.graph.commands import MakeBlock

    win.document.push(MakeBlock([win.document.graph.find("fc2").id], block_id="b1"))
    win.document.enter_block("b1")
    dialog.apply_button.click()
    assert "Cannot apply" not in dialog.result_label.text()
    assert opt.params["lr"] == pytest.approx(sug, rel=1e-2)
    win.document.undo()  # one step back: the old lr
    assert opt.params["lr"] == before
    assert win.document.path == ["b1"]  # still inside the block
    dialog.close()


def _dock_for(qtbot: Any, path: Any) -> Any:
    from PySide6.QtWidgets import QMainWindow

    from netstudio.project.io import load_project
    from netstudio.ui.document import Document
    from netstudio.ui.training import TrainingDock, TrainingSession

    document = Document(load_project(path))
    session = TrainingSession()
    win = QMainWindow()
    document.setParent(win)
    dock = TrainingDock(document, session)
    win.setCentralWidget(dock)
    win.resize(1200, 700)
    qtbot.addWidget(win)
    win.show()
    return win, document, dock


def test_runs_are_kept_compared_reloaded_and_deleted(qtbot: Any, stop_all: Any, tmp_path: Any,  # noqa: F811
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from netstudio.graph.commands import SetParam
    from netstudio.project import runs as R
    from netstudio.project.io import Project, save_project
    from netstudio.training.config import TrainConfig
    from tests.ui.test_training_dock import digits_graph

    monkeypatch.delenv(R.NO_RUNS_ENV, raising=False)
    path = save_project(Project(digits_graph(), TrainConfig(epochs=2, batch_size=64, device="cpu"), "digits"),
                        tmp_path / "digits.nsproj")
    win, document, dock = _dock_for(qtbot, path)
    stop_all(dock)
    panel = dock.runs_panel
    assert panel.table.rowCount() == 0
    assert train(qtbot, dock)["status"] == "finished"
    opt = document.graph.find("opt")
    document.push(SetParam(opt.id, "lr", 0.003))
    assert train(qtbot, dock)["status"] == "finished"
    assert panel.table.rowCount() == 2
    first_weights = {k: v.clone() for k, v in R.load_run_weights(panel.runs[0]).items()}
    win.close()  # the app closes ...

    win2, document2, dock2 = _dock_for(qtbot, path)  # ... and the project is opened again
    stop_all(dock2)
    panel2 = dock2.runs_panel
    assert panel2.table.rowCount() == 2 and [r.data["source"] for r in panel2.runs] == ["app", "app"]
    a, b = panel2.runs
    assert a.optimizer_lr() == 0.01 and b.optimizer_lr() == 0.003
    panel2.select([a.id, b.id])
    assert len(panel2.selected_runs()) == 2
    assert len(panel2.plot.getPlotItem().listDataItems()) == 2  # both curves overlaid
    text = panel2.diff_label.text()
    assert "opt.lr" in text and "0.01" in text and "0.003" in text and "training.epochs" not in text
    # sortable: by lr, the 0.003 run comes first
    panel2.table.sortItems(COLUMN_LR := 6)
    assert panel2.table.item(0, COLUMN_LR).text() == "0.003"
    # reload the first run's weights (they fit: same architecture)
    panel2.select([a.id])
    assert panel2.load_button.isEnabled() and panel2.load_weights()
    held = dock2.session.trained
    assert held is not None and a.id in held.describe()
    assert all(torch.equal(held.model.state_dict()[k], first_weights[k]) for k in first_weights)
    assert dock2.export_button.isEnabled()
    # delete the second run
    panel2.select([b.id])
    assert panel2.delete_selected(confirm=False) == 1
    assert [r.id for r in R.list_runs(path)] == [a.id] and panel2.table.rowCount() == 1
