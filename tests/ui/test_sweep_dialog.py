"""The Sweep window (netstudio/ui/training/sweep_dialog.py) and the Training panel's TensorBoard setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pytestqt")

from netstudio.project import runs as R  # noqa: E402
from netstudio.project.io import save_project  # noqa: E402
from tests.ui.test_training_dock import make_dock, stop_all, train  # noqa: E402,F401


def _space(dialog: Any, *rows: tuple[str, str, str]) -> None:
    dialog.params_table.setRowCount(0)
    for row in rows:
        dialog.add_param(*row)


def test_the_dialog_runs_a_sweep_shows_its_trials_live_and_applies_the_best_as_one_undo_step(
        qtbot: Any, stop_all: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.delenv(R.NO_RUNS_ENV, raising=False)
    win, dock = make_dock(qtbot, epochs=2)
    stop_all(dock)
    path = save_project(win.document.project, tmp_path / "digits.nsproj")
    graph = win.document.graph
    opt, fc1 = graph.find("opt"), graph.find("fc1")
    before = (opt.params["lr"], fc1.params["out_features"])
    dialog = dock.open_sweep_dialog()
    # the table starts with the optimizer's lr and the first layer's width
    assert dialog.param_texts() == ["optimizer.lr=log(0.00033,0.3)", "fc1.out_features=int(8,64)"]
    _space(dialog, ("optimizer", "lr", "log(1e-4,3e-2)"), ("fc1", "out_features", "int(4,48)"))
    dialog.trials_spin.setValue(4)
    dialog.epochs_spin.setValue(1)
    rows_at_each_end: list[int] = []
    dialog.trial_finished.connect(lambda ev: rows_at_each_end.append(dialog.results.rowCount()))
    assert dialog.start() and dialog.is_running()
    with qtbot.waitSignal(dialog.finished_sweep, timeout=120_000) as blocker:
        pass
    outcome = blocker.args[0]
    assert outcome["status"] == "finished", outcome
    assert rows_at_each_end == [1, 2, 3, 4]  # a row per trial as it ran
    assert dialog.results.rowCount() == 4
    headers = [dialog.results.horizontalHeaderItem(c).text() for c in range(dialog.results.columnCount())]
    assert headers == ["Trial", "State", "Loss", "Val acc", "Epochs", "optimizer.lr", "fc1.out_features"]
    states = sorted(dialog.results.item(r, 1).text() for r in range(4))
    assert states == sorted(t["state"] for t in outcome["trials"]) and "running" not in states
    best = dialog.best
    assert best is not None and best["state"] == "complete"
    assert dialog.results.item(0, 0).text() == str(best["number"])  # sorted by loss: the best first
    assert f"best trial {best['number']}" in dialog.status_label.text()
    # every trial is a run of the saved project, shown in the Runs panel with its sweep
    runs = R.list_runs(path)
    assert sorted(r.data["sweep"]["trial"] for r in runs) == [0, 1, 2, 3]
    assert all(r.data["source"] == "app-sweep" for r in runs)
    panel = dock.runs_panel
    panel.refresh()
    col = [panel.table.horizontalHeaderItem(c).text() for c in range(panel.table.columnCount())].index("Sweep")
    shown = sorted(panel.table.item(r, col).text() for r in range(panel.table.rowCount()))
    assert shown == sorted(f"{outcome['sweep']} #{t['number']} {t['state']}" for t in outcome["trials"])
    assert (opt.params["lr"], fc1.params["out_features"]) == before  # running changed nothing

    steps = win.document.undo_stack.count()
    assert dialog.apply_button.isEnabled()
    dialog.apply_button.click()
    assert opt.params["lr"] == best["params"]["optimizer.lr"]
    assert fc1.params["out_features"] == best["params"]["fc1.out_features"]
    assert win.document.undo_stack.count() == steps + 1  # one undo step for both values
    win.document.undo()
    assert (opt.params["lr"], fc1.params["out_features"]) == before
    dialog.close()


def test_a_bad_distribution_is_named_and_nothing_starts(qtbot: Any, stop_all: Any) -> None:  # noqa: F811
    win, dock = make_dock(qtbot, epochs=1)
    stop_all(dock)
    dialog = dock.open_sweep_dialog()
    _space(dialog, ("optimizer", "lr", "log(1e-4,abc)"))
    assert not dialog.start() and not dialog.is_running()
    assert "'abc' is not a number" in dialog.status_label.text()
    _space(dialog, ("fc7", "out_features", "int(4,8)"))
    assert not dialog.start()
    assert "'fc7' is not the name or id of a node" in dialog.status_label.text()
    dialog.close()


def test_the_training_panel_logs_for_tensorboard_when_asked(qtbot: Any, stop_all: Any,  # noqa: F811
                                                              tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    win, dock = make_dock(qtbot, epochs=2)
    stop_all(dock)
    assert dock.tensorboard_check.isEnabled() and not dock.tensorboard_check.isChecked()
    assert dock.tensorboard_dir() is None
    logs = tmp_path / "tb"
    dock.tensorboard_check.setChecked(True)
    dock.tensorboard_dir_edit.setText(str(logs))
    outcome = train(qtbot, dock)
    assert outcome["status"] == "finished", outcome
    (run,) = [p for p in logs.iterdir() if p.is_dir()]
    assert run.name.startswith("digits_mlp-")
    acc = EventAccumulator(str(run))
    acc.Reload()
    val = [(e.step, e.value) for e in acc.Scalars("loss/val")]
    assert val == [(e["epoch"], pytest.approx(e["val_loss"], rel=1e-6)) for e in outcome["history"]]
    # the setting is the app's, kept for the next start
    from PySide6.QtCore import QSettings

    assert str(QSettings().value("training/tensorboard")).lower() == "true"


def test_without_optuna_and_tensorboard_the_panel_says_what_to_install(
        qtbot: Any, stop_all: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    import sys

    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    win, dock = make_dock(qtbot, epochs=1)
    stop_all(dock)
    assert not dock.tensorboard_check.isEnabled() and not dock.tensorboard_check.isChecked()
    assert "pip install netstudio[tensorboard]" in dock.tensorboard_check.toolTip()
    dialog = dock.open_sweep_dialog()
    assert not dialog.start() and not dialog.is_running()
    assert dialog.status_label.text() == ("Cannot start: Hyperparameter search needs Optuna, which is not installed "
                                          "→ pip install netstudio[sweep]")
    dialog.close()
