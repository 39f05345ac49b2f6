"""The Training dock on a real document and training session, without the editor window.

The dock gets its two dependencies explicitly (a :class:`Document` and a
:class:`TrainingSession`) and is shown in a plain QMainWindow, so these tests do
not depend on the editor window (those that close a window use the real one).
Training is real: the digits dataset (1437 train / 360 val 8×8 images) and a
small MLP train in about a second per few epochs on two cores.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QEvent, QtMsgType, QTimer, qInstallMessageHandler  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402
from PySide6.QtWidgets import QApplication, QMainWindow, QMessageBox  # noqa: E402

from netstudio.graph.model import Graph  # noqa: E402
from netstudio.project.io import Project  # noqa: E402
from netstudio.training.config import TrainConfig  # noqa: E402
from netstudio.ui.document import Document  # noqa: E402
from netstudio.ui.training import TrainingDock, TrainingSession  # noqa: E402
from netstudio.ui.training.plots import LivePlots  # noqa: E402
from netstudio.ui.training.results import format_metric  # noqa: E402

TRAIN_TIMEOUT_MS = 60_000
ROOT = Path(__file__).resolve().parents[2]


def digits_graph(hidden: int = 32, optimizer: str = "optim.adam", lr: float = 0.01,
                 in_features: Any = "auto", **opt_params: Any) -> Graph:
    """Dataset(digits) → Flatten → Linear → ReLU → Linear → CrossEntropy → optimizer (``opt_params``
    are the optimizer's other settings, e.g. momentum)."""
    g = Graph()
    d = g.add_node("data.dataset", {"source": "digits"}, name="data")
    f = g.add_node("layer.flatten", name="flatten")
    l1 = g.add_node("layer.linear", {"out_features": hidden, "in_features": in_features}, name="fc1")
    r = g.add_node("activation.relu", name="relu")
    l2 = g.add_node("layer.linear", {"out_features": 10}, name="fc2")
    ce = g.add_node("loss.cross_entropy", name="loss")
    opt = g.add_node(optimizer, {"lr": lr, **opt_params}, name="opt")
    for edge in [(d.id, "features", f.id, "input"), (f.id, "output", l1.id, "input"),
                 (l1.id, "output", r.id, "input"), (r.id, "output", l2.id, "input"),
                 (l2.id, "output", ce.id, "prediction"), (d.id, "target", ce.id, "target"),
                 (ce.id, "loss", opt.id, "loss")]:
        g.connect(*edge)
    return g


class DockHost(QMainWindow):
    """A plain window showing the dock; ``document`` and ``session`` are the real ones it was given,
    ``locks`` records every change of the document's lock (what the editor window follows)."""

    def __init__(self, document: Document, session: TrainingSession) -> None:
        super().__init__()
        self.document = document
        self.session = session
        self.locks: list[bool] = []
        document.locked_changed.connect(self.locks.append)


def make_dock(qtbot: Any, graph: Graph | None = None, **training: Any) -> tuple[DockHost, TrainingDock]:
    cfg = TrainConfig(**{"epochs": 3, "batch_size": 64, "device": "cpu", **training})
    document = Document(Project(graph or digits_graph(), cfg, name="digits_mlp"))
    session = TrainingSession()
    win = DockHost(document, session)
    document.setParent(win)  # the session stays Python-owned: stop_all shuts it down after the window is gone
    dock = TrainingDock(document, session)
    win.setCentralWidget(dock)
    win.resize(1200, 700)
    qtbot.addWidget(win)
    win.show()
    return win, dock


def train(qtbot: Any, dock: TrainingDock, *, cont: bool = False) -> dict[str, Any]:
    with qtbot.waitSignal(dock.training_finished, timeout=TRAIN_TIMEOUT_MS) as blocker:
        assert (dock.continue_training() if cont else dock.start_training())
    return blocker.args[0]


@pytest.fixture
def stop_all():
    """Make sure no test leaves a training thread behind."""
    docks: list[TrainingDock] = []
    yield docks.append
    for d in docks:
        assert d.shutdown(5000)


def test_training_plots_one_point_per_epoch_and_shows_trainer_metrics(qtbot, stop_all) -> None:
    win, dock = make_dock(qtbot, epochs=4)
    stop_all(dock)
    assert dock.train_button.isEnabled() and not dock.stop_button.isEnabled()
    assert not dock.export_button.isEnabled() and not dock.continue_button.isEnabled()

    with qtbot.waitSignal(dock.evaluation_finished, timeout=TRAIN_TIMEOUT_MS):
        outcome = train(qtbot, dock)

    assert outcome["status"] == "finished", outcome
    assert not dock.is_running()
    assert win.locks == [True, False]  # editor locked for the run, unlocked after
    result = dock.trained.result
    history = result.history
    assert len(history) == 4
    assert result.metrics["val_accuracy"] > 0.85  # the MLP really learned the digits

    # epoch plot: one point per epoch, exactly the trainer's numbers
    run = dock.plots.runs[0]
    for key, field in (("train_loss", "train_loss"), ("val_loss", "val_loss"),
                       ("train_acc", "train_accuracy"), ("val_acc", "val_accuracy")):
        x, y = run.curves[key].getData()
        assert list(x) == [1, 2, 3, 4]
        assert list(y) == [h[field] for h in history], key
    assert dock.worker is None  # thread reaped
    assert dock.progress_bar.value() == dock.progress_bar.maximum()
    # under the bar: the run's final figures, not the last batch's loss and ETA
    summary = dock.speed_label.text()
    assert f"val accuracy {format_metric(result.metrics['val_accuracy'])}" in summary
    assert f"train loss {format_metric(result.metrics['train_loss'])}" in summary
    assert "samples/s" in summary and "ETA" not in summary

    # metrics table: exactly what FitResult reports, with the table's formatting rule
    for key, value in result.metrics.items():
        if key == "device_id":
            continue
        assert dock.results.metric_text(key) == (None if value is None else format_metric(value)), key
    assert dock.results.metric_text("val_accuracy") == f"{result.metrics['val_accuracy']:.4f}"

    # confusion matrix on the returned weights agrees with the reported validation accuracy
    cm = np.array(dock.results.confusion.matrix)
    n_val = dock.trained.data.info.n_val
    assert cm.shape == (10, 10) and cm.sum() == n_val
    assert np.trace(cm) / n_val == pytest.approx(result.metrics["val_accuracy"], abs=1e-12)
    assert dock.results.confusion.item(3, 3).text() == str(cm[3, 3])
    # labelled validation samples with predicted (true) captions
    tiles = dock.results.samples.tiles
    assert len(tiles) == 24
    assert all("(" in cap.text() for _, cap in tiles)
    # dataset preview: training images shown once the data was loaded
    assert len(dock.preview_grid.tiles) == 16
    assert dock.export_button.isEnabled() and dock.continue_button.isEnabled()


def test_settings_edits_write_into_project_training(qtbot, stop_all) -> None:
    win, dock = make_dock(qtbot)
    stop_all(dock)
    cfg = win.document.project.training
    dock.epochs_spin.setValue(7)
    dock.batch_spin.setValue(16)
    dock.seed_spin.setValue(42)
    devices = [dock.device_combo.itemData(i) for i in range(dock.device_combo.count())]
    assert devices[:2] == ["auto", "cpu"]
    dock.device_combo.setCurrentIndex(devices.index("auto"))
    assert (cfg.epochs, cfg.batch_size, cfg.seed, cfg.device) == (7, 16, 42, "auto")
    # a project opened later shows its own settings
    win.document.replace_project(Project(digits_graph(), TrainConfig(epochs=2, batch_size=8, seed=3, device="cpu")))
    qtbot.waitUntil(lambda: dock.epochs_spin.value() == 2, timeout=3000)
    assert (dock.batch_spin.value(), dock.seed_spin.value(), dock.device_combo.currentData()) == (8, 3, "cpu")
    assert "Digits" in dock.dataset_label.text() and "10 classes" in dock.dataset_label.text()


def test_pause_freezes_batches_resume_continues_stop_is_fast(qtbot, stop_all) -> None:
    # small batches and many epochs: the run lasts far longer than the test
    win, dock = make_dock(qtbot, epochs=500, batch_size=4)
    stop_all(dock)
    dock.start_training()
    qtbot.waitUntil(lambda: dock.batch_events >= 3, timeout=TRAIN_TIMEOUT_MS)
    assert dock.state == "running"
    assert not dock.train_button.isEnabled() and dock.pause_button.isEnabled()

    dock.pause()
    qtbot.waitUntil(dock.is_paused, timeout=5000)
    assert dock.resume_button.isEnabled() and not dock.pause_button.isEnabled() and dock.stop_button.isEnabled()
    worker = dock.worker
    frozen_worker, frozen_shown = worker.batches_reported, dock.batch_events
    frozen_label = dock.progress_bar.format()
    # events keep being processed for 0.5 s; the batch count must not move
    with pytest.raises(qtbot.TimeoutError):
        qtbot.waitUntil(lambda: worker.batches_reported != frozen_worker or dock.batch_events != frozen_shown,
                        timeout=500)
    assert dock.progress_bar.format() == frozen_label

    dock.resume()
    qtbot.waitUntil(lambda: worker.batches_reported > frozen_worker and dock.batch_events > frozen_shown,
                    timeout=5000)
    assert dock.state == "running"

    with qtbot.waitSignal(dock.training_finished, timeout=5000) as blocker:
        t0 = time.perf_counter()
        dock.stop()
        qtbot.waitUntil(lambda: not dock.is_running(), timeout=1000)
        stopped_in = time.perf_counter() - t0
    assert stopped_in < 1.0
    assert blocker.args[0]["status"] == "stopped"
    assert dock.state == "idle" and win.locks == [True, False]
    # the weights trained so far are kept and can be continued or exported
    assert dock.trained is not None and dock.continue_button.isEnabled()
    assert "stopped" in dock.status_label.text()


def test_exception_in_worker_is_shown_and_app_keeps_working(qtbot, monkeypatch, stop_all) -> None:
    from netstudio.training import engine

    def broken_fit(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected failure in the training loop")

    win, dock = make_dock(qtbot, epochs=1)
    stop_all(dock)
    monkeypatch.setattr(engine, "fit", broken_fit)
    outcome = train(qtbot, dock)
    assert outcome["status"] == "error"
    assert outcome["message"] == "RuntimeError: injected failure in the training loop"
    assert dock.error_banner.isVisible()
    assert "RuntimeError: injected failure in the training loop" in dock.error_text()
    assert dock.status_label.text() == "Run 1 failed"
    assert dock.state == "idle" and dock.train_button.isEnabled() and win.locks == [True, False]
    assert dock.trained is None

    # the event loop still runs (a timer fires) and a real run now succeeds
    fired: list[bool] = []
    QTimer.singleShot(10, lambda: fired.append(True))
    qtbot.waitUntil(lambda: bool(fired), timeout=1000)
    monkeypatch.undo()
    assert train(qtbot, dock)["status"] == "finished"
    assert not dock.error_banner.isVisible()


def test_nan_loss_keeps_last_good_weights(qtbot, stop_all) -> None:
    import torch

    win, dock = make_dock(qtbot, graph=digits_graph(optimizer="optim.sgd", lr=0.1), epochs=2)
    stop_all(dock)
    graph = win.document.project.graph
    graph.set_param(graph.find("opt").id, "momentum", 0.0)  # plain SGD (no longer the default)
    assert train(qtbot, dock)["status"] == "finished"
    good = {k: v.clone() for k, v in dock.trained.model.state_dict().items()}
    # an absurd learning rate makes the loss explode during the continued run
    opt = win.document.project.graph.find("opt")
    win.document.project.graph.set_param(opt.id, "lr", 1e6)
    outcome = train(qtbot, dock, cont=True)
    assert outcome["status"] == "error"
    assert outcome["message"].startswith("Training diverged at epoch 1")
    assert "the loss became NaN" in dock.error_text() or "the loss became infinite" in dock.error_text()
    assert dock.error_banner.isVisible() and dock.status_label.text() == "Run 2 failed"
    # the dock still holds the last good weights: those the failed run started from
    state = dock.trained.model.state_dict()
    assert all(torch.equal(state[k], good[k]) for k in good)
    assert dock.train_button.isEnabled() and dock.export_button.isEnabled()


def test_dataset_that_does_not_fit_the_model_is_reported_with_the_node(qtbot, stop_all) -> None:
    win, dock = make_dock(qtbot, graph=digits_graph(in_features=50))
    stop_all(dock)
    outcome = train(qtbot, dock)
    assert outcome["status"] == "error"
    assert outcome["node_id"] == win.document.project.graph.find("fc1").id
    assert "expects 50 input features but receives 64" in outcome["message"]
    text = dock.error_text()
    assert "expects 50 input features but receives 64" in text and "Node: fc1" in text
    assert dock.state == "idle" and win.locks == [True, False]


def test_train_twice_continue_and_reset(qtbot, stop_all) -> None:
    win, dock = make_dock(qtbot, epochs=2)
    stop_all(dock)
    assert train(qtbot, dock)["status"] == "finished"
    first = dock.trained.result.history
    # edits after a run do not touch the trained snapshot; the second run uses them
    win.document.project.training.epochs = 3
    dock.load_settings()
    assert train(qtbot, dock)["status"] == "finished"
    assert len(dock.trained.result.history) == 3
    # same seed, same data: the fresh second run starts exactly like the first
    assert dock.trained.result.history[0]["train_loss"] == first[0]["train_loss"]

    before = dock.trained.result.history[-1]["train_loss"]
    assert train(qtbot, dock, cont=True)["status"] == "finished"
    cont = dock.trained.result.history
    # continuing starts from trained weights: its first epoch beats a fresh first epoch
    assert cont[0]["train_loss"] < first[0]["train_loss"]
    assert cont[0]["train_loss"] < before * 1.5

    runs = dock.plots.runs
    assert [r.name for r in runs] == ["run 1", "run 2", "run 3"]
    assert len({r.color for r in runs}) == 3
    # the continued run is drawn after the run it continues
    x, _ = runs[2].curves["train_loss"].getData()
    assert list(x) == [4, 5, 6]
    legend = dock.plots.loss_plot.getPlotItem().legend
    labels = [label.text for _, label in legend.items]
    assert "run 1 train" in labels and "run 3 val" in labels

    dock.reset_weights()
    assert dock.trained is None
    assert not dock.continue_button.isEnabled() and not dock.export_button.isEnabled()
    assert dock.results.metrics_table.rowCount() == 0


def _capture_qt_messages() -> tuple[list[str], Any]:
    messages: list[str] = []

    def handler(mode: QtMsgType, context: Any, message: str) -> None:
        messages.append(message)

    return messages, handler


def test_closing_the_window_mid_training_stops_cleanly(qtbot, capfd, monkeypatch, recovery_dir) -> None:
    from netstudio.ui.main_window import MainWindow

    messages, handler = _capture_qt_messages()
    previous = qInstallMessageHandler(handler)
    try:
        # the real editor window (it owns the close guard), deleted by the test itself
        win = MainWindow(project=Project(digits_graph(), TrainConfig(epochs=500, batch_size=4, device="cpu")),
                         recovery_dir=recovery_dir)
        win.show()
        dock = win.training_dock
        locks: list[bool] = []
        win.document.locked_changed.connect(locks.append)
        dock.start_training()
        qtbot.waitUntil(lambda: dock.batch_events >= 2, timeout=TRAIN_TIMEOUT_MS)
        thread = dock.session.train_thread.thread

        # "No": the window stays open and training goes on
        monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.No)
        assert win.close() is False
        assert win.isVisible() and dock.is_running()

        # "Yes": the dock stops and joins the thread before the window goes away
        monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
        t0 = time.perf_counter()
        assert win.close() is True
        assert time.perf_counter() - t0 < 2.0
        assert not thread.isRunning() and not dock.is_running()
        assert locks == [True, False]
        win.deleteLater()
        QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        del thread
    finally:
        qInstallMessageHandler(previous)
    out, err = capfd.readouterr()
    assert not any("Destroyed while thread" in m for m in messages), messages
    assert "Destroyed while thread" not in out + err


def test_shutdown_while_paused_joins_the_thread(qtbot) -> None:
    messages, handler = _capture_qt_messages()
    previous = qInstallMessageHandler(handler)
    try:
        win, dock = make_dock(qtbot, epochs=500, batch_size=4)
        dock.start_training()
        qtbot.waitUntil(lambda: dock.batch_events >= 1, timeout=TRAIN_TIMEOUT_MS)
        dock.pause()
        qtbot.waitUntil(dock.is_paused, timeout=5000)
        t0 = time.perf_counter()
        assert dock.shutdown(timeout_ms=2000) is True
        assert time.perf_counter() - t0 < 1.0
        assert not dock.is_running() and dock.outcome["status"] == "stopped"
    finally:
        qInstallMessageHandler(previous)
    assert not any("QThread" in m for m in messages), messages


def test_batch_curve_with_a_million_points_is_downsampled(qtbot, tmp_path) -> None:
    plots = LivePlots()
    qtbot.addWidget(plots)
    plots.resize(900, 600)
    plots.show()
    plots.new_run(classification=True)
    n = 1_000_000
    steps = np.arange(1, n + 1, dtype=np.float64)
    plots.add_batch_points(steps, 1.0 / np.sqrt(steps))
    for e in range(1, 4):
        plots.add_epoch({"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "train_accuracy": 0.5 + e / 10,
                         "val_accuracy": 0.4 + e / 10})
    plots.redraw()
    curve = plots.runs[0].curves["batch_loss"]
    assert curve.opts["autoDownsample"] and curve.opts["clipToView"] and curve.opts["downsampleMethod"] == "peak"
    plots.batch_plot.getPlotItem().enableAutoRange()
    qtbot.waitUntil(lambda: curve.getData()[0] is not None, timeout=2000)
    t0 = time.perf_counter()
    image = plots.batch_plot.grab()
    render_s = time.perf_counter() - t0
    x, y = curve.getData()
    # what is drawn is a few points per pixel (≈ 8900 here), not a million
    assert len(x) <= 10 * plots.batch_plot.width() < n / 100
    assert y.max() == pytest.approx(1.0)  # peak mode keeps the extremes
    assert not image.isNull() and render_s < 2.0

    # PNG per plot and a CSV of every point
    files = plots.export_png(tmp_path / "training.png", width=800)
    assert [f.name for f in files] == ["training-loss.png", "training-accuracy.png", "training-batch.png"]
    for f in files:
        img = QImage(str(f))
        assert not img.isNull() and img.width() == 800
    plots.runs[0].batch_loss.n = 5  # keep the CSV small: the first five batch points
    path = plots.export_csv(tmp_path / "history.csv")
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    epochs = [r for r in rows if r["kind"] == "epoch"]
    batches = [r for r in rows if r["kind"] == "batch"]
    assert [int(r["x"]) for r in epochs] == [1, 2, 3]
    assert float(epochs[1]["val_loss"]) == 0.6
    assert [float(r["batch_loss"]) for r in batches] == [1.0 / math.sqrt(s) for s in range(1, 6)]


def test_worker_throttles_progress_and_keeps_every_epoch(qtbot) -> None:
    from netstudio.ui.training.worker import EMIT_INTERVAL_S, TrainingWorker, TrainJob

    worker = TrainingWorker(TrainJob(digits_graph().to_dict(), TrainConfig(), run_index=7))
    signals: list[list[dict[str, Any]]] = []
    worker.progress.connect(signals.append)  # same thread: delivered at once
    t0 = time.perf_counter()
    for i in range(1, 2001):
        worker.report({"kind": "batch", "epoch": 1, "batch": i, "n_batches": 2000, "loss": 1.0 / i,
                       "samples_per_s": 1e4, "eta_s": 1.0, "global_step": i})
    for e in (1, 2, 3):  # epochs that end faster than the emit interval
        worker.report({"kind": "epoch", "epoch": e, "train_loss": 0.5, "train_accuracy": 0.9, "val_loss": 0.6,
                       "val_accuracy": 0.8, "lr": 0.01, "seconds": 1.0})
    worker.report({"kind": "end", "status": "finished", "message": ""})
    elapsed = time.perf_counter() - t0
    got = [e for sig in signals for e in sig]
    batches = [e for e in got if e["kind"] == "batch"]
    assert worker.batches_reported == 2000
    # at most one signal per 100 ms (plus the first and the end), never one per batch or epoch
    assert len(signals) <= 3 + elapsed / EMIT_INTERVAL_S
    assert len(batches) <= len(signals)
    # the newest pending batch is queued before the epoch events, so the GUI ends on batch 2000;
    # every epoch arrives, in order, and the end comes last
    assert [e["kind"] for e in got[-5:]] == ["batch", "epoch", "epoch", "epoch", "end"]
    assert got[-5]["batch"] == 2000
    assert [e["epoch"] for e in got[-4:-1]] == [1, 2, 3] and worker.history == got[-4:-1]
    assert all(e["run"] == 7 for e in got)
    # a batch still pending when the loop pauses is shown before the pause, never after it
    signals.clear()
    worker.report({"kind": "batch", "epoch": 4, "batch": 1, "n_batches": 2000, "loss": 0.1,
                   "samples_per_s": 1e4, "eta_s": 1.0, "global_step": 2001})
    worker.report({"kind": "paused", "epoch": 4, "batch": 2, "global_step": 2001})
    assert [e["kind"] for sig in signals for e in sig][-2:] == ["batch", "paused"]


def test_dock_inside_the_real_editor_window(qtbot, request, monkeypatch) -> None:
    try:
        make_window = request.getfixturevalue("make_window")
    except pytest.FixtureLookupError:
        pytest.skip("the editor's window fixture is not available")
    win = make_window(Project(digits_graph(), TrainConfig(epochs=2, device="cpu")), training=True)
    dock = win.training_dock
    assert isinstance(dock, TrainingDock)
    assert dock.train_action in win.toolbar.actions() and dock.stop_action in win.toolbar.actions()
    assert dock.export_action in win.file_menu.actions()

    with qtbot.waitSignal(dock.training_finished, timeout=TRAIN_TIMEOUT_MS):
        dock.train_action.trigger()
        assert win.document.locked  # the graph is read-only while training
    assert not win.document.locked and dock.outcome["status"] == "finished"
    assert dock.export_action.isEnabled()

    # another project: the weights trained for the old one are dropped
    win.document.replace_project(Project(digits_graph(hidden=16), TrainConfig(epochs=500, batch_size=4,
                                                                                 device="cpu")))
    assert dock.trained is None and not dock.export_action.isEnabled()
    qtbot.waitUntil(lambda: dock.epochs_spin.value() == 500, timeout=3000)

    # closing mid-training stops and joins the thread first
    dock.start_training()
    qtbot.waitUntil(lambda: dock.batch_events >= 1, timeout=TRAIN_TIMEOUT_MS)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    win.document.set_modified(False)
    assert win.close()
    assert not dock.is_running() and dock.outcome["status"] == "stopped"


def test_plot_ranges_grow_in_steps_and_respect_user_zoom(qtbot) -> None:
    plots = LivePlots()
    qtbot.addWidget(plots)
    plots.new_run(classification=True, epochs=10)
    vb = plots.loss_plot.getPlotItem().getViewBox()

    def epoch(e: int, loss: float) -> None:
        plots.add_epoch({"epoch": e, "train_loss": loss, "val_loss": loss * 1.1, "train_accuracy": 0.5,
                         "val_accuracy": 0.5})
        plots.redraw()

    epoch(1, 2.3)
    first = vb.viewRange()
    assert first[0][0] < 1 and 10 < first[0][1] < 11  # the whole planned run is laid out at once
    # y from 0 to the next "nice" value above the largest loss (val 2.53 → 5), plus 2 % padding
    assert first[1][0] <= 0 and 5.0 <= first[1][1] < 5.2
    for e, loss in ((2, 1.2), (3, 0.8), (4, 0.5)):
        epoch(e, loss)
        assert vb.viewRange() == first  # falling losses stay inside: the axes are not rebuilt
    # zooming by hand hands the plot to the user
    vb.sigRangeChangedManually.emit([True, True])
    vb.setRange(xRange=(2, 3), padding=0)
    epoch(5, 5.0)
    assert vb.viewRange()[0] == [2, 3]


def test_the_batch_axis_ends_where_the_run_does_once_its_length_is_known(qtbot) -> None:
    plots = LivePlots()
    qtbot.addWidget(plots)
    plots.new_run(classification=True, epochs=3)
    vb = plots.batch_plot.getPlotItem().getViewBox()
    for step in range(1, 8):  # before the start event: grown in nice steps past the last batch
        plots.add_batch({"global_step": step, "loss": 1.0 / step})
    plots.redraw()
    assert 10 <= vb.viewRange()[0][1] < 10.5
    plots.plan_steps(3 * 79)  # the start event: 3 epochs of 79 batches
    plots.redraw()
    right = vb.viewRange()[0][1]
    assert 237 <= right < 237 * 1.03  # the planned end plus padding, not a round 250 or 500
    for step in range(8, 238):
        plots.add_batch({"global_step": step, "loss": 1.0 / step})
    plots.redraw()
    assert vb.viewRange()[0][1] == right  # no batch moved the axis
    # a second run continuing the first: the axis reaches the end of both
    plots.new_run(classification=True, continue_from=plots.current, epochs=1)
    plots.plan_steps(79)
    plots.add_batch({"global_step": 1, "loss": 0.1})
    plots.redraw()
    assert 316 <= vb.viewRange()[0][1] < 316 * 1.03


@pytest.mark.slow  # subprocess, end to end
def test_gui_thread_computes_single_threaded_and_workers_get_every_core() -> None:
    """A fresh app: the GUI thread owns no multi-thread OpenMP team, the trainer gets torch's default."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import json, torch
        from PySide6.QtWidgets import QApplication, QMainWindow
        from netstudio.project.io import Project
        from netstudio.training.config import TrainConfig
        from tests.ui.test_training_dock import digits_graph
        from netstudio.ui.document import Document
        from netstudio.ui.training import TrainingDock, TrainingSession
        default = torch.get_num_threads()
        app = QApplication([])
        doc = Document(Project(digits_graph(), TrainConfig(device="cpu"), name="t"))
        dock = TrainingDock(doc, TrainingSession())
        labels = [dock.device_combo.itemText(i) for i in range(dock.device_combo.count())]
        print(json.dumps({"default": default, "gui": torch.get_num_threads(), "workers": dock.torch_threads,
                          "labels": labels}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(ROOT), env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["gui"] == 1
    assert got["workers"] == got["default"]
    n = got["default"]
    assert any(t.startswith(f"CPU ({n} thread") for t in got["labels"]), got["labels"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux-only")
def test_worker_threads_run_at_lower_priority_than_the_gui() -> None:
    import threading

    from netstudio.ui.training.worker import WORKER_NICE, lower_thread_priority

    seen: dict[str, int] = {}

    def body() -> None:
        tid = threading.get_native_id()
        seen["before"] = os.getpriority(os.PRIO_PROCESS, tid)
        lower_thread_priority()
        seen["after"] = os.getpriority(os.PRIO_PROCESS, tid)

    gui_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen["after"] == min(19, seen["before"] + WORKER_NICE)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == gui_before  # only that thread


def test_regression_results_plot_predicted_against_true(qtbot, stop_all) -> None:
    """Diabetes regression: the Results tab shows the validation scatter with the model's own R²."""
    from netstudio import training

    g = Graph()
    d = g.add_node("data.dataset", {"source": "diabetes"}, name="data")
    lin = g.add_node("layer.linear", {"out_features": 1}, name="linear")
    mse = g.add_node("loss.mse", name="loss")
    opt = g.add_node("optim.sgd", {"lr": 0.05, "momentum": 0.0}, name="opt")
    for edge in [(d.id, "features", lin.id, "input"), (lin.id, "output", mse.id, "prediction"),
                 (d.id, "target", mse.id, "target"), (mse.id, "loss", opt.id, "loss")]:
        g.connect(*edge)
    win, dock = make_dock(qtbot, g, epochs=20, batch_size=16)
    stop_all(dock)
    with qtbot.waitSignal(dock.evaluation_finished, timeout=TRAIN_TIMEOUT_MS) as blocker:
        outcome = train(qtbot, dock)
    assert outcome["status"] == "finished", outcome
    reg = blocker.args[0]["regression"]
    assert dock.evaluation["confusion"] is None and dock.results.regression_box.isVisibleTo(dock.results)
    assert not dock.results.confusion_box.isVisibleTo(dock.results)
    # the points are the trained model's predictions on the validation split, R² recomputed here; both in the
    # target's own units (diabetes progression), like the exported model's output
    data = dock.trained.data
    mean, std = data.target_mean[0], data.target_std[0]
    pred = training.predict(dock.trained.model, data.val_x).reshape(-1).double() * std + mean
    true = data.val_y.reshape(-1).double() * std + mean
    assert true.mean() > 50  # not standardized
    assert len(reg["true"]) == len(reg["pred"]) == data.info.n_val
    assert np.allclose(reg["pred"], pred.numpy(), atol=1e-6) and np.allclose(reg["true"], true.numpy())
    r2 = 1 - float(((true - pred) ** 2).sum()) / float(((true - true.mean()) ** 2).sum())
    assert reg["r2"] == pytest.approx(r2, rel=1e-9)
    assert r2 > 0.3  # a linear model explains a good part of the diabetes progression
    xs, ys = dock.results.regression.scatter.getData()
    assert len(xs) == data.info.n_val
    assert f"R² {format_metric(reg['r2'])}" in dock.results.regression.caption.text()
    # classification afterwards hides the scatter again
    dock.results.show_evaluation({"confusion": [[1, 0], [0, 1]], "class_names": ["a", "b"]})
    assert not dock.results.regression_box.isVisibleTo(dock.results)


def test_dock_follows_document_signals_at_once_without_polling(qtbot, stop_all) -> None:
    """Graph edits, settings changed elsewhere and Open reach the dock as the document's signals,
    in the same turn: no timer runs while the dock is idle."""
    from netstudio.graph.commands import SetParam

    win, dock = make_dock(qtbot)
    stop_all(dock)
    doc = win.document
    assert [t for t in dock.findChildren(QTimer) if t.isActive()] == []
    assert "Digits" in dock.dataset_label.text()
    # an undoable edit of the Dataset node: the summary changes before any event is processed
    assert doc.push(SetParam(doc.graph.find("data").id, "source", "iris"))
    assert "Iris" in dock.dataset_label.text() and "3 classes" in dock.dataset_label.text()
    doc.undo()
    assert "Digits" in dock.dataset_label.text()
    # training settings edited elsewhere (another view) are shown at once
    doc.project.training.epochs = 9
    doc.training_edited()
    assert dock.epochs_spin.value() == 9 and doc.modified
    # the dock's own edits go into the project and tell the document once
    told: list[bool] = []
    doc.training_changed.connect(lambda: told.append(True))
    dock.batch_spin.setValue(32)
    assert doc.project.training.batch_size == 32 and told == [True]
    # Open: the new project's settings and dataset, at once
    doc.replace_project(Project(digits_graph(), TrainConfig(epochs=4, batch_size=8, device="cpu")))
    assert dock.epochs_spin.value() == 4 and dock.batch_spin.value() == 8
    assert [t for t in dock.findChildren(QTimer) if t.isActive()] == []


def test_graph_edits_during_a_run_show_once_it_has_ended(qtbot, stop_all) -> None:
    win, dock = make_dock(qtbot, epochs=500, batch_size=4)
    stop_all(dock)
    dock.start_training()
    qtbot.waitUntil(lambda: dock.batch_events >= 1, timeout=TRAIN_TIMEOUT_MS)
    graph = win.document.graph
    graph.set_param(graph.find("data").id, "source", "wine")  # not through the (locked) undo stack
    qtbot.wait(50)  # the document's coalesced refresh runs
    assert "Digits" in dock.dataset_label.text()  # the summary describes the data being trained on
    with qtbot.waitSignal(dock.training_finished, timeout=TRAIN_TIMEOUT_MS):
        dock.stop()
    assert "Wine" in dock.dataset_label.text()


def test_training_session_runs_without_any_dock(qtbot) -> None:
    """The session alone: typed states in order, the run's end, the weights and their evaluation."""
    from netstudio.ui.training.session import RunEnd, RunState

    session = TrainingSession()
    states: list[RunState] = []
    session.state_changed.connect(states.append)
    with qtbot.waitSignal(session.evaluation_done, timeout=TRAIN_TIMEOUT_MS) as evaluated:
        with qtbot.waitSignal(session.run_finished, timeout=TRAIN_TIMEOUT_MS) as finished:
            assert session.start(digits_graph().to_dict(), TrainConfig(epochs=2, batch_size=64, device="cpu")) == 1
    end = finished.args[0]
    assert isinstance(end, RunEnd) and end.run_index == 1 and end.status == "finished"
    assert not end.failed and not end.refused
    assert states == [RunState.STARTING, RunState.RUNNING, RunState.IDLE]
    assert states == ["starting", "running", "idle"]  # StrEnum: equal to the strings of before
    assert session.state is RunState.IDLE and not session.is_running()
    assert session.trained is not None and session.trained.epochs_done == 2
    assert session.trained.result.metrics["val_accuracy"] > 0.8
    ev, announced = evaluated.args
    assert announced and ev["status"] == "ok" and session.evaluation is ev
    assert session.weights_note() == "Weights of run 1 after epoch 2"
    # continuing needs weights; forgetting drops them and numbers runs from 1 again
    assert session.forget_runs()
    assert session.trained is None and session.run_count == 0
    assert session.start(digits_graph().to_dict(), TrainConfig(device="cpu"), continue_training=True) == 0
    assert session.shutdown(5000)
