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
    dialog.apply_button.click()
    assert opt.params["lr"] == pytest.approx(sug, rel=1e-2)
    win.document.undo()  # one step back: the old lr
    assert opt.params["lr"] == before
    dialog.close()
