"""The learning-rate finder window: the range test of :mod:`netstudio.training.lrfind` in a worker
thread, its loss-vs-lr curve plotted live (log x), the suggestion marked, and Apply, which sets the
optimizer node's lr as one undoable edit."""

from __future__ import annotations

import math
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from netstudio.errors import NetStudioError
from netstudio.training.config import TrainConfig
from netstudio.ui.training.worker import WorkerThread, _plain, _ThreadedWorker


class LrFindWorker(_ThreadedWorker):
    """Builds the plan and data as a run does (training.job.prepare), then runs ``lr_find``."""

    point = Signal(object)  # {"step", "steps", "lr", "loss", "smoothed"} after every batch

    def __init__(self, graph_dict: dict[str, Any], config: TrainConfig, init_model: Any = None,
                 num_threads: int | None = None) -> None:
        super().__init__()
        self.graph_dict, self.config, self.init_model = graph_dict, config, init_model
        self.num_threads = num_threads
        self.result: Any = None

    def _work(self) -> dict[str, Any]:
        from netstudio.graph.model import Graph
        from netstudio.training import job as training_job
        from netstudio.training.lrfind import lr_find

        try:
            job = training_job.prepare(Graph.from_dict(self.graph_dict), self.config, stop_event=self.stop_event)
        except training_job.JobStopped:
            return {"status": "stopped", "message": "Stopped before the range test started"}
        model = self.init_model
        if model is not None:
            try:
                training_job.check_continuable(model, job.plan)
            except NetStudioError:
                model = None  # the graph changed since: start from fresh weights
        self.result = res = lr_find(job.plan, job.data, job.config, model=model,
                                    report=lambda ev: self.point.emit(_plain(ev)), stop_event=self.stop_event)
        return {"status": "finished", **_plain(res.to_dict()), "optimizer_node": job.plan.optimizer_node}


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3g}"


class LrFinderDialog(QDialog):
    """Run the range test on the document's graph (a copy of the held weights if any) and apply its lr."""

    finished_test = Signal(object)  # the worker's outcome dict

    def __init__(self, document: Any, session: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Learning-rate finder")
        self.document, self.session = document, session
        self.test_thread: WorkerThread | None = None
        self.outcome: dict[str, Any] | None = None
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        lay = QVBoxLayout(self)
        self.info = QLabel("Trains a copy of the model for up to 100 batches while the learning rate grows "
                           "from 1e-7 to 10; the weights you hold are not changed.")
        self.info.setWordWrap(True)
        lay.addWidget(self.info)
        self.plot = pg.PlotWidget()
        self.plot.setLogMode(x=True, y=False)
        self.plot.setLabel("bottom", "learning rate")
        self.plot.setLabel("left", "loss")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.raw_curve = self.plot.plot([], [], pen=pg.mkPen((150, 150, 150), width=1), name="loss")
        self.smooth_curve = self.plot.plot([], [], pen=pg.mkPen((31, 119, 180), width=2), name="smoothed")
        self.marker = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen((214, 39, 40), width=2,
                                                                            style=Qt.PenStyle.DashLine))
        self.marker.hide()
        self.plot.addItem(self.marker)
        self.plot.setMinimumSize(480, 300)
        lay.addWidget(self.plot, 1)
        self.result_label = QLabel("")
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.result_label)
        row = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.apply_button = QPushButton("Apply")
        self.apply_button.setEnabled(False)
        self.apply_button.setToolTip("Set the optimizer node's learning rate to the suggestion (undoable)")
        self.apply_button.clicked.connect(self.apply)
        for b in (self.run_button, self.stop_button, self.apply_button):
            row.addWidget(b)
        row.addStretch(1)
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        box.rejected.connect(self.reject)
        row.addWidget(box)
        lay.addLayout(row)

    # --- running --------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self.test_thread is not None and self.test_thread.is_running()

    @Slot()
    def start(self) -> bool:
        if self.is_running():
            return False
        self.lrs, self.losses, self.smoothed = [], [], []
        self.outcome = None
        self._redraw()
        self.marker.hide()
        self.apply_button.setEnabled(False)
        self.result_label.setText("running…")
        trained = getattr(self.session, "trained", None) if self.session is not None else None
        config = TrainConfig.from_dict(self.document.project.training.to_dict())
        threads = getattr(self.session, "torch_threads", None) if self.session is not None else None
        worker = LrFindWorker(self.document.project.graph.to_dict(), config,
                              trained.model if trained is not None else None, threads)
        worker.point.connect(self._on_point, Qt.ConnectionType.QueuedConnection)
        self.test_thread = WorkerThread(worker, "netstudio-lr-find", self._on_finished)
        self.run_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.test_thread.start()
        return True

    @Slot()
    def stop(self) -> None:
        if self.test_thread is not None:
            self.test_thread.stop()

    @Slot(object)
    def _on_point(self, ev: dict[str, Any]) -> None:
        if self.test_thread is None:
            return
        self.lrs.append(float(ev["lr"]))
        self.losses.append(float(ev["loss"]))
        self.smoothed.append(float(ev["smoothed"]))
        self._redraw()

    def _redraw(self) -> None:
        ok = [i for i in range(len(self.lrs)) if math.isfinite(self.losses[i]) and math.isfinite(self.smoothed[i])]
        self.raw_curve.setData([self.lrs[i] for i in ok], [self.losses[i] for i in ok])
        self.smooth_curve.setData([self.lrs[i] for i in ok], [self.smoothed[i] for i in ok])

    def _on_finished(self) -> None:
        wt, self.test_thread = self.test_thread, None
        if wt is None:
            return
        wt.join(0)
        outcome = dict(wt.worker.outcome or {"status": "error", "message": "The range test ended unexpectedly"})
        self.outcome = outcome
        self.run_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        if outcome.get("status") == "error":
            self.result_label.setText(f"Failed: {outcome.get('message', '')}")
        else:
            lrs = outcome.get("lrs") or []
            self.lrs, self.losses = list(lrs), list(outcome.get("losses") or [])
            self.smoothed = list(outcome.get("smoothed") or [])
            self._redraw()
            sug = outcome.get("suggestion")
            if sug:
                self.marker.setValue(math.log10(sug))
                self.marker.show()
            self.apply_button.setEnabled(bool(sug) and self._optimizer_node() is not None)
            how = {"diverged": "stopped when the loss ran away", "stopped": "stopped by you"}.get(
                str(outcome.get("stopped")), "finished")
            self.result_label.setText(f"Suggested learning rate: {_fmt(sug)} (steepest descent of the smoothed "
                                      f"loss) · lowest loss at {_fmt(outcome.get('lr_min_loss'))} · "
                                      f"{len(lrs)} batches, {how}")
        self.finished_test.emit(outcome)

    # --- applying ---------------------------------------------------------------------------
    def _optimizer_node(self) -> Any:
        """The optimizer node the test ran with, if it is still in the graph and has an lr."""
        node_id = (self.outcome or {}).get("optimizer_node")
        node = self.document.graph.nodes.get(node_id) if node_id else None
        return node if node is not None and "lr" in node.params else None

    @property
    def suggestion(self) -> float | None:
        sug = (self.outcome or {}).get("suggestion")
        return float(sug) if sug else None

    @Slot()
    def apply(self) -> bool:
        """Set the optimizer node's lr to the suggestion: one undoable edit."""
        node = self._optimizer_node()
        sug = self.suggestion
        if node is None or sug is None:
            return False
        from netstudio.graph.commands import SetParam

        value = float(f"{sug:.3g}")  # a learning rate people can read
        try:
            self.document.push(SetParam(node.id, "lr", value), top_level=True)
        except NetStudioError as e:
            self.result_label.setText(f"Cannot apply: {e.message}")
            return False
        self.result_label.setText(self.result_label.text() + f" · applied lr {value:g} to '{node.name}'")
        return True

    def shutdown(self, timeout_ms: int = 3000) -> bool:
        if self.test_thread is None:
            return True
        self.test_thread.stop()
        return self.test_thread.join(timeout_ms)

    def done(self, r: int) -> None:  # noqa: D401 - Qt API
        self.shutdown()
        super().done(r)
