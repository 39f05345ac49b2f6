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
