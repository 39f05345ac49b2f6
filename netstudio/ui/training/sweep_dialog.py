"""The Sweep window: a hyperparameter search (:func:`netstudio.project.sweep.run_sweep`) on a worker
thread, its trials filling a live table, and "Apply best", which sets the best trial's values on the
graph as one undoable edit."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QDialogButtonBox, QDoubleSpinBox, QGridLayout, QHBoxLayout,
                               QHeaderView, QLabel, QPushButton, QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

from netstudio.errors import NetStudioError
from netstudio.training.config import TrainConfig
from netstudio.ui.training.worker import WorkerThread, _plain, _ThreadedWorker

PARAM_COLUMNS = ("Node", "Parameter", "Distribution")
RESULT_FIXED = ("Trial", "State", "Loss", "Val acc", "Epochs")


class SweepWorker(_ThreadedWorker):
    """Runs ``run_sweep`` and passes its reports on as plain dicts."""

    report = Signal(object)  # every sweep event (sweep_start, trial_start, trial_epoch, trial_end, sweep_end)

    def __init__(self, spec: Any, num_threads: int | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.num_threads = num_threads

    def _work(self) -> dict[str, Any]:
        from netstudio.project.sweep import run_sweep

        result = run_sweep(self.spec, lambda ev: self.report.emit(_plain(dict(ev))), self.stop_event)
        return {"status": "stopped" if result.ended_early == "stopped" else "finished", **_plain(result.to_dict())}


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.4g}"
    return "—" if v is None else str(v)


class _SortItem(QTableWidgetItem):
    """Sorts by the number kept beside the text (no value sorts last)."""

    def __lt__(self, other: QTableWidgetItem) -> bool:
        a, b = self.data(Qt.ItemDataRole.UserRole), other.data(Qt.ItemDataRole.UserRole)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return a < b
        if isinstance(a, (int, float)) != isinstance(b, (int, float)):
            return isinstance(a, (int, float))
        return super().__lt__(other)


def _item(v: Any) -> QTableWidgetItem:
    it = _SortItem(_fmt(v))
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        it.setData(Qt.ItemDataRole.UserRole, v)
        it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return it


def default_space(graph: Any) -> list[tuple[str, str, str]]:
    """A starting point: the optimizer's lr around its value, and the first Linear layer's width."""
    from netstudio.nodes.base import Category

    rows: list[tuple[str, str, str]] = []
    for n in graph.nodes.values():
        if graph.node_type(n).category == Category.OPTIMIZER and isinstance(n.params.get("lr"), float):
            lr = float(n.params["lr"])
            rows.append(("optimizer", "lr", f"log({lr / 30:.2g},{min(lr * 30, 10.0):.2g})"))
            break
    for n in graph.nodes.values():
        if n.type_id == "layer.linear" and isinstance(n.params.get("out_features"), int) \
                and any(e.src == n.id for e in graph.edges) and n.params["out_features"] >= 8:
            w = int(n.params["out_features"])
            rows.append((n.name, "out_features", f"int({max(1, w // 4)},{w * 2})"))
            break
    return rows


class SweepDialog(QDialog):
    """Search the document's graph; the best trial's values go onto the graph with one undoable edit."""

    finished_sweep = Signal(object)  # the worker's outcome dict
    trial_finished = Signal(object)  # a trial's outcome dict, once its row shows it

    def __init__(self, document: Any, session: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Hyperparameter sweep")
        self.document, self.session = document, session
        self.sweep_thread: WorkerThread | None = None
        self.outcome: dict[str, Any] | None = None
        self.keys: list[str] = []
        self.params_texts: list[str] = []
        self._rows: dict[int, int] = {}  # trial number -> results row
        lay = QVBoxLayout(self)
        intro = QLabel("Each trial trains a copy of the model with values drawn by Optuna's TPE sampler; trials "
                       "whose validation loss is above the median of the finished ones at the same epoch are "
                       "pruned. Every trial is kept in the project's Runs. Distributions: log(a,b), float(a,b), "
                       "int(a,b), choice(v1,v2,…); Node: a node name or id, or optimizer / scheduler.")
        intro.setWordWrap(True)
        lay.addWidget(intro)

        self.params_table = QTableWidget(0, len(PARAM_COLUMNS))
        self.params_table.setHorizontalHeaderLabels(list(PARAM_COLUMNS))
        self.params_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.params_table.verticalHeader().hide()
        self.params_table.setMaximumHeight(140)
        lay.addWidget(self.params_table)
        row = QHBoxLayout()
        self.add_button = QPushButton("Add parameter")
        self.add_button.clicked.connect(lambda: self.add_param("", "", ""))
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(self.remove_selected_params)
        row.addWidget(self.add_button)
        row.addWidget(self.remove_button)
        row.addStretch(1)
        lay.addLayout(row)

        grid = QGridLayout()
        cfg = document.project.training
        self.trials_spin = QSpinBox()
        self.trials_spin.setRange(1, 100_000)
        self.trials_spin.setValue(20)
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 1_000_000)
        self.epochs_spin.setValue(cfg.epochs)
        self.epochs_spin.setToolTip("Epochs of every trial (the project's setting is not changed)")
        self.timeout_spin = QDoubleSpinBox()
        self.timeout_spin.setRange(0.0, 7 * 24 * 3600.0)
        self.timeout_spin.setDecimals(0)
        self.timeout_spin.setSuffix(" s")
        self.timeout_spin.setSpecialValueText("none")
        self.timeout_spin.setToolTip("Start no trial after this many seconds (running trials finish)")
        self.jobs_spin = QSpinBox()
        self.jobs_spin.setRange(1, 64)
        self.jobs_spin.setToolTip("Trials trained at once, each in a process of its own (CPU cores shared out)")
        for r, c, text, w in ((0, 0, "Trials", self.trials_spin), (0, 2, "Epochs per trial", self.epochs_spin),
                              (1, 0, "Timeout", self.timeout_spin), (1, 2, "Parallel", self.jobs_spin)):
            label = QLabel(text)
            label.setBuddy(w)
            grid.addWidget(label, r, c)
            grid.addWidget(w, r, c + 1)
        lay.addLayout(grid)

        self.results = QTableWidget(0, len(RESULT_FIXED))
        self.results.setHorizontalHeaderLabels(list(RESULT_FIXED))
        self.results.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.results.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.results.verticalHeader().hide()
        self.results.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.results.setMinimumSize(560, 220)
        lay.addWidget(self.results, 1)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.status_label)

        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.apply_button = QPushButton("Apply best")
        self.apply_button.setEnabled(False)
        self.apply_button.setToolTip("Set the best trial's values on the graph (one undoable edit)")
        self.apply_button.clicked.connect(self.apply_best)
        for b in (self.run_button, self.stop_button, self.apply_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        box.rejected.connect(self.reject)
        buttons.addWidget(box)
        lay.addLayout(buttons)
        for node, param, dist in default_space(document.graph):
            self.add_param(node, param, dist)

    # --- the search space --------------------------------------------------------------------
    def add_param(self, node: str, param: str, dist: str) -> int:
        r = self.params_table.rowCount()
        self.params_table.insertRow(r)
        for c, text in enumerate((node, param, dist)):
            self.params_table.setItem(r, c, QTableWidgetItem(text))
        return r

    @Slot()
    def remove_selected_params(self) -> None:
        for r in sorted({i.row() for i in self.params_table.selectedIndexes()}, reverse=True):
            self.params_table.removeRow(r)

    def param_texts(self) -> list[str]:
        """``NODE.PARAM=DIST`` of every filled row of the table."""
        out = []
        for r in range(self.params_table.rowCount()):
            items = [self.params_table.item(r, c) for c in range(len(PARAM_COLUMNS))]
            cells = [it.text().strip() if it is not None else "" for it in items]
            if any(cells):
                out.append(f"{cells[0]}.{cells[1]}={cells[2]}")
        return out

    # --- running ------------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self.sweep_thread is not None and self.sweep_thread.is_running()

    def _spec(self) -> Any:
        from netstudio.project.sweep import SweepSpec

        project = self.document.project
        config = TrainConfig.from_dict(project.training.to_dict())
        config.epochs = int(self.epochs_spin.value())
        timeout = float(self.timeout_spin.value()) or None
        path = project.path
        weights = project.weights_path()  # an imported model's: trials start from it, as Train does
        spec = SweepSpec(str(path) if path is not None else "untitled.nsproj", project.graph.to_dict(), config,
                         self.param_texts(), trials=int(self.trials_spin.value()), timeout_s=timeout,
                         jobs=int(self.jobs_spin.value()), record=path is not None, source="app-sweep",
                         start_weights=str(weights) if weights is not None and weights.is_file() else None)
        spec.validate()
        return spec

    @Slot()
    def start(self) -> bool:
        if self.is_running():
            return False
        from netstudio.project.sweep import require_optuna

        try:
            require_optuna()
            spec = self._spec()
        except NetStudioError as e:
            self.status_label.setText(f"Cannot start: {e.message}" + (f" → {e.hint}" if e.hint else ""))
            return False
        self.params_texts = list(spec.params)
        self.keys = [t.key for t in spec.validate()]
        self.outcome = None
        self._rows = {}
        self.results.setSortingEnabled(False)
        self.results.setRowCount(0)
        self.results.setColumnCount(len(RESULT_FIXED) + len(self.keys))
        self.results.setHorizontalHeaderLabels(list(RESULT_FIXED) + self.keys)
        self.apply_button.setEnabled(False)
        where = "kept in the project's Runs" if spec.record else "not kept (save the project to keep them)"
        self.status_label.setText(f"running {spec.trials} trials of {spec.config.epochs} epochs; trials are {where}")
        threads = getattr(self.session, "torch_threads", None) if self.session is not None else None
        worker = SweepWorker(spec, threads)
        worker.report.connect(self._on_report, Qt.ConnectionType.QueuedConnection)
        self.sweep_thread = WorkerThread(worker, "netstudio-sweep", self._on_finished)
        self.run_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.sweep_thread.start()
        return True

    @Slot()
    def stop(self) -> None:
        if self.sweep_thread is not None:
            self.sweep_thread.stop()

    def _row_for(self, number: int) -> int:
        r = self._rows.get(number)
        if r is None:
            r = self.results.rowCount()
            self.results.insertRow(r)
            self._rows[number] = r
        return r

    def _set_row(self, number: int, state: str, value: Any, acc: Any, epochs: Any, params: dict[str, Any]) -> None:
        r = self._row_for(number)
        cells = [_item(number), _item(state), _item(value), _item(acc), _item(epochs)]
        cells += [_item(params.get(k)) for k in self.keys]
        for c, it in enumerate(cells):
            self.results.setItem(r, c, it)

    @Slot(object)
    def _on_report(self, ev: dict[str, Any]) -> None:
        if self.sweep_thread is None:
            return
        kind = ev.get("kind")
        if kind == "trial_start":
            self._set_row(int(ev["trial"]), "running", None, None, 0, dict(ev.get("params") or {}))
        elif kind == "trial_epoch":
            r = self._row_for(int(ev["trial"]))
            for c, v in ((2, ev.get("value")), (4, ev.get("epoch"))):
                self.results.setItem(r, c, _item(v))
        elif kind == "trial_end":
            self._set_row(int(ev["number"]), str(ev.get("state")), ev.get("value"), ev.get("val_accuracy"),
                          ev.get("epochs_run"), dict(ev.get("params") or {}))
            done = len([1 for r in range(self.results.rowCount())
                        if (self.results.item(r, 1) or QTableWidgetItem()).text() not in ("running", "")])
            self.status_label.setText(f"{done} trial{'s' if done != 1 else ''} done")
            self.trial_finished.emit(ev)

    def _on_finished(self) -> None:
        wt, self.sweep_thread = self.sweep_thread, None
        if wt is None:
            return
        wt.join(0)
        outcome = dict(wt.worker.outcome or {"status": "error", "message": "The sweep ended unexpectedly"})
        self.outcome = outcome
        self.run_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.results.setSortingEnabled(True)
        self.results.sortItems(2, Qt.SortOrder.AscendingOrder)
        if outcome.get("status") == "error":
            hint = outcome.get("hint")
            self.status_label.setText(f"Failed: {outcome.get('message', '')}" + (f" → {hint}" if hint else ""))
        else:
            best = outcome.get("best")
            ended = {"timeout": " (the timeout ended it)", "stopped": " (stopped)"}.get(str(outcome.get("ended_early")),
                                                                                        "")
            text = (f"{len(outcome.get('trials') or [])} trials{ended}: {outcome.get('complete')} complete, "
                    f"{outcome.get('pruned')} pruned, {outcome.get('failed')} failed")
            if best:
                text += f" · best trial {best['number']}: loss {_fmt(best['value'])} · " + ", ".join(
                    f"{k}={_fmt(v)}" for k, v in best["params"].items())
            self.status_label.setText(text)
            self.apply_button.setEnabled(bool(best))
        self.finished_sweep.emit(outcome)

    # --- applying ------------------------------------------------------------------------------
    @property
    def best(self) -> dict[str, Any] | None:
        best = (self.outcome or {}).get("best")
        return dict(best) if isinstance(best, dict) else None

    @Slot()
    def apply_best(self) -> bool:
        """The best trial's values on the graph: one undoable edit (a Macro of parameter changes)."""
        best = self.best
        if best is None:
            return False
        from netstudio.graph.commands import Macro, SetParam
        from netstudio.project.sweep_space import parse_space, resolve

        try:
            targets = resolve(self.document.graph, parse_space(self.params_texts))
            cmds = [SetParam(t.node_id, t.space.param, best["params"][t.key]) for t in targets
                    if t.key in best["params"]]
            if self.document.path:
                self.document.leave_to(0)  # the sweep's nodes are the project's, not the open block's
            changed = self.document.push(Macro(list(cmds), text=f"Apply sweep trial {best['number']}"))
        except NetStudioError as e:
            self.status_label.setText(f"Cannot apply: {e.message}")
            return False
        if changed:
            self.status_label.setText(self.status_label.text() + f" · applied trial {best['number']}")
        return changed

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        if self.sweep_thread is None:
            return True
        self.sweep_thread.stop()
        return self.sweep_thread.join(timeout_ms)

    def done(self, r: int) -> None:  # noqa: D401 - Qt API
        self.shutdown()
        super().done(r)
